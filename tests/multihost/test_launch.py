"""The local multi-process launcher: environment, collectives across processes, failure and signal handling."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from jaxlens.parallel import launch

SCRIPTS = pathlib.Path(__file__).parent / "scripts"
REPO = pathlib.Path(__file__).parents[2]


def _launch(*args: str, extra_env: dict[str, str] | None = None, **popen_kwargs) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-m", "jaxlens.parallel.launch", *args], cwd=REPO,
                          env={**os.environ, **(extra_env or {})}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, **popen_kwargs)


def test_process_env_replaces_the_device_count_and_sets_the_coordinates():
  env = launch.process_env({"XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_dump_to=/tmp/d", "A": "1"},
                           process_id=1, num_processes=2, devices_per_process=4, coordinator="127.0.0.1:1234")
  assert env["XLA_FLAGS"] == "--xla_dump_to=/tmp/d --xla_force_host_platform_device_count=4"
  assert (env["JAXLENS_COORDINATOR"], env["JAXLENS_NUM_PROCESSES"], env["JAXLENS_PROCESS_ID"]) == (
      "127.0.0.1:1234", "2", "1")
  assert env["JAX_PLATFORMS"] == "cpu" and env["A"] == "1"


@pytest.mark.parametrize("returncode, expected", [(3, "exit code 3"), (-9, "signal SIGKILL"),
                                                  (-15, "signal SIGTERM")])
def test_describe_exit(returncode, expected):
  assert launch.describe_exit(returncode) == expected


def test_rejects_an_empty_command():
  with pytest.raises(ValueError, match="no command"):
    launch.Launcher([], processes=2, devices_per_process=4)


def test_two_processes_sum_a_global_array_over_gloo():
  proc = _launch("--processes", "2", "--devices-per-process", "4", "--", str(SCRIPTS / "psum.py"))
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out
  # 0 + 1 + ... + 7 over the 8 devices of both processes, seen by each process.
  for pid in (0, 1):
    assert f"[p{pid}] processes=2 devices=8 sum=28.0" in out, out


def test_a_dying_process_stops_the_job_and_is_named():
  proc = _launch("--processes", "2", "--devices-per-process", "2", "--grace", "1", "--",
                 str(SCRIPTS / "fail_one.py"), extra_env={"FAIL_PROCESS": "1"})
  lines = _read_until(proc, lambda lines: any(line.startswith("[p1] ready") for line in lines))
  # Timed from process 1's "ready" (it dies right after it), so a loaded machine's slow JAX start-up is not counted:
  # what is measured is the launcher noticing the death and stopping process 0, blocked in a collective.
  failed_at = time.monotonic()
  out, _ = proc.communicate(timeout=120)
  out = "".join(lines) + out
  assert proc.returncode == 3, out
  assert "FAILED: process 1 exited with exit code 3" in out, out
  assert time.monotonic() - failed_at < 20, "process 0 (blocked in a collective) was not stopped promptly"


def _read_until(proc: subprocess.Popen, done) -> list[str]:
  """The launcher's output lines up to the first for which ``done(lines)`` holds (fails if the job ends before)."""
  lines = []
  while not done(lines):
    lines.append(proc.stdout.readline())
    assert lines[-1], "".join(lines)
  return lines


def test_sigterm_is_forwarded_to_every_process():
  proc = _launch("--processes", "2", "--", str(SCRIPTS / "wait_for_term.py"))
  lines = _read_until(proc, lambda lines: sum("ready" in line for line in lines) == 2)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=60)
  out = "".join(lines) + out
  assert proc.returncode == 128 + signal.SIGTERM, out
  assert "[p0] process 0 got SIGTERM" in out and "[p1] process 1 got SIGTERM" in out, out
