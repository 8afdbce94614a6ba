"""Parameter sharding: one table from the logical axes annotated on every parameter to mesh axes.

Every parameter is created with an ``axes`` annotation (one logical name per dimension, see
:func:`jaxlens.models.layers.param`). :class:`ShardingRules` maps those names to the mesh axes ``"fsdp"`` and
``"tensor"`` (Megatron-style: heads, MLP width and vocabulary split over ``tensor``, the hidden dimension over
``fsdp``); :func:`param_partition_specs` turns a model into a ``PartitionSpec`` tree shaped like
``nnx.state(model, nnx.Param)`` and :func:`param_shardings` into the ``NamedSharding`` s on a mesh. Blocks are a
list (not a scanned stack), so there is no ``layers`` axis.
"""

from __future__ import annotations

import dataclasses

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec


@dataclasses.dataclass(frozen=True)
class ShardingRules:
  """Logical parameter axis → mesh axis name (None = replicated along that dimension)."""

  vocab: str | None = "tensor"  # embedding rows / LM-head columns
  embed: str | None = "fsdp"  # the hidden size D
  heads: str | None = "tensor"  # query heads H
  kv_heads: str | None = "tensor"  # key/value heads G
  head_dim: str | None = None  # K
  mlp: str | None = "tensor"  # MLP width F

  def mesh_axis(self, logical: str | None) -> str | None:
    """The mesh axis of logical axis ``logical`` (None stays None)."""
    return None if logical is None else getattr(self, logical)


def param_partition_specs(model: nnx.Module, rules: ShardingRules = ShardingRules(),
                          mesh: Mesh | None = None) -> nnx.State:
  """``PartitionSpec`` of every parameter, as a tree shaped like ``nnx.state(model, nnx.Param)``.

  Args:
    model: a model whose parameters carry ``axes`` annotations.
    rules: the logical → mesh axis table.
    mesh: if given, mesh axes absent from it, or whose size does not divide the dimension (e.g. SmolLM2's 3 KV
      heads on 4 tensor devices), are dropped, i.e. that dimension is replicated.

  Returns:
    An ``nnx.State`` with a ``PartitionSpec`` at every parameter (use with
    ``jax.tree.map(lambda s: NamedSharding(mesh, s), specs)``).

  Raises:
    ValueError: if a parameter lacks the ``axes`` annotation, or a spec uses one mesh axis twice.
  """
  def spec(path, var):
    axes = getattr(var, "axes", None)
    if axes is None:
      raise ValueError(f"parameter {'.'.join(map(str, path))} has no 'axes' annotation")
    names = []
    for logical, size in zip(axes, var.get_value().shape, strict=True):
      name = rules.mesh_axis(logical)
      if mesh is not None and name is not None and (name not in mesh.shape or size % mesh.shape[name]):
        name = None
      names.append(name)
    used = [n for n in names if n is not None]
    if len(used) != len(set(used)):
      raise ValueError(f"parameter {'.'.join(map(str, path))} axes {axes} map to a repeated mesh axis: {names}")
    return PartitionSpec(*names)

  state = nnx.state(model, nnx.Param)
  return nnx.from_flat_state([(path, spec(path, var)) for path, var in nnx.to_flat_state(state)])


def param_shardings(model: nnx.Module, mesh: Mesh, rules: ShardingRules = ShardingRules()) -> dict:
  """The ``NamedSharding`` of every parameter on ``mesh`` (:func:`param_partition_specs` with ``mesh``), as a pure
  dict shaped like ``nnx.to_pure_dict(nnx.state(model, nnx.Param))``; also for an ``nnx.eval_shape`` model."""
  specs = nnx.to_pure_dict(param_partition_specs(model, rules, mesh))
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, PartitionSpec))


def shard_params(model: nnx.Module, mesh: Mesh, rules: ShardingRules = ShardingRules()) -> None:
  """Place ``model``'s parameters on ``mesh`` per :func:`param_shardings` (in place)."""
  state = nnx.state(model, nnx.Param)
  nnx.replace_by_pure_dict(state, jax.device_put(nnx.to_pure_dict(state), param_shardings(model, mesh, rules)))
  nnx.update(model, state)
