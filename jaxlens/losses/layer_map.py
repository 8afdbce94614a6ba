r"""Which teacher layer is matched with which student layer in the logit-lens loss.

Indices point into the Hugging Face ``hidden_states`` tuple of each model: 0 is the embedding output, k (1 ≤ k < L)
the residual stream after k blocks (before the final norm) and L the output after the final norm, so a model with L
layers has valid indices 0..L. DistillLens matches N = 5 pairs uniformly by relative depth, k·L/(N + 1) for
k = 1..N, leaving the last layer to the output-KD term; its scripts round that differently per model (floor for
LLaMA-7B, round for TinyLlama), hence one rounding rule per side in :func:`uniform_layer_map`.
"""

from __future__ import annotations

import dataclasses
import fractions
import math
from typing import Literal, Sequence

import jax
import jax.numpy as jnp

Rounding = Literal["floor", "round", "exact"]
_ROUNDINGS = ("floor", "round", "exact")


@dataclasses.dataclass(frozen=True)
class LayerMap:
  """Validated layer pairs (teacher index i ↔ student index i) into each model's ``hidden_states``.

  Attributes:
    teacher_layers: indices into the teacher's ``hidden_states`` (0 = embeddings, ``teacher_num_layers`` = final).
    student_layers: indices into the student's ``hidden_states``, same length.
    teacher_num_layers: L_T, the teacher's number of blocks (its ``hidden_states`` has L_T + 1 entries).
    student_num_layers: L_S, the student's number of blocks.

  Raises:
    ValueError: empty or unequal-length lists, non-integer indices, layer counts < 1, or an index outside
      [0, num_layers] of its model.
  """

  teacher_layers: tuple[int, ...]
  student_layers: tuple[int, ...]
  teacher_num_layers: int
  student_num_layers: int

  def __post_init__(self):
    for side in ("teacher", "student"):
      num_layers = getattr(self, f"{side}_num_layers")
      if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"{side}_num_layers must be an int ≥ 1, got {num_layers!r}")
      layers = tuple(getattr(self, f"{side}_layers"))
      for index in layers:
        if isinstance(index, bool) or not isinstance(index, int):
          raise ValueError(f"{side}_layers must hold ints, got {layers!r}")
        if not 0 <= index <= num_layers:
          raise ValueError(f"{side} layer index {index} is outside [0, {num_layers}] (hidden_states of a "
                           f"{num_layers}-layer model: 0 = embeddings, {num_layers} = final normed output)")
      object.__setattr__(self, f"{side}_layers", layers)
    if not self.teacher_layers:
      raise ValueError("a LayerMap needs at least one pair")
    if len(self.teacher_layers) != len(self.student_layers):
      raise ValueError(f"teacher_layers {self.teacher_layers} and student_layers {self.student_layers} must have "
                       "equal lengths (entry i of each forms pair i)")

  @property
  def num_pairs(self) -> int:
    """P, the number of layer pairs."""
    return len(self.teacher_layers)

  def gather(self, teacher_hidden_states: Sequence[jax.Array],
             student_hidden_states: Sequence[jax.Array]) -> tuple[jax.Array, jax.Array]:
    """Stacks the paired hidden states: ``([P, ...teacher], [P, ...student])``.

    Args:
      teacher_hidden_states: the teacher's HF-convention tuple of L_T + 1 arrays ``[B, T, Dt]``.
      student_hidden_states: the student's tuple of L_S + 1 arrays ``[B, T, Ds]``.

    Returns:
      ``([P, B, T, Dt], [P, B, T, Ds])``.

    Raises:
      ValueError: if a tuple's length is not its model's ``num_layers + 1``.
    """
    for side, states, num_layers in (("teacher", teacher_hidden_states, self.teacher_num_layers),
                                     ("student", student_hidden_states, self.student_num_layers)):
      if len(states) != num_layers + 1:
        raise ValueError(f"{side} hidden_states has {len(states)} entries; a {num_layers}-layer model has "
                         f"{num_layers + 1} (embeddings + one per block)")
    return (jnp.stack([teacher_hidden_states[i] for i in self.teacher_layers]),
            jnp.stack([student_hidden_states[j] for j in self.student_layers]))


def _uniform_indices(num_layers: int, num_pairs: int, rounding: Rounding, side: str) -> tuple[int, ...]:
  indices = []
  for k in range(1, num_pairs + 1):
    depth = fractions.Fraction(k * num_layers, num_pairs + 1)
    if rounding == "exact" and depth.denominator != 1:
      raise ValueError(f"{side}: {k}·{num_layers}/{num_pairs + 1} = {float(depth):.3f} is not an integer; "
                       "use rounding 'floor' or 'round'")
    indices.append(math.floor(depth + fractions.Fraction(1, 2)) if rounding == "round" else math.floor(depth))
  return tuple(indices)


def uniform_layer_map(
    teacher_num_layers: int,
    student_num_layers: int,
    num_pairs: int = 5,
    *,
    teacher_rounding: Rounding = "round",
    student_rounding: Rounding = "round",
) -> LayerMap:
  r"""Pairs at uniform relative depth, DistillLens's rule (the final layer is left to the output-KD term).

  .. math::

     t_k = R_T\!\left(\frac{k\,L_T}{N + 1}\right), \qquad s_k = R_S\!\left(\frac{k\,L_S}{N + 1}\right),
     \qquad k = 1, \dots, N,

  with R ∈ {floor, round (half up), exact (must already be an integer)}. The reference lists come out as:
  GPT-2 XL (48) → base (12): t = [8, 16, 24, 32, 40], s = [2, 4, 6, 8, 10]; → medium (24): s = [4, 8, 12, 16, 20];
  LLaMA-7B (32, floor) → TinyLlama (22, round): t = [5, 10, 16, 21, 26], s = [4, 7, 11, 15, 18];
  Qwen2.5-3B (36) → 1.5B (28), N = 4, round: t = [7, 14, 22, 29], s = [6, 11, 17, 22].

  Args:
    teacher_num_layers: L_T ≥ 1.
    student_num_layers: L_S ≥ 1.
    num_pairs: N ≥ 1.
    teacher_rounding: R_T.
    student_rounding: R_S.

  Returns:
    The validated :class:`LayerMap`.

  Raises:
    ValueError: N < 1, an unknown rounding, an inexact depth under ``"exact"``, or an invalid map.

  Examples:
    >>> layer_map = uniform_layer_map(32, 22, teacher_rounding="floor")
    >>> layer_map.teacher_layers, layer_map.student_layers
    ((5, 10, 16, 21, 26), (4, 7, 11, 15, 18))
  """
  if isinstance(num_pairs, bool) or not isinstance(num_pairs, int) or num_pairs < 1:
    raise ValueError(f"num_pairs must be an int ≥ 1, got {num_pairs!r}")
  for name, rounding in (("teacher_rounding", teacher_rounding), ("student_rounding", student_rounding)):
    if rounding not in _ROUNDINGS:
      raise ValueError(f"{name} must be one of {_ROUNDINGS}, got {rounding!r}")
  for name, num_layers in (("teacher_num_layers", teacher_num_layers), ("student_num_layers", student_num_layers)):
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
      raise ValueError(f"{name} must be an int ≥ 1, got {num_layers!r}")
  return LayerMap(
      teacher_layers=_uniform_indices(teacher_num_layers, num_pairs, teacher_rounding, "teacher"),
      student_layers=_uniform_indices(student_num_layers, num_pairs, student_rounding, "student"),
      teacher_num_layers=teacher_num_layers,
      student_num_layers=student_num_layers,
  )


def construction_layer_map(
    kept_blocks: Sequence[int],
    teacher_num_layers: int,
    num_pairs: int = 5,
    *,
    student_rounding: Rounding = "round",
) -> LayerMap:
  r"""Pairs that follow how a layer-dropped student was built: student block j is teacher block ``kept[j]``.

  Student hidden state s (after s student blocks) has been through teacher blocks ``kept[0..s-1]``; it is
  paired with the teacher hidden state after the same last block:

  .. math::

     s_k = R_S\!\left(\frac{k\,L_S}{N + 1}\right), \qquad t_k = \mathrm{kept}[s_k - 1] + 1,
     \qquad k = 1, \dots, N

  (s = 0, the embeddings, would pair with teacher 0). For SmolLM2's 30 blocks kept every third
  (0, 3, …, 27), s = [2, 3, 5, 7, 8] pairs with t = [4, 7, 13, 19, 22], where the uniform map gives
  [5, 10, 15, 20, 25]: about three blocks further on.

  Args:
    kept_blocks: the student's teacher blocks, increasing (``student_from_teacher``'s ``kept``).
    teacher_num_layers: L_T.
    num_pairs: N ≥ 1.
    student_rounding: R_S.

  Returns:
    The validated :class:`LayerMap` (L_S = ``len(kept_blocks)``).

  Raises:
    ValueError: N < 1, blocks that are not increasing indices in [0, L_T), or an invalid map.

  Examples:
    >>> m = construction_layer_map(range(0, 30, 3), 30)
    >>> m.teacher_layers, m.student_layers
    ((4, 7, 13, 19, 22), (2, 3, 5, 7, 8))
  """
  kept = [int(b) for b in kept_blocks]
  if not kept or kept != sorted(set(kept)) or kept[0] < 0 or kept[-1] >= teacher_num_layers:
    raise ValueError(f"kept_blocks must be increasing, unique teacher blocks in [0, {teacher_num_layers}), "
                     f"got {kept}")
  student = uniform_layer_map(teacher_num_layers, len(kept), num_pairs, student_rounding=student_rounding)
  teacher = tuple(kept[s - 1] + 1 if s > 0 else 0 for s in student.student_layers)
  return LayerMap(teacher, student.student_layers, teacher_num_layers, len(kept))
