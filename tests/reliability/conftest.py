"""Shared pieces of the reliability suite: in-process CLI runs of the ``tiny`` preset on a small data file."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil

import pytest

from jaxlens.data import split_examples
from jaxlens.train import cli

# The test process has 8 CPU devices: a 4 × 2 mesh divides the tiny batch of 4.
RUN = ["tiny", "steps=4", "save_every=2", "log_every=2", "eval_every=0", "progress=false", "parallel.data=4",
       "parallel.tensor=2"]


def small_examples(n: int = 8) -> list[dict]:
  """``n`` short examples of which none falls in the default 10 % held-out split."""
  examples, i = [], 0
  while len(examples) < n:
    example = {"instruction": f"What is {i} plus {i}?", "input": "", "output": f"It is {2 * i}."}
    if split_examples([example], held_out_fraction=0.1, seed=0)[0]:
      examples.append(example)
    i += 1
  return examples


def write_jsonl(path, records) -> str:
  with open(path, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
  return str(path)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
  """``python train.py RUN argv`` in this process: ``(status, stdout, stderr)``."""
  code = cli.main([*RUN, *map(str, argv)])
  out, err = capsys.readouterr()
  return code, out, err


def one_error(err: str) -> str:
  """The single ``error:`` line of ``err`` (asserting there is exactly one line)."""
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
  return lines[0]


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> str:
  return write_jsonl(tmp_path_factory.mktemp("data") / "small.jsonl", small_examples())


@pytest.fixture(scope="session")
def base_run(tmp_path_factory, small_data):
  """A finished 4-step run on the 8-example file (checkpoints 2 and 4): ``(run folder, stdout)``."""
  out_dir = tmp_path_factory.mktemp("base") / "run"
  stdout = io.StringIO()
  with contextlib.redirect_stdout(stdout):
    code = cli.main([*RUN, f"data.source={small_data}", f"out_dir={out_dir}"])
  assert code == 0, stdout.getvalue()[-3000:]
  return out_dir, stdout.getvalue()


@pytest.fixture
def copy_of(tmp_path):
  def copy(run_dir):
    target = tmp_path / "copy"
    shutil.copytree(run_dir, target)
    return target
  return copy


def checkpoint_steps(run_dir) -> list[int]:
  folder = os.path.join(run_dir, "checkpoints")
  return sorted(int(d) for d in os.listdir(folder) if d.isdigit())
