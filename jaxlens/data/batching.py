"""Tokenised examples → fixed-shape ``Batch`` dicts of numpy arrays (static shapes for ``jit``).

A batch row holds one example, right-padded (the default), or several packed examples
(:func:`pack_rows`). For a row whose real tokens are ``x_0 … x_{n−1}`` (prompt ``x_0 … x_{p−1}``):

=================  ==========  ==============================================================
key                dtype       value at position t
=================  ==========  ==============================================================
``input_ids``      int32       ``x_t`` for t < n, else ``pad_id``
``attention_mask`` int32       1 for t < n, else 0
``positions``      int32       t for t < n, else 0 (packed: restarts at 0 in every segment)
``labels``         int32       ``x_{t+1}`` for t < n − 1, else ``pad_id`` (arbitrary where masked)
``loss_mask``      float32     1 iff ``p − 1 ≤ t < n − 1``: the next token is a response token
                               (the last prompt position, predicting the first response token,
                               is included, as in MiniLLM/DistillLens)
``segment_ids``    int32       packed batches only: 1, 2, … per example in the row, 0 on padding
=================  ==========  ==============================================================

Packing: the jaxlens models take no segment ids, so in a packed row every token would also attend to
the earlier examples of its row. Packed batches are therefore only for a model whose attention reads
``segment_ids`` (block-diagonal causal masking); the pipeline's default is padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxlens.data.tokenize import TokenizedExample

Batch = dict[str, np.ndarray]
BATCH_KEYS = ("input_ids", "attention_mask", "positions", "loss_mask", "labels")
Row = tuple[TokenizedExample, ...]


def pack_rows(examples: Sequence[TokenizedExample], seq_len: int) -> list[Row]:
  """Greedy in-order packing: each row takes examples while their total length fits ``seq_len``.

  Args:
    examples: tokenised examples, each at most ``seq_len`` tokens.
    seq_len: the row length T.

  Returns:
    Rows of one or more consecutive examples, in order.

  Raises:
    ValueError: an example longer than ``seq_len``.
  """
  rows, current, used = [], [], 0
  for index, example in enumerate(examples):
    n = len(example.input_ids)
    if n > seq_len:
      raise ValueError(f"example {index} has {n} tokens > seq_len={seq_len}")
    if used + n > seq_len:
      rows.append(tuple(current))
      current, used = [], 0
    current.append(example)
    used += n
  if current:
    rows.append(tuple(current))
  return rows


def collate(rows: Sequence[Row], *, seq_len: int, pad_id: int, batch_size: int | None = None,
            segment_ids: bool = False) -> Batch:
  """Build one right-padded batch from rows (see the module docstring for every array).

  Args:
    rows: ``batch_size`` or fewer rows; each a tuple of one example (padding) or several (packing).
    seq_len: T.
    pad_id: the id filling padding and the labels past each row's last token.
    batch_size: B (default ``len(rows)``); rows past ``len(rows)`` are all padding (every mask 0), so
      a last, partial batch keeps the static shape.
    segment_ids: add the ``segment_ids`` array (for packed rows).

  Returns:
    A ``Batch``: ``input_ids``, ``attention_mask``, ``positions``, ``labels`` ``[B, T]`` int32 and
    ``loss_mask`` ``[B, T]`` float32 (and ``segment_ids`` ``[B, T]`` int32 if asked).

  Raises:
    ValueError: more rows than ``batch_size``, a row longer than ``seq_len``, a row of several examples
      without ``segment_ids=True``, or a ``prompt_length`` outside [1, len(input_ids)].
  """
  batch_size = len(rows) if batch_size is None else batch_size
  if len(rows) > batch_size:
    raise ValueError(f"{len(rows)} rows do not fit batch_size={batch_size}")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  shape = (batch_size, seq_len)
  batch = {
    "input_ids": np.full(shape, pad_id, np.int32), "attention_mask": np.zeros(shape, np.int32),
    "positions": np.zeros(shape, np.int32), "loss_mask": np.zeros(shape, np.float32),
    "labels": np.full(shape, pad_id, np.int32),
  }
  if segment_ids:
    batch["segment_ids"] = np.zeros(shape, np.int32)
  for b, row in enumerate(rows):
    if len(row) > 1 and not segment_ids:
      raise ValueError(f"row {b} packs {len(row)} examples; packed rows need segment_ids=True")
    start = 0
    for segment, (ids, prompt_length) in enumerate(row, start=1):
      n = len(ids)
      if start + n > seq_len:
        raise ValueError(f"row {b} has more than seq_len={seq_len} tokens")
      if not 1 <= prompt_length <= n:
        raise ValueError(f"row {b}: prompt_length={prompt_length} outside [1, {n}]")
      end = start + n
      batch["input_ids"][b, start:end] = ids
      batch["attention_mask"][b, start:end] = 1
      batch["positions"][b, start:end] = np.arange(n)
      batch["labels"][b, start:end - 1] = ids[1:]
      batch["loss_mask"][b, start + prompt_length - 1:end - 1] = 1.0
      if segment_ids:
        batch["segment_ids"][b, start:end] = segment
      start = end
  return batch
