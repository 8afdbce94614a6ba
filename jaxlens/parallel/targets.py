"""Accelerator targets to plan for: a chip catalogue (HBM, peak FLOP/s), slice and topology names, and the
compile-only devices of a TPU topology (libtpu, no TPU needed). Knows no model; :mod:`jaxlens.train.plan` compiles
the train step for these devices.

TOPOLOGY is a libtpu topology name (``v5e:2x2``, ``v4:2x2x2``, ``v5p:2x4x4``, ``v6e:4x4``), a slice name
(``v5e-8``, ``v5e-64``, ``v6e-16``; ``v4-N`` / ``v5p-N`` count TensorCores, two per chip), or ``h100xN``: an
*estimate* for N × H100-80GB, the same program compiled for N TPU v5p chips (XLA's TPU buffer assignment as a
proxy for XLA:GPU) with the H100's memory and peak FLOP/s.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import re

from jax.experimental import topologies

GiB = 1024**3
# libtpu set-up for compiling on a machine without TPUs: no Cloud TPU metadata-server queries, a local "worker",
# and no /tmp/libtpu_lockfile (which would let only one process at a time load libtpu).
_COMPILE_ONLY_ENV = {"TPU_SKIP_MDS_QUERY": "1", "TPU_WORKER_HOSTNAMES": "localhost",
                     "TPU_ACCELERATOR_TYPE": "v5litepod-4", "ALLOW_MULTIPLE_LIBTPU_LOAD": "1"}


@dataclasses.dataclass(frozen=True)
class Chip:
  """One accelerator chip: its HBM and dense bf16 peak."""

  name: str
  hbm_bytes: int
  peak_flops: float  # dense bf16 FLOP/s per chip
  cores_per_chip: int = 1  # TensorCores a ``vN-M`` slice name counts (v4, v5p: 2)


CHIPS = {
    "v4": Chip("TPU v4", 32 * GiB, 275e12, cores_per_chip=2),
    "v5e": Chip("TPU v5e", 16 * GiB, 197e12),
    "v5p": Chip("TPU v5p", 95 * GiB, 459e12, cores_per_chip=2),
    "v6e": Chip("TPU v6e", 32 * GiB, 918e12),
    "h100": Chip("NVIDIA H100 SXM 80GB", 80 * 10**9, 989e12),
}
# Slice chip count -> libtpu topology, for 2-D (v5e, v6e) and 3-D torus (v4, v5p) generations.
_LAYOUTS_2D = {4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
_LAYOUTS_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8", 256: "4x8x8",
               512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"}


@dataclasses.dataclass(frozen=True)
class Target:
  """What to plan for: a chip type, how many, and the libtpu topology the program is compiled for.

  Attributes:
    name: as given on the command line.
    chip: the chip whose HBM and peak the report uses.
    num_chips: chips in the slice (= devices of the mesh).
    topology: the libtpu topology name compiled for (for ``h100xN``, the v5p proxy).
    estimate: True when the compile is a proxy for another platform (GPUs).
  """

  name: str
  chip: Chip
  num_chips: int
  topology: str
  estimate: bool = False


def parse_target(name: str) -> Target:
  """``"v5e:2x4"``, ``"v5e-8"``, ``"v5p-32"`` or ``"h100x8"`` → :class:`Target`.

  Raises:
    ValueError: on an unknown generation, a malformed name or a chip count with no standard layout.
  """
  lowered = name.strip().lower()
  if m := re.fullmatch(r"h100x(\d+)", lowered):
    n = int(m.group(1))
    if n not in _LAYOUTS_3D:
      raise ValueError(f"{name!r}: the v5p proxy needs a GPU count in {sorted(_LAYOUTS_3D)}")
    return Target(name, CHIPS["h100"], n, f"v5p:{_LAYOUTS_3D[n]}", estimate=True)
  if m := re.fullmatch(r"(v4|v5e|v5p|v6e):(\d+(?:x\d+)+)", lowered):
    gen, dims = m.group(1), m.group(2)
    if len(dims.split("x")) != (3 if CHIPS[gen].cores_per_chip == 2 else 2):
      raise ValueError(f"{name!r}: {gen} topologies are {'3' if CHIPS[gen].cores_per_chip == 2 else '2'}-D, "
                       f"e.g. {gen}:{'2x2x1' if CHIPS[gen].cores_per_chip == 2 else '2x2'}")
    return Target(name, CHIPS[gen], math.prod(int(d) for d in dims.split("x")), lowered)
  if m := re.fullmatch(r"(v4|v5e|v5p|v6e)-(\d+)", lowered):
    gen, count = m.group(1), int(m.group(2))
    chip = CHIPS[gen]
    chips, rest = divmod(count, chip.cores_per_chip)
    layouts = _LAYOUTS_3D if chip.cores_per_chip == 2 else _LAYOUTS_2D
    if rest or chips not in layouts:
      raise ValueError(f"{name!r}: no standard {gen} slice of {count} "
                       f"{'TensorCores' if chip.cores_per_chip == 2 else 'chips'}; known: "
                       f"{[f'{gen}-{c * chip.cores_per_chip}' for c in layouts]}")
    return Target(name, chip, chips, f"{gen}:{layouts[chips]}")
  raise ValueError(f"unknown target {name!r}: use a libtpu topology (v5e:2x2, v5p:2x2x2), a slice name "
                   f"(v5e-8, v5p-32) or h100xN; generations: v4, v5e, v5p, v6e")


def libtpu_available() -> bool:
  """Whether the ``libtpu`` package (the ``[tpu]`` extra) is importable."""
  return importlib.util.find_spec("libtpu") is not None


def target_devices(target: Target) -> list:
  """The compile-only devices of ``target``'s topology (no TPU needed; libtpu must be installed).

  libtpu's metadata-server look-ups and its one-process lock file are switched off (they only matter on
  Cloud TPU VMs) unless the environment already sets those variables.

  Raises:
    RuntimeError: if libtpu is not installed (install the ``[tpu]`` extra).
  """
  if not libtpu_available():
    raise RuntimeError('planning compiles with libtpu, which is not installed: pip install -e ".[tpu]"')
  for key, value in _COMPILE_ONLY_ENV.items():
    os.environ.setdefault(key, value)
  gen = target.topology.split(":")[0]
  kwargs = {"chip_config_name": "megacore"} if gen == "v4" else {}
  devices = topologies.get_topology_desc(platform="tpu", topology_name=target.topology, **kwargs).devices
  if len(devices) != target.num_chips:
    raise RuntimeError(f"libtpu gave {len(devices)} devices for {target.topology}, expected {target.num_chips}")
  return list(devices)
