"""A deterministic, resumable, process-sharded iterator of ``Batch`` dicts.

Global order: epoch e visits the rows in the order ``permutation_e = default_rng([seed, e]).permutation(R)``
(or ``0 … R−1`` without shuffling) and cuts it into global batches of ``global_batch_size`` rows. This
order depends only on (rows, seed, epoch), never on the number of processes. Process i of P yields the
contiguous rows ``[i·G/P, (i+1)·G/P)`` of every global batch, so the union over processes is exactly the
global batch and no row is seen twice.

State: ``{"epoch", "position", "seed"}``: the next batch to yield is batch ``position`` of epoch
``epoch``. ``restore(state())`` on a fresh iterator over the same rows continues identically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from jaxlens.data.batching import Batch, Row, collate, pack_rows
from jaxlens.data.tokenize import TokenizedExample


class BatchIterator:
  """Iterate ``Batch`` dicts (``[global_batch_size / process_count, seq_len]`` arrays) over tokenised examples.

  Args:
    examples: tokenised examples (each at most ``seq_len`` tokens).
    global_batch_size: G, rows per global batch over all processes.
    seq_len: T, the static row length.
    pad_id: id used for padding.
    seed: shuffling seed.
    shuffle: reshuffle every epoch (False: file order every epoch, e.g. for evaluation).
    drop_last: drop the last partial global batch of an epoch (True) or fill it with all-padding rows
      whose masks are 0 (False), so shapes stay static.
    packing: pack consecutive examples into rows once, before shuffling rows (:func:`pack_rows`); batches
      then carry ``segment_ids``; see :mod:`jaxlens.data.batching` on why the model must read them.
    num_epochs: stop after this many epochs (``None``: never stop).
    process_index: this process, in [0, process_count).
    process_count: P; must divide G.

  Raises:
    ValueError: no examples; G < 1; G not divisible by P; a bad process index; fewer rows than G with
      ``drop_last``; an example longer than ``seq_len``; ``num_epochs < 1``.
  """

  def __init__(self, examples: Sequence[TokenizedExample], *, global_batch_size: int, seq_len: int, pad_id: int,
               seed: int = 0, shuffle: bool = True, drop_last: bool = True, packing: bool = False,
               num_epochs: int | None = None, process_index: int = 0, process_count: int = 1):
    if len(examples) == 0:
      raise ValueError("BatchIterator needs at least one example")
    if global_batch_size < 1:
      raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size}")
    if process_count < 1 or not 0 <= process_index < process_count:
      raise ValueError(f"need 0 <= process_index < process_count, got {process_index}, {process_count}")
    if global_batch_size % process_count:
      raise ValueError(f"global_batch_size={global_batch_size} is not divisible by process_count={process_count}")
    if num_epochs is not None and num_epochs < 1:
      raise ValueError(f"num_epochs must be >= 1 or None, got {num_epochs}")
    if packing:
      self._rows: list[Row] = pack_rows(examples, seq_len)
    else:
      too_long = [i for i, e in enumerate(examples) if len(e.input_ids) > seq_len]
      if too_long:
        raise ValueError(f"examples {too_long[:10]} are longer than seq_len={seq_len}")
      self._rows = [(e,) for e in examples]
    if drop_last and len(self._rows) < global_batch_size:
      raise ValueError(f"{len(self._rows)} rows < global_batch_size={global_batch_size} with drop_last=True")
    self.global_batch_size = global_batch_size
    self.local_batch_size = global_batch_size // process_count
    self.seq_len, self.pad_id, self.seed = seq_len, pad_id, int(seed)
    self.shuffle, self.drop_last, self.packing, self.num_epochs = shuffle, drop_last, packing, num_epochs
    self.process_index, self.process_count = process_index, process_count
    self._epoch, self._position = 0, 0
    self._order_epoch, self._order = None, None

  @property
  def num_rows(self) -> int:
    """Rows per epoch (examples, or packed rows)."""
    return len(self._rows)

  @property
  def batches_per_epoch(self) -> int:
    """``R // G`` with ``drop_last``, else ``ceil(R / G)``."""
    full, rest = divmod(self.num_rows, self.global_batch_size)
    return full + (0 if self.drop_last or rest == 0 else 1)

  def state(self) -> dict[str, int]:
    """The checkpointable state ``{"epoch", "position", "seed"}`` of the next batch to yield."""
    return {"epoch": self._epoch, "position": self._position, "seed": self.seed}

  def restore(self, state: Mapping[str, int]) -> None:
    """Continue from a :meth:`state` (of an iterator over the same rows and seed).

    Raises:
      ValueError: missing keys, another seed, or an epoch/position out of range.
    """
    missing = {"epoch", "position", "seed"} - set(state)
    if missing:
      raise ValueError(f"iterator state lacks {sorted(missing)}: {dict(state)}")
    if int(state["seed"]) != self.seed:
      raise ValueError(f"iterator state has seed {state['seed']}, this iterator seed {self.seed}")
    epoch, position = int(state["epoch"]), int(state["position"])
    if epoch < 0 or not 0 <= position < self.batches_per_epoch:
      raise ValueError(f"state epoch={epoch}, position={position} out of range "
                       f"(batches_per_epoch={self.batches_per_epoch})")
    self._epoch, self._position = epoch, position

  def epoch_order(self, epoch: int) -> np.ndarray:
    """``[R]`` row order of ``epoch``: ``default_rng([seed, epoch]).permutation(R)`` (or ``arange``)."""
    if not self.shuffle:
      return np.arange(self.num_rows)
    return np.random.default_rng([self.seed, epoch]).permutation(self.num_rows)

  def global_batch_rows(self, epoch: int, position: int) -> np.ndarray:
    """Row indices of global batch ``position`` of ``epoch`` (fewer than G only for a last partial batch)."""
    if self._order_epoch != epoch:
      self._order_epoch, self._order = epoch, self.epoch_order(epoch)
    start = position * self.global_batch_size
    return self._order[start:start + self.global_batch_size]

  def __iter__(self) -> BatchIterator:
    return self

  def __next__(self) -> Batch:
    if self.num_epochs is not None and self._epoch >= self.num_epochs:
      raise StopIteration
    rows = self.global_batch_rows(self._epoch, self._position)
    local = rows[self.process_index * self.local_batch_size:(self.process_index + 1) * self.local_batch_size]
    batch = collate([self._rows[i] for i in local], seq_len=self.seq_len, pad_id=self.pad_id,
                    batch_size=self.local_batch_size, segment_ids=self.packing)
    self._position += 1
    if self._position == self.batches_per_epoch:
      self._epoch, self._position = self._epoch + 1, 0
    return batch
