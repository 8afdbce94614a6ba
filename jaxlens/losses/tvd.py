"""Total variation distance between teacher and student next-token distributions."""

import functools

import jax.numpy as jnp

from jaxlens.losses import per_token
from jaxlens.losses._pairwise import teacher_student_divergence
from jaxlens.losses.reduction import Reduction


def tvd(
    teacher_logits: jnp.ndarray,
    student_logits: jnp.ndarray,
    mask: jnp.ndarray | None = None,
    *,
    temperature: float = 1.0,
    reduction: Reduction = "mean",
    scale_by_temperature_squared: bool = False,
    vocab_axis_name: str | None = None,
) -> jnp.ndarray:
  r"""Total variation distance ½‖p − q‖₁ between teacher p and student q, in [0, 1].

  With p = softmax(z_T / τ) and q = softmax(z_S / τ), per token:

  .. math::

    \mathrm{TVD}(p, q) = \tfrac12 \sum_v \lvert p_v - q_v \rvert

  Gradient is stopped into ``teacher_logits``. Multiplied by τ² when ``scale_by_temperature_squared``. The per-token
  value is clamped to [0, 1] (float rounding reaches 1 + 2e-7 for disjoint supports) in value only: the gradient is
  the formula's.

  Args:
    teacher_logits: ``[..., V]`` teacher logits (any float dtype); no gradient flows into them.
    student_logits: ``[..., V]`` student logits, same shape.
    mask: ``None`` or bool/float ``[...]``; masked tokens contribute 0.
    temperature: τ > 0, divides both sides' logits.
    reduction: ``"mean"`` (Σ m·d / max(Σ m, 1)), ``"sum"`` or ``"none"``.
    scale_by_temperature_squared: multiply by τ².
    vocab_axis_name: mesh axis sharding ``V`` inside ``jax.shard_map``, or ``None``.

  Returns:
    A float32 (float64 for float64 inputs) scalar, or ``[...]`` for ``reduction="none"``.

  Raises:
    TypeError: non-floating logits or a non-numeric mask.
    ValueError: mismatched shapes, a bad mask shape, an unknown reduction, or τ ≤ 0.

  Examples:
    >>> import jax.numpy as jnp
    >>> print(f"{float(tvd(jnp.array([3.0, 1.0, 0.0]), jnp.array([1.0, 2.0, 0.5]))):.4f}")
    0.6126

  References:
    Wen, Li, Du and Mou, `f-Divergence Minimization for Sequence-Level Knowledge Distillation
    <https://arxiv.org/abs/2307.15190>`_, 2023.
  """
  return teacher_student_divergence(
      functools.partial(per_token.tvd, vocab_axis_name=vocab_axis_name),
      teacher_logits,
      student_logits,
      mask,
      temperature=temperature,
      reduction=reduction,
      scale_by_temperature_squared=scale_by_temperature_squared,
      vocab_axis_name=vocab_axis_name,
  )
