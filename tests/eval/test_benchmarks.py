"""eval.py benchmark=: JSONL instruction sets (file:line errors before any model work) and their sampled scores."""

from __future__ import annotations

import json
import os
import pathlib
import sys

import pytest

from jaxlens.eval import benchmarks, cli

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "export"))
from tiny_runs import gpt2_models, save_run, write_tokenizer_folder  # noqa: E402

TINY = pathlib.Path(__file__).parent / "data" / "tiny_instructions.jsonl"


def test_the_shipped_set_reads_in_the_minillm_convention():
  examples = benchmarks.read_benchmark(TINY)
  assert [e.line for e in examples] == [1, 2, 3, 5]  # the blank line 4 is skipped
  assert examples[1].input == "Good morning" and examples[1].references == ["Bonjour", "Bonjour !"]
  assert examples[3].input == "" and examples[3].references == ["Four."] and examples[3].prompt is None
  texts = benchmarks.prompt_texts(examples, "alpaca")
  assert "### Input:\nGood morning" in texts[1] and texts[0].endswith("### Response:\n")
  assert benchmarks.prompt_texts(examples[2:3], "alpaca", "file") == [examples[2].prompt]


@pytest.mark.parametrize("line,match", [
    ('{"instruction": "a", "output": "b"', "not valid JSON"), ('["a", "b"]', "expected a JSON object, got list"),
    ('{"output": "b"}', "missing 'instruction'"), ('{"instruction": 3, "output": "b"}', "'instruction' must be a string"),
    ('{"instruction": "a", "output": []}', "'output' must be a string or a non-empty list"),
    ('{"instruction": "a", "output": ["x", 2]}', "non-empty list of strings"),
    ('{"instruction": "a", "input": 1, "output": "b"}', "'input' must be a string"),
    ('{"instruction": " ", "output": "b"}', "empty 'instruction' and no 'prompt'")])
def test_malformed_lines_are_reported_as_file_line(tmp_path, line, match):
  path = tmp_path / "set.jsonl"
  path.write_text('{"instruction": "ok", "output": "fine"}\n\n' + line + "\n")
  with pytest.raises(benchmarks.BenchmarkError, match=f"^{path}:3: .*{match}"):
    benchmarks.read_benchmark(path)


def test_file_prompts_and_empty_or_missing_files_are_checked(tmp_path):
  with pytest.raises(benchmarks.BenchmarkError, match=f"{TINY}:1: no 'prompt' field"):
    benchmarks.read_benchmark(TINY, need_prompt=True)
  (tmp_path / "empty.jsonl").write_text("\n\n")
  with pytest.raises(benchmarks.BenchmarkError, match="no examples"):
    benchmarks.read_benchmark(tmp_path / "empty.jsonl")
  (tmp_path / "bad.jsonl").write_text("{}\n[]\n")
  with pytest.raises(benchmarks.BenchmarkError, match=r"bad.jsonl:1: .*\(and 1 more malformed lines\)"):
    benchmarks.read_benchmark(tmp_path / "bad.jsonl")


def test_a_malformed_set_stops_eval_before_any_model_is_loaded(tmp_path, capsys):
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a"}\n')
  status = cli.main([f"students=s={tmp_path / 'no_such_run'}", f"benchmark=ok={TINY},bad={bad}"])
  err = capsys.readouterr().err.strip().splitlines()
  assert status == 2 and err == [f"error: {bad}:2: 'output' must be a string or a non-empty list of strings, got None"]


@pytest.mark.slow
def test_benchmark_scores_every_student_the_teacher_and_an_exported_folder(tmp_path, capsys):
  """A run's student and its HF export sample the same responses (same weights, tokenizer and seeds)."""
  from jaxlens.export import export_run
  tokenizer = write_tokenizer_folder(tmp_path / "tokenizer")
  teacher, student = gpt2_models()
  run = save_run(tmp_path / "run", teacher, student, {"tokenizer": str(tokenizer), "template": "chatml"})
  export_run(str(run), str(tmp_path / "hf"))
  out = tmp_path / "eval"
  status = cli.main([f"students=run={run},exported=hf:{tmp_path / 'hf'}", f"benchmark=tiny={TINY}", "seeds=10,20",
                     "max_new_tokens=6", "batch_size=4", f"out={out}", "plots=false"])
  assert status == 0
  report = json.loads((out / "report.json").read_text())
  scores = {name: report["students"][name]["benchmarks"]["tiny"] for name in ("run", "exported")}
  scores["teacher"] = report["teacher"]["benchmarks"]["tiny"]
  assert scores["run"]["rougeL"]["per_seed"] == scores["exported"]["rougeL"]["per_seed"]
  assert scores["run"]["samples"] == scores["exported"]["samples"]
  assert set(scores["run"]["rougeL"]["per_seed"]) == {"10", "20"}
  assert report["benchmark_setup"]["sets"]["tiny"]["examples"] == 4
  assert "| exported |" in (out / "report.md").read_text()
  assert "exported/benchmark/tiny/rougeL" in capsys.readouterr().out
