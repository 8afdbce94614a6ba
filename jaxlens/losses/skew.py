"""DistiLLM's skew KL divergences: KL against a mixture of teacher and student."""

import functools

import jax.numpy as jnp

from jaxlens.losses import per_token
from jaxlens.losses._pairwise import teacher_student_divergence
from jaxlens.losses.reduction import Reduction


def skew_kl(
    teacher_logits: jnp.ndarray,
    student_logits: jnp.ndarray,
    mask: jnp.ndarray | None = None,
    *,
    alpha: float = 0.1,
    temperature: float = 1.0,
    reduction: Reduction = "mean",
    scale_by_temperature_squared: bool = False,
    vocab_axis_name: str | None = None,
) -> jnp.ndarray:
  r"""Skew forward KL, KL(p ‖ αp + (1 − α)q) (DistiLLM's SKL).

  With p = softmax(z_T / τ) (teacher) and q = softmax(z_S / τ) (student), per token:

  .. math::

    \mathrm{SKL}^{(\alpha)}(p, q) = \sum_v p_v \left(\log p_v - \log\big(\alpha p_v + (1-\alpha) q_v\big)\right)

  The mixture's log is taken exactly with ``logaddexp``. Gradient flows through q inside the mixture (no
  stop-gradient, as in DistiLLM); it is stopped into ``teacher_logits``. This returns the true KL (DistiLLM's
  code returns the cross-entropy form, which has the same gradient). α = 0 gives :func:`forward_kl`, α = 1 gives
  0. Multiplied by τ² when ``scale_by_temperature_squared``.

  Args:
    teacher_logits: ``[..., V]`` teacher logits (any float dtype); no gradient flows into them.
    student_logits: ``[..., V]`` student logits, same shape.
    mask: ``None`` or bool/float ``[...]``; masked tokens contribute 0.
    alpha: teacher weight α ∈ [0, 1] in the mixture (a static Python number); DistiLLM uses 0.1.
    temperature: τ > 0, divides both sides' logits.
    reduction: ``"mean"`` (Σ m·d / max(Σ m, 1)), ``"sum"`` or ``"none"``.
    scale_by_temperature_squared: multiply by τ².
    vocab_axis_name: mesh axis sharding ``V`` inside ``jax.shard_map``, or ``None``.

  Returns:
    A float32 (float64 for float64 inputs) scalar, or ``[...]`` for ``reduction="none"``.

  Raises:
    TypeError: non-floating logits, a non-numeric mask, or a non-number α.
    ValueError: α ∉ [0, 1], mismatched shapes, a bad mask shape, an unknown reduction, or τ ≤ 0.

  Examples:
    >>> import jax.numpy as jnp
    >>> print(f"{float(skew_kl(jnp.array([3.0, 1.0, 0.0]), jnp.array([1.0, 2.0, 0.5]))):.4f}")
    0.6614

  References:
    Ko, Kim, Chen and Yun, `DistiLLM: Towards Streamlined Distillation for Large Language Models
    <https://arxiv.org/abs/2402.03898>`_, 2024.
  """
  return teacher_student_divergence(
      functools.partial(per_token.skew_kl, alpha=alpha, vocab_axis_name=vocab_axis_name),
      teacher_logits,
      student_logits,
      mask,
      temperature=temperature,
      reduction=reduction,
      scale_by_temperature_squared=scale_by_temperature_squared,
      vocab_axis_name=vocab_axis_name,
  )


def skew_reverse_kl(
    teacher_logits: jnp.ndarray,
    student_logits: jnp.ndarray,
    mask: jnp.ndarray | None = None,
    *,
    alpha: float = 0.1,
    temperature: float = 1.0,
    reduction: Reduction = "mean",
    scale_by_temperature_squared: bool = False,
    vocab_axis_name: str | None = None,
) -> jnp.ndarray:
  r"""Skew reverse KL, KL(q ‖ (1 − α)p + αq) (DistiLLM's SRKL).

  With p = softmax(z_T / τ) (teacher) and q = softmax(z_S / τ) (student), per token:

  .. math::

    \mathrm{SRKL}^{(\alpha)}(p, q) = \sum_v q_v \left(\log q_v - \log\big((1-\alpha) p_v + \alpha q_v\big)\right)

  Gradient flows through q itself and through q inside the mixture (no stop-gradient, as in DistiLLM; DistiLLM-2
  detaches the mixture's q instead, which this function does not do); it is stopped into ``teacher_logits``.
  α = 0 gives :func:`reverse_kl`, α = 1 gives 0. Multiplied by τ² when ``scale_by_temperature_squared``.

  Args:
    teacher_logits: ``[..., V]`` teacher logits (any float dtype); no gradient flows into them.
    student_logits: ``[..., V]`` student logits, same shape.
    mask: ``None`` or bool/float ``[...]``; masked tokens contribute 0.
    alpha: student weight α ∈ [0, 1] in the mixture (a static Python number); DistiLLM uses 0.1.
    temperature: τ > 0, divides both sides' logits.
    reduction: ``"mean"`` (Σ m·d / max(Σ m, 1)), ``"sum"`` or ``"none"``.
    scale_by_temperature_squared: multiply by τ².
    vocab_axis_name: mesh axis sharding ``V`` inside ``jax.shard_map``, or ``None``.

  Returns:
    A float32 (float64 for float64 inputs) scalar, or ``[...]`` for ``reduction="none"``.

  Raises:
    TypeError: non-floating logits, a non-numeric mask, or a non-number α.
    ValueError: α ∉ [0, 1], mismatched shapes, a bad mask shape, an unknown reduction, or τ ≤ 0.

  Examples:
    >>> import jax.numpy as jnp
    >>> print(f"{float(skew_reverse_kl(jnp.array([3.0, 1.0, 0.0]), jnp.array([1.0, 2.0, 0.5]))):.4f}")
    0.6959

  References:
    Ko, Kim, Chen and Yun, `DistiLLM: Towards Streamlined Distillation for Large Language Models
    <https://arxiv.org/abs/2402.03898>`_, 2024.
  """
  return teacher_student_divergence(
      functools.partial(per_token.skew_reverse_kl, alpha=alpha, vocab_axis_name=vocab_axis_name),
      teacher_logits,
      student_logits,
      mask,
      temperature=temperature,
      reduction=reduction,
      scale_by_temperature_squared=scale_by_temperature_squared,
      vocab_axis_name=vocab_axis_name,
  )
