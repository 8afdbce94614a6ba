"""A shallower student initialised from a teacher's layers (DistilBERT-style layer selection)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import jax.numpy as jnp
from flax import nnx

from jaxlens.models.base import CausalLM
from jaxlens.models.build import build_model


def student_from_teacher(teacher: CausalLM, every: int = 3, offset: int = 0, *,
                         keep_layers: Sequence[int] | None = None) -> tuple[CausalLM, tuple[int, ...]]:
  """A copy of ``teacher`` that keeps only some blocks: student block j is teacher block ``kept[j]``.

  Kept blocks are ``offset, offset + every, …`` (< num_layers), or ``keep_layers`` when given. Embeddings,
  final norm and LM head are copied too; the student has the teacher's family, config (with
  ``num_layers = len(kept)``), dtypes and remat policy. Parameters are copied, never shared.
  E.g. SmolLM2's 30 layers with ``every=3`` give 10 blocks, teacher layers 0, 3, …, 27.

  Args:
    teacher: the model to copy.
    every: stride between kept teacher blocks (≥ 1).
    offset: first kept block (0 ≤ offset < num_layers).
    keep_layers: explicit increasing teacher block indices; overrides ``every``/``offset``.

  Returns:
    ``(student, kept)``: the new model and the kept teacher block indices.

  Raises:
    ValueError: on ``every < 1``, an offset out of range, or ``keep_layers`` that is empty, unsorted, has
      duplicates or indices outside ``[0, num_layers)``.
  """
  n = teacher.config.num_layers
  if keep_layers is None:
    if every < 1 or not 0 <= offset < n:
      raise ValueError(f"need every >= 1 and 0 <= offset < num_layers={n}, got {every=}, {offset=}")
    kept = tuple(range(offset, n, every))
  else:
    kept = tuple(int(i) for i in keep_layers)
    if not kept or list(kept) != sorted(set(kept)) or kept[0] < 0 or kept[-1] >= n:
      raise ValueError(f"keep_layers must be increasing, unique indices in [0, {n}), got {list(keep_layers)}")
  cfg = dataclasses.replace(teacher.config, num_layers=len(kept))
  abstract = nnx.eval_shape(lambda: build_model(cfg, rngs=nnx.Rngs(0), dtype=teacher.dtype,
                                                param_dtype=teacher.param_dtype, remat=teacher.remat))
  graphdef, state = nnx.split(abstract)
  teacher_leaves = {".".join(map(str, path)): var for path, var in nnx.to_flat_state(nnx.state(teacher))}
  for path, var in nnx.to_flat_state(state):
    name = ".".join(map(str, path))
    source = re.sub(r"^blocks\.(\d+)\.", lambda m: f"blocks.{kept[int(m.group(1))]}.", name)
    var.set_value(jnp.copy(teacher_leaves[source].get_value()))
  return nnx.merge(graphdef, state), kept
