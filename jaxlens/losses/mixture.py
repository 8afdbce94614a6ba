"""A fixed mixture of forward and reverse KL: w·KL(p‖q) + (1 − w)·KL(q‖p)."""

import functools

import jax.numpy as jnp

from jaxlens.losses import per_token
from jaxlens.losses._pairwise import teacher_student_divergence
from jaxlens.losses.reduction import Reduction


def mix(
    teacher_logits: jnp.ndarray,
    student_logits: jnp.ndarray,
    mask: jnp.ndarray | None = None,
    *,
    weight: float = 0.5,
    temperature: float = 1.0,
    reduction: Reduction = "mean",
    scale_by_temperature_squared: bool = False,
    vocab_axis_name: str | None = None,
) -> jnp.ndarray:
  r"""Fixed FKL/RKL mixture: the same weight w on every token (AKL's per-token weights, held constant).

  With p = softmax(z_T / τ) (teacher), q = softmax(z_S / τ) (student), per token:

  .. math::

    \mathrm{Mix}_w(p, q) = w\,\mathrm{KL}(p \,\|\, q) + (1 - w)\,\mathrm{KL}(q \,\|\, p)

  w = 1 is :func:`forward_kl`, w = 0 :func:`reverse_kl`, w = ½ half the symmetric "FKL+RKL" sum. It is the
  control for :func:`adaptive_kl`: AKL with its per-token head weight replaced by one constant (e.g. AKL's mean
  head weight measured on the same run), which separates the head–tail weighting from the mere share of
  reverse KL. Gradient flows through q in both terms; it is stopped into ``teacher_logits``. Multiplied by τ²
  when ``scale_by_temperature_squared``.

  Args:
    teacher_logits: ``[..., V]`` teacher logits (any float dtype); no gradient flows into them.
    student_logits: ``[..., V]`` student logits, same shape.
    mask: ``None`` or bool/float ``[...]``; masked tokens contribute 0.
    weight: w ∈ [0, 1], the forward-KL share (a static Python number).
    temperature: τ > 0, divides both sides' logits.
    reduction: ``"mean"`` (Σ m·d / max(Σ m, 1)), ``"sum"`` or ``"none"``.
    scale_by_temperature_squared: multiply by τ².
    vocab_axis_name: mesh axis sharding ``V`` inside ``jax.shard_map``, or ``None``.

  Returns:
    A float32 (float64 for float64 inputs) scalar, or ``[...]`` for ``reduction="none"``.

  Raises:
    TypeError: non-floating logits, a non-numeric mask, or a non-number ``weight``.
    ValueError: ``weight`` outside [0, 1], mismatched shapes, a bad mask, an unknown reduction, or τ ≤ 0.

  Examples:
    >>> import jax.numpy as jnp
    >>> t, s = jnp.array([3.0, 1.0, 0.0]), jnp.array([1.0, 2.0, 0.5])
    >>> print(f"{float(mix(t, s, weight=0.25)):.4f}")  # 0.25 · 0.8469 + 0.75 · 0.9417
    0.9180
  """
  return teacher_student_divergence(
      functools.partial(per_token.mix, weight=weight, vocab_axis_name=vocab_axis_name),
      teacher_logits,
      student_logits,
      mask,
      temperature=temperature,
      reduction=reduction,
      scale_by_temperature_squared=scale_by_temperature_squared,
      vocab_axis_name=vocab_axis_name,
  )
