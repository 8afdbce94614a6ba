"""Teacher-forced teacher–student alignment metrics, per token, streamed over token blocks.

Teacher first, as everywhere in jaxlens: p = softmax(z_T / τ) is the teacher's next-token distribution and
q = softmax(z_S / τ) the student's, at the same position of the same held-out sequence (teacher forcing).
Every metric is a per-token value d_t; a report gives its masked token mean Σ_t m_t d_t / Σ_t m_t with a
percentile **bootstrap confidence interval over sequences** (tokens of one sequence are correlated, so
sequences, not tokens, are resampled), except the expected calibration error, which is a binned statistic of
the whole token set and is bootstrapped the same way from per-sequence bin counts.

The divergences and the AKL gaps are those of the loss library — :mod:`jaxlens.losses.per_token` on one shared
log-softmax per side (each logits-level loss would take its own: ~6× the work on a 49k vocabulary), and the AKL
head set of :func:`jaxlens.losses.head_set.head_mask` — so they equal the training losses with
``reduction="none"`` (tested):

.. math::

   \\text{forward\\_kl} &= \\sum_j p_j \\log\\frac{p_j}{q_j}, \\qquad \\text{reverse\\_kl} = \\sum_j q_j \\log\\frac{q_j}{p_j}
   \\\\
   \\text{jsd} &= \\tfrac12 \\sum_j p_j \\log\\frac{p_j}{m_j} + \\tfrac12 \\sum_j q_j \\log\\frac{q_j}{m_j}, \\quad
   m = \\tfrac12 (p + q), \\qquad \\text{tvd} = \\tfrac12 \\sum_j |p_j - q_j| \\\\
   \\text{top1} &= [\\arg\\max p = \\arg\\max q], \\qquad
   \\text{top}k = |\\mathrm{top}_k(p) \\cap \\mathrm{top}_k(q)| / k \\\\
   g_{head} &= \\sum_{j \\in H} |p_j - q_j|, \\qquad g_{tail} = \\sum_{j \\notin H} |p_j - q_j| \\\\
   \\text{head\\_mass\\_error} &= |q(H) - p(H)|, \\qquad
   \\text{tail\\_mass\\_error} = |q(\\bar T_K) - p(\\bar T_K)| \\\\
   \\text{entropy\\_gap} &= |H(q) - H(p)|, \\qquad \\text{ce} = -\\log q_{y}

where H is the AKL head set of p at mass μ (default 0.5) under ``head_rule`` (:func:`head_mask`), \\bar T_K
is the complement of the teacher's top-K (K = ``tail_k``, default 10) and y is the actual next token.
g_head + g_tail = ‖p − q‖₁ = 2·TV. The student's token-level ECE bins its confidence max_j q_j into
``num_bins`` equal-width bins on [0, 1]:

.. math::

   \\mathrm{ECE} = \\sum_b \\frac{n_b}{N} \\left| \\mathrm{acc}_b - \\mathrm{conf}_b \\right|,
   \\qquad \\mathrm{acc}_b = \\frac{1}{n_b}\\sum_{t \\in b} [\\arg\\max q_t = y_t]

Nothing here is differentiated; every value is computed in float32 and accumulated in float64. A NaN or ``+inf``
logit (or a row of only ``-inf``) gives NaN metrics for its token, never 0.

References:
  Wu et al., `Rethinking Kullback-Leibler Divergence in Knowledge Distillation for Large Language Models
  <https://arxiv.org/abs/2404.02657>`_, 2024 (the head/tail gaps).
  Guo et al., `On Calibration of Modern Neural Networks <https://arxiv.org/abs/1706.04599>`_, 2017 (ECE).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
import jax
import jax.numpy as jnp
import numpy as np

from jaxlens.losses import per_token
from jaxlens.losses.head_set import HEAD_RULES
from jaxlens.losses.head_set import HeadRule
from jaxlens.losses.head_set import head_mask

#: The divergences reported per token, in report order (named like their :mod:`jaxlens.losses` functions).
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "tvd")

@dataclasses.dataclass(frozen=True)
class AlignmentConfig:
  """Static settings of the alignment metrics.

  Attributes:
    temperature: τ of p = softmax(z_T/τ), q = softmax(z_S/τ) (no τ² factor anywhere).
    mu: AKL head-mass threshold μ.
    head_rule: ``"official"`` (AKL code) or ``"paper"`` (AKL paper) head set.
    ks: the k of the top-k overlap metrics.
    tail_k: K of the tail-mass error (tail = outside the teacher's top-K).
    num_bins: equal-width confidence bins of the ECE.
    block_tokens: tokens per streamed block (memory ≈ a few · block_tokens · V floats).
  """

  temperature: float = 1.0
  mu: float = 0.5
  head_rule: HeadRule = "official"
  ks: tuple[int, ...] = (5, 10)
  tail_k: int = 10
  num_bins: int = 15
  block_tokens: int = 256

  def __post_init__(self):
    if not self.temperature > 0:
      raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
    if not 0.0 < self.mu < 1.0:
      raise ValueError(f"mu must be in (0, 1), got {self.mu!r}")
    if self.head_rule not in HEAD_RULES:
      raise ValueError(f"head_rule must be 'official' or 'paper', got {self.head_rule!r}")
    if not self.ks or any(int(k) < 1 for k in self.ks):
      raise ValueError(f"ks must be positive integers, got {self.ks!r}")
    if self.tail_k < 1 or self.num_bins < 1 or self.block_tokens < 1:
      raise ValueError(
          f"tail_k, num_bins and block_tokens must be >= 1, got {self.tail_k}, {self.num_bins}, "
          f"{self.block_tokens}")

  def metric_names(self) -> tuple[str, ...]:
    """The token-mean metric names produced by :func:`token_metrics`, in report order."""
    return (*DIVERGENCES, "top1_agreement", *(f"topk_overlap@{k}" for k in self.ks), "g_head", "g_tail",
            "head_mass_error", f"tail_mass_error@{self.tail_k}", "entropy_gap", "student_ce", "teacher_ce")


def _top_k_indices(*requests: tuple[jax.Array, int]) -> tuple[jax.Array, ...]:
  """``lax.top_k(x, k)`` indices of each ``(x, k)``, fenced off from the rest of the computation.

  Without the barrier, XLA:CPU rewrites a top-k whose operand also feeds reductions and gathers into a full
  sort of the vocabulary (~40× slower on ``[256, 49152]``).
  """
  return jax.lax.optimization_barrier(tuple(jax.lax.top_k(x, k)[1] for x, k in requests))


def _check_rows(teacher_logits, student_logits, labels):
  if teacher_logits.ndim != 2 or teacher_logits.shape != student_logits.shape:
    raise ValueError(
        "teacher_logits and student_logits must both be [N, V] with the same shape, got "
        f"{teacher_logits.shape} and {student_logits.shape}")
  if not (jnp.issubdtype(teacher_logits.dtype, jnp.floating)
          and jnp.issubdtype(student_logits.dtype, jnp.floating)):
    raise TypeError(f"logits must be floating point, got {teacher_logits.dtype}, {student_logits.dtype}")
  if labels.shape != teacher_logits.shape[:1] or not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"labels must be integer [N] = {teacher_logits.shape[:1]}, got {labels.dtype}{labels.shape}")


@functools.partial(jax.jit, static_argnames=("config",))
def token_metrics(teacher_logits: jax.Array, student_logits: jax.Array, labels: jax.Array, *,
                  config: AlignmentConfig = AlignmentConfig()) -> dict[str, jax.Array]:
  """Per-token alignment metrics of one block of teacher-forced positions (no masking, no reduction).

  See the module docstring for the formulas. Softmax, logs and sums in float32.

  Args:
    teacher_logits: ``[N, V]`` teacher logits z_T (any float dtype; computed in float32).
    student_logits: ``[N, V]`` student logits z_S.
    labels: ``[N]`` int, the actual next token y of each position.
    config: an :class:`AlignmentConfig` (static).

  Returns:
    dict name → float32 ``[N]`` for every name in ``config.metric_names()``, plus ``"confidence"`` (max_j q_j)
    and ``"correct"`` (1.0 where argmax q = y) for the ECE.

  Raises:
    ValueError: on mismatched shapes or non-integer labels.
    TypeError: on non-float logits.
  """
  _check_rows(teacher_logits, student_logits, labels)
  tau = config.temperature
  # Gathers and top-k read the scaled logits z, never a fused softmax (XLA would recompute its normaliser per
  # gathered element); log p_j = z_j − lse(z), and top-k of z is top-k of p (softmax is monotone).
  zt, zs = teacher_logits.astype(jnp.float32) / tau, student_logits.astype(jnp.float32) / tau
  lse_t = jax.nn.logsumexp(zt, axis=-1, keepdims=True)
  lse_s = jax.nn.logsumexp(zs, axis=-1, keepdims=True)
  log_p, log_q = zt - lse_t, zs - lse_s
  p, q = jnp.exp(log_p), jnp.exp(log_q)

  def at(z, lse, index):  # log-probabilities at the token ids ``index [N, k]``
    return jnp.take_along_axis(z, index, axis=-1) - lse

  def expect(w, x):  # Σ_j w_j x_j with 0 · x = 0 (x may be -inf where w underflowed); NaN w stays NaN
    return jnp.sum(jnp.where(w != 0, w * x, 0.0), axis=-1)

  out = {name: getattr(per_token, name)(log_p, log_q) for name in DIVERGENCES}
  # A divergence of a distribution with itself is exactly 0; log m = log(exp(log p)) would leave ±1e-8 of
  # rounding in the JSD there, so rows with bitwise-identical logits get the exact value.
  identical = jnp.all(teacher_logits == student_logits, axis=-1)
  out = {name: jnp.where(identical, 0.0, value) for name, value in out.items()}
  top_q = jnp.argmax(zs, axis=-1)
  out["top1_agreement"] = (jnp.argmax(zt, axis=-1) == top_q).astype(jnp.float32)
  # One sorted top-K of each side serves every k (lax.top_k is stable, so a prefix is the top-k).
  num_top = min(max(*config.ks, config.tail_k), p.shape[-1])
  ip, iq = _top_k_indices((zt, num_top), (zs, max(config.ks)))
  for k in config.ks:
    out[f"topk_overlap@{k}"] = jnp.sum(ip[:, :k, None] == iq[:, None, :k], axis=(1, 2)).astype(jnp.float32) / k
  head = head_mask(p, config.mu, config.head_rule)
  out["g_head"], out["g_tail"] = per_token.head_tail_gaps(p, q, head)
  out["head_mass_error"] = jnp.abs(jnp.sum(jnp.where(head, q - p, 0.0), axis=-1))
  # Mass outside the teacher's top-K: |q(T̄_K) − p(T̄_K)| = |p(T_K) − q(T_K)| (both sum to 1).
  top_t = ip[:, :config.tail_k]
  out[f"tail_mass_error@{config.tail_k}"] = jnp.abs(
      jnp.sum(jnp.exp(at(zt, lse_t, top_t)) - jnp.exp(at(zs, lse_s, top_t)), axis=-1))
  out["entropy_gap"] = jnp.abs(expect(p, log_p) - expect(q, log_q))
  out["student_ce"] = -at(zs, lse_s, labels[:, None])[:, 0]
  out["teacher_ce"] = -at(zt, lse_t, labels[:, None])[:, 0]
  out["confidence"] = jnp.exp(jnp.max(zs, axis=-1) - lse_s[:, 0])
  out["correct"] = (top_q == labels).astype(jnp.float32)
  return out


def ece_from_bins(counts: np.ndarray, conf_sums: np.ndarray, correct_sums: np.ndarray) -> np.ndarray:
  """Expected calibration error from per-bin sufficient statistics.

  .. math::

     \\mathrm{ECE} = \\sum_b \\frac{n_b}{N}\\left|\\frac{c_b}{n_b} - \\frac{s_b}{n_b}\\right|
     = \\frac{1}{N}\\sum_b |c_b - s_b|

  Args:
    counts: ``[..., num_bins]`` token counts n_b.
    conf_sums: ``[..., num_bins]`` summed confidences s_b.
    correct_sums: ``[..., num_bins]`` summed correctness c_b.

  Returns:
    float64 ``[...]``; 0 where N = 0.
  """
  total = counts.sum(-1)
  return np.abs(correct_sums - conf_sums).sum(-1) / np.maximum(total, 1)


@dataclasses.dataclass(frozen=True)
class MetricSummary:
  """A token-mean metric with its bootstrap confidence interval."""

  mean: float
  ci_low: float
  ci_high: float

  def as_dict(self) -> dict[str, float]:
    return dataclasses.asdict(self)


class AlignmentAccumulator:
  """Streams per-token metrics into per-sequence sufficient statistics (memory grows with sequences only).

  Per sequence s it keeps Σ_t m_t d_t for every metric, Σ_t m_t, and the ECE bin statistics; the report is
  the ratio estimator Σ_s Σ_t m_t d_t / Σ_s Σ_t m_t with a percentile bootstrap over sequences.

  Args:
    config: the :class:`AlignmentConfig` whose metric names are accumulated.
  """

  def __init__(self, config: AlignmentConfig = AlignmentConfig()):
    self.config = config
    self.names = config.metric_names()
    self._sums: dict[int, np.ndarray] = {}  # seq id -> [M + 1] (metric sums, token count)
    self._bins: dict[int, np.ndarray] = {}  # seq id -> [3, num_bins] (count, confidence, correct)

  def update(self, metrics: dict[str, jax.Array], weights: np.ndarray, seq_ids: np.ndarray) -> None:
    """Add one block of ``N`` tokens.

    Args:
      metrics: output of :func:`token_metrics` for the ``N`` tokens.
      weights: ``[N]`` token mask/weights m_t (0 for padding rows of a block).
      seq_ids: ``[N]`` int global sequence ids.

    Raises:
      ValueError: if ``weights`` and ``seq_ids`` are not both ``[N]``.
    """
    weights = np.asarray(weights, np.float64)
    seq_ids = np.asarray(seq_ids)
    if weights.shape != seq_ids.shape or weights.ndim != 1:
      raise ValueError(f"weights and seq_ids must both be [N], got {weights.shape} and {seq_ids.shape}")
    values = np.stack([np.asarray(metrics[n], np.float64) for n in self.names] + [np.ones_like(weights)], -1)
    conf = np.asarray(metrics["confidence"], np.float64)
    correct = np.asarray(metrics["correct"], np.float64)
    nb = self.config.num_bins
    bins = np.clip((conf * nb).astype(np.int64), 0, nb - 1)
    uniq, inv = np.unique(seq_ids, return_inverse=True)
    sums = np.zeros((len(uniq), values.shape[1]))
    np.add.at(sums, inv, values * weights[:, None])
    binstats = np.zeros((len(uniq), 3, nb))
    for row, stat in enumerate((np.ones_like(conf), conf, correct)):
      np.add.at(binstats[:, row], (inv, bins), stat * weights)
    for i, s in enumerate(uniq.tolist()):
      self._sums[s] = self._sums.get(s, 0.0) + sums[i]
      self._bins[s] = self._bins.get(s, 0.0) + binstats[i]

  def summarize(self, *, num_bootstrap: int = 1000, confidence: float = 0.95,
                seed: int = 0) -> dict[str, MetricSummary | float]:
    """Masked token means (and the ECE) with percentile bootstrap CIs over sequences.

    Args:
      num_bootstrap: bootstrap resamples R (multinomial sequence weights).
      confidence: the CI's coverage.
      seed: bootstrap seed (same seed → same intervals).

    Returns:
      dict name → :class:`MetricSummary` for every metric and ``"student_ece"``, plus ``"num_tokens"`` and
      ``"num_sequences"`` (floats; sequences with at least one scored token).

    Raises:
      ValueError: if nothing was accumulated or ``confidence`` is outside (0, 1).
    """
    if not 0 < confidence < 1:
      raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if not self._sums:
      raise ValueError("no tokens were accumulated")
    keys = sorted(self._sums)
    n_seq = len(keys)
    sums = np.stack([self._sums[k] for k in keys])  # [S, M + 1]
    bins = np.stack([self._bins[k] for k in keys])  # [S, 3, nb]
    rng = np.random.default_rng(seed)
    w = rng.multinomial(n_seq, np.full(n_seq, 1.0 / n_seq), size=num_bootstrap).astype(np.float64)  # [R, S]
    boot_sums = w @ sums  # [R, M + 1]
    boot_bins = np.einsum("rs,sjb->rjb", w, bins)
    lo, hi = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
    total = sums.sum(0)

    def summary(mean, boot):
      return MetricSummary(float(mean), float(np.percentile(boot, lo)), float(np.percentile(boot, hi)))

    result: dict[str, MetricSummary | float] = {
        name: summary(total[i] / max(total[-1], 1.0), boot_sums[:, i] / np.maximum(boot_sums[:, -1], 1.0))
        for i, name in enumerate(self.names)}
    result["student_ece"] = summary(ece_from_bins(*bins.sum(0)), ece_from_bins(*np.moveaxis(boot_bins, 1, 0)))
    result["num_tokens"] = float(total[-1])
    result["num_sequences"] = float(n_seq)
    return result

  def reliability(self) -> dict[str, list[float]]:
    """Per-bin token counts, mean confidence and accuracy over all tokens (for reliability diagrams)."""
    counts, conf, correct = np.stack(list(self._bins.values())).sum(0)
    safe = np.maximum(counts, 1e-12)
    return {"counts": counts.tolist(), "confidence": (conf / safe).tolist(), "accuracy": (correct / safe).tolist()}

  def per_sequence(self) -> dict:
    """``{"seq_ids": [S], "tokens": [S], "sums": {name: [S]}}``: Σ_t m_t and Σ_t m_t d_t of every sequence."""
    keys = sorted(self._sums)
    sums = np.stack([self._sums[k] for k in keys])
    return {"seq_ids": keys, "tokens": sums[:, -1].tolist(),
            "sums": {name: sums[:, i].tolist() for i, name in enumerate(self.names)}}

  def report(self, *, num_bootstrap: int = 1000, seed: int = 0, per_sequence: bool = False) -> dict:
    """``{"metrics": {name: {mean, ci_low, ci_high} | float}, "reliability": {...}[, "per_sequence": {...}]}``,
    JSON-ready (``per_sequence``: :meth:`per_sequence`, for :func:`paired_difference`)."""
    out = {"metrics": {n: (v.as_dict() if isinstance(v, MetricSummary) else v)
                       for n, v in self.summarize(num_bootstrap=num_bootstrap, seed=seed).items()},
           "reliability": self.reliability()}
    if per_sequence:
      out["per_sequence"] = self.per_sequence()
    return out


def paired_difference(student: dict, reference: dict, names, *, num_bootstrap: int = 1000, confidence: float = 0.95,
                      seed: int = 0) -> dict[str, MetricSummary]:
  """Difference of two students' token means on the same sequences, with a paired bootstrap CI.

  .. math::

     \\Delta = \\frac{\\sum_s a_s}{\\sum_s n_s} - \\frac{\\sum_s b_s}{\\sum_s n_s}

  with a_s, b_s the per-sequence metric sums of ``student`` and ``reference`` and n_s the scored tokens; each
  bootstrap resample of sequences weighs both students' sums alike, so the interval reflects only how the
  two differ on the same text (much narrower than comparing two marginal intervals).

  Args:
    student: :meth:`AlignmentAccumulator.per_sequence` of the student.
    reference: the same for the reference student.
    names: the metrics to compare.
    num_bootstrap: resamples.
    confidence: the CI's coverage.
    seed: bootstrap seed.

  Returns:
    name → :class:`MetricSummary` of Δ (student − reference).

  Raises:
    ValueError: if the two were not scored on the same sequences and tokens.
  """
  if student["seq_ids"] != reference["seq_ids"] or student["tokens"] != reference["tokens"]:
    raise ValueError("paired differences need both students scored on the same sequences and tokens")
  n = np.asarray(student["tokens"], np.float64)
  rng = np.random.default_rng(seed)
  w = rng.multinomial(len(n), np.full(len(n), 1.0 / len(n)), size=num_bootstrap).astype(np.float64)
  lo, hi = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
  out = {}
  for name in names:
    d = np.asarray(student["sums"][name], np.float64) - np.asarray(reference["sums"][name], np.float64)
    boot = (w @ d) / np.maximum(w @ n, 1.0)
    out[name] = MetricSummary(float(d.sum() / max(n.sum(), 1.0)), float(np.percentile(boot, lo)),
                              float(np.percentile(boot, hi)))
  return out


@dataclasses.dataclass(frozen=True)
class TokenBlock:
  """``block_tokens`` scored positions of a ``[B, T]`` batch (the last block padded with weight 0).

  Attributes:
    rows: ``[n]`` flat row indices b·T + t into the batch (padding repeats a real row).
    weights: ``[n]`` the loss-mask value of each row (0 for padding).
    labels: ``[n]`` int32 next tokens.
    seq_ids: ``[n]`` global sequence id of each row.
  """

  rows: np.ndarray
  weights: np.ndarray
  labels: np.ndarray
  seq_ids: np.ndarray


def token_blocks(labels, mask, block_tokens: int, seq_offset: int = 0) -> Iterator[TokenBlock]:
  """The positions with ``mask > 0`` of a ``[B, T]`` batch, ``block_tokens`` at a time, one static shape.

  Args:
    labels: ``[B, T]`` int next tokens.
    mask: ``[B, T]`` loss mask (1 where the next token is scored; weights > 0 are kept as weights).
    block_tokens: rows per block.
    seq_offset: global id of sequence 0 of this batch.

  Yields:
    :class:`TokenBlock` s; none if the mask is all zero.

  Raises:
    ValueError: if ``labels`` and ``mask`` are not both ``[B, T]``.
  """
  mask = np.asarray(mask)
  labels = np.asarray(labels)
  if mask.ndim != 2 or labels.shape != mask.shape:
    raise ValueError(f"labels and mask must both be [B, T], got {labels.shape} and {mask.shape}")
  flat_mask, flat_labels = mask.reshape(-1).astype(np.float64), labels.reshape(-1).astype(np.int32)
  scored = np.flatnonzero(flat_mask > 0)
  for start in range(0, len(scored), block_tokens):
    block = scored[start:start + block_tokens]
    rows = np.concatenate([block, np.full(block_tokens - len(block), block[0])])
    weights = np.zeros(block_tokens)
    weights[:len(block)] = flat_mask[block]
    yield TokenBlock(rows, weights, flat_labels[rows], seq_offset + rows // mask.shape[1])


def accumulate_block(acc: AlignmentAccumulator, block: TokenBlock, teacher_rows: jax.Array,
                     student_rows: jax.Array) -> None:
  """Score one :class:`TokenBlock` given its ``[n, V]`` teacher and student logits and add it to ``acc``."""
  metrics = token_metrics(teacher_rows, student_rows, jnp.asarray(block.labels), config=acc.config)
  acc.update(metrics, block.weights, block.seq_ids)


def accumulate_logits(acc: AlignmentAccumulator, teacher_logits: jax.Array, student_logits: jax.Array, labels,
                      mask, seq_offset: int = 0) -> None:
  """Stream one batch of ``[B, T, V]`` teacher/student logits into ``acc``, block by block.

  Args:
    acc: the accumulator (its config sets the block size).
    teacher_logits: ``[B, T, V]``.
    student_logits: ``[B, T, V]``.
    labels: ``[B, T]`` int next tokens.
    mask: ``[B, T]`` loss mask.
    seq_offset: global id of sequence 0 of this batch.

  Raises:
    ValueError: on mismatched shapes.
  """
  shape = np.shape(mask)
  for name, logits in (("teacher_logits", teacher_logits), ("student_logits", student_logits)):
    if logits.ndim != 3 or tuple(logits.shape[:2]) != tuple(shape):
      raise ValueError(f"{name} must be [B, T, V] with [B, T] = {tuple(shape)}, got {logits.shape}")
  t_rows, s_rows = flat_rows(teacher_logits), flat_rows(student_logits)
  for block in token_blocks(labels, mask, acc.config.block_tokens, seq_offset):
    accumulate_block(acc, block, t_rows(block.rows), s_rows(block.rows))


def flat_rows(x: jax.Array) -> Callable[[np.ndarray], jax.Array]:
  """Row getter of a ``[B, T, C]`` array: flat indices ``[n]`` → ``[n, C]``."""
  flat = jnp.reshape(jnp.asarray(x), (-1, x.shape[-1]))
  return lambda rows: flat[jnp.asarray(rows)]
