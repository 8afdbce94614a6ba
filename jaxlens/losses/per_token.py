r"""Per-token divergences on log-probabilities: the arithmetic every divergence of the family and eval share.

Each function maps the teacher's and the student's log-probabilities ``log_p, log_q [..., V]`` (already
log-softmaxed, float32 or float64; ``V`` local when ``vocab_axis_name`` shards it inside ``jax.shard_map``) to
per-token values ``[...]``. No checks of shapes, no temperature, no stop-gradient, no mask: the logits-level
functions of :mod:`jaxlens.losses` (``forward_kl(teacher_logits, student_logits, mask, ...)`` …) add those and are
thin wrappers over these. Callers that already hold both log-softmaxes (the alignment metrics of ``jaxlens.eval``)
call these directly and pay for one log-softmax per side instead of one per divergence.

Conventions: ``-inf`` entries are exact zeros of a distribution (0·log 0 = 0; padded vocabulary); a NaN
entry, or a row with no finite entry, yields NaN — never 0. JSD is clamped at 0 and TV to [0, 1] in value only
(straight-through: the gradient is that of the unclamped formula), which removes float rounding of order 1e-8
outside the true range and leaves NaN as NaN.

.. math::

   \mathrm{FKL} = \sum_v p_v \log\frac{p_v}{q_v}, \quad
   \mathrm{RKL} = \sum_v q_v \log\frac{q_v}{p_v}, \quad
   \mathrm{JSD}_\beta = \beta\,\mathrm{KL}(p\|m) + (1-\beta)\,\mathrm{KL}(q\|m),\ m = \beta p + (1-\beta) q,

   \mathrm{SKL}^{(\alpha)} = \mathrm{KL}(p \,\|\, \alpha p + (1-\alpha) q), \quad
   \mathrm{SRKL}^{(\alpha)} = \mathrm{KL}(q \,\|\, (1-\alpha) p + \alpha q), \quad
   \mathrm{TV} = \tfrac12 \sum_v |p_v - q_v|,

   g_\text{head} = \sum_{v \in H} |p_v - q_v|, \quad g_\text{tail} = \sum_{v \notin H} |p_v - q_v|, \quad
   w_h = \frac{g_\text{head}}{g_\text{head} + g_\text{tail} + \epsilon}, \quad
   \mathrm{AKL} = \operatorname{sg}(w_h)\,\mathrm{FKL} + \operatorname{sg}(w_t)\,\mathrm{RKL}, \quad
   \mathrm{Mix}_w = w\,\mathrm{FKL} + (1 - w)\,\mathrm{RKL}

with H the teacher's AKL head set (:func:`jaxlens.losses.head_set.head_mask`).
"""

import math
from typing import NamedTuple

import jax.numpy as jnp
from jax import lax

from jaxlens.losses._checks import check_non_negative
from jaxlens.losses._checks import check_unit_interval
from jaxlens.losses._vocab import kl_divergence
from jaxlens.losses._vocab import log_mixture
from jaxlens.losses._vocab import vocab_sum
from jaxlens.losses.head_set import HeadMethod
from jaxlens.losses.head_set import HeadRule
from jaxlens.losses.head_set import check_head_args
from jaxlens.losses.head_set import head_mask


def clamp_value(x: jnp.ndarray, low: float, high: float | None = None) -> jnp.ndarray:
  """``x`` clamped to [low, high] in value, with the gradient of ``x`` (straight-through); NaN stays NaN."""
  clamped = jnp.maximum(x, low) if high is None else jnp.clip(x, low, high)
  return x + lax.stop_gradient(clamped - x)


def forward_kl(log_p: jnp.ndarray, log_q: jnp.ndarray, *, vocab_axis_name: str | None = None) -> jnp.ndarray:
  r"""KL(p ‖ q) = Σ_v p_v (log p_v − log q_v) per token: ``[..., V] -> [...]``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> log_p, log_q = jax.nn.log_softmax(jnp.array([3.0, 1.0, 0.0])), jax.nn.log_softmax(jnp.array([1.0, 2.0, 0.5]))
    >>> print(f"{float(forward_kl(log_p, log_q)):.4f}")
    0.8469
  """
  return kl_divergence(log_p, log_q, vocab_axis_name)


def reverse_kl(log_p: jnp.ndarray, log_q: jnp.ndarray, *, vocab_axis_name: str | None = None) -> jnp.ndarray:
  r"""KL(q ‖ p) = Σ_v q_v (log q_v − log p_v) per token (teacher p still first): ``[..., V] -> [...]``."""
  return kl_divergence(log_q, log_p, vocab_axis_name)


def jsd(
    log_p: jnp.ndarray,
    log_q: jnp.ndarray,
    *,
    beta: float = 0.5,
    mixture_eps: float = 0.0,
    vocab_axis_name: str | None = None,
) -> jnp.ndarray:
  r"""JSD_β = β·KL(p ‖ m) + (1 − β)·KL(q ‖ m), m = β·p + (1 − β)·q, per token, ≥ 0.

  ``log m = logaddexp(log β + log p, log(1 − β) + log q)`` exactly, or ``log(m + ε)`` for ``mixture_eps`` ε > 0.
  β (the teacher's weight) must be a Python number in [0, 1]; an endpoint drops its term.
  """
  beta = check_unit_interval("beta", beta)
  check_non_negative("mixture_eps", mixture_eps)
  log_m = log_mixture(log_p, log_q, beta)
  if mixture_eps > 0:
    log_m = jnp.logaddexp(log_m, math.log(mixture_eps))
  value = jnp.zeros(log_p.shape[:-1], log_p.dtype)
  if beta > 0.0:
    value = value + beta * kl_divergence(log_p, log_m, vocab_axis_name)
  if beta < 1.0:
    value = value + (1.0 - beta) * kl_divergence(log_q, log_m, vocab_axis_name)
  return clamp_value(value, 0.0)


def skew_kl(
    log_p: jnp.ndarray, log_q: jnp.ndarray, *, alpha: float = 0.1, vocab_axis_name: str | None = None
) -> jnp.ndarray:
  r"""KL(p ‖ αp + (1 − α)q) per token (DistiLLM's SKL); α a Python number in [0, 1]."""
  alpha = check_unit_interval("alpha", alpha)
  return kl_divergence(log_p, log_mixture(log_p, log_q, alpha), vocab_axis_name)


def skew_reverse_kl(
    log_p: jnp.ndarray, log_q: jnp.ndarray, *, alpha: float = 0.1, vocab_axis_name: str | None = None
) -> jnp.ndarray:
  r"""KL(q ‖ (1 − α)p + αq) per token (DistiLLM's SRKL); α a Python number in [0, 1]."""
  alpha = check_unit_interval("alpha", alpha)
  return kl_divergence(log_q, log_mixture(log_p, log_q, 1.0 - alpha), vocab_axis_name)


def mix(log_p: jnp.ndarray, log_q: jnp.ndarray, *, weight: float = 0.5,
        vocab_axis_name: str | None = None) -> jnp.ndarray:
  r"""w·KL(p ‖ q) + (1 − w)·KL(q ‖ p) per token, one static w ∈ [0, 1] (an endpoint drops its term)."""
  w = check_unit_interval("weight", weight)
  value = jnp.zeros(log_p.shape[:-1], log_p.dtype)
  if w > 0:
    value = value + w * kl_divergence(log_p, log_q, vocab_axis_name)
  if w < 1:
    value = value + (1.0 - w) * kl_divergence(log_q, log_p, vocab_axis_name)
  return value


def tvd(log_p: jnp.ndarray, log_q: jnp.ndarray, *, vocab_axis_name: str | None = None) -> jnp.ndarray:
  r"""Total variation ½ Σ_v |p_v − q_v| per token, in [0, 1]."""
  return clamp_value(0.5 * vocab_sum(jnp.abs(jnp.exp(log_p) - jnp.exp(log_q)), vocab_axis_name), 0.0, 1.0)


def head_tail_gaps(
    p: jnp.ndarray, q: jnp.ndarray, head: jnp.ndarray, *, vocab_axis_name: str | None = None
) -> tuple[jnp.ndarray, jnp.ndarray]:
  r"""``(g_head, g_tail)`` = (Σ_{v∈H} |p_v − q_v|, Σ_{v∉H} |p_v − q_v|) for a head mask ``head [..., V]``."""
  gap = jnp.abs(p - q)
  return vocab_sum(jnp.where(head, gap, 0.0), vocab_axis_name), vocab_sum(jnp.where(head, 0.0, gap), vocab_axis_name)


class AKLWeights(NamedTuple):
  """Per-token AKL statistics ``[...]``: the head and tail gaps and the FKL/RKL weights (w_head + w_tail ≈ 1)."""

  g_head: jnp.ndarray
  g_tail: jnp.ndarray
  w_head: jnp.ndarray
  w_tail: jnp.ndarray


def akl_weights(
    log_p: jnp.ndarray,
    log_q: jnp.ndarray,
    *,
    mu: float = 0.5,
    head_rule: HeadRule = "official",
    head_method: HeadMethod | None = None,
    eps: float = 1e-12,
    vocab_axis_name: str | None = None,
) -> AKLWeights:
  r"""AKL's per-token gaps and weights, all stop-gradient: w_h = g_head / (g_head + g_tail + ε), w_t likewise.

  ``head_method=None`` picks ``"sort"`` on a whole vocabulary and ``"threshold"`` under ``vocab_axis_name``.
  Where g_head + g_tail + ε = 0 (ε = 0 and p = q exactly) both weights are NaN, as in the official code.
  """
  head_method = resolve_head_method(head_method, vocab_axis_name)
  check_head_args(mu, head_rule, head_method, vocab_axis_name)
  check_non_negative("eps", eps)
  p = lax.stop_gradient(jnp.exp(log_p))
  q = lax.stop_gradient(jnp.exp(log_q))
  head = head_mask(p, mu, head_rule, method=head_method, vocab_axis_name=vocab_axis_name)
  g_head, g_tail = head_tail_gaps(p, q, head, vocab_axis_name=vocab_axis_name)
  denominator = g_head + g_tail + eps
  return AKLWeights(g_head, g_tail, g_head / denominator, g_tail / denominator)


def resolve_head_method(head_method: HeadMethod | None, vocab_axis_name: str | None) -> HeadMethod:
  """``head_method``, or for ``None`` the default: ``"sort"`` unsharded, ``"threshold"`` with a vocabulary axis."""
  if head_method is None:
    return "sort" if vocab_axis_name is None else "threshold"
  return head_method


def adaptive_kl(
    log_p: jnp.ndarray,
    log_q: jnp.ndarray,
    *,
    mu: float = 0.5,
    head_rule: HeadRule = "official",
    head_method: HeadMethod | None = None,
    eps: float = 1e-12,
    vocab_axis_name: str | None = None,
    swap_weights: bool = False,
) -> jnp.ndarray:
  r"""AKL = sg(w_h)·KL(p ‖ q) + sg(w_t)·KL(q ‖ p) per token, with the weights of :func:`akl_weights`.

  ``swap_weights=True``: AKL-r, sg(w_t)·KL(p ‖ q) + sg(w_h)·KL(q ‖ p) (the AKL paper's ablation).

  With ε = 0 and p = q exactly the value is NaN (the official code's 0/0); the gradient there is still finite.
  """
  weights = akl_weights(log_p, log_q, mu=mu, head_rule=head_rule, head_method=head_method, eps=eps,
                        vocab_axis_name=vocab_axis_name)
  # 0/0 weights enter as a constant NaN added to the value, so a masked token (whose cotangent is 0) still gets
  # an exactly-zero gradient instead of 0·NaN.
  degenerate = jnp.isnan(weights.w_head) & ~jnp.isnan(weights.g_head + weights.g_tail)
  w_head = jnp.where(degenerate, 0.0, weights.w_head)
  w_tail = jnp.where(degenerate, 0.0, weights.w_tail)
  if swap_weights:
    w_head, w_tail = w_tail, w_head
  value = w_head * kl_divergence(log_p, log_q, vocab_axis_name) + w_tail * kl_divergence(log_q, log_p,
                                                                                           vocab_axis_name)
  return value + jnp.where(degenerate, jnp.nan, 0.0)
