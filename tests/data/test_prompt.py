"""Prompt templates: exact strings (alpaca with/without input, ChatML with/without system) and errors."""

from __future__ import annotations

import pytest

from jaxlens.data import TEMPLATES, format_prompt


def test_alpaca_without_input():
  assert format_prompt({"instruction": "Name a colour.", "input": "", "output": "Red"}, "alpaca") == (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\nName a colour.\n\n### Response:\n")


def test_alpaca_with_input():
  assert format_prompt({"instruction": "Summarise.", "input": "A long text."}, "alpaca") == (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\nSummarise.\n\n### Input:\nA long text.\n\n### Response:\n")


def test_chatml_is_the_default():
  assert format_prompt({"instruction": "What is the capital of France?"}) == (
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")


def test_chatml_with_input_and_system():
  prompt = format_prompt({"instruction": "Summarise.", "input": "A long text."}, "chatml", system="Be brief.")
  assert prompt == ("<|im_start|>system\nBe brief.<|im_end|>\n"
                    "<|im_start|>user\nSummarise.\n\nA long text.<|im_end|>\n<|im_start|>assistant\n")


def test_errors():
  assert TEMPLATES == ("alpaca", "chatml")
  with pytest.raises(ValueError, match="unknown prompt template 'vicuna'"):
    format_prompt({"instruction": "x"}, "vicuna")
  with pytest.raises(ValueError, match="empty instruction"):
    format_prompt({"instruction": "  ", "input": "x"})
  with pytest.raises(TypeError):
    format_prompt({"instruction": 3})
  with pytest.raises(ValueError, match="no system turn"):
    format_prompt({"instruction": "x"}, "alpaca", system="s")
