"""Instruction sources: chatterbot-corpus pairs, JSON/JSONL via datasets (local tmp files only), hash split."""

from __future__ import annotations

import collections
import importlib.util
import os
import json

import pytest

from jaxlens.data import chatterbot_examples, load_instruction_data, split_examples

needs_chatterbot = pytest.mark.skipif(
  importlib.util.find_spec("chatterbot_corpus") is None,
  reason="chatterbot_corpus not installed (pip install --no-deps -r requirements-assets.txt)")

DOLLY_ROWS = [
  {"instruction": "Who wrote Hamlet?", "context": "", "response": "Shakespeare.", "category": "open_qa"},
  {"instruction": "Summarise.", "context": "Cats sleep a lot.", "response": "Cats sleep.", "category": "summarization"},
  {"instruction": "Add 2 and 3.", "context": None, "response": "5", "category": "open_qa"},
]


@needs_chatterbot
def test_chatterbot_pairs():
  examples = chatterbot_examples()
  assert len(examples) == 1176  # unique consecutive-turn pairs of 2,025 English conversations
  assert examples == chatterbot_examples()  # deterministic order
  assert examples[0]["instruction"] == "What is AI?"
  assert examples[0]["output"].startswith("Artificial Intelligence is the branch of engineering and science")
  assert all(e["instruction"] and e["output"] and e["input"] == "" for e in examples)
  assert len({(e["instruction"], e["output"]) for e in examples}) == len(examples)
  assert load_instruction_data("chatterbot") == examples


def _write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
  return path


def test_jsonl_with_dolly_columns(tmp_path):
  path = _write_jsonl(tmp_path / "dolly.jsonl", DOLLY_ROWS)
  examples = load_instruction_data(path, cache_dir=tmp_path / "cache")
  assert examples == [
    {"instruction": "Who wrote Hamlet?", "input": "", "output": "Shakespeare."},
    {"instruction": "Summarise.", "input": "Cats sleep a lot.", "output": "Cats sleep."},
    {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
  ]


def test_json_with_explicit_columns(tmp_path):
  path = tmp_path / "qa.json"
  path.write_text(json.dumps([{"q": "Hi?", "a": "Hello.", "instruction": "ignored"}]), encoding="utf-8")
  examples = load_instruction_data(path, columns={"instruction": "q", "output": "a"}, cache_dir=tmp_path / "cache")
  assert examples == [{"instruction": "Hi?", "input": "", "output": "Hello."}]


def test_load_errors(tmp_path):
  cache = tmp_path / "cache"
  with pytest.raises(FileNotFoundError):
    load_instruction_data(tmp_path / "absent.jsonl")
  (tmp_path / "empty.jsonl").write_text("")
  with pytest.raises(ValueError, match="empty"):
    load_instruction_data(tmp_path / "empty.jsonl", cache_dir=cache)
  path = _write_jsonl(tmp_path / "bad.jsonl", [{"question_text": "x", "response": "y"}])
  with pytest.raises(ValueError, match="no column for 'instruction'"):
    load_instruction_data(path, cache_dir=cache)
  with pytest.raises(ValueError, match="column 'nope'"):
    load_instruction_data(path, columns={"instruction": "nope"}, cache_dir=cache)
  with pytest.raises(ValueError, match="unknown fields"):
    load_instruction_data(path, columns={"question": "question_text"}, cache_dir=cache)
  path = _write_jsonl(tmp_path / "num.jsonl", [{"instruction": "x", "output": 5}])
  with pytest.raises(TypeError, match=r"num.jsonl:1: column 'output' is int"):
    load_instruction_data(path, cache_dir=cache)


def _examples(n):
  return [{"instruction": f"question {i}", "input": "", "output": f"answer {i}"} for i in range(n)]


def test_split_is_deterministic_and_order_independent():
  examples = _examples(1000)
  train, held_out = split_examples(examples, held_out_fraction=0.2, seed=3)
  assert (train, held_out) == split_examples(examples, held_out_fraction=0.2, seed=3)
  assert 150 < len(held_out) < 250 and len(train) + len(held_out) == 1000
  r_train, r_held_out = split_examples(examples[::-1], held_out_fraction=0.2, seed=3)
  assert r_held_out == held_out[::-1] and r_train == train[::-1]
  assert split_examples(examples, held_out_fraction=0.2, seed=4)[1] != held_out
  duplicated = examples[:50] + examples[:50]
  d_train, d_held_out = split_examples(duplicated, held_out_fraction=0.5, seed=0)
  assert not {json.dumps(e) for e in d_train} & {json.dumps(e) for e in d_held_out}  # duplicates on one side
  assert len(d_held_out) % 2 == 0 and 0 < len(d_held_out) < 100


def test_split_errors():
  with pytest.raises(ValueError, match="held_out_fraction"):
    split_examples(_examples(3), held_out_fraction=1.0)
  with pytest.raises(ValueError, match="empty"):
    split_examples([], held_out_fraction=0.1)


def _crossing(train, held_out):
  """Prompts and responses (normalised) found on both sides of a split."""
  from jaxlens.data.sources import normalise_text
  side = lambda rows, f: {normalise_text(r[f]) for r in rows}  # noqa: E731
  return side(train, "instruction") & side(held_out, "instruction"), side(train, "output") & side(held_out, "output")


def test_prompt_split_keeps_shared_prompts_and_responses_on_one_side():
  # Chains like consecutive chat turns: the response of one example is the prompt of the next; repeated prompts
  # with different answers; near-duplicates differing in case and spacing.
  examples = []
  for c in range(60):
    turns = [f"turn {c}.{t}" for t in range(4)]
    examples += [{"instruction": a, "input": "", "output": b} for a, b in zip(turns, turns[1:])]
    examples.append({"instruction": f"Define word {c % 7}", "input": "", "output": f"sense {c}"})
    examples.append({"instruction": f"define  WORD {c % 7} ", "input": "", "output": f"other sense {c}"})
  for seed in range(5):
    train, held_out = split_examples(examples, held_out_fraction=0.3, seed=seed)
    assert len(train) + len(held_out) == len(examples) and held_out and train
    prompts, responses = _crossing(train, held_out)
    assert not prompts and not responses
  # the example-level split (the first experiment's) does leak shared prompts
  train, held_out = split_examples(examples, held_out_fraction=0.3, seed=0, by="example")
  assert _crossing(train, held_out)[0]
  with pytest.raises(ValueError, match="by must be one of"):
    split_examples(examples, by="conversation")


@needs_chatterbot
def test_chatterbot_prompt_split_is_leak_free():
  train, held_out = split_examples(chatterbot_examples(), held_out_fraction=0.1, seed=0)
  assert (len(train), len(held_out)) == (1042, 134)
  assert _crossing(train, held_out) == (set(), set())


needs_wordnet = pytest.mark.skipif(not os.path.exists("/usr/share/wordnet/data.noun"),
                                   reason="WordNet not installed (apt-get install wordnet-base)")


@needs_wordnet
def test_wordnet_tasks_from_glosses_examples_and_synsets():
  from jaxlens.data import wordnet_examples
  examples = wordnet_examples()
  kinds = collections.Counter(e["instruction"].split()[0] for e in examples)
  assert kinds == {"Define": 206928, "Give": 141220, "Use": 46396}  # WordNet 3.0 (wordnet-base 1:3.0)
  first = examples[0]
  assert first == {"instruction": 'Define the noun "entity".', "input": "",
                   "output": "that which is perceived or known or inferred to have its own distinct existence "
                             "(living or nonliving)"}
  assert len({(e["instruction"], e["output"]) for e in examples}) == len(examples)
  assert load_instruction_data("wordnet")[:3] == examples[:3]


def test_wordnet_missing_names_the_package(tmp_path):
  from jaxlens.data import wordnet_examples
  with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base"):
    wordnet_examples(tmp_path)
