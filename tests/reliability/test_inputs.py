"""Every user-input problem: one ``error:`` line, exit status 2, before any work (nothing written in out_dir)."""

from __future__ import annotations

import json
import os
import re

import pytest
from conftest import one_error
from conftest import run_cli
from conftest import small_examples
from conftest import write_jsonl

from jaxlens.run import config as tconfig
from jaxlens.train import cli


def refused(capsys, out_dir, *argv) -> str:
  code, _, err = run_cli(capsys, f"out_dir={out_dir}", *argv)
  line = one_error(err)
  assert code == 2, err
  assert not os.path.exists(os.path.join(out_dir, "checkpoints"))
  assert not os.path.exists(os.path.join(out_dir, "metrics.jsonl"))
  return line


def data_file(tmp_path, name, text) -> str:
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def test_data_file_problems_name_the_file_and_line(tmp_path, capsys):
  out = tmp_path / "run"
  good = [json.dumps(e) for e in small_examples(60)]
  torn = data_file(tmp_path, "torn.jsonl", "\n".join(good[:34] + ['{"instruction": "x", "output": '] + good[34:]))
  cases = {
      data_file(tmp_path, "empty.jsonl", "\n\n"): r"empty\.jsonl: the file is empty",
      torn: r"torn\.jsonl:35: malformed JSON line \(Expecting value at column 32\)",
      data_file(tmp_path, "cols.jsonl", '{"question_text": "a", "reply": "b"}\n'):
          r"cols\.jsonl: no column for 'instruction' among \['question_text', 'reply'\]",
      data_file(tmp_path, "dict.json", '{"instruction": ["a"], "output": ["b"]}'):
          r"dict\.json: holds one JSON object .*expected a list of records",
      data_file(tmp_path, "bad.json", '[{"instruction": "a",\n "output": }]'): r"bad\.json:2: malformed JSON",
      data_file(tmp_path, "num.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": 5}\n'):
          r"num\.jsonl:2: column 'output' is int, expected str",
      str(tmp_path / "absent.jsonl"): r"instruction data file not found: .*absent\.jsonl",
      data_file(tmp_path, "data.csv", "instruction,output\na,b\n"):
          r"data\.source='.*data\.csv': expected chatterbot, wordnet or a local \.json / \.jsonl file",
  }
  for source, match in cases.items():
    line = refused(capsys, out, f"data.source={source}")
    assert "data.source" in line and re.search(match, line), line
  small = write_jsonl(tmp_path / "long.jsonl", small_examples(8))
  line = refused(capsys, out, f"data.source={small}", "data.max_prompt_len=2")
  assert "all 8 prompts exceed max_prompt_length=2" in line and "long.jsonl" in line, line


def test_out_dir_problems(tmp_path, capsys):
  a_file = tmp_path / "file"
  a_file.write_text("x")
  assert "is a file, not a folder" in one_error(run_cli(capsys, f"out_dir={a_file}")[2])
  assert "is not usable: Not a directory" in one_error(run_cli(capsys, f"out_dir={a_file}/run")[2])
  assert run_cli(capsys, "out_dir=")[0] == 2


def test_yaml_presets(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(tconfig, "CONFIG_DIR", str(tmp_path))
  (tmp_path / "broken.yaml").write_text("steps: 6\nloss: {alpha: 0.5\n")
  (tmp_path / "typed.yaml").write_text("steps: [1, 2]\n")
  (tmp_path / "nulls.yaml").write_text("out_dir:\n")
  for preset, match in (("broken", r"broken\.yaml:3: malformed YAML"), ("typed", r"steps: expected int, got \[1, 2\]"),
                        ("nulls", "out_dir: expected a string, got None")):
    code = cli.main([preset])
    line = one_error(capsys.readouterr()[1])
    assert code == 2 and re.search(match, line), line


@pytest.mark.parametrize("argv, match", [
    (["optim.lr=inf"], "optim.lr: expected a finite number, got 'inf'"),
    (["optim.lr=nan"], "optim.lr: expected a finite number, got 'nan'"),
    (["loss.temperature=-inf"], "loss.temperature: expected a finite number"),
    (["max_nonfinite_steps=0"], "max_nonfinite_steps must be >= 1, got 0"),
    (["parallel.data=3"], r"parallel.data/fsdp/tensor: mesh .*3"),
    (["loss.teacher_layers=99", "loss.student_layers=1"], "teacher layer index 99 is outside"),
    (["loss.num_lens_pairs=50"], "50 pairs are more than the 3 blocks of the student; use at most "
                                 "loss.num_lens_pairs=3"),
    (["loss.teacher_layers=0,2", "loss.student_layers=0,1"], r"the pair \(0, 0\)"),
    (["loss.teacher_layers=2,2", "loss.student_layers=1,1"], r"pairs \[\(2, 1\)\] appear more than once"),
])
def test_config_problems(tmp_path, capsys, small_data, argv, match):
  line = refused(capsys, tmp_path / "run", f"data.source={small_data}", *argv)
  assert re.search(match, line), line
