"""Teacher-forced teacher–student alignment metrics, per token, streamed over token blocks.

Teacher first, as everywhere in jaxlens: p = softmax(z_T / τ) is the teacher's next-token distribution and
q = softmax(z_S / τ) the student's, at the same position of the same held-out sequence (teacher forcing).
Every metric is a per-token value d_t; a report gives its masked token mean Σ_t m_t d_t / Σ_t m_t with a
percentile **bootstrap confidence interval over sequences** (tokens of one sequence are correlated, so
sequences, not tokens, are resampled), except the expected calibration error, which is a binned statistic of
the whole token set and is bootstrapped the same way from per-sequence bin counts.

The divergences (``forward_kl``, ``reverse_kl``, ``jsd``, ``tvd``) are the training losses of
:mod:`jaxlens.losses` with ``reduction="none"``; this module adds only what is not a loss:

.. math::

   \\text{top1} &= [\\arg\\max p = \\arg\\max q], \\qquad
   \\text{top}k = |\\mathrm{top}_k(p) \\cap \\mathrm{top}_k(q)| / k \\\\
   g_{head} &= \\sum_{j \\in H} |p_j - q_j|, \\qquad g_{tail} = \\sum_{j \\notin H} |p_j - q_j| \\\\
   \\text{head\\_mass\\_error} &= |q(H) - p(H)|, \\qquad
   \\text{tail\\_mass\\_error} = |q(\\bar T_K) - p(\\bar T_K)| \\\\
   \\text{entropy\\_gap} &= |H(q) - H(p)|, \\qquad \\text{ce} = -\\log q_{y}

where H is the AKL head set of p at mass μ (default 0.5) under ``head_rule`` — ``"official"``: sort p
descending, the head is the prefix whose inclusive cumulative mass is ≤ μ plus the top-1 token (the AKL code);
``"paper"``: the smallest prefix whose cumulative mass reaches μ — and \\bar T_K is the complement of the
teacher's top-K (K = ``tail_k``, default 10), y is the actual next token. The student's token-level ECE bins
its confidence max_j q_j into ``num_bins`` equal-width bins on [0, 1]:

.. math::

   \\mathrm{ECE} = \\sum_b \\frac{n_b}{N} \\left| \\mathrm{acc}_b - \\mathrm{conf}_b \\right|,
   \\qquad \\mathrm{acc}_b = \\frac{1}{n_b}\\sum_{t \\in b} [\\arg\\max q_t = y_t]

References:
  Wu et al., `Rethinking Kullback-Leibler Divergence in Knowledge Distillation for Large Language Models
  <https://arxiv.org/abs/2404.02657>`_, 2024 (the head/tail gaps).
  Guo et al., `On Calibration of Modern Neural Networks <https://arxiv.org/abs/1706.04599>`_, 2017 (ECE).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxlens.losses import forward_kl, jsd, reverse_kl, tvd

HeadRule = Literal["official", "paper"]

#: Names of the per-token metrics, in report order (``topk_overlap@k`` entries follow ``ks``).
DIVERGENCE_METRICS = ("forward_kl", "reverse_kl", "jsd", "tvd")


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
    block_tokens: tokens per streamed block (memory ≈ 2·block_tokens·V floats).
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
    if self.head_rule not in ("official", "paper"):
      raise ValueError(f"head_rule must be 'official' or 'paper', got {self.head_rule!r}")
    if not self.ks or any(int(k) < 1 for k in self.ks):
      raise ValueError(f"ks must be positive integers, got {self.ks!r}")
    if self.tail_k < 1 or self.num_bins < 1 or self.block_tokens < 1:
      raise ValueError(
          f"tail_k, num_bins and block_tokens must be >= 1, got {self.tail_k}, {self.num_bins}, "
          f"{self.block_tokens}")

  def metric_names(self) -> tuple[str, ...]:
    """The token-mean metric names produced by :func:`token_metrics`, in report order."""
    return (*DIVERGENCE_METRICS, "top1_agreement", *(f"topk_overlap@{k}" for k in self.ks), "g_head",
            "g_tail", "head_mass_error", f"tail_mass_error@{self.tail_k}", "entropy_gap", "student_ce",
            "teacher_ce")


def _check_logits(teacher_logits, student_logits, labels):
  if teacher_logits.ndim != 2 or teacher_logits.shape != student_logits.shape:
    raise ValueError(
        "teacher_logits and student_logits must both be [N, V] with the same shape, got "
        f"{teacher_logits.shape} and {student_logits.shape}")
  if not (jnp.issubdtype(teacher_logits.dtype, jnp.floating)
          and jnp.issubdtype(student_logits.dtype, jnp.floating)):
    raise TypeError(f"logits must be floating point, got {teacher_logits.dtype}, {student_logits.dtype}")
  if labels.shape != teacher_logits.shape[:1] or not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"labels must be integer [N] = {teacher_logits.shape[:1]}, got {labels.dtype}{labels.shape}")


def head_mask(p: jax.Array, mu: float = 0.5, head_rule: HeadRule = "official") -> jax.Array:
  """The AKL head set of the distribution ``p`` as a boolean mask.

  Sort p descending, C_k = Σ_{i ≤ k} p_(i) (inclusive):

  .. math::

     H_{official} = \\{(k) : C_k \\le \\mu\\} \\cup \\{(1)\\}, \\qquad
     H_{paper} = \\{(k) : C_k - p_{(k)} < \\mu\\}

  Args:
    p: probabilities ``[..., V]``.
    mu: head mass threshold μ.
    head_rule: ``"official"`` (AKL code: largest prefix with mass ≤ μ, plus the top-1 token) or ``"paper"``
      (smallest prefix with mass ≥ μ).

  Returns:
    bool ``[..., V]`` in vocabulary order.

  Examples:
    >>> import jax.numpy as jnp
    >>> p = jnp.array([0.3, 0.4, 0.3])
    >>> head_mask(p, 0.5, "official").tolist(), head_mask(p, 0.5, "paper").tolist()
    ([False, True, False], [True, True, False])
  """
  order = jnp.argsort(-p, axis=-1, stable=True)
  ps = jnp.take_along_axis(p, order, axis=-1)
  incl = jnp.cumsum(ps, axis=-1)
  rank = jnp.arange(p.shape[-1])
  if head_rule == "official":
    head_sorted = (incl <= mu) | (rank == 0)
  elif head_rule == "paper":
    head_sorted = (incl - ps) < mu
  else:
    raise ValueError(f"head_rule must be 'official' or 'paper', got {head_rule!r}")
  inverse = jnp.argsort(order, axis=-1)
  return jnp.take_along_axis(head_sorted, inverse, axis=-1)


@functools.partial(jax.jit, static_argnames=("config",))
def token_metrics(teacher_logits: jax.Array, student_logits: jax.Array, labels: jax.Array, *,
                  config: AlignmentConfig = AlignmentConfig()) -> dict[str, jax.Array]:
  """Per-token alignment metrics of one block of teacher-forced positions (no masking, no reduction).

  See the module docstring for the formulas; divergences come from :mod:`jaxlens.losses`.

  Args:
    teacher_logits: ``[N, V]`` teacher logits z_T (any float dtype; computed in float32).
    student_logits: ``[N, V]`` student logits z_S.
    labels: ``[N]`` int, the actual next token y of each position.
    config: an :class:`AlignmentConfig` (static).

  Returns:
    dict name → float32 ``[N]`` for every name in ``config.metric_names()``, plus ``"confidence"`` (max_j q_j)
    and ``"correct"`` (1.0 where argmax q = y) for the ECE.

  Raises:
    ValueError: on mismatched shapes or non-integer labels. TypeError: on non-float logits.
  """
  _check_logits(teacher_logits, student_logits, labels)
  tau = config.temperature
  out = {name: get(teacher_logits, student_logits, temperature=tau, reduction="none").astype(jnp.float32)
         for name, get in zip(DIVERGENCE_METRICS, (forward_kl, reverse_kl, jsd, tvd))}
  log_p = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / tau, axis=-1)
  log_q = jax.nn.log_softmax(student_logits.astype(jnp.float32) / tau, axis=-1)
  p, q = jnp.exp(log_p), jnp.exp(log_q)
  top_p = jnp.argmax(p, axis=-1)
  top_q = jnp.argmax(q, axis=-1)
  out["top1_agreement"] = (top_p == top_q).astype(jnp.float32)
  for k in config.ks:
    _, ip = jax.lax.top_k(p, k)
    _, iq = jax.lax.top_k(q, k)
    out[f"topk_overlap@{k}"] = jnp.sum(ip[:, :, None] == iq[:, None, :], axis=(1, 2)).astype(jnp.float32) / k
  head = head_mask(p, config.mu, config.head_rule)
  err = jnp.abs(p - q)
  out["g_head"] = jnp.sum(jnp.where(head, err, 0.0), axis=-1)
  out["g_tail"] = jnp.sum(jnp.where(head, 0.0, err), axis=-1)
  out["head_mass_error"] = jnp.abs(jnp.sum(jnp.where(head, q - p, 0.0), axis=-1))
  _, top_t = jax.lax.top_k(p, config.tail_k)
  in_top = jnp.zeros(p.shape, bool).at[jnp.arange(p.shape[0])[:, None], top_t].set(True)
  out[f"tail_mass_error@{config.tail_k}"] = jnp.abs(jnp.sum(jnp.where(in_top, 0.0, q - p), axis=-1))
  ent_p = -jnp.sum(jnp.where(p > 0, p * log_p, 0.0), axis=-1)
  ent_q = -jnp.sum(jnp.where(q > 0, q * log_q, 0.0), axis=-1)
  out["entropy_gap"] = jnp.abs(ent_q - ent_p)
  out["student_ce"] = -jnp.take_along_axis(log_q, labels[:, None], axis=-1)[:, 0]
  out["teacher_ce"] = -jnp.take_along_axis(log_p, labels[:, None], axis=-1)[:, 0]
  out["confidence"] = jnp.max(q, axis=-1)
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
  """Streams per-token metrics into per-sequence sufficient statistics (bounded memory).

  Per sequence s it keeps Σ_t m_t d_t for every metric, Σ_t m_t, and the ECE bin statistics; the report is
  the ratio estimator over all sequences with a percentile bootstrap over sequences.

  Args:
    config: the :class:`AlignmentConfig` whose metric names are accumulated.
  """

  def __init__(self, config: AlignmentConfig = AlignmentConfig()):
    self.config = config
    self.names = config.metric_names()
    self._sums: dict[int, np.ndarray] = {}
    self._bins: dict[int, np.ndarray] = {}

  def update(self, metrics: dict[str, jax.Array], weights: np.ndarray, seq_ids: np.ndarray) -> None:
    """Add one block.

    Args:
      metrics: output of :func:`token_metrics` for ``N`` tokens.
      weights: ``[N]`` token mask/weights m_t (0 for padding rows of a block).
      seq_ids: ``[N]`` int global sequence ids.
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
    """Masked token means (and ECE) with percentile bootstrap CIs over sequences.

    Returns:
      dict name → :class:`MetricSummary` for every metric and ``"student_ece"``, plus ``"num_tokens"`` and
      ``"num_sequences"`` (floats). All-masked input gives zeros.
    """
    if not 0 < confidence < 1:
      raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    keys = sorted(self._sums)
    n_seq = len(keys)
    if n_seq == 0:
      raise ValueError("no tokens were accumulated")
    sums = np.stack([self._sums[k] for k in keys])  # [S, M + 1]
    bins = np.stack([self._bins[k] for k in keys])  # [S, 3, nb]
    rng = np.random.default_rng(seed)
    w = rng.multinomial(n_seq, np.full(n_seq, 1.0 / n_seq), size=num_bootstrap).astype(np.float64)
    boot_sums = w @ sums  # [R, M + 1]
    boot_bins = np.einsum("rs,sjb->rjb", w, bins)
    lo, hi = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
    total = sums.sum(0)
    result: dict[str, MetricSummary | float] = {}
    for i, name in enumerate(self.names):
      mean = total[i] / max(total[-1], 1.0)
      boot = boot_sums[:, i] / np.maximum(boot_sums[:, -1], 1.0)
      result[name] = MetricSummary(float(mean), float(np.percentile(boot, lo)), float(np.percentile(boot, hi)))
    all_bins = bins.sum(0)
    ece = float(ece_from_bins(*all_bins))
    boot_ece = ece_from_bins(boot_bins[:, 0], boot_bins[:, 1], boot_bins[:, 2])
    result["student_ece"] = MetricSummary(ece, float(np.percentile(boot_ece, lo)),
                                          float(np.percentile(boot_ece, hi)))
    result["num_tokens"] = float(total[-1])
    result["num_sequences"] = float(n_seq)
    return result

  def reliability(self) -> dict[str, list[float]]:
    """Per-bin counts, mean confidence and accuracy over all tokens (for reliability diagrams)."""
    counts, conf, correct = np.stack(list(self._bins.values())).sum(0)
    safe = np.maximum(counts, 1e-12)
    return {"counts": counts.tolist(), "confidence": (conf / safe).tolist(), "accuracy": (correct / safe).tolist()}


def accumulate_logits(acc: AlignmentAccumulator, teacher_logits, student_logits, labels, mask, seq_offset: int = 0):
  """Stream one batch of ``[B, T, V]`` teacher/student logits into ``acc`` over blocks of masked tokens.

  Only tokens with ``mask > 0`` are evaluated; they are processed ``config.block_tokens`` at a time (the last
  block padded with zero weight so every block has one static shape).

  Args:
    acc: the accumulator.
    teacher_logits: ``[B, T, V]`` (or a callable ``rows -> [n, V]`` of flat row indices, see
      :func:`accumulate_lens`).
    student_logits: like ``teacher_logits``.
    labels: ``[B, T]`` int next tokens.
    mask: ``[B, T]`` loss mask (1 where the next token is scored).
    seq_offset: global id of sequence 0 of this batch.
  """
  mask = np.asarray(mask)
  labels = np.asarray(labels)
  if mask.ndim != 2 or labels.shape != mask.shape:
    raise ValueError(f"labels and mask must both be [B, T], got {labels.shape} and {mask.shape}")
  t_rows = teacher_logits if callable(teacher_logits) else _row_getter(teacher_logits, mask.shape)
  s_rows = student_logits if callable(student_logits) else _row_getter(student_logits, mask.shape)
  rows = np.flatnonzero(mask.reshape(-1) > 0)
  bt = acc.config.block_tokens
  for start in range(0, len(rows), bt):
    block = rows[start:start + bt]
    n = len(block)
    padded = np.concatenate([block, np.full(bt - n, block[0])]) if n < bt else block
    weights = np.zeros(bt)
    weights[:n] = mask.reshape(-1)[block]
    metrics = token_metrics(t_rows(padded), s_rows(padded), jnp.asarray(labels.reshape(-1)[padded], jnp.int32),
                            config=acc.config)
    acc.update(metrics, weights, seq_offset + padded // mask.shape[1])


def _row_getter(logits, shape):
  if logits.ndim != 3 or logits.shape[:2] != tuple(shape):
    raise ValueError(f"logits must be [B, T, V] with [B, T] = {tuple(shape)}, got {logits.shape}")
  flat = jnp.reshape(logits, (-1, logits.shape[-1]))
  return lambda rows: flat[jnp.asarray(rows)]


def output_key() -> str:
  """Report key of the output (final-layer logits) alignment."""
  return "output"


def lens_key(teacher_layer: int, student_layer: int) -> str:
  """Report key of the lens pair (teacher hidden state ``teacher_layer``, student ``student_layer``)."""
  return f"lens/T{teacher_layer}-S{student_layer}"


def evaluate_alignment(teacher, student, batches, *, layer_pairs=(), norm: bool = False,
                       config: AlignmentConfig = AlignmentConfig(), num_bootstrap: int = 1000,
                       seed: int = 0) -> dict[str, dict]:
  """Teacher-forced alignment of ``student`` to ``teacher`` at the output and every lens layer pair.

  For pair (j, i) the teacher's lens logits are ``teacher.logit_lens(h^T_j, norm=norm)`` and the student's
  ``student.logit_lens(h^S_i, norm=norm)`` — each hidden state through its own model's unembedding, the
  convention of the training lens loss; the output pair uses the models' logits.

  Args:
    teacher: the teacher model (``model(ids, attention_mask=, positions=)`` → ``ModelOutput``).
    student: the student model, same vocabulary.
    batches: iterable of data ``Batch`` dicts (``input_ids``, ``attention_mask``, ``positions``, ``labels``,
      ``loss_mask``, all ``[B, T]``).
    layer_pairs: ``(teacher_layer, student_layer)`` hidden-state indices (HF convention, 0 = embeddings).
    norm: apply each model's final norm before its unembedding (the normed lens).
    config: :class:`AlignmentConfig`.
    num_bootstrap: bootstrap resamples for the CIs.
    seed: bootstrap seed.

  Returns:
    dict key → ``{"metrics": {name: {mean, ci_low, ci_high} | float}, "reliability": {...}}`` with keys
    ``"output"`` and ``"lens/T{j}-S{i}"``.

  Raises:
    ValueError: if the vocabularies differ or a layer index is out of range.
  """
  from jaxlens.eval.models_io import forward_with_hidden, lens_logits_fn
  keys = [output_key()] + [lens_key(j, i) for j, i in layer_pairs]
  accs = {k: AlignmentAccumulator(config) for k in keys}
  offset = 0
  for batch in batches:
    t_out = forward_with_hidden(teacher, batch)
    s_out = forward_with_hidden(student, batch)
    if t_out.logits.shape != s_out.logits.shape:
      raise ValueError(f"teacher and student logits differ in shape: {t_out.logits.shape} vs {s_out.logits.shape}")
    labels, mask = batch["labels"], batch["loss_mask"]
    accumulate_logits(accs[output_key()], t_out.logits, s_out.logits, labels, mask, offset)
    for (j, i), key in zip(layer_pairs, keys[1:]):
      for layer, hs in ((j, t_out.hidden_states), (i, s_out.hidden_states)):
        if not 0 <= layer < len(hs):
          raise ValueError(f"layer index {layer} out of range for a model with {len(hs)} hidden states")
      accumulate_logits(accs[key], lens_logits_fn(teacher, t_out.hidden_states[j], norm),
                        lens_logits_fn(student, s_out.hidden_states[i], norm), labels, mask, offset)
    offset += np.asarray(mask).shape[0]
  return {k: {"metrics": {n: (v.as_dict() if isinstance(v, MetricSummary) else v)
                          for n, v in acc.summarize(num_bootstrap=num_bootstrap, seed=seed).items()},
              "reliability": acc.reliability()}
          for k, acc in accs.items()}
