"""Instruction data → tokenised, fixed-shape, process-sharded ``Batch`` dicts (see docs/data.md)."""

from jaxlens.data.batching import BATCH_KEYS, Batch, collate, pack_rows
from jaxlens.data.iterator import BatchIterator
from jaxlens.data.pipeline import DataSpec, fixed_batches, split, tokenize
from jaxlens.data.prompt import TEMPLATES, chat_template, format_prompt
from jaxlens.data.sources import (chatterbot_examples, load_instruction_data, prompt_groups, split_examples,
                                  wordnet_examples)
from jaxlens.data.tokenize import TokenizedExample, tokenize_examples

__all__ = [
  "BATCH_KEYS",
  "Batch",
  "BatchIterator",
  "DataSpec",
  "TEMPLATES",
  "TokenizedExample",
  "chat_template",
  "chatterbot_examples",
  "collate",
  "fixed_batches",
  "format_prompt",
  "load_instruction_data",
  "pack_rows",
  "split",
  "prompt_groups",
  "split_examples",
  "tokenize",
  "tokenize_examples",
  "wordnet_examples",
]
