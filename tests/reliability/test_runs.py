"""Runs that meet damage: a corrupt checkpoint, a diverging run, changed data, a torn metrics line, Ctrl-C, NaN
models in evaluation. Each case asserts the exact outcome (status, the one line, what is on disk)."""

from __future__ import annotations

import json
import os
import shutil
import signal

import jax
import numpy as np
import pytest
from conftest import RUN
from conftest import checkpoint_steps
from conftest import one_error
from conftest import run_cli
from conftest import small_examples
from conftest import write_jsonl

from jaxlens.eval import cli as eval_cli
from jaxlens.run import checkpoints
from jaxlens.run import config as tconfig
from jaxlens.run import model_sources
from jaxlens.train import metrics as tmetrics
from jaxlens.train import trainer


def params_file(run_dir, step) -> str:
  """The largest data file of a checkpoint's params item."""
  folder = os.path.join(run_dir, "checkpoints", str(step), "params")
  files = [os.path.join(d, f) for d, _, names in os.walk(folder) for f in names]
  return max(files, key=os.path.getsize)


def overwrite_middle(path, size=4096) -> bytes:
  """Overwrite ``size`` bytes in the middle of ``path`` with a pattern (same file size); returns the new bytes."""
  with open(path, "r+b") as f:
    total = os.path.getsize(path)
    f.seek(max(0, total // 2 - size // 2))
    f.write(bytes(range(256)) * (min(size, total) // 256))
  return open(path, "rb").read()


def test_base_run_on_a_tiny_file_trains_without_held_out(base_run):
  run_dir, out = base_run
  assert "note: 8 examples leave no usable held-out example at data.held_out_fraction=0.1: held-out evaluation " \
         "is off" in out
  assert checkpoint_steps(run_dir) == [2, 4]
  assert checkpoints.read_run(str(run_dir)).run["data_digest"]["examples"] == 8


def test_corrupt_newest_checkpoint_is_skipped_moved_aside_and_never_outlives_the_verified_one(
    base_run, copy_of, capsys, small_data):
  run_dir = copy_of(base_run[0])
  want = checkpoints.read_params(str(run_dir), step=4)
  corrupt = overwrite_middle(params_file(run_dir, 4))
  with pytest.raises(checkpoints.CheckpointError, match=r"checkpoints/4 (fails verification|is unreadable)"):
    checkpoints.read_params(str(run_dir), step=4)
  code, out, err = run_cli(capsys, f"data.source={small_data}", f"out_dir={run_dir}")
  assert code == 0, err[-3000:]
  notice = [line for line in out.splitlines() if "skipped checkpoint" in line]
  assert len(notice) == 1 and "checkpoints/4" in notice[0] and "resuming from the newest verified one, step 2" \
      in notice[0], out
  # The corrupt checkpoint is kept aside byte for byte; the run redid steps 3-4 bit-identically.
  rejected = os.path.join(run_dir, "rejected_checkpoints", "4")
  assert open(os.path.join(rejected, os.path.relpath(params_file(base_run[0], 4), os.path.join(
      base_run[0], "checkpoints", "4"))), "rb").read() == corrupt
  assert checkpoint_steps(run_dir) == [2, 4]
  for got, ref in zip(jax.tree.leaves(checkpoints.read_params(str(run_dir))), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(got, ref)


def test_no_verified_checkpoint_is_one_error_and_nothing_moves(base_run, copy_of, capsys, small_data):
  run_dir = copy_of(base_run[0])
  for step in (2, 4):
    overwrite_middle(params_file(run_dir, step))
  code, _, err = run_cli(capsys, f"data.source={small_data}", f"out_dir={run_dir}")
  line = one_error(err)
  assert code == 1 and "no checkpoint passes verification" in line and "checkpoints/4" in line \
      and "checkpoints/2" in line, line
  assert checkpoint_steps(run_dir) == [2, 4] and not os.path.exists(os.path.join(run_dir, "rejected_checkpoints"))


def test_a_non_finite_state_is_never_saved(base_run, copy_of):
  run_dir = copy_of(base_run[0])
  params = jax.tree.map(np.array, checkpoints.read_params(str(run_dir)))
  params["student"]["embed"][0, 0] = np.nan
  manager = checkpoints.open_manager(str(run_dir))
  with pytest.raises(checkpoints.NonFiniteError, match=r"state of step 6 holds NaN or inf in 1 array\(s\): "
                                                        r"params\['student'\]\['embed'\]; not saved"):
    checkpoints.save(manager, 6, params=params, opt_state={}, train={"step": np.int32(6)}, data={}, config={},
                     run={})
  manager.close()
  assert checkpoint_steps(run_dir) == [2, 4]


def test_changed_data_is_refused_unless_allowed(base_run, copy_of, capsys, small_data):
  run_dir = copy_of(base_run[0])
  changed = small_examples(9)[1:]  # the same file, edited in place: one example replaced
  original = open(small_data).read()
  try:
    write_jsonl(small_data, changed)
    line = one_error(run_cli(capsys, f"data.source={small_data}", f"out_dir={run_dir}")[2])
    assert f"cannot resume from {run_dir}/checkpoints/4: the data of '{small_data}' changed since it was saved " \
        "(contents: 8 -> 8 examples); set resume_data_changed=true" in line, line
    code, out, err = run_cli(capsys, f"data.source={small_data}", f"out_dir={run_dir}", "resume_data_changed=true")
    assert code == 0 and "note: resuming on changed data (contents; resume_data_changed=true)" in out, err
  finally:
    with open(small_data, "w") as f:
      f.write(original)


def test_torn_metrics_line_is_dropped_and_ctrl_c_saves(base_run, copy_of, capsys, small_data, monkeypatch):
  run_dir = copy_of(base_run[0])
  shutil.rmtree(run_dir / "checkpoints" / "4")  # as if killed after the step-4 record, before its checkpoint
  with open(run_dir / "metrics.jsonl", "a") as f:
    f.write('{"step": 5, "loss/to')
  log = tmetrics.MetricsLogger.log

  def log_then_interrupt(self, step, values, prefix=""):
    record = log(self, step, values, prefix)
    if step == 3:
      os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C during step 3: the loop saves step 3 and stops
    return record
  monkeypatch.setattr(tmetrics.MetricsLogger, "log", log_then_interrupt)
  code, out, err = run_cli(capsys, f"data.source={small_data}", f"out_dir={run_dir}")
  assert code == 0, err[-3000:]
  assert "metrics.jsonl: dropped 1 unreadable line(s) (line 4; a write cut short by a killed run)" in out, out
  assert "stop requested (SIGINT): saved step 3, exiting" in out and "interrupted (SIGINT) at step 3" in out, out
  assert checkpoint_steps(run_dir) == [2, 3]
  assert [json.loads(line)["step"] for line in open(run_dir / "metrics.jsonl")] == [1, 2, 3]


def test_second_ctrl_c_stops_at_once():
  # Whatever this process started with (Python's default handler, or SIG_IGN when launched as a background job
  # of a non-interactive shell) is what the run puts back.
  before = signal.getsignal(signal.SIGINT)
  with trainer._Stop() as stop:
    os.kill(os.getpid(), signal.SIGINT)
    assert stop.requested and stop.reason == "SIGINT"
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
  assert signal.getsignal(signal.SIGINT) is before


def test_diverging_run_skips_non_finite_steps_and_stops_with_the_good_checkpoint(tmp_path, capsys, small_data):
  run_dir = tmp_path / "nan"
  code, out, err = run_cli(capsys, f"data.source={small_data}", f"out_dir={run_dir}", "optim.lr=1e30", "steps=8",
                           "save_every=1", "log_every=1")
  line = one_error(err)
  assert code == 1 and line == (
      f"error: training diverged: 3 consecutive steps had a non-finite loss or gradients (seen at step 4; "
      f"max_nonfinite_steps=3); they were not applied and nothing was saved after them; last good checkpoint: "
      f"{run_dir}/checkpoints/1 (lower optim.lr or raise optim.warmup_steps)"), line
  assert "step 2: not saved: its last 1 step(s) had a non-finite loss or gradients" in out, out
  assert checkpoint_steps(run_dir) == [1]
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(checkpoints.read_params(str(run_dir))))
  records = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
  assert [(r["step"], r["loss/total"] is None, r["skipped_steps"]) for r in records] == [
      (1, False, 0), (2, True, 1), (3, True, 2), (4, True, 3)]


def nan_checkpoint(run_dir) -> None:
  """Add step 6: the step-4 checkpoint with one NaN parameter, written without a digest (as jaxlens did before
  digests existed, when a diverged run saved NaN weights)."""
  import orbax.checkpoint as ocp
  manager = checkpoints.open_manager(str(run_dir))
  info = checkpoints.read_run(str(run_dir))
  params = jax.tree.map(np.array, checkpoints.read_params(str(run_dir)))
  params["student"]["embed"][3, 3] = np.nan
  items = {"params": ocp.args.StandardSave(params), "data": ocp.args.JsonSave({}),
           "config": ocp.args.JsonSave(tconfig.to_dict(info.config)), "run": ocp.args.JsonSave(info.run)}
  manager.save(6, args=ocp.args.Composite(**items))
  manager.wait_until_finished()
  manager.close()


def test_eval_refuses_non_finite_student_and_teacher(base_run, copy_of, capsys, monkeypatch):
  run_dir = copy_of(base_run[0])
  nan_checkpoint(run_dir)
  code = eval_cli.main([f"students=s={run_dir}", f"out={run_dir}/eval"])
  line = one_error(capsys.readouterr()[1])
  assert code == 2 and "checkpoints/6 holds NaN or inf in 1 array(s): params['student']['embed']" in line, line
  # A teacher with a NaN weight (the run's step-4 student is fine).
  load_teacher = model_sources.load_teacher

  def nan_teacher(spec, **kwargs):
    teacher = load_teacher(spec, **kwargs)
    teacher.embed[...] = teacher.embed[...].at[0, 0].set(np.inf)
    return teacher
  monkeypatch.setattr(model_sources, "load_teacher", nan_teacher)
  code = eval_cli.main([f"students=s={base_run[0]}", f"out={run_dir}/eval2"])
  line = one_error(capsys.readouterr()[1])
  assert code == 2 and "the teacher (random) has NaN or inf parameters in 1 array(s): ['embed']" in line, line
