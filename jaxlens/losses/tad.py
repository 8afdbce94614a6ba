"""TAD: top-K / tail decoupled KL with a tail-mass-normalised tail weight (Dasgupta, Cohn and Baldwin, 2026)."""

import jax.numpy as jnp

from jaxlens.losses._checks import check_non_negative
from jaxlens.losses._checks import check_positive_int
from jaxlens.losses._pairwise import teacher_student_divergence
from jaxlens.losses._vocab import kl_divergence
from jaxlens.losses._vocab import vocab_kth_largest
from jaxlens.losses._vocab import vocab_logsumexp
from jaxlens.losses.reduction import Reduction


def tad_terms(
    log_p: jnp.ndarray, log_q: jnp.ndarray, k: int, axis_name: str | None
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """Per-token (D_KL1, α_K^T, α_K^T·D_KL2) from log-probs ``[..., V]``; D_KL1 + α·D_KL2 = KL(p‖q) exactly.

  The top-K set is {j: log p_j ≥ K-th largest log p} (more than K tokens only on exact ties).
  """
  top = log_p >= vocab_kth_largest(log_p, k, axis_name)[..., None]
  log_p_tail = jnp.where(top, -jnp.inf, log_p)
  log_tail_mass_p = vocab_logsumexp(log_p_tail, axis_name)
  log_tail_mass_q = vocab_logsumexp(jnp.where(top, -jnp.inf, log_q), axis_name)
  has_tail = log_tail_mass_p > -jnp.inf
  tail_mass_p = jnp.exp(log_tail_mass_p)
  # α_p (log α_p − log α_q): the tail bucket of the (K+1)-bucket KL, 0 when the teacher has no tail mass.
  bucket = jnp.where(
      has_tail,
      tail_mass_p * (jnp.where(has_tail, log_tail_mass_p, 0.0) - jnp.where(has_tail, log_tail_mass_q, 0.0)),
      0.0,
  )
  head_kl = kl_divergence(jnp.where(top, log_p, -jnp.inf), log_q, axis_name)
  tail_kl = kl_divergence(log_p_tail, log_q, axis_name)
  return head_kl + bucket, tail_mass_p, tail_kl - bucket


def tad(
    teacher_logits: jnp.ndarray,
    student_logits: jnp.ndarray,
    mask: jnp.ndarray | None = None,
    *,
    k: int = 10,
    beta: float = 2.0,
    temperature: float = 1.0,
    reduction: Reduction = "mean",
    scale_by_temperature_squared: bool = False,
    vocab_axis_name: str | None = None,
) -> jnp.ndarray:
  r"""TAD ("Don't Ignore the Tail"): KL split at the teacher's top-K, with the tail term up-weighted.

  With p = softmax(z_T / τ) (teacher), q = softmax(z_S / τ) (student), K the teacher's top-K token set and
  α^T = 1 − Σ_{j∈K} p_j, α^S = 1 − Σ_{j∈K} q_j the tail masses, per token t:

  .. math::

    D_1 = \sum_{j \in K} p_j \log\frac{p_j}{q_j} + \alpha^T \log\frac{\alpha^T}{\alpha^S}, \qquad
    D_2 = \sum_{j \notin K} \frac{p_j}{\alpha^T} \log\frac{p_j / \alpha^T}{q_j / \alpha^S}

    \mathrm{TAD}_t = D_1(t) + \frac{\beta}{\bar\alpha^T}\,\alpha^T(t)\,D_2(t), \qquad
    \bar\alpha^T = \frac{\sum_{t'} m_{t'} \alpha^T(t')}{\sum_{t'} m_{t'}}

  D_1 + α^T·D_2 = KL(p‖q) exactly, so β = ᾱ^T gives FKL. The normaliser ᾱ^T is the masked mean of the teacher's
  tail mass over the sequence, taken here over the last per-token axis (``T`` of ``[B, T, V]``; all tokens for
  ``[N, V]``); it depends on the teacher only, so it carries no gradient. Gradient is stopped into
  ``teacher_logits``. Multiplied by τ² when ``scale_by_temperature_squared``. Under vocabulary sharding the top-K
  comes from a local ``top_k``, an ``all_gather`` of the candidates and a second ``top_k``.

  Args:
    teacher_logits: ``[..., V]`` teacher logits (any float dtype); no gradient flows into them.
    student_logits: ``[..., V]`` student logits, same shape.
    mask: ``None`` or bool/float ``[...]``; masked tokens contribute 0 and do not enter ᾱ^T.
    k: K ≥ 1, the size of the teacher's top set (≤ the local vocabulary size); the paper's best is 10.
    beta: β ≥ 0, the tail weight (paper default 2).
    temperature: τ > 0, divides both sides' logits.
    reduction: ``"mean"`` (Σ m·d / max(Σ m, 1)), ``"sum"`` or ``"none"``.
    scale_by_temperature_squared: multiply by τ².
    vocab_axis_name: mesh axis sharding ``V`` inside ``jax.shard_map``, or ``None``.

  Returns:
    A float32 (float64 for float64 inputs) scalar, or ``[...]`` for ``reduction="none"``.

  Raises:
    TypeError: non-floating logits or a non-numeric mask.
    ValueError: K < 1 or K > the (local) vocabulary size, β < 0, mismatched shapes, a bad mask shape, an unknown
      reduction, or τ ≤ 0.

  Examples:
    >>> import jax.numpy as jnp
    >>> print(f"{float(tad(jnp.array([3.0, 1.0, 0.0]), jnp.array([1.0, 2.0, 0.5]), k=1)):.4f}")
    0.8886

  References:
    Dasgupta, Cohn and Baldwin, `Don't Ignore the Tail: Decoupling top-K Probabilities for Efficient Language
    Model Distillation <https://arxiv.org/abs/2602.20816>`_, 2026.
  """
  check_positive_int("k", k)
  check_non_negative("beta", beta)
  local_vocab = jnp.shape(teacher_logits)[-1] if jnp.ndim(teacher_logits) else 0
  if k > local_vocab:
    raise ValueError(f"k={k} exceeds the (local) vocabulary size {local_vocab}")
  weights = None if mask is None else jnp.asarray(mask)

  def per_token(log_p: jnp.ndarray, log_q: jnp.ndarray) -> jnp.ndarray:
    head_term, tail_mass, weighted_tail = tad_terms(log_p, log_q, k, vocab_axis_name)
    if tail_mass.ndim == 0:
      mean_tail_mass = tail_mass
    else:
      token_weights = jnp.ones_like(tail_mass) if weights is None else (weights != 0).astype(tail_mass.dtype)
      mean_tail_mass = jnp.sum(token_weights * tail_mass, -1, keepdims=True) / jnp.maximum(
          jnp.sum(token_weights, -1, keepdims=True), 1.0
      )
    scale = jnp.where(mean_tail_mass > 0, beta / jnp.where(mean_tail_mass > 0, mean_tail_mass, 1.0), 0.0)
    return head_term + scale * weighted_tail

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

