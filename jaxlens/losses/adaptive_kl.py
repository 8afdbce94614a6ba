"""Adaptive KL (AKL): per-token FKL/RKL mix weighted by the student's head and tail gaps (Wu et al., 2024)."""

import functools

import jax.numpy as jnp

from jaxlens.losses import per_token
from jaxlens.losses._pairwise import teacher_student_divergence
from jaxlens.losses._pairwise import teacher_student_log_probs
from jaxlens.losses.head_set import HeadMethod
from jaxlens.losses.head_set import HeadRule
from jaxlens.losses.head_set import check_head_args
from jaxlens.losses.per_token import AKLWeights
from jaxlens.losses.reduction import Reduction


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

  ``head_method`` (both give the stable-sort head set, ties in vocabulary order, of
  :func:`jaxlens.losses.head_set.head_mask`): ``"sort"`` sorts p (O(V log V), the official code's algorithm);
  ``"threshold"`` is sort-free — the head read off the top-128 tokens when they hold enough mass, else an exact
  bisection over float bit patterns (~31 masked sums over V) — and is the only method under vocabulary sharding.
  ``None`` picks ``"sort"`` unsharded and ``"threshold"`` with ``vocab_axis_name``. The per-token weights are
  available for logging from :func:`adaptive_kl_weights`.

  NaN: a NaN/``+inf`` logit or an all-``-inf`` row of an unmasked token gives NaN. With ``eps=0`` and p = q
  exactly the value is NaN too (the official 0/0), but the gradient stays finite, so a masked token (whose logits
  are replaced by zeros: p = q uniform) still contributes exactly nothing.

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
  check_head_args(mu, head_rule, per_token.resolve_head_method(head_method, vocab_axis_name), vocab_axis_name)
  return teacher_student_divergence(
      functools.partial(per_token.adaptive_kl, mu=mu, head_rule=head_rule, head_method=head_method, eps=eps,
                        vocab_axis_name=vocab_axis_name, swap_weights=swap_weights),
      teacher_logits,
      student_logits,
      mask,
      temperature=temperature,
      reduction=reduction,
      scale_by_temperature_squared=scale_by_temperature_squared,
      vocab_axis_name=vocab_axis_name,
  )


def adaptive_kl_weights(
    teacher_logits: jnp.ndarray,
    student_logits: jnp.ndarray,
    mask: jnp.ndarray | None = None,
    *,
    mu: float = 0.5,
    head_rule: HeadRule = "official",
    head_method: HeadMethod | None = None,
    eps: float = 1e-12,
    temperature: float = 1.0,
    vocab_axis_name: str | None = None,
) -> AKLWeights:
  r"""AKL's per-token head/tail gaps and weights from logits, for logging (e.g. the mean and histogram of w_h).

  Same pipeline and arguments as :func:`adaptive_kl` (p = softmax(z_T/τ), q = softmax(z_S/τ), head set H of p):

  .. math::

    g_\text{head} = \sum_{j \in H} \lvert p_j - q_j \rvert, \quad
    g_\text{tail} = \sum_{j \notin H} \lvert p_j - q_j \rvert, \quad
    w_h = \frac{g_\text{head}}{g_\text{head} + g_\text{tail} + \epsilon}, \quad
    w_t = \frac{g_\text{tail}}{g_\text{head} + g_\text{tail} + \epsilon}

  Everything is stop-gradient. Masked tokens get 0 in all four fields: reduce them with the same mask, e.g.
  ``reduce_loss(weights.w_head, mask)`` is the masked mean head weight.

  Returns:
    :class:`~jaxlens.losses.per_token.AKLWeights` ``(g_head, g_tail, w_head, w_tail)``, each ``[...]``.

  Raises:
    Everything :func:`adaptive_kl` raises for (apart from the reduction, which this does not take).

  Examples:
    >>> import jax.numpy as jnp
    >>> w = adaptive_kl_weights(jnp.array([3.0, 1.0, 0.0]), jnp.array([1.0, 2.0, 0.5]))
    >>> print(f"{float(w.g_head):.3f} {float(w.g_tail):.3f} {float(w.w_head):.3f}")  # head = the top-1 token
    0.613 0.613 0.500
  """
  check_head_args(mu, head_rule, per_token.resolve_head_method(head_method, vocab_axis_name), vocab_axis_name)
  log_p, log_q = teacher_student_log_probs(teacher_logits, student_logits, mask, temperature=temperature,
                                           vocab_axis_name=vocab_axis_name)
  weights = per_token.akl_weights(log_p, log_q, mu=mu, head_rule=head_rule, head_method=head_method, eps=eps,
                                  vocab_axis_name=vocab_axis_name)
  if mask is None:
    return weights
  valid = jnp.asarray(mask) != 0
  return AKLWeights(*(jnp.where(valid, field, 0.0) for field in weights))


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
  r"""AKL's per-token forward-KL weight w_h = g_head / (g_head + g_tail + ε): ``adaptive_kl_weights(...).w_head``.

  The share of forward KL that :func:`adaptive_kl` gives each token (1 − w_h goes to reverse KL, up to ε);
  its mean over a run is the weight of the matched fixed mixture :func:`~jaxlens.losses.mix`. No gradient (the
  value is stop-gradient, as inside AKL). For the gaps too, or with a mask, use :func:`adaptive_kl_weights`.

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
  return adaptive_kl_weights(teacher_logits, student_logits, mu=mu, head_rule=head_rule, head_method=head_method,
                             eps=eps, temperature=temperature, vocab_axis_name=vocab_axis_name).w_head
