"""What an evaluation scores: held-out batches and prompts from a run's data config, and the students list."""

import dataclasses

import numpy as np
import pytest

from jaxlens.eval import cli, loading
from jaxlens.run.config import DataConfig

DATA = DataConfig(source="chatterbot", template="chatml", tokenizer="smollm2", seq_len=24, max_prompt_len=12,
                  held_out_fraction=0.1, split_seed=0)
EXAMPLES = [{"instruction": "hi", "input": "", "output": "hello"},
            {"instruction": "a rather long question that cannot fit in twelve tokens", "input": "", "output": "x"},
            {"instruction": "hi", "input": "", "output": "hey there"},
            {"instruction": "bye", "input": "", "output": "see you"}]


class Bytes:
  """Byte-level test tokenizer: token = byte + 3; 1 = EOS, 0 = padding."""

  eos_id, pad_id = 1, 0

  def encode(self, text):
    return [b + 3 for b in text.encode()]

  def decode(self, ids):
    return bytes(i - 3 for i in ids if i >= 3).decode(errors="replace")


def test_generation_set_groups_references_and_keeps_short_prompts():
  tok = Bytes()
  # the chatml prompts of "hi" and "bye" fit (52, 53 bytes), the long one not
  data = dataclasses.replace(DATA, max_prompt_len=60)
  gset = loading.generation_set(EXAMPLES, tok, data, num_prompts=10)
  assert gset.references == [["hello", "hey there"], ["see you"]]  # one entry per distinct prompt
  assert tok.decode(gset.prompts[0]) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
  first = loading.generation_set(EXAMPLES, tok, data, num_prompts=1)
  assert first.references == [["hello", "hey there"]] and (first.eos_id, first.pad_id) == (1, 0)


def test_held_out_batches_are_fixed_shape_and_in_order():
  tok = Bytes()
  data = dataclasses.replace(DATA, max_prompt_len=56, seq_len=72)  # these examples' chatml prompts have 52 bytes
  examples = [{"instruction": f"q{i}", "input": "", "output": f"answer {i}"} for i in range(5)]
  batches = loading.held_out_batches(examples, tok, data, batch_size=2, num_batches=5)
  assert len(batches) == 3  # 5 rows in batches of 2; the last one filled with all-padding rows
  for b in batches:
    assert b["input_ids"].shape == b["loss_mask"].shape == (2, 72)
  assert batches[-1]["loss_mask"][1].sum() == 0 and batches[0]["loss_mask"][0].sum() == len("answer 0") + 1
  first = tok.decode(batches[0]["input_ids"][0][batches[0]["attention_mask"][0] == 1])
  assert "q0" in first and first.endswith("answer 0")
  assert len(loading.held_out_batches(examples, tok, data, batch_size=2, num_batches=1)) == 1


def test_held_out_examples_are_the_runs_split():
  held_out = loading.held_out_examples(DATA)
  again = loading.held_out_examples(dataclasses.replace(DATA))
  assert held_out == again and 50 < len(held_out) < 200  # ~10% of chatterbot's 1,176 pairs
  assert loading.held_out_examples(dataclasses.replace(DATA, split_seed=1)) != held_out


def test_load_setup_needs_a_trained_run():
  with pytest.raises(ValueError, match="at least one trained run folder"):
    loading.load_setup(cli.parse_args(["students=a=baseline"]))
