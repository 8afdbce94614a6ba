"""Generalised (skewed) Jensen–Shannon divergence, JSD_β, as in GKD/TRL and DistillLens."""

import functools

import jax.numpy as jnp

from jaxlens.losses import per_token
from jaxlens.losses._pairwise import teacher_student_divergence
from jaxlens.losses.reduction import Reduction


def jsd(
    teacher_logits: jnp.ndarray,
    student_logits: jnp.ndarray,
    mask: jnp.ndarray | None = None,
    *,
    beta: float = 0.5,
    mixture_eps: float = 0.0,
    temperature: float = 1.0,
    reduction: Reduction = "mean",
    scale_by_temperature_squared: bool = False,
    vocab_axis_name: str | None = None,
) -> jnp.ndarray:
  r"""Generalised Jensen–Shannon divergence JSD_β between teacher p and student q (DistillLens's lens loss).

  With p = softmax(z_T / τ), q = softmax(z_S / τ) and the mixture m = β·p + (1 − β)·q, per token:

  .. math::

    \mathrm{JSD}_\beta(p, q) = \beta\,\mathrm{KL}(p \,\|\, m) + (1 - \beta)\,\mathrm{KL}(q \,\|\, m),
    \qquad \log m = \operatorname{logaddexp}(\log\beta + \log p,\ \log(1-\beta) + \log q)

  This is TRL's ``generalized_jsd_loss`` / the GKD paper's convention (β weighs the *teacher* in the mixture).
  β = ½ is the symmetric JSD, bounded by ln 2. ``log m`` is exact (no eps) by default; ``mixture_eps=1e-8``
  reproduces DistillLens's ``log(m + 1e-8)``. Gradient flows through q and through q inside m; it is stopped into
  ``teacher_logits``. Multiplied by τ² when ``scale_by_temperature_squared``. The per-token value is clamped at 0
  (float rounding leaves ~−1e-8 for nearly equal p and q) in value only: the gradient is the formula's.

  Endpoints: JSD_β → 0 continuously as β → 0 or β → 1 (m becomes q or p), and JSD_β/β → KL(p‖q) as β → 0.
  TRL instead *switches* to KL(p‖q) at β = 0 and KL(q‖p) at β = 1, a discontinuity; to get TRL's endpoint
  values call :func:`forward_kl` / :func:`reverse_kl`.

  Args:
    teacher_logits: ``[..., V]`` teacher logits (any float dtype); no gradient flows into them.
    student_logits: ``[..., V]`` student logits, same shape.
    mask: ``None`` or bool/float ``[...]``; masked tokens contribute 0.
    beta: teacher weight β ∈ [0, 1] in the mixture (a static Python number).
    mixture_eps: ε ≥ 0; if > 0 the mixture's log is log(m + ε) (DistillLens parity), else exact.
    temperature: τ > 0, divides both sides' logits.
    reduction: ``"mean"`` (Σ m·d / max(Σ m, 1)), ``"sum"`` or ``"none"``.
    scale_by_temperature_squared: multiply by τ².
    vocab_axis_name: mesh axis sharding ``V`` inside ``jax.shard_map``, or ``None``.

  Returns:
    A float32 (float64 for float64 inputs) scalar, or ``[...]`` for ``reduction="none"``.

  Raises:
    TypeError: non-floating logits, a non-numeric mask, or a non-number β.
    ValueError: β ∉ [0, 1], ε < 0, mismatched shapes, a bad mask shape, an unknown reduction, or τ ≤ 0.

  Examples:
    >>> import jax.numpy as jnp
    >>> print(f"{float(jsd(jnp.array([3.0, 1.0, 0.0]), jnp.array([1.0, 2.0, 0.5]))):.4f}")
    0.2047

  References:
    Agarwal et al., `On-Policy Distillation of Language Models: Learning from Self-Generated Mistakes
    <https://arxiv.org/abs/2306.13649>`_, 2024.
    Dhakal et al., `DistillLens: Symmetric Knowledge Distillation Through Logit Lens
    <https://arxiv.org/abs/2602.13567>`_, 2026.
  """
  return teacher_student_divergence(
      functools.partial(per_token.jsd, beta=beta, mixture_eps=mixture_eps, vocab_axis_name=vocab_axis_name),
      teacher_logits,
      student_logits,
      mask,
      temperature=temperature,
      reduction=reduction,
      scale_by_temperature_squared=scale_by_temperature_squared,
      vocab_axis_name=vocab_axis_name,
  )
