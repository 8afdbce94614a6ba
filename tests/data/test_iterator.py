"""BatchIterator: determinism, exact resume, per-process sharding (1, 2, 4 processes), partial batches, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from jaxlens.data import BatchIterator, TokenizedExample

SEQ_LEN = 8


def _examples(n: int, seed: int = 0) -> list[TokenizedExample]:
  """Example i starts with token 1000 + i (its identity), lengths 2..6."""
  rng = np.random.default_rng(seed)
  return [TokenizedExample(np.array([1000 + i] + rng.integers(2, 50, size=rng.integers(1, 6)).tolist(), np.int32), 1)
          for i in range(n)]


def _ids(batch) -> list[int]:
  """Identities of a batch's rows (-1 for an all-padding row)."""
  return [int(row[0]) - 1000 if mask[0] else -1 for row, mask in zip(batch["input_ids"], batch["attention_mask"])]


def _take(iterator, n):
  return list(itertools.islice(iterator, n))


def test_deterministic_and_reshuffled_every_epoch():
  make = lambda seed: BatchIterator(_examples(20), global_batch_size=4, seq_len=SEQ_LEN, pad_id=0, seed=seed)
  first, again, other = _take(make(7), 10), _take(make(7), 10), _take(make(8), 10)
  assert all(np.array_equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, again))
  assert [_ids(b) for b in first] != [_ids(b) for b in other]
  epoch0, epoch1 = sum(map(_ids, first[:5]), []), sum(map(_ids, first[5:]), [])
  assert sorted(epoch0) == sorted(epoch1) == list(range(20)) and epoch0 != epoch1
  np.testing.assert_array_equal(epoch0, np.random.default_rng([7, 0]).permutation(20))


@pytest.mark.parametrize("stop", [1, 3, 5, 7])
def test_resume_from_state_continues_identically(stop):
  make = lambda: BatchIterator(_examples(22), global_batch_size=4, seq_len=SEQ_LEN, pad_id=0, seed=3)
  reference = _take(make(), 12)
  interrupted = make()
  _take(interrupted, stop)
  state = interrupted.state()
  assert state == {"epoch": stop // 5, "position": stop % 5, "seed": 3}  # 22 // 4 = 5 batches per epoch
  resumed = make()
  resumed.restore(state)
  for expected, got in zip(reference[stop:], _take(resumed, 12 - stop)):
    for key in expected:
      np.testing.assert_array_equal(got[key], expected[key])


@pytest.mark.parametrize("process_count", [1, 2, 4])
def test_process_shards_union_is_the_global_batch(process_count):
  examples, global_batch = _examples(37), 8
  single = _take(BatchIterator(examples, global_batch_size=global_batch, seq_len=SEQ_LEN, pad_id=0, seed=5), 9)
  shards = [_take(BatchIterator(examples, global_batch_size=global_batch, seq_len=SEQ_LEN, pad_id=0, seed=5,
                                process_index=p, process_count=process_count), 9) for p in range(process_count)]
  for step, expected in enumerate(single):
    local = [shard[step] for shard in shards]
    assert all(b["input_ids"].shape == (global_batch // process_count, SEQ_LEN) for b in local)
    for key in expected:
      np.testing.assert_array_equal(np.concatenate([b[key] for b in local]), expected[key])
    ids = sum(map(_ids, local), [])
    assert len(set(ids)) == len(ids) == global_batch  # no overlap


def test_partial_last_batch_is_padding_without_drop_last():
  iterator = BatchIterator(_examples(10), global_batch_size=4, seq_len=SEQ_LEN, pad_id=0, shuffle=False,
                           drop_last=False, num_epochs=1)
  batches = list(iterator)
  assert iterator.batches_per_epoch == 3 and len(batches) == 3
  assert [_ids(b) for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, -1, -1]]
  assert batches[-1]["loss_mask"][2:].sum() == 0 and batches[-1]["attention_mask"][2:].sum() == 0
  assert iterator.state() == {"epoch": 1, "position": 0, "seed": 0}


def test_packing_rows_carry_segment_ids():
  iterator = BatchIterator(_examples(30), global_batch_size=2, seq_len=SEQ_LEN, pad_id=0, packing=True)
  assert iterator.num_rows < 30
  batch = next(iterator)
  assert batch["segment_ids"].shape == (2, SEQ_LEN) and batch["segment_ids"].max() >= 2


def test_errors():
  examples = _examples(8)
  with pytest.raises(ValueError, match="at least one example"):
    BatchIterator([], global_batch_size=2, seq_len=SEQ_LEN, pad_id=0)
  with pytest.raises(ValueError, match="not divisible by process_count=4"):
    BatchIterator(examples, global_batch_size=6, seq_len=SEQ_LEN, pad_id=0, process_count=4)
  with pytest.raises(ValueError, match="process_index"):
    BatchIterator(examples, global_batch_size=4, seq_len=SEQ_LEN, pad_id=0, process_index=2, process_count=2)
  with pytest.raises(ValueError, match="8 rows < global_batch_size=16"):
    BatchIterator(examples, global_batch_size=16, seq_len=SEQ_LEN, pad_id=0)
  with pytest.raises(ValueError, match="longer than seq_len=3"):
    BatchIterator(examples, global_batch_size=2, seq_len=3, pad_id=0)
  with pytest.raises(ValueError, match="global_batch_size must be >= 1"):
    BatchIterator(examples, global_batch_size=0, seq_len=SEQ_LEN, pad_id=0)
  iterator = BatchIterator(examples, global_batch_size=2, seq_len=SEQ_LEN, pad_id=0, seed=1)
  with pytest.raises(ValueError, match="seed 2"):
    iterator.restore({"epoch": 0, "position": 0, "seed": 2})
  with pytest.raises(ValueError, match="out of range"):
    iterator.restore({"epoch": 0, "position": 4, "seed": 1})
  with pytest.raises(ValueError, match="lacks"):
    iterator.restore({"epoch": 0})
