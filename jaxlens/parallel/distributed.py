"""Multi-process start-up: one place that calls :func:`jax.distributed.initialize`.

A TPU pod slice or a multi-node GPU job runs one process per host; each must call
``jax.distributed.initialize`` before any JAX computation. Settings come from the arguments (the training
config's ``parallel.*`` group) or, when those are unset, from the environment variables
``JAXLENS_COORDINATOR`` (``host:port``), ``JAXLENS_NUM_PROCESSES`` and ``JAXLENS_PROCESS_ID``. With none of
them, ``mode="auto"`` stays single-process, and ``mode="on"`` lets JAX detect the cluster itself (TPU
metadata, SLURM, Open MPI).
"""

from __future__ import annotations

import os

import jax

ENV_COORDINATOR = "JAXLENS_COORDINATOR"
ENV_NUM_PROCESSES = "JAXLENS_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXLENS_PROCESS_ID"
MODES = ("auto", "on", "off")


def _env_int(name: str) -> int | None:
  raw = os.environ.get(name, "")
  if not raw:
    return None
  try:
    return int(raw)
  except ValueError:
    raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def initialize(mode: str = "auto", coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
  """Start the multi-process runtime if this job is multi-process; idempotent.

  Args:
    mode: ``"auto"``: initialise only when a coordinator or ``num_processes > 1`` is given (argument or
      environment); ``"on"``: always initialise (arguments left ``None`` are auto-detected by JAX);
      ``"off"``: never.
    coordinator_address: ``"host:port"`` of process 0 (empty/None = environment or auto-detection).
    num_processes: total number of processes (None or 0 = environment or auto-detection).
    process_id: this process's index in ``[0, num_processes)`` (None or -1 = environment or auto-detection).

  Returns:
    True if the multi-process runtime is (now) initialised.

  Raises:
    ValueError: on an unknown ``mode``, a non-integer environment value, or a ``process_id`` outside
      ``[0, num_processes)``.
  """
  if mode not in MODES:
    raise ValueError(f"parallel.distributed must be one of {MODES}, got {mode!r}")
  if jax.distributed.is_initialized():
    return True
  if mode == "off":
    return False
  coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
  num_processes = num_processes or _env_int(ENV_NUM_PROCESSES)
  process_id = process_id if process_id is not None and process_id >= 0 else _env_int(ENV_PROCESS_ID)
  if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
    raise ValueError(f"process_id {process_id} is outside [0, {num_processes})")
  if mode == "auto" and coordinator_address is None and (num_processes or 1) <= 1:
    return False
  if (num_processes or 1) > 1 and os.environ.get("JAX_PLATFORMS", "") == "cpu":
    # CPU-only multi-process runs (tests, simulation) need gloo for cross-process collectives. Checked from the
    # environment, not jax.devices(): touching a backend before initialize() would make it fail.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id)
  return True


def is_main_process() -> bool:
  """True on process 0, the only one that logs, prints and draws progress bars."""
  return jax.process_index() == 0
