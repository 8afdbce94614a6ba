"""Checkpoints that survive anything: SIGKILL / SIGTERM mid-run and resume bit-identically; bad checkpoints fail
with a clear error and are never overwritten."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx
from train_fixtures import ROOT

from jaxlens.run import checkpoints
from jaxlens.run import model_sources
from jaxlens.run import config as tconfig
from jaxlens.train import trainer

STEPS = 16
RUN = ["tiny", f"steps={STEPS}", "save_every=4", "log_every=4", "eval_every=0", "progress=false"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  """One-device subprocess environment sharing a persistent compilation cache (compile once per module)."""
  out = dict(os.environ)
  out["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
  out["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax_cache"))
  out["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  out["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
  return out


def start(out_dir, env, *extra):
  return subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *RUN, f"out_dir={out_dir}", *extra],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout=300):
  out, _ = proc.communicate(timeout=timeout)
  return proc.returncode, out


def wait_for_checkpoint(out_dir, step, proc, timeout=300):
  """Poll until ``checkpoints/<step>`` is committed (orbax renames its temporary folder when complete)."""
  path = os.path.join(out_dir, "checkpoints", str(step))
  t0 = time.time()
  while not os.path.isdir(path):
    assert proc.poll() is None, f"run ended before checkpoint {step}:\n{proc.communicate()[0][-3000:]}"
    assert time.time() - t0 < timeout, f"no checkpoint {step} after {timeout} s"
    time.sleep(0.02)


def params_of(out_dir):
  return jax.tree.leaves(checkpoints.read_params(str(out_dir)))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, env):
  """An uninterrupted run."""
  out = tmp_path_factory.mktemp("reference")
  code, log = finish(start(out, env))
  assert code == 0, log[-3000:]
  assert checkpoints.read_run(str(out)).step == STEPS
  records = [json.loads(line) for line in open(out / "metrics.jsonl")]
  train = [r for r in records if "loss/total" in r]
  assert [r["step"] for r in train] == [1, 4, 8, 12, 16]
  assert {"loss/output", "loss/lens", "lens/pair_0", "lens/pair_1", "lr", "grad_norm", "tokens_per_s",
          "ms_per_step"} <= set(train[0])
  assert [r["step"] for r in records if "eval/loss/total" in r] == [0, STEPS]
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(out / "tensorboard"))
  return out


@pytest.mark.slow  # three train.py processes (~40-80 s on 2 cores)
def test_killed_and_terminated_runs_resume_bit_identically(tmp_path, env, reference):
  out = tmp_path / "run"
  # 1. SIGKILL right after the step-4 checkpoint is committed: no chance to clean up.
  proc = start(out, env)
  wait_for_checkpoint(out, 4, proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  latest = checkpoints.read_run(str(out)).step
  assert 4 <= latest < STEPS, latest
  # 2. Resume; SIGTERM after the next periodic checkpoint: saves at the step boundary and exits 0.
  proc = start(out, env)
  wait_for_checkpoint(out, latest + 4 - latest % 4, proc)
  proc.send_signal(signal.SIGTERM)
  code, log = finish(proc)
  assert code == 0, log[-3000:]
  assert "stop requested (SIGTERM/preemption): saved step" in log and "interrupted (SIGTERM) at step" in log
  stopped = checkpoints.read_run(str(out)).step
  assert latest < stopped < STEPS, (latest, stopped, log[-2000:])
  # 3. Resume to the end: bit-identical parameters to the uninterrupted run.
  code, log = finish(start(out, env))
  assert code == 0 and f"resumed from step {stopped}" in log, log[-3000:]
  for got, want in zip(params_of(out), params_of(reference), strict=True):
    np.testing.assert_array_equal(got, want)
  # The resumed runs' metrics continue the log: no step is recorded twice, and the values equal the reference's.
  def steps(folder):
    records = map(json.loads, open(folder / "metrics.jsonl"))
    return [(r["step"], r["loss/total"]) for r in records if "loss/total" in r]
  got = steps(out)
  assert [s for s, _ in got] == sorted({s for s, _ in got}), got
  assert dict(got)[STEPS] == dict(steps(reference))[STEPS]
  assert checkpoints.read_run(str(out)).run["layer_pairs"] == [[2, 1], [4, 2]]


def in_process_config(out_dir, *extra):
  # The test process has 8 CPU devices: a 4 × 2 mesh that divides the tiny batch of 4.
  return tconfig.resolve([*RUN, f"out_dir={out_dir}", "parallel.data=4", "parallel.tensor=2", *extra])


def snapshot(folder):
  return {os.path.relpath(os.path.join(d, f), folder): os.path.getsize(os.path.join(d, f))
          for d, _, files in os.walk(folder) for f in files}


def test_corrupt_checkpoints_fail_naming_the_paths_and_are_not_overwritten(tmp_path, reference):
  out = tmp_path / "corrupt"
  shutil.copytree(reference, out)
  step_dirs = [os.path.join(out, "checkpoints", str(step)) for step in (STEPS - 4, STEPS)]
  for step_dir in step_dirs:  # every checkpoint truncated: none passes verification (one alone is skipped)
    data_files = [os.path.join(d, f) for d, _, files in os.walk(os.path.join(step_dir, "params")) for f in files]
    biggest = max(data_files, key=os.path.getsize)
    with open(biggest, "r+b") as f:
      f.truncate(os.path.getsize(biggest) // 2)
  before = snapshot(out / "checkpoints")
  with pytest.raises(checkpoints.CheckpointError, match=f"no checkpoint passes verification: checkpoint "
                                                        f"{step_dirs[1]} is unreadable.*checkpoint {step_dirs[0]} is "
                                                        "unreadable.*nothing was written"):
    trainer.train(in_process_config(out, f"steps={STEPS}"))
  assert snapshot(out / "checkpoints") == before


def test_incompatible_or_unwanted_resume_is_refused(tmp_path, reference):
  out = tmp_path / "other"
  shutil.copytree(reference, out)
  step_dir = os.path.join(out, "checkpoints", str(STEPS))
  with pytest.raises(tconfig.ConfigError, match=rf"cannot resume from {step_dir}: its config differs in "
                                                 r"student.every: 2 -> 3"):
    trainer.train(in_process_config(out, "student.every=3"))
  with pytest.raises(tconfig.ConfigError, match="already holds checkpoints .latest step 16.; use resume=auto"):
    trainer.train(in_process_config(out, "resume=never"))
  # Reading a run into a model of another architecture names the mismatching parameters.
  wrong = {"student": {"embed": jax.ShapeDtypeStruct((256, 32), np.float32)}}
  with pytest.raises(checkpoints.CheckpointError, match=r"is incompatible with this run's params: .*'embed'.*shape "
                                                        r"\(49152, 32\) in the checkpoint, \(256, 32\) in the model"):
    checkpoints.read_params(str(out), wrong)
  with pytest.raises(checkpoints.CheckpointError, match="no checkpoints in"):
    checkpoints.read_run(str(tmp_path / "nothing"))


def test_evaluation_rebuilds_the_run_models(reference):
  teacher, student, info = model_sources.load_run_models(str(reference))
  assert (info.step, teacher.config.num_layers, student.config.num_layers) == (STEPS, 6, 3)
  # The random teacher is rebuilt bit-identically from its source; the student carries the trained weights.
  again = model_sources.load_teacher(info.config.teacher)
  for a, b in zip(jax.tree.leaves(nnx.state(teacher, nnx.Param)), jax.tree.leaves(nnx.state(again, nnx.Param))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  stored = checkpoints.read_params(str(reference))["student"]
  np.testing.assert_array_equal(np.asarray(student.embed[...]), stored["embed"])
  remat = model_sources.make_student(info.config.student, teacher, remat=True)
  assert remat.remat == "block" and student.remat == "none"
  ids = np.array([[5, 6, 7, 8]], np.int32)
  np.testing.assert_allclose(np.asarray(remat(ids).logits),
                             np.asarray(model_sources.make_student(info.config.student, teacher)(ids).logits))
