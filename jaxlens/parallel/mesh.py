"""The device mesh: ``data × fsdp × tensor`` axes, and the shardings of parameters and batches on it.

Axis meaning (the names every ``PartitionSpec`` in jaxlens uses):

- ``data``: pure data parallelism: parameters replicated, the batch split.
- ``fsdp``: fully-sharded data parallelism: the batch *and* the parameters split (ZeRO-3 style).
- ``tensor``: tensor (model) parallelism: parameters split along heads / hidden / vocabulary.

The batch axis is sharded over ``("data", "fsdp")``; parameter shardings come from the model
(:func:`jaxlens.models.param_shardings`) and name ``fsdp`` / ``tensor`` only; the training state's are decided in
:mod:`jaxlens.train.state`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def resolve_mesh_shape(data: int, fsdp: int, tensor: int, num_devices: int) -> tuple[int, int, int]:
  """The ``(data, fsdp, tensor)`` sizes, with at most one ``-1`` filled so the product is ``num_devices``.

  Args:
    data, fsdp, tensor: axis sizes (positive) or ``-1`` for "every remaining device".
    num_devices: the number of devices the mesh must cover exactly.

  Returns:
    the three positive sizes; their product equals ``num_devices``.

  Raises:
    ValueError: on a size that is 0 or below -1, more than one ``-1``, or a product that does not equal
      ``num_devices`` (the message names the sizes and the device count).
  """
  sizes = {"data": data, "fsdp": fsdp, "tensor": tensor}
  bad = {k: v for k, v in sizes.items() if not isinstance(v, int) or v == 0 or v < -1}
  if bad:
    raise ValueError(f"mesh axis sizes must be positive or -1, got {bad}")
  free = [k for k, v in sizes.items() if v == -1]
  if len(free) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {free}")
  fixed = math.prod(v for v in sizes.values() if v != -1)
  if free:
    if num_devices % fixed:
      raise ValueError(f"mesh {sizes}: the fixed axes ({fixed} devices) do not divide the {num_devices} devices")
    sizes[free[0]] = num_devices // fixed
  if math.prod(sizes.values()) != num_devices:
    raise ValueError(f"mesh data×fsdp×tensor = {sizes['data']}×{sizes['fsdp']}×{sizes['tensor']} = "
                     f"{math.prod(sizes.values())} devices, but {num_devices} are available "
                     f"(set parallel.data/fsdp/tensor so their product is {num_devices}, or one of them to -1)")
  return sizes["data"], sizes["fsdp"], sizes["tensor"]


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A :class:`~jax.sharding.Mesh` with axes ``("data", "fsdp", "tensor")`` over ``devices`` (default: all).

  Devices are laid out with :func:`jax.experimental.mesh_utils.create_device_mesh` when it can (topology-aware
  on TPU/GPU), so ``tensor`` is the fastest-varying axis.

  Raises:
    ValueError: see :func:`resolve_mesh_shape`.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = resolve_mesh_shape(data, fsdp, tensor, len(devices))
  try:
    from jax.experimental import mesh_utils
    grid = mesh_utils.create_device_mesh(shape, devices=devices)
  except (ValueError, NotImplementedError, AssertionError):
    grid = np.asarray(devices).reshape(shape)
  return Mesh(grid, MESH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """``[B, ...]`` arrays split over ``("data", "fsdp")`` on their first axis, replicated otherwise."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  """Fully replicated on ``mesh`` (scalars, RNG keys, step counters)."""
  return NamedSharding(mesh, P())


def batch_divisor(mesh: Mesh) -> int:
  """How many shards the batch axis is split into (``data × fsdp``); batch sizes must be multiples of it."""
  return mesh.shape["data"] * mesh.shape["fsdp"]

