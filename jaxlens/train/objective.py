"""The distillation objective, as token-weighted sums so micro-batches and hosts combine exactly.

.. math::

   \\mathcal L = (1-\\alpha)\\,\\mathrm{CE} + \\alpha\\big(L_\\text{out} + \\lambda L_\\text{lens}
                 + \\mu L_\\text{mse}\\big)

with response mask m (``loss_mask``), N = Σ_t m_t over the *global* batch, and per token t:

- CE: ``−log q_final(y_t)`` of the student (computed only when α < 1), from the final normed hidden states and
  the student's unembedding. With an output term (0 < α < 1) it rides in the first output divergence's kernel
  sweep (``lens_loss(labels=…, cross_entropy_weight=(1−α)/α)``: one pass over the student's ``[D, V]``
  unembedding for both, as Liger's fused distillation losses do); with α = 0 it runs alone through
  :func:`jaxlens.losses.linear_cross_entropy`. Neither materialises the ``[N, V]`` student logits.
- L_out: Σ_d D_d(p_final ‖ q_final) over the output divergences (``forward_kl+reverse_kl`` sums two), through
  :func:`jaxlens.losses.lens_loss` with one pair: the final *normed* hidden states and each model's own
  unembedding, so the ``[N, V]`` logits are never materialised by the tiled kernel.
- L_lens: Σ_i w_i D(p_{k_i} ‖ q_{j_i}), w_i = 1/P, with p_k = softmax(h^T_k W_T), q_j = softmax(h^S_j W_S), the
  raw residual stream (``lens_norm=False``, DistillLens) or its final norm (``lens_norm=True``).
- L_mse: (1/P) Σ_i mean_d (h^T_{k_i} A − h^S_{j_i})², A ``[D_T, D_S]`` learned (the feature-MSE baseline; unlike
  the reference, masked like every other term).

Every term is ``Σ_t m_t · value_t / N``: this module returns the numerators (sums) and N, and the caller divides
once after summing over micro-batches and hosts (``Σ sums / Σ counts``), which is exact.

Gradients: the teacher's hidden states and unembedding are stop-gradient; gradients reach the student's
blocks, final norm, unembedding (the input embedding when tied) and the projection A.

``reference_mask_bug=True`` reproduces the released code's lens mask: its lens rows are ordered ``b·P + i``
but the mask is ``M.repeat(P, 1)`` (row order ``i·B + b``), so pair i of sample b is weighted by the mask of
sample ``(b·P + i) mod B``. The total weight is still P·N (the code's denominator).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxlens import losses
from jaxlens.run.config import ConfigError
from jaxlens.run.config import LossConfig

def resolve_layer_pairs(cfg: LossConfig, num_teacher_layers: int, num_student_layers: int,
                        student_blocks: tuple[int, ...] | None = None) -> losses.LayerMap:
  """The configured lens pairs: the explicit lists, else the ``loss.layer_map`` rule with ``num_lens_pairs``.

  ``uniform`` (DistillLens's rule): pair k = 1…n at depth k/(n+1) of each model, rounded
  (:func:`jaxlens.losses.uniform_layer_map`). ``construction``: the student side as uniform, each paired with
  the teacher hidden state after the teacher block it was copied from (:func:`jaxlens.losses.construction_layer_map`).

  Args:
    cfg: the ``loss`` group.
    num_teacher_layers, num_student_layers: the number of blocks L of each model (hidden-state indices are 0…L).
    student_blocks: the teacher block each student block was copied from (``None``: not built from the teacher).

  A map with a repeated pair or the degenerate pair (0, 0) (both embedding outputs: no block on either side)
  is refused, and so is a rule-made map of more pairs than either model has blocks (``num_lens_pairs=50`` on
  a 3-block student); an explicit map may pair several teacher layers with one student layer.

  Raises:
    ConfigError (a ValueError): on an index outside ``[0, L]`` (naming it and L), lists of different lengths,
      a rule-made map of more pairs than blocks, a repeated pair, the pair (0, 0), or ``layer_map=construction``
      for a student not built from teacher blocks.
  """
  try:
    if cfg.teacher_layers:
      layer_map = losses.LayerMap(tuple(cfg.teacher_layers), tuple(cfg.student_layers), num_teacher_layers,
                                  num_student_layers)
    elif cfg.layer_map == "construction":
      if student_blocks is None:
        raise ValueError("loss.layer_map=construction needs a student built from teacher blocks "
                         "(student.source=teacher_layers, or a run of one)")
      layer_map = losses.construction_layer_map(student_blocks, num_teacher_layers, cfg.num_lens_pairs)
    else:
      layer_map = losses.uniform_layer_map(num_teacher_layers, num_student_layers, cfg.num_lens_pairs)
    pairs = list(zip(layer_map.teacher_layers, layer_map.student_layers))
    if not cfg.teacher_layers and len(pairs) > min(num_teacher_layers, num_student_layers):
      raise ValueError(f"{len(pairs)} pairs are more than the {min(num_teacher_layers, num_student_layers)} blocks of the "
                       f"{'student' if num_student_layers <= num_teacher_layers else 'teacher'}")
    repeated = sorted({p for p in pairs if pairs.count(p) > 1})
    if repeated:
      raise ValueError(f"pairs {repeated[:5]} appear more than once")
    if (0, 0) in pairs:
      raise ValueError("the pair (0, 0) compares the two embedding outputs (no block on either side)")
  except ValueError as e:
    hint = "" if cfg.teacher_layers else f"; use at most loss.num_lens_pairs={_most_pairs(num_teacher_layers, num_student_layers)}"
    raise ConfigError(f"bad lens layer map (loss.teacher_layers={list(cfg.teacher_layers)}, "
                      f"loss.student_layers={list(cfg.student_layers)}, loss.num_lens_pairs={cfg.num_lens_pairs}; "
                      f"teacher {num_teacher_layers} blocks, student {num_student_layers} blocks): {e}{hint}") from None
  return layer_map


def _most_pairs(teacher_layers: int, student_layers: int) -> int:
  """The largest n whose uniform map has n distinct pairs, none of them (0, 0)."""
  for n in range(min(teacher_layers, student_layers), 0, -1):
    m = losses.uniform_layer_map(teacher_layers, student_layers, n)
    pairs = list(zip(m.teacher_layers, m.student_layers))
    if len(set(pairs)) == n and (0, 0) not in pairs:  # n ≤ both block counts by the range
      return n
  return 1


def divergence_kwargs(name: str, cfg: LossConfig) -> dict[str, Any]:
  """The ``loss.*`` hyper-parameters of divergence ``name``, under the divergence's own argument names.

  temperature → every divergence; ``beta`` → ``jsd``; ``skew`` → ``alpha`` of ``skew_kl`` / ``skew_reverse_kl``;
  ``mu``, ``head_rule``, ``akl_swap`` → ``adaptive_kl`` (``swap_weights``); ``mix_weight`` → ``weight`` of ``mix``;
  ``tad_k``, ``tad_beta`` → ``k``, ``beta`` of ``tad``.
  """
  kwargs: dict[str, Any] = {"temperature": cfg.temperature}
  if name == "jsd":
    kwargs["beta"] = cfg.beta
  elif name in ("skew_kl", "skew_reverse_kl"):
    kwargs["alpha"] = cfg.skew
  elif name == "adaptive_kl":
    kwargs.update(mu=cfg.mu, head_rule=cfg.head_rule, swap_weights=cfg.akl_swap)
  elif name == "mix":
    kwargs["weight"] = cfg.mix_weight
  elif name == "tad":
    kwargs.update(k=cfg.tad_k, beta=cfg.tad_beta)
  return kwargs


def reference_bug_masks(mask: jax.Array, num_pairs: int) -> jax.Array:
  """The released code's per-pair lens masks ``[P, B, T]``: pair i of sample b gets ``mask[(b·P + i) mod B]``."""
  b = mask.shape[0]
  rows = (jnp.arange(b)[None, :] * num_pairs + jnp.arange(num_pairs)[:, None]) % b  # [P, B]
  return mask[rows]


@dataclasses.dataclass(frozen=True)
class Objective:
  """A resolved objective: weights, divergences, layer pairs and kernel settings (static under ``jit``)."""

  cfg: LossConfig
  pairs: losses.LayerMap

  @property
  def uses_ce(self) -> bool:
    return self.cfg.alpha < 1.0

  @property
  def uses_lens(self) -> bool:
    return self.cfg.alpha > 0.0 and self.cfg.lens_weight > 0.0

  @property
  def uses_mse(self) -> bool:
    return self.cfg.alpha > 0.0 and self.cfg.feature_mse_weight > 0.0

  @property
  def tile(self) -> losses.TileConfig:
    return losses.TileConfig(block_tokens=self.cfg.block_tokens)

  def _pair_sums(self, t_hidden, s_hidden, t_unembed, s_unembed, mask, divergence, token_statistics=None,
                 labels=None, cross_entropy_weight=0.0):
    """``(Σ_i (S_i + λ C_i), S, stats)`` with S_i = Σ_t m_t D(h^T_it W_T, h^S_it W_S) over ``[P, N, D]`` hidden
    states and C_i the student's CE sums (only with ``labels``; λ = ``cross_entropy_weight``): one kernel sweep
    for all P pairs (one ``[D_S, V]`` unembedding gradient), differentiable in the student through the first
    entry; ``stats`` are the masked sums ``{name: [P]}`` of ``token_statistics`` and, with labels,
    ``stats["cross_entropy"]`` = C, from the same sweep (``{}`` without either)."""
    out = losses.lens_loss(t_hidden, s_hidden, t_unembed, s_unembed, mask, divergence=divergence,
                           divergence_kwargs=divergence_kwargs(divergence, self.cfg), reduction="sum",
                           implementation=self.cfg.implementation, tile=self.tile, return_pair_sums=True,
                           token_statistics=token_statistics, labels=labels,
                           cross_entropy_weight=cross_entropy_weight)
    return out if len(out) == 3 else (*out, {})

  def head_weight_statistics(self, teacher_logits, student_logits) -> dict[str, jax.Array]:
    """AKL's per-token forward-KL weight w_h = g_head/(g_head + g_tail) and its bin indicators
    (:func:`head_weight_histogram`), from the output kernel's own logits tile; logged only, no gradient.

    Computed inside the AKL output term's kernel sweep (``token_statistics``) with the loss's own head search and
    hyper-parameters, so it is exactly the weight the loss applies, it never holds ``[N, V]`` logits, and XLA
    shares its work with the loss's (the same operations on the same logits tile).
    """
    kwargs = divergence_kwargs("adaptive_kl", self.cfg)
    del kwargs["swap_weights"]  # AKL-r swaps which KL w_h multiplies; w_h itself is the same
    return head_weight_histogram(losses.adaptive_kl_head_weight(teacher_logits, student_logits, **kwargs))

  def sums(self, teacher_hidden, student_hidden, teacher_unembed, student_unembed, batch, *,
           teacher_norm=None, student_norm=None, projection=None) -> dict[str, jax.Array]:
    """The token-weighted numerators of every term and the token count of one (micro-)batch.

    Args:
      teacher_hidden, student_hidden: the ``L + 1`` hidden states ``[B, T, D_T]`` / ``[B, T, D_S]`` of each
        model (HF convention: ``[L]`` after the final norm).
      teacher_unembed ``[D_T, V]``, student_unembed ``[D_S, V]``: each model's LM head (``x @ W``).
      batch: a data ``Batch`` with ``labels [B, T]`` and ``loss_mask [B, T]``.
      teacher_norm, student_norm: each model's final norm, required when ``lens_norm``.
      projection: ``[D_T, D_S]`` feature-MSE projection, required when ``feature_mse_weight > 0``.

    Returns:
      dict of float32 scalars: ``total`` = (1−α)·ce + α·(output + λ·lens + μ·mse), each term's sum, ``count``
      = Σ m, and ``lens_pair_<i>`` (each pair's Σ_t m_t d_it, i.e. before the 1/P weight).

    Raises:
      ValueError: if an input a configured term needs is missing.
    """
    cfg = self.cfg
    mask = batch["loss_mask"].astype(jnp.float32)  # [B, T]
    b, seq_len = mask.shape
    flat_mask = mask.reshape(b * seq_len)
    teacher_hidden = jax.tree.map(jax.lax.stop_gradient, tuple(teacher_hidden))
    teacher_unembed = jax.lax.stop_gradient(teacher_unembed)
    zero = jnp.zeros((), jnp.float32)
    out = {"count": jnp.sum(flat_mask), "ce": zero, "output": zero, "lens": zero, "mse": zero}

    flat = lambda h: h.reshape(b * seq_len, h.shape[-1])  # noqa: E731  [B, T, D] -> [N, D]
    labels = batch["labels"].reshape(b * seq_len)
    fused = None  # the differentiable D + (1-α)/α·CE sum of the output sweep that carries the CE
    if cfg.alpha == 0.0:
      out["ce"] = losses.linear_cross_entropy(flat(student_hidden[-1]), student_unembed, labels, flat_mask,
                                              reduction="sum", implementation=cfg.implementation, tile=self.tile)
    else:
      t_final, s_final = flat(teacher_hidden[-1])[None], flat(student_hidden[-1])[None]
      for k, name in enumerate(cfg.output_divergences()):
        # AKL's head weight rides in its loss's sweep (head_weight_statistics); the CE rides in the first one's
        statistics = self.head_weight_statistics if name == "adaptive_kl" else None
        carries_ce = self.uses_ce and k == 0
        total, pair_sums, logged = self._pair_sums(
            t_final, s_final, teacher_unembed, student_unembed, flat_mask, name, statistics,
            labels=labels if carries_ce else None,
            cross_entropy_weight=(1.0 - cfg.alpha) / cfg.alpha if carries_ce else 0.0)
        if carries_ce:
          fused = total
          out["ce"] = logged.pop(losses.lens.CROSS_ENTROPY)[0]
          total = pair_sums[0]  # stop-gradient: its gradient comes through ``fused``
        out["output"] = out["output"] + total
        out.update({key: value[0] for key, value in logged.items()})

    if self.uses_lens:
      p = self.pairs.num_pairs
      if cfg.lens_norm and (teacher_norm is None or student_norm is None):
        raise ValueError("loss.lens_norm=true needs both models' final norms")
      t_h = jnp.stack([flat(teacher_hidden[t]) for t in self.pairs.teacher_layers])  # [P, N, D_T]
      s_h = jnp.stack([flat(student_hidden[s]) for s in self.pairs.student_layers])  # [P, N, D_S]
      if cfg.lens_norm:
        t_h, s_h = jax.lax.stop_gradient(teacher_norm(t_h)), student_norm(s_h)
      if cfg.reference_mask_bug:  # the released code's per-pair masks: one kernel call per pair
        masks = reference_bug_masks(mask, p).reshape(p, b * seq_len)
        calls = [self._pair_sums(t_h[i:i + 1], s_h[i:i + 1], teacher_unembed, student_unembed, masks[i],
                                 cfg.lens_divergence) for i in range(p)]
        total, pair_sums = sum(c[0] for c in calls), jnp.concatenate([c[1] for c in calls])
      else:  # every pair in one sweep of the kernel's P axis
        total, pair_sums, _ = self._pair_sums(t_h, s_h, teacher_unembed, student_unembed, flat_mask,
                                              cfg.lens_divergence)
      out["lens"] = total / p
      out.update({f"lens_pair_{i}": pair_sums[i] for i in range(p)})

    if self.uses_mse:
      if projection is None:
        raise ValueError("loss.feature_mse_weight > 0 needs the learned projection")
      per_pair = [jnp.mean(jnp.square(teacher_hidden[t].astype(jnp.float32) @ projection
                                      - student_hidden[s].astype(jnp.float32)), axis=-1)  # [B, T]
                  for t, s in zip(self.pairs.teacher_layers, self.pairs.student_layers)]
      out["mse"] = jnp.mean(jnp.stack([jnp.sum(d * mask) for d in per_pair]))

    distill = out["output"] + cfg.lens_weight * out["lens"] + cfg.feature_mse_weight * out["mse"]
    out["total"] = (1.0 - cfg.alpha) * out["ce"] + cfg.alpha * distill
    if fused is not None:
      # ce and the first output term are that sweep's stop-gradient sums; α·fused = α·D + (1−α)·CE carries their
      # gradient, and adding fused − stop_gradient(fused) (exactly 0) leaves the value as computed above.
      out["total"] = out["total"] + cfg.alpha * (fused - jax.lax.stop_gradient(fused))
    return out


HEAD_WEIGHT_BINS = 10


def head_weight_histogram(weight: jax.Array) -> dict[str, jax.Array]:
  """Per token: w itself and the indicators of w's bin among ``HEAD_WEIGHT_BINS`` equal bins of [0, 1] (w = 1 in
  the last).

  Keys ``akl_head_weight`` and ``akl_head_weight_bin_<k>``; their masked sums as token means (:func:`normalise`)
  are the mean head weight and the share of tokens per bin.
  """
  bins = jnp.clip(jnp.floor(weight * HEAD_WEIGHT_BINS), 0, HEAD_WEIGHT_BINS - 1).astype(jnp.int32)
  out = {"akl_head_weight": weight}
  for k in range(HEAD_WEIGHT_BINS):
    out[f"akl_head_weight_bin_{k}"] = (bins == k).astype(jnp.float32)
  return out


def normalise(sums: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Sums → token means: every entry but ``count`` divided by ``max(count, 1)``."""
  count = jnp.maximum(sums["count"], 1.0)
  return {k: (v if k == "count" else v / count) for k, v in sums.items()}
