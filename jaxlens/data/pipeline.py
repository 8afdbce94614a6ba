"""A run's data, from its ``data`` config: the train / held-out split, tokenisation and the fixed held-out batches.

One pipeline for training (:mod:`jaxlens.train.trainer`: the shuffled training batches and the held-out loss)
and evaluation (:mod:`jaxlens.eval.loading`: the same held-out split, scored), so an evaluation sees exactly the
examples its students never trained on, tokenised the way they were trained.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from jaxlens.data.batching import Batch
from jaxlens.data.iterator import BatchIterator
from jaxlens.data.sources import load_instruction_data, split_examples
from jaxlens.data.tokenize import TokenizedExample, tokenize_examples


class DataSpec(Protocol):
  """The fields of :class:`jaxlens.run.config.DataConfig` the pipeline reads (``data`` imports nothing above it)."""

  source: str
  template: str
  seq_len: int
  max_prompt_len: int
  held_out_fraction: float
  split: str
  split_seed: int


def split(spec: DataSpec) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
  """``(train, held_out)`` examples of ``spec.source``, split by hash of ``spec.split`` units (prompt groups or
  examples) with ``spec.split_seed`` (:func:`jaxlens.data.split_examples`)."""
  return split_examples(load_instruction_data(spec.source), held_out_fraction=spec.held_out_fraction,
                        seed=spec.split_seed, by=spec.split)


def tokenize(examples: Sequence[Mapping[str, str]], tokenizer, spec: DataSpec) -> list[TokenizedExample]:
  """``examples`` in ``spec.template``, at most ``spec.seq_len`` tokens, prompts over ``spec.max_prompt_len``
  dropped (:func:`jaxlens.data.tokenize_examples`)."""
  return tokenize_examples(examples, tokenizer, max_length=spec.seq_len, max_prompt_length=spec.max_prompt_len,
                           template=spec.template)


def fixed_batches(rows: Sequence[TokenizedExample], *, batch_size: int, seq_len: int, pad_id: int,
                  num_batches: int, process_index: int = 0, process_count: int = 1) -> list[Batch]:
  """The first ``num_batches`` global batches of ``rows`` in order (no shuffling, no packing): this process's
  rows of each; the last batch filled with all-padding rows whose masks are 0. The same every time."""
  it = BatchIterator(rows, global_batch_size=batch_size, seq_len=seq_len, pad_id=pad_id, shuffle=False,
                     drop_last=False, num_epochs=1, process_index=process_index, process_count=process_count)
  return [batch for _, batch in zip(range(num_batches), it)]
