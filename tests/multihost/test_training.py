"""train.py across processes, simulated with 2 local processes × 4 CPU devices (gloo) against 1 process × 8.

Every run is the ``tiny`` preset for 6 steps with a checkpoint after every step, so parameters can be compared
at any step. The reference runs are module-scoped and shared by the tests; all runs share one persistent
compilation cache, so only the first run of each process layout compiles.

Tolerance for 2 × 4 against 1 × 8: not bit-identical. The gradient all-reduce over the 8 devices sums in
another order when it crosses processes through gloo than inside one XLA process; after 3 and 6 steps
parameters differ by at most 4e-7 (float32, |θ| ≲ 1), so the tests use atol = 2e-6, rtol = 1e-5. Runs with the same
process layout (a resumed run against an uninterrupted one) are compared bit for bit.
"""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import filelock
import jax
import numpy as np
import pytest

from jaxlens.run import checkpoints
from jaxlens.run import model_sources
from jaxlens.run import config as tconfig
from jaxlens.train.trainer import build_data

REPO = pathlib.Path(__file__).parents[2]
SCRIPTS = pathlib.Path(__file__).parent / "scripts"
STEPS = 6
TRAIN_ARGS = ["tiny", f"steps={STEPS}", "batch_size=8", "save_every=1", f"keep_checkpoints={STEPS}",
              "eval_every=0", "progress=false"]
ATOL, RTOL = 2e-6, 1e-5
RUN_TIMEOUT = 600


class Job:
  """A training job (1 process, or 2 through the launcher) whose output is collected by a thread."""

  def __init__(self, processes: int, out_dir: pathlib.Path, cache: pathlib.Path):
    train = [str(REPO / "train.py"), *TRAIN_ARGS, f"out_dir={out_dir}"]
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    if processes == 1:
      command = [sys.executable, *train]
      env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    else:
      command = [sys.executable, "-m", "jaxlens.parallel.launch", "--processes", str(processes), "--devices-per-process",
                 str(8 // processes), "--grace", "2", "--", *train]
    self.proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)
    self.lines: list[str] = []
    self._reader = threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")),
                                    daemon=True)
    self._reader.start()

  @property
  def output(self) -> str:
    return "".join(self.lines)

  def wait(self) -> int:
    try:
      code = self.proc.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      raise
    self._reader.join(timeout=10)
    return code

  def finish(self) -> str:
    """Wait for a successful end; returns the output."""
    code = self.wait()
    assert code == 0, self.output[-6000:]
    return self.output


def params_at(run_dir: pathlib.Path, step: int) -> dict[str, np.ndarray]:
  """The student parameters of checkpoint ``step``, read in this process (1 process, whatever saved them)."""
  params = checkpoints.read_params(str(run_dir), step=step)
  return {jax.tree_util.keystr(path): x for path, x in jax.tree_util.tree_flatten_with_path(params)[0]}


def assert_params_equal(a: dict, b: dict, **tolerance) -> None:
  assert a.keys() == b.keys()
  for key in a:
    if tolerance:
      np.testing.assert_allclose(a[key], b[key], err_msg=key, **tolerance)
    else:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def steps_saved(run_dir: pathlib.Path) -> list[int]:
  folder = run_dir / "checkpoints"
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def copy_checkpoint(run_dir: pathlib.Path, step: int, new_dir: pathlib.Path) -> pathlib.Path:
  """A new run folder whose only checkpoint is ``run_dir``'s ``step`` (so training resumes from it)."""
  (new_dir / "checkpoints").mkdir(parents=True)
  shutil.copytree(run_dir / "checkpoints" / str(step), new_dir / "checkpoints" / str(step))
  return new_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """``runs("one")`` / ``runs("two")``: reference runs (1 × 8 / 2 × 4 devices), started on first use;
  ``runs.job(processes, out_dir)`` starts another; ``runs.root`` is a fresh folder for this module's runs.

  The reference runs and the compilation cache live in the folder shared by all pytest-xdist workers and are
  built once under a file lock, so tests spread over workers do not repeat them.
  """
  base = tmp_path_factory.getbasetemp()
  shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "jaxlens-multihost"
  shared.mkdir(exist_ok=True)
  root = tmp_path_factory.mktemp("multihost")

  def job(processes: int, out_dir: pathlib.Path) -> Job:
    return Job(processes, out_dir, shared / "compilation_cache")

  def get(name: str) -> pathlib.Path:
    out_dir = shared / name
    with filelock.FileLock(str(shared / f"{name}.lock")):
      if not (out_dir / "done").exists():
        shutil.rmtree(out_dir, ignore_errors=True)
        job({"one": 1, "two": 2}[name], out_dir).finish()
        (out_dir / "done").touch()
    return out_dir
  get.root, get.job = root, job
  return get


def test_two_processes_reach_the_parameters_of_one_process(runs):
  one, two = runs("one"), runs("two")
  assert steps_saved(two) == list(range(1, STEPS + 1))
  for step in (1, 3):
    assert_params_equal(params_at(two, step), params_at(one, step), atol=ATOL, rtol=RTOL)
  # Metrics come from process 0 only: one record per step, no duplicates; same losses as 1 process.
  def losses(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss/total"] for r in records if "loss/total" in r}
  one_losses, two_losses = losses(one), losses(two)
  assert sorted(two_losses) == list(range(1, STEPS + 1))
  np.testing.assert_allclose([two_losses[s] for s in range(1, 4)], [one_losses[s] for s in range(1, 4)],
                             rtol=1e-5, atol=1e-7)


def test_processes_read_disjoint_rows_whose_union_is_the_global_batch():
  num_batches = 3
  out = subprocess.run([sys.executable, "-m", "jaxlens.parallel.launch", "--processes", "2", "--",
                        str(SCRIPTS / "read_batches.py"), str(num_batches), "tiny", "batch_size=8"],
                       cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT)
  assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
  local = {}
  for line in out.stdout.splitlines():
    if m := re.match(r"\[p(\d)\] (\{.*\})$", line):
      record = json.loads(m.group(2))
      assert record["process"] == int(m.group(1))
      local[record["process"], record["batch"]] = record["rows"]
  assert len(local) == 2 * num_batches, out.stdout[-4000:]
  reference, _, _ = build_data(tconfig.resolve(["tiny", "batch_size=8"]), vocab_size=49152)  # 1 process
  for index in range(num_batches):
    rows0, rows1 = local[0, index], local[1, index]
    assert len(rows0) == len(rows1) == 4
    assert not {tuple(r) for r in rows0} & {tuple(r) for r in rows1}
    np.testing.assert_array_equal(np.array(rows0 + rows1), next(reference)["input_ids"])


def wait_for_checkpoint(job: Job, out_dir: pathlib.Path, step: int) -> None:
  deadline = time.monotonic() + RUN_TIMEOUT
  while step not in steps_saved(out_dir):
    assert job.proc.poll() is None, job.output[-6000:]
    assert time.monotonic() < deadline, f"no checkpoint {step} in time"
    time.sleep(0.05)


def process_pids(job: Job) -> list[int]:
  pids = [int(p) for p in re.findall(r"started process \d \(pid (\d+)\)", job.output)]
  assert len(pids) == 2, job.output[-3000:]
  return pids


def test_preempted_then_killed_run_resumes_to_the_uninterrupted_parameters(runs):
  out_dir = runs.root / "interrupted"
  # 1. SIGTERM to process 1 only (a preemption notice reaching one host): JAX's preemption sync point makes
  #    both processes save the same step and exit cleanly.
  job = runs.job(2, out_dir)
  wait_for_checkpoint(job, out_dir, 1)
  os.kill(process_pids(job)[1], signal.SIGTERM)
  assert job.wait() == 0, job.output[-6000:]
  assert "training interrupted (SIGTERM) at step" in job.output
  preempted_at = max(steps_saved(out_dir))
  assert preempted_at < STEPS, "the run ended before the SIGTERM: nothing was interrupted"
  # 2. Restarted, then both processes SIGKILLed after the next checkpoint: the launcher names the failure.
  job = runs.job(2, out_dir)
  wait_for_checkpoint(job, out_dir, preempted_at + 1)
  for pid in process_pids(job):
    os.kill(pid, signal.SIGKILL)
  assert job.wait() != 0
  assert re.search(r"FAILED: process \d exited with signal SIGKILL", job.output), job.output[-3000:]
  assert max(steps_saved(out_dir)) < STEPS, "the run ended before the kill: nothing was interrupted"
  # 3. Restarted again: it resumes from the last complete checkpoint and ends bit-identical to the run that was
  #    never interrupted (same process layout, so the same reduction order).
  resumed = runs.job(2, out_dir).finish()
  assert "resumed from step" in resumed
  assert_params_equal(params_at(out_dir, STEPS), params_at(runs("two"), STEPS))


def test_checkpoints_move_between_one_and_two_processes(runs):
  one, two = runs("one"), runs("two")
  # 2 processes -> 1: this test process restores what both processes wrote, and so does evaluation's loader.
  assert_params_equal(params_at(two, STEPS), params_at(one, STEPS), atol=ATOL, rtol=RTOL)
  _, student, info = model_sources.load_run_models(str(two))
  assert info.step == STEPS
  np.testing.assert_array_equal(np.asarray(student.embed[...]), params_at(two, STEPS)["['student']['embed']"])
  # 1 process -> 2: a 2-process run resumes from a 1-process checkpoint (parameters, optimizer state, step,
  # RNG and data position) and ends where the 2-process run without a break ended.
  one_to_two = runs.root / "one_to_two"
  resumed = runs.job(2, copy_checkpoint(one, 3, one_to_two)).finish()
  assert "resumed from step 3" in resumed
  assert_params_equal(params_at(one_to_two, STEPS), params_at(two, STEPS), atol=ATOL, rtol=RTOL)


def test_a_batch_that_does_not_split_over_the_processes_is_refused(tmp_path):
  # tensor=8 spans both processes: the batch would be replicated, but each process only has its own rows.
  out = subprocess.run([sys.executable, "-m", "jaxlens.parallel.launch", "--processes", "2", "--", str(REPO / "train.py"),
                        "tiny", "batch_size=8", "parallel.data=1", "parallel.tensor=8", f"out_dir={tmp_path}"],
                       cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT)
  assert out.returncode != 0
  assert "data × fsdp = 1 batch shards cannot be split over 2 processes" in out.stdout, out.stdout[-3000:]
