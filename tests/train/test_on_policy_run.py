"""On-policy and SeqKD runs end to end: bad input exits 2 with one ``error:`` line before training, the teacher
responses command resumes to the same file, and an on-policy run resumes bit-identically after SIGKILL."""

from __future__ import annotations

import json
import os
import re
import signal

import numpy as np
import pytest
from test_resume import env, finish, params_of, start, wait_for_checkpoint  # noqa: F401  (env: a fixture)

from jaxlens.data import chatterbot_examples
from jaxlens.data.teacher_responses import read_teacher_responses
from jaxlens.data.teacher_responses import with_teacher_responses
from jaxlens.train import cli
from jaxlens.train import teacher_responses

TINY = ["tiny", "batch_size=8", "progress=false", "eval_every=0"]  # the test process has 8 CPU devices


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  path = tmp_path_factory.mktemp("data") / "small.jsonl"
  path.write_text("".join(json.dumps(e) + "\n" for e in chatterbot_examples()[:40]))
  return str(path)


def error_lines(capsys):
  return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("override,message", [
    ("data.on_policy_fraction=1.5", "data.on_policy_fraction must be in [0, 1], got 1.5"),
    ("data.on_policy_fraction=-0.1", "data.on_policy_fraction must be in [0, 1], got -0.1"),
    ("data.max_new_tokens=9", "data.max_new_tokens=9 leaves no room: data.max_prompt_len=24 + max_new_tokens must "
                              "be <= data.seq_len=32 (at most 8, or 0 for that)"),
])
def test_bad_on_policy_settings_exit_2(capsys, override, message):
  assert cli.main([*TINY, override]) == 2
  assert error_lines(capsys) == [f"error: presets ['tiny'] + overrides: {message}"]


@pytest.fixture(scope="module")
def responses(tmp_path_factory, source):
  """The tiny teacher's responses to the 40-example source's training prompts, written once."""
  out = str(tmp_path_factory.mktemp("seqkd") / "teacher.jsonl")
  assert teacher_responses.main([*TINY, f"data.source={source}", "data.sample_temperature=0.8", f"out={out}"]) == 0
  return out


def test_teacher_responses_resume_to_the_same_file(tmp_path, responses, source):
  lines = open(responses).read().splitlines(keepends=True)
  records = [json.loads(line) for line in lines]
  assert len(records) == len({(r["instruction"], r["input"]) for r in records}) >= 16  # each prompt once
  assert {r["sampling"]["temperature"] for r in records} == {0.8} and all(r["output"] for r in records if not r.get("skipped"))
  # Interrupted after 13 records, the last one torn: the rerun completes it to the identical file.
  partial = tmp_path / "teacher.jsonl"
  partial.write_text("".join(lines[:13]) + lines[13][:20])
  assert teacher_responses.main([*TINY, f"data.source={source}", "data.sample_temperature=0.8",
                                 f"out={partial}"]) == 0
  assert partial.read_text() == "".join(lines)
  # Other settings are refused rather than mixed into the file.
  assert teacher_responses.main([*TINY, f"data.source={source}", f"out={partial}"]) == 2


def test_seqkd_training_reads_the_responses_and_refuses_other_prompts(capsys, tmp_path, responses, source):
  examples = chatterbot_examples()[:40]
  got = read_teacher_responses(responses)
  train = [e for e in examples if (e["instruction"], e["input"]) in got]
  replaced = with_teacher_responses(train, got)
  assert [e["output"] for e in replaced] == [got[(e["instruction"], e["input"])]["output"] for e in train]
  assert cli.main([*TINY, "steps=1", f"data.source={source}", f"data.teacher_responses={responses}",
                   f"out_dir={tmp_path / 'run'}"]) == 0
  bad = tmp_path / "bad.jsonl"
  bad.write_text(open(responses).read().replace('"instruction": "What is AI?"', '"instruction": "What is AJ?"'))
  assert cli.main([*TINY, "steps=1", f"data.source={source}", f"data.teacher_responses={bad}",
                   f"out_dir={tmp_path / 'bad_run'}"]) == 2
  errors = error_lines(capsys)
  assert len(errors) == 1 and re.search(r"teacher responses do not match the training prompts: \d+ of \d+ training "
                                        r"prompts have no teacher response \(first: 'What is AI\?'\); 1 responses "
                                        r"answer prompts not in the training data \(first: 'What is AJ\?'\)", errors[0])
  assert not os.path.exists(tmp_path / "bad_run" / "metrics.jsonl")


@pytest.mark.slow  # three train.py processes (~40-60 s on 2 cores)
def test_on_policy_run_resumes_bit_identically_after_sigkill(tmp_path, env):  # noqa: F811
  run = ["steps=8", "data.on_policy_fraction=0.5", "log_every=1"]
  code, log = finish(start(tmp_path / "reference", env, *run))
  assert code == 0, log[-3000:]
  proc = start(tmp_path / "run", env, *run)
  wait_for_checkpoint(tmp_path / "run", 4, proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  code, log = finish(start(tmp_path / "run", env, *run))
  assert code == 0 and "resumed from step" in log, log[-3000:]
  for got, want in zip(params_of(tmp_path / "run"), params_of(tmp_path / "reference"), strict=True):
    np.testing.assert_array_equal(got, want)

  def records(folder):
    return {r["step"]: r for r in map(json.loads, open(folder / "metrics.jsonl")) if "loss/total" in r}
  ref, got = records(tmp_path / "reference"), records(tmp_path / "run")
  keys = ("loss/total", "on_policy/sampled_rows", "on_policy/generated_tokens")
  assert [[ref[8][k] for k in keys]] == [[got[8][k] for k in keys]]
  sampled = [ref[s]["on_policy/sampled_rows"] for s in range(1, 9)]
  assert 0 < sum(sampled) < 8 * 4 and all(ref[s]["on_policy/sample_ms"] > 0 for s in range(1, 9))
