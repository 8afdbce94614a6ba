"""Run one command as N local JAX processes: a multi-host pod simulated on one machine.

``python -m jaxlens.parallel.launch --processes 2 --devices-per-process 4 -- train.py preset=tiny steps=3``

starts the command once per process with the environment that :func:`jaxlens.parallel.distributed.initialize`
reads (``JAXLENS_COORDINATOR=127.0.0.1:PORT`` on a free port, ``JAXLENS_NUM_PROCESSES``,
``JAXLENS_PROCESS_ID``), ``JAX_PLATFORMS=cpu`` and ``XLA_FLAGS=--xla_force_host_platform_device_count=K``,
so every process owns K CPU devices and the processes talk through gloo collectives over the loopback address.
A command whose first word ends in ``.py`` runs under this Python interpreter.

Each output line is prefixed with ``[p<id>]``. If a process exits non-zero (or is killed by a signal), the
launcher stops the others (SIGTERM, then SIGKILL after ``--grace`` seconds) and exits non-zero with a message
naming the process and its exit code or signal. SIGTERM and SIGINT sent to the launcher are forwarded to every
process (each runs in its own session, so a terminal's Ctrl-C reaches them once, through the launcher); if the
launcher itself is killed, the kernel kills the processes (``PR_SET_PDEATHSIG``).

Real clusters need no launcher: every TPU VM worker, SLURM task or MPI rank runs the same command and
``jax.distributed.initialize()`` finds its peers from the cluster's environment (see ``docs/launch.md``).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
_PR_SET_PDEATHSIG = 1
_LINE_PIECES = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


def free_port(host: str = "127.0.0.1") -> int:
  """Returns a TCP port on ``host`` that was free a moment ago (the OS picks it)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind((host, 0))
    return s.getsockname()[1]


def process_env(base: dict[str, str], *, process_id: int, num_processes: int, devices_per_process: int,
                coordinator: str) -> dict[str, str]:
  """The environment of simulated process ``process_id``.

  Args:
    base: the launcher's environment; kept, except that any device-count flag in ``XLA_FLAGS`` is replaced.
    process_id: this process's id in ``[0, num_processes)``.
    num_processes: how many processes the job has.
    devices_per_process: CPU devices each process owns (``--xla_force_host_platform_device_count``).
    coordinator: ``host:port`` of process 0's coordination service.

  Returns:
    A new environment dict.
  """
  other_flags = [f for f in base.get("XLA_FLAGS", "").split() if not f.startswith(_DEVICE_COUNT_FLAG)]
  return {
      **base,
      "JAXLENS_COORDINATOR": coordinator,
      "JAXLENS_NUM_PROCESSES": str(num_processes),
      "JAXLENS_PROCESS_ID": str(process_id),
      "JAX_PLATFORMS": "cpu",
      "XLA_FLAGS": " ".join([*other_flags, f"{_DEVICE_COUNT_FLAG}={devices_per_process}"]),
      "PYTHONUNBUFFERED": "1",
  }


def describe_exit(returncode: int) -> str:
  """``"exit code 3"`` or ``"signal SIGKILL"`` for a ``Popen.returncode`` (negative = killed by a signal)."""
  if returncode < 0:
    try:
      return f"signal {signal.Signals(-returncode).name}"
    except ValueError:
      return f"signal {-returncode}"
  return f"exit code {returncode}"


def _die_with_parent() -> None:
  """Runs in the child before exec: the kernel sends it SIGKILL when the launcher dies (Linux)."""
  if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _pump(stream, prefix: bytes, out, lock) -> None:
  """Copies ``stream`` to ``out``, writing ``prefix`` at the start of every line (``\\r`` ends one too)."""
  at_line_start = True
  while chunk := stream.read1(65536):
    pieces = []
    for piece in _LINE_PIECES.findall(chunk):
      if at_line_start:
        pieces.append(prefix)
      pieces.append(piece)
      at_line_start = piece.endswith((b"\n", b"\r"))
    with lock:
      out.write(b"".join(pieces))
      out.flush()
  if not at_line_start:
    with lock:
      out.write(b"\n")
      out.flush()


class Launcher:
  """Starts, watches and stops the N processes of one simulated multi-host job."""

  def __init__(self, command: Sequence[str], *, processes: int, devices_per_process: int,
               host: str = "127.0.0.1", port: int | None = None, grace: float = 10.0):
    if not command:
      raise ValueError("no command to launch: put it after '--', e.g. -- train.py preset=tiny")
    if processes < 1 or devices_per_process < 1:
      raise ValueError(f"processes={processes} and devices_per_process={devices_per_process} must be >= 1")
    self.command = [sys.executable, *command] if command[0].endswith(".py") else list(command)
    self.processes = processes
    self.devices_per_process = devices_per_process
    self.coordinator = f"{host}:{port or free_port(host)}"
    self.grace = grace
    self._children: list[subprocess.Popen] = []
    self._stop_signal: int | None = None
    self._lock = threading.RLock()  # re-entrant: the signal handler may interrupt a locked _say

  def _say(self, message: str) -> None:
    with self._lock:
      sys.stdout.buffer.write(f"[launch] {message}\n".encode())
      sys.stdout.buffer.flush()

  def _forward(self, signum, frame) -> None:
    del frame
    self._stop_signal = signum
    self._say(f"got {signal.Signals(signum).name}; forwarding it to every process")
    self._signal_all(signum)

  def _signal_all(self, signum: int) -> None:
    for child in self._children:
      if child.poll() is None:
        try:
          os.killpg(child.pid, signum)
        except ProcessLookupError:
          pass

  def _first_failure(self) -> int | None:
    """The id of the first process that has exited non-zero, or None."""
    return next((i for i, c in enumerate(self._children) if c.poll() not in (None, 0)), None)

  def _stop_all(self) -> None:
    """SIGTERM to every running process, then SIGKILL to those still alive after the grace period."""
    self._signal_all(signal.SIGTERM)
    deadline = time.monotonic() + self.grace
    while any(c.poll() is None for c in self._children) and time.monotonic() < deadline:
      time.sleep(0.05)
    self._signal_all(signal.SIGKILL)
    for child in self._children:
      child.wait()

  def run(self) -> int:
    """Runs the job to completion.

    Returns:
      0 if every process exited 0; otherwise the first failing process's exit code, or 128 + signal number
      when it was killed by a signal (or when the launcher was stopped by SIGTERM/SIGINT).
    """
    self._say(f"{self.processes} process(es) x {self.devices_per_process} CPU device(s), coordinator "
              f"{self.coordinator}: {' '.join(self.command)}")
    previous = {s: signal.signal(s, self._forward) for s in (signal.SIGTERM, signal.SIGINT)}
    pumps = []
    try:
      for pid in range(self.processes):
        env = process_env(dict(os.environ), process_id=pid, num_processes=self.processes,
                          devices_per_process=self.devices_per_process, coordinator=self.coordinator)
        child = subprocess.Popen(self.command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
        self._children.append(child)
        self._say(f"started process {pid} (pid {child.pid})")
        pump = threading.Thread(target=_pump, args=(child.stdout, f"[p{pid}] ".encode(), sys.stdout.buffer,
                                                    self._lock), daemon=True)
        pump.start()
        pumps.append(pump)
      failed = None
      while failed is None and any(c.poll() is None for c in self._children):
        time.sleep(0.05)
        failed = self._first_failure()
      failed = self._first_failure() if failed is None else failed
      if failed is not None and self._stop_signal is None:
        code = self._children[failed].returncode
        self._say(f"process {failed} failed with {describe_exit(code)}; stopping the other processes")
      self._stop_all()
    finally:
      for s, handler in previous.items():
        signal.signal(s, handler)
    for pump in pumps:
      pump.join(timeout=5)
    if self._stop_signal is not None:
      self._say(f"stopped by {signal.Signals(self._stop_signal).name}")
      return 128 + self._stop_signal
    if failed is None:
      self._say(f"all {self.processes} process(es) finished")
      return 0
    code = self._children[failed].returncode
    self._say(f"FAILED: process {failed} exited with {describe_exit(code)}")
    return code if code > 0 else 128 - code


def main(argv: Sequence[str] | None = None) -> int:
  """``python -m jaxlens.parallel.launch [options] -- command ...``; returns the exit status."""
  argv = list(sys.argv[1:] if argv is None else argv)
  split = argv.index("--") if "--" in argv else len(argv)
  parser = argparse.ArgumentParser(
      prog="python -m jaxlens.parallel.launch", usage="%(prog)s [options] -- COMMAND [ARG ...]",
      description="Run COMMAND as N local JAX processes (a simulated multi-host job on CPU devices).")
  parser.add_argument("--processes", type=int, default=2, help="number of processes (default 2)")
  parser.add_argument("--devices-per-process", type=int, default=4, help="CPU devices per process (default 4)")
  parser.add_argument("--host", default="127.0.0.1", help="coordinator address (default 127.0.0.1)")
  parser.add_argument("--port", type=int, default=None, help="coordinator port (default: a free port)")
  parser.add_argument("--grace", type=float, default=10.0,
                      help="seconds between SIGTERM and SIGKILL when stopping the processes (default 10)")
  args = parser.parse_args(argv[:split])
  try:
    launcher = Launcher(argv[split + 1:], processes=args.processes, devices_per_process=args.devices_per_process,
                        host=args.host, port=args.port, grace=args.grace)
  except ValueError as e:
    parser.error(str(e))
  return launcher.run()


if __name__ == "__main__":
  sys.exit(main())
