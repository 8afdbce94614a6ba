"""Adaptive KL (AKL): per-token FKL/RKL mix weighted by the student's head and tail gaps (Wu et al., 2024)."""

from typing import Literal

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxlens.losses._checks import check_choice
from jaxlens.losses._checks import check_non_negative
from jaxlens.losses._pairwise import teacher_student_divergence
from jaxlens.losses._vocab import kl_divergence
from jaxlens.losses._vocab import vocab_max
from jaxlens.losses._vocab import vocab_sum
from jaxlens.losses.reduction import Reduction

HeadRule = Literal["official", "paper"]
HeadMethod = Literal["sort", "threshold"]
HEAD_RULES = ("official", "paper")
HEAD_METHODS = ("sort", "threshold")


def _sorted_gaps(p: jnp.ndarray, q: jnp.ndarray, mu: float, head_rule: HeadRule) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(g_head, g_tail) by sorting p descending, as the official code does (whole vocabulary on one device)."""
  order = jnp.argsort(-p, axis=-1)
  p_sorted = jnp.take_along_axis(p, order, axis=-1)
  gap = jnp.abs(p_sorted - jnp.take_along_axis(q, order, axis=-1))
  inclusive = jnp.cumsum(p_sorted, axis=-1)
  if head_rule == "official":
    tail = (inclusive > mu) & (jnp.arange(p.shape[-1]) > 0)
  else:
    tail = inclusive - p_sorted >= mu
  return jnp.sum(jnp.where(tail, 0.0, gap), -1), jnp.sum(jnp.where(tail, gap, 0.0), -1)


def _head_threshold(p: jnp.ndarray, mu: float, head_rule: HeadRule, axis_name: str | None) -> jnp.ndarray:
  """The smallest float t such that {j: p_j ≥ t} is the head: ``[..., V] -> [...]``, sort-free.

  The head mass M(t) (official: Σ_{p_i ≥ t} p_i ≤ μ; paper: Σ_{p_i > t} p_i < μ) is monotone in t, so a
  bisection over the bit patterns of non-negative floats (which are ordered like the floats) finds the exact
  boundary in (bits of 2.0).bit_length() steps, each one masked sum over the vocabulary. The official rule also
  keeps the top-1 token: the threshold is capped at max p.
  """
  int_dtype = jnp.int64 if p.dtype == jnp.float64 else jnp.int32
  upper = int(np.asarray(2.0, p.dtype).view(np.dtype(int_dtype)))  # M(2.0) = 0: always in the head set

  def in_head_set(threshold: jnp.ndarray) -> jnp.ndarray:
    if head_rule == "official":
      return vocab_sum(jnp.where(p >= threshold[..., None], p, 0.0), axis_name) <= mu
    return vocab_sum(jnp.where(p > threshold[..., None], p, 0.0), axis_name) < mu

  def bisect(_, bounds):
    low, high = bounds
    middle = low + (high - low) // 2
    ok = in_head_set(lax.bitcast_convert_type(middle, p.dtype))
    return jnp.where(ok, low, middle + 1), jnp.where(ok, middle, high)

  # *_like keeps p's sharding, so the loop carry is valid inside a token-sharded shard_map too.
  low = jnp.zeros_like(p[..., 0], int_dtype)
  high = jnp.full_like(p[..., 0], upper, int_dtype)
  _, high = lax.fori_loop(0, upper.bit_length(), bisect, (low, high))
  threshold = lax.bitcast_convert_type(high, p.dtype)
  if head_rule == "official":
    threshold = jnp.minimum(threshold, vocab_max(p, axis_name))
  return threshold


def _threshold_gaps(
    p: jnp.ndarray, q: jnp.ndarray, mu: float, head_rule: HeadRule, axis_name: str | None
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(g_head, g_tail) with the sort-free head {j: p_j ≥ t*}; works on a vocabulary-sharded last axis."""
  head = p >= _head_threshold(p, mu, head_rule, axis_name)[..., None]
  gap = jnp.abs(p - q)
  return vocab_sum(jnp.where(head, gap, 0.0), axis_name), vocab_sum(jnp.where(head, 0.0, gap), axis_name)


def adaptive_kl(
    teacher_logits: jnp.ndarray,
    student_logits: jnp.ndarray,
    mask: jnp.ndarray | None = None,
    *,
    mu: float = 0.5,
    head_rule: HeadRule = "official",
    head_method: HeadMethod | None = None,
    eps: float = 1e-12,
    temperature: float = 1.0,
    reduction: Reduction = "mean",
    scale_by_temperature_squared: bool = False,
    vocab_axis_name: str | None = None,
    swap_weights: bool = False,
) -> jnp.ndarray:
  r"""Adaptive KL (AKL): FKL and RKL mixed per token by how badly the student fits the teacher's head and tail.

  With p = softmax(z_T / τ) (teacher), q = softmax(z_S / τ) (student), the teacher's head set H (below),
  per token:

  .. math::

    g_\text{head} = \sum_{j \in H} \lvert p_j - q_j \rvert, \quad
    g_\text{tail} = \sum_{j \notin H} \lvert p_j - q_j \rvert, \quad
    w_h = \operatorname{sg}\Big(\frac{g_\text{head}}{g_\text{head} + g_\text{tail} + \epsilon}\Big), \quad
    w_t = \operatorname{sg}\Big(\frac{g_\text{tail}}{g_\text{head} + g_\text{tail} + \epsilon}\Big)

    \mathrm{AKL}(p, q) = w_h\,\mathrm{KL}(p \,\|\, q) + w_t\,\mathrm{KL}(q \,\|\, p)

  Head set, with p sorted descending p_(1) ≥ p_(2) ≥ … and inclusive cumulative mass C_k:

  * ``head_rule="official"`` (the authors' code, also DistillLens's baseline): the tokens with C_k ≤ μ, plus the
    top-1 token always. For sorted p = (0.4, 0.3, 0.3) and μ = 0.5 the head is {(1)}, mass 0.4.
  * ``head_rule="paper"``: the smallest prefix with C_k ≥ μ (the token crossing μ is head). Same example: head
    {(1), (2)}, mass 0.7.

  ``swap_weights=True`` is the AKL paper's "AKL-r" ablation: the weights trade places,
  w_t·KL(p‖q) + w_h·KL(q‖p) (the tail gap weighs forward KL, the head gap reverse KL).

  Limits: μ ≥ 1 puts every token in the head (AKL = FKL up to ε; at μ = 1 exactly, rounding of the total mass may
  leave the last token out — use μ > 1 to be safe); ``head_rule="paper"`` with μ = 0 gives an empty head
  (AKL = RKL); the official rule with μ = 0 keeps only the top-1 token.

  The weights w_h, w_t are stop-gradient constants (the official code detaches q there); gradient flows
  through q in FKL and in both places of RKL, and is stopped into ``teacher_logits``. ε > 0 makes AKL(p, p) = 0
  instead of the official code's 0/0 = NaN (``eps=0`` reproduces it). Unlike the official code, ``-inf`` logits
  are not replaced by 0 before computing the weights: padded vocabulary entries stay exact zeros. Temperature:
  the official AKL has none (τ = 1); τ² is applied when ``scale_by_temperature_squared``.

  ``head_method``: ``"sort"`` sorts p (O(V log V), exact parity with the official code, including torch's
  choice of one token among tied top-1 tokens); ``"threshold"`` is sort-free, an exact bisection for the
  threshold t* with head = {j: p_j ≥ t*} (~31 masked sums over V), which agrees with ``"sort"`` except on exact
  probability ties; it is the only method under vocabulary sharding. ``None`` picks ``"sort"`` unsharded and
  ``"threshold"`` with ``vocab_axis_name``.

  Args:
    teacher_logits: ``[..., V]`` teacher logits (any float dtype); no gradient flows into them.
    student_logits: ``[..., V]`` student logits, same shape.
    mask: ``None`` or bool/float ``[...]``; masked tokens contribute 0.
    mu: head mass threshold μ ≥ 0 (default 0.5, as in the paper and code).
    head_rule: ``"official"`` or ``"paper"`` (see above).
    head_method: ``"sort"``, ``"threshold"`` or ``None`` (see above).
    eps: ε ≥ 0 in the weights' denominator.
    temperature: τ > 0, divides both sides' logits.
    reduction: ``"mean"`` (Σ m·d / max(Σ m, 1)), ``"sum"`` or ``"none"``.
    scale_by_temperature_squared: multiply by τ².
    vocab_axis_name: mesh axis sharding ``V`` inside ``jax.shard_map``, or ``None``.
    swap_weights: AKL-r, the swapped-weight ablation (see above).

  Returns:
    A float32 (float64 for float64 inputs) scalar, or ``[...]`` for ``reduction="none"``.

  Raises:
    TypeError: non-floating logits or a non-numeric mask.
    ValueError: μ < 0, ε < 0, an unknown head rule or method, ``head_method="sort"`` with
      ``vocab_axis_name``, mismatched shapes, a bad mask shape, an unknown reduction, or τ ≤ 0.

  Examples:
    >>> import jax.numpy as jnp
    >>> print(f"{float(adaptive_kl(jnp.array([3.0, 1.0, 0.0]), jnp.array([1.0, 2.0, 0.5]))):.4f}")
    0.8943

  References:
    Wu, Tao, Wang, Yang, Zhao and Wong, `Rethinking Kullback-Leibler Divergence in Knowledge Distillation for
    Large Language Models <https://arxiv.org/abs/2404.02657>`_, 2025.
  """
  weights = _weight_fn(mu, head_rule, head_method, eps, vocab_axis_name)

  def per_token(log_p: jnp.ndarray, log_q: jnp.ndarray) -> jnp.ndarray:
    w_head, w_tail = weights(log_p, log_q)
    if swap_weights:
      w_head, w_tail = w_tail, w_head
    return w_head * kl_divergence(log_p, log_q, vocab_axis_name) + w_tail * kl_divergence(
        log_q, log_p, vocab_axis_name
    )

  return teacher_student_divergence(
      per_token,
      teacher_logits,
      student_logits,
      mask,
      temperature=temperature,
      reduction=reduction,
      scale_by_temperature_squared=scale_by_temperature_squared,
      vocab_axis_name=vocab_axis_name,
  )


def _weight_fn(mu: float, head_rule: HeadRule, head_method: HeadMethod | None, eps: float,
               vocab_axis_name: str | None):
  """Checked settings → ``(log_p, log_q) -> (w_head, w_tail)``, both stop-gradient ``[...]``."""
  check_non_negative("mu", mu)
  check_non_negative("eps", eps)
  check_choice("head_rule", head_rule, HEAD_RULES)
  check_choice("head_method", head_method, (*HEAD_METHODS, None))
  if head_method is None:
    head_method = "sort" if vocab_axis_name is None else "threshold"
  if head_method == "sort" and vocab_axis_name is not None:
    raise ValueError(
        "head_method='sort' needs the whole vocabulary on one device; use head_method='threshold' with "
        f"vocab_axis_name={vocab_axis_name!r}"
    )

  def weights(log_p: jnp.ndarray, log_q: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    p = lax.stop_gradient(jnp.exp(log_p))
    q = lax.stop_gradient(jnp.exp(log_q))
    if head_method == "sort":
      g_head, g_tail = _sorted_gaps(p, q, mu, head_rule)
    else:
      g_head, g_tail = _threshold_gaps(p, q, mu, head_rule, vocab_axis_name)
    denominator = g_head + g_tail + eps
    return lax.stop_gradient(g_head / denominator), lax.stop_gradient(g_tail / denominator)

  return weights


def adaptive_kl_head_weight(
    teacher_logits: jnp.ndarray,
    student_logits: jnp.ndarray,
    *,
    mu: float = 0.5,
    head_rule: HeadRule = "official",
    head_method: HeadMethod | None = None,
    eps: float = 1e-12,
    temperature: float = 1.0,
    vocab_axis_name: str | None = None,
) -> jnp.ndarray:
  r"""AKL's per-token forward-KL weight w_h = g_head / (g_head + g_tail + ε) (see :func:`adaptive_kl`).

  The share of forward KL that :func:`adaptive_kl` gives each token (1 − w_h goes to reverse KL, up to ε);
  its mean over a run is the weight of the matched fixed mixture :func:`mix`. No gradient (the value
  is stop-gradient, as inside AKL).

  Args:
    teacher_logits: ``[..., V]`` teacher logits.
    student_logits: ``[..., V]`` student logits, same shape.
    mu, head_rule, head_method, eps, temperature, vocab_axis_name: as in :func:`adaptive_kl`.

  Returns:
    float32 (float64 for float64 inputs) ``[...]`` in [0, 1].

  Raises:
    TypeError, ValueError: as :func:`adaptive_kl`.

  Examples:
    >>> import jax.numpy as jnp
    >>> print(f"{float(adaptive_kl_head_weight(jnp.array([3.0, 1.0, 0.0]), jnp.array([1.0, 2.0, 0.5]))):.4f}")
    0.5000
  """
  weights = _weight_fn(mu, head_rule, head_method, eps, vocab_axis_name)
  return teacher_student_divergence(
      lambda log_p, log_q: weights(log_p, log_q)[0],
      teacher_logits,
      student_logits,
      None,
      temperature=temperature,
      reduction="none",
      scale_by_temperature_squared=False,
      vocab_axis_name=vocab_axis_name,
  )
