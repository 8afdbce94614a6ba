r"""The logit-lens loss: a divergence between teacher and student hidden states seen through their unembeddings.

For P matched layer pairs, pair i projects the teacher's hidden states through the teacher's unembedding and the
student's through the student's, and compares the two next-token distributions with any divergence of the family:

.. math::

   z^T_{it} = h^T_{it} W_T, \qquad z^S_{it} = h^S_{it} W_S, \qquad
   S_i = \sum_t m_t\, D(z^T_{it}, z^S_{it}), \qquad
   \mathcal{L}_{\rm mean} = \frac{\sum_i w_i\, S_i / \max(\sum_t m_t, 1)}{\sum_i w_i}.

Two implementations share this contract. ``"reference"`` materialises the ``[P, N, V]`` logits (the oracle).
``"tiled"`` streams blocks of ``block_tokens`` tokens for every pair, so at most one ``[block, V]`` logit tile per
model is alive: memory is O(N·D·P + block·V), flat in P. Its one ``jax.custom_vjp`` forms the student's gradient
inside the forward sweep (Liger's way): per tile, ``jax.vjp`` of the per-token divergence gives
``G = dL/dz^S``, then ``dX = G W_Sᵀ`` is written out and ``dW = Σ X_blockᵀ G`` is accumulated; the backward only
scales these by the incoming cotangent. Recomputing the tiles in the backward instead (tokamax's way) was measured
slower (``bench/RESULTS.md``) and is not kept.

Masked tokens are selected away before any arithmetic: both implementations zero their hidden-state rows before
the projections (in the tiled kernel inside the sweep that also forms the gradients, so inside the custom VJP), and
the divergence zeroes their logits rows before its log-softmax. A NaN or inf in a masked token's hidden state
therefore reaches no value, no dX and no dW = Xᵀ G; at an unmasked token it makes the loss NaN.

The vocabulary is padded with zero columns to a multiple of ``TileConfig.vocab_multiple`` so the matmuls stay on
the fast path; the padded logits are set to −inf before the divergence, so they are excluded exactly from every
softmax and sum (and get exactly zero gradient).

Any divergence of the family works through one code path: the kernel calls it with ``reduction="none"`` on each
tile (teacher stop-gradient, float32 softmaxes and −inf handling are the divergence's own). The exception is a
divergence that couples tokens — ``tad`` normalises by the mean teacher tail mass over all tokens — which the tiled
implementation refuses (``implementation="reference"`` computes it over each pair's N tokens).

Quantities to *log* about the same logits (e.g. AKL's per-token head weight) ride in the same sweep:
``token_statistics`` maps the tile's ``(teacher_logits, student_logits)`` to per-token values, and the kernel
returns their masked sums Σ_t m_t x_it per pair, stop-gradient, without a second pass over the vocabulary.

The student's next-token cross-entropy can ride in the same sweep too (``labels``, ``cross_entropy_weight`` λ):
each tile then differentiates D + λ·CE of the student logits it already holds, as Liger's fused distillation
losses add their hard loss, so a distillation objective with a CE term makes one pass over the student's
unembedding instead of two (``bench/RESULTS.md`` measures it).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

from jaxlens.losses._checks import check_labels
from jaxlens.losses.cross_entropy import cross_entropy
from jaxlens.losses.divergences import get_divergence

Reduction = Literal["mean", "sum", "per_pair"]
Implementation = Literal["tiled", "reference"]
PerTokenDivergence = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
#: ``(teacher_logits [b, V], student_logits [b, V]) -> {name: [b] per-token value}``, logged, never differentiated.
TokenStatistics = Callable[[jax.Array, jax.Array], dict[str, jax.Array]]

_REDUCTIONS = ("mean", "sum", "per_pair")
_IMPLEMENTATIONS = ("tiled", "reference")
_RESERVED_DIVERGENCE_KWARGS = ("mask", "reduction", "vocab_axis_name")
# Divergences whose per-token value depends on other tokens (tad: β / mean tail mass), so token tiles differ.
_TOKEN_COUPLED_DIVERGENCES = ("tad",)
#: the statistics key under which the kernel returns the cross-entropy sums Σ_t m_t CE_it when given ``labels``
CROSS_ENTROPY = "cross_entropy"


@dataclasses.dataclass(frozen=True)
class TileConfig:
  """Static tiling of the lens kernel; its defaults are the only defaults (forward and backward read them).

  Attributes:
    block_tokens: tokens per tile (per layer pair). The live logits are ``2 × [block_tokens, V]`` float32 plus the
      divergence's temporaries, so this trades memory against per-tile overhead. N need not be a multiple: the
      last tile is padded with masked tokens.
    vocab_multiple: the vocabulary is padded with zero unembedding columns (−inf logits) to a multiple of this.
    compute_dtype: dtype the matmul inputs are cast to (e.g. ``jnp.bfloat16`` on GPU); accumulation is always
      float32. ``None`` keeps each matmul's input dtype.

  Raises:
    ValueError: if a size is not a positive int or ``compute_dtype`` is not a floating dtype.
  """

  block_tokens: int = 1024
  vocab_multiple: int = 128
  compute_dtype: Any = None

  def __post_init__(self):
    for name in ("block_tokens", "vocab_multiple"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"TileConfig.{name} must be a positive int, got {value!r}")
    if self.compute_dtype is not None:
      dtype = jnp.dtype(self.compute_dtype)
      if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"TileConfig.compute_dtype must be a floating dtype, got {self.compute_dtype!r}")
      object.__setattr__(self, "compute_dtype", dtype)


def padded_vocab_size(vocab_size: int, multiple: int) -> int:
  """Smallest multiple of ``multiple`` that is ≥ ``vocab_size``."""
  return -(-vocab_size // multiple) * multiple


def pad_vocab(unembed: jax.Array, multiple: int) -> jax.Array:
  """Pads an unembedding ``[D, V]`` with zero columns to ``[D, padded_vocab_size(V, multiple)]``."""
  extra = padded_vocab_size(unembed.shape[1], multiple) - unembed.shape[1]
  return unembed if extra == 0 else jnp.pad(unembed, ((0, 0), (0, extra)))


def per_token_divergence(
    divergence: str | Callable[..., jax.Array],
    divergence_kwargs: dict[str, Any] | None,
    vocab_axis_name: str | None = None,
    *,
    tiled: bool = False,
) -> PerTokenDivergence:
  """The per-token divergence ``(teacher_logits [b, V], student_logits [b, V], mask [b]) -> [b]`` of the family.

  Args:
    divergence: a name in ``DIVERGENCES`` or a function with the family's signature.
    divergence_kwargs: its hyper-parameters (``temperature``, ``beta``, ...).
    vocab_axis_name: the mesh axis the vocabulary is sharded over, or ``None``.
    tiled: whether the caller evaluates token blocks separately (the tiled kernel).

  Raises:
    ValueError: if ``divergence_kwargs`` sets ``mask``, ``reduction`` or ``vocab_axis_name`` (the kernel owns them),
      or if ``tiled`` and the divergence couples tokens (``tad``'s tail-mass normaliser is a mean over tokens).
  """
  fn = get_divergence(divergence) if isinstance(divergence, str) else divergence
  if tiled and any(fn is get_divergence(name) for name in _TOKEN_COUPLED_DIVERGENCES):
    raise ValueError(f"{fn.__name__} normalises by a statistic over all tokens, which token tiles cannot see; "
                     "use implementation='reference'")
  kwargs = dict(divergence_kwargs or {})
  reserved = sorted(set(kwargs) & set(_RESERVED_DIVERGENCE_KWARGS))
  if reserved:
    raise ValueError(f"divergence_kwargs may not set {reserved}: the lens kernel sets them")
  return functools.partial(fn, reduction="none", vocab_axis_name=vocab_axis_name, **kwargs)


def check_lens_inputs(teacher_hidden, student_hidden, teacher_unembed, student_unembed, mask, layer_weights,
                      reduction, implementation) -> None:
  """Raises ``ValueError``/``TypeError`` naming the offending shapes or values; see :func:`lens_loss`."""
  if reduction not in _REDUCTIONS:
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
  if implementation not in _IMPLEMENTATIONS:
    raise ValueError(f"implementation must be one of {_IMPLEMENTATIONS}, got {implementation!r}")
  named = {"teacher_hidden": teacher_hidden, "student_hidden": student_hidden,
           "teacher_unembed": teacher_unembed, "student_unembed": student_unembed}
  for name, x in named.items():
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
      raise TypeError(f"{name} must be floating point, got dtype {jnp.result_type(x)}")
  for name, rank in (("teacher_hidden", 3), ("student_hidden", 3), ("teacher_unembed", 2), ("student_unembed", 2)):
    if jnp.ndim(named[name]) != rank:
      raise ValueError(f"{name} must have rank {rank}, got shape {jnp.shape(named[name])}")
  th, sh = jnp.shape(teacher_hidden), jnp.shape(student_hidden)
  tw, sw = jnp.shape(teacher_unembed), jnp.shape(student_unembed)
  if th[:2] != sh[:2]:
    raise ValueError(f"teacher_hidden {th} and student_hidden {sh} must agree on [P, N] (layer pairs, tokens)")
  if tw[1] != sw[1]:
    raise ValueError(f"teacher_unembed {tw} and student_unembed {sw} must have the same vocabulary size")
  if th[2] != tw[0]:
    raise ValueError(f"teacher_hidden {th} has D={th[2]} but teacher_unembed {tw} has D={tw[0]}")
  if sh[2] != sw[0]:
    raise ValueError(f"student_hidden {sh} has D={sh[2]} but student_unembed {sw} has D={sw[0]}")
  if th[0] < 1 or th[1] < 1:
    raise ValueError(f"need at least one layer pair and one token, got hidden shape {th}")
  if mask is not None and jnp.shape(mask) != th[1:2]:
    raise ValueError(f"mask must have shape [N] = {th[1:2]}, got {jnp.shape(mask)}")
  if layer_weights is not None:
    if jnp.shape(layer_weights) != th[:1]:
      raise ValueError(f"layer_weights must have shape [P] = {th[:1]}, got {jnp.shape(layer_weights)}")
    try:
      weights = np.asarray(layer_weights, dtype=np.float64)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
      return  # traced weights: only their shape can be checked
    if np.any(weights < 0) or not np.all(np.isfinite(weights)):
      raise ValueError(f"layer_weights must be finite and non-negative, got {weights.tolist()}")
    if reduction == "mean" and weights.sum() == 0:
      raise ValueError("layer_weights sum to 0: the weighted mean over pairs is undefined")


def check_cross_entropy_inputs(labels, cross_entropy_weight, token_shape) -> None:
  """Raises naming the offending value unless ``labels`` are ``None`` or ``[N]`` integers and λ ≥ 0 is finite and
  used only with labels; see :func:`lens_loss`."""
  if isinstance(cross_entropy_weight, bool) or not isinstance(cross_entropy_weight, (int, float, np.number)):
    raise TypeError(f"cross_entropy_weight must be a Python number, got {cross_entropy_weight!r}")
  if not (np.isfinite(cross_entropy_weight) and cross_entropy_weight >= 0):
    raise ValueError(f"cross_entropy_weight must be finite and non-negative, got {cross_entropy_weight!r}")
  if labels is None:
    if cross_entropy_weight:
      raise ValueError(f"cross_entropy_weight={cross_entropy_weight!r} needs labels")
    return
  check_labels(jnp.asarray(labels), tuple(token_shape))


def pair_coefficients(layer_weights, mask, num_pairs, reduction, token_axis_name=None):
  """Per-pair coefficients ``c`` with loss = Σ_i c_i S_i, and the (global) valid-token count.

  ``"mean"``: c_i = w_i / (Σ_j w_j · max(Σ_t m_t, 1)); ``"sum"`` and ``"per_pair"``: c_i = w_i.
  """
  weights = (jnp.ones((num_pairs,), jnp.float32) if layer_weights is None
             else jnp.asarray(layer_weights, jnp.float32))
  count = jnp.sum(mask)
  if token_axis_name is not None:
    count = lax.psum(count, token_axis_name)
  if reduction == "mean":
    return weights / (jnp.sum(weights) * jnp.maximum(count, 1.0)), count
  return weights, count


def masked_statistic_sums(token_statistics: TokenStatistics | None, teacher_logits, student_logits, mask
                          ) -> dict[str, jax.Array]:
  """``{name: Σ_t m_t x_t}`` over the last token axis of ``token_statistics(teacher_logits, student_logits)``,
  stop-gradient; masked tokens contribute exactly 0 whatever their value (NaN included). ``{}`` for ``None``."""
  if token_statistics is None:
    return {}
  values = token_statistics(lax.stop_gradient(teacher_logits), lax.stop_gradient(student_logits))
  return {name: jnp.sum(jnp.where(mask != 0, mask * value.astype(jnp.float32), 0.0), axis=-1)
          for name, value in values.items()}


def with_cross_entropy(stats: dict[str, jax.Array], cross_entropy_sums: jax.Array) -> dict[str, jax.Array]:
  """``stats`` with ``CROSS_ENTROPY`` added; a token statistic of that name would be shadowed, so it is refused."""
  if CROSS_ENTROPY in stats:
    raise ValueError(f"a token statistic may not be named {CROSS_ENTROPY!r} when labels are given: the kernel "
                     "returns the cross-entropy sums under that key")
  return {**stats, CROSS_ENTROPY: cross_entropy_sums}


def reference_pair_sums(per_token: PerTokenDivergence, teacher_hidden, student_hidden, teacher_unembed,
                        student_unembed, mask, compute_dtype=None, token_statistics: TokenStatistics | None = None,
                        labels=None) -> tuple[jax.Array, dict[str, jax.Array]]:
  r"""The oracle: S_i = Σ_t m_t D(h^T_{it} W_T, h^S_{it} W_S) with all ``[P, N, V]`` logits materialised.

  Args:
    per_token: from :func:`per_token_divergence` (teacher stop-gradient inside).
    teacher_hidden: ``[P, N, Dt]``. student_hidden: ``[P, N, Ds]``.
    teacher_unembed: ``[Dt, V]``. student_unembed: ``[Ds, V]``. mask: ``[N]`` float32.
    compute_dtype: matmul input dtype (float32 accumulation); ``None`` keeps the inputs' dtype.
    token_statistics: per-token values to sum (:data:`TokenStatistics`), or ``None``.
    labels: ``[N]`` next-token ids, or ``None``: with them ``stats[CROSS_ENTROPY]`` holds C_i = Σ_t m_t CE_it,
      differentiable in the student inputs (the caller adds λ·C to the loss).

  Returns:
    ``(S, stats)``: ``[P]`` float32 per-pair masked sums, differentiable in the student inputs only, and
    ``{name: [P]}`` masked sums of the statistics (``{}`` without statistics or labels).
  """
  def logits(h, w):
    dtype = compute_dtype or jnp.result_type(h, w)
    return jnp.einsum("pnd,dv->pnv", h.astype(dtype), w.astype(dtype), preferred_element_type=jnp.float32)

  valid = (mask != 0)[None, :, None]  # masked rows zeroed before the matmuls, as in the tiled kernel
  teacher_logits = lax.stop_gradient(logits(jnp.where(valid, teacher_hidden, 0), teacher_unembed))
  student_logits = logits(jnp.where(valid, student_hidden, 0), student_unembed)
  pair_mask = jnp.broadcast_to(mask, student_logits.shape[:2])
  stats = masked_statistic_sums(token_statistics, teacher_logits, student_logits, pair_mask)
  if labels is not None:
    pair_labels = jnp.broadcast_to(labels, student_logits.shape[:2])
    per_token_ce = cross_entropy(student_logits, pair_labels, pair_mask, reduction="none")
    stats = with_cross_entropy(stats, jnp.sum(per_token_ce, axis=-1))
  return jnp.sum(per_token(teacher_logits, student_logits, pair_mask), axis=-1), stats


@dataclasses.dataclass(frozen=True)
class TiledSpec:
  """Static description of one tiled sweep.

  Attributes:
    per_token: the per-token divergence (see :func:`per_token_divergence`).
    vocab_size: the true (global) vocabulary size V; columns at or beyond it are padding.
    tile: the :class:`TileConfig`.
    vocab_axis_name: mesh axis the vocabulary columns are sharded over (inside ``shard_map``), or ``None``.
    token_axis_name: mesh axis the tokens are sharded over (inside ``shard_map``), or ``None``.
    token_statistics: per-token values summed in the same sweep (:data:`TokenStatistics`), or ``None``; they
      see the tile's full-vocabulary logits, so they are refused with ``vocab_axis_name``.
    cross_entropy_weight: λ of the student's next-token CE added to every token's value when the sweep is given
      labels (ignored without).
  """

  per_token: PerTokenDivergence
  vocab_size: int
  tile: TileConfig
  vocab_axis_name: str | None = None
  token_axis_name: str | None = None
  token_statistics: TokenStatistics | None = None
  cross_entropy_weight: float = 0.0

  def __post_init__(self):
    if self.token_statistics is not None and self.vocab_axis_name is not None:
      raise ValueError("token_statistics need each token's whole vocabulary; they are not supported with a "
                       "vocabulary-sharded sweep (vocab_axis_name)")


def _valid_columns(spec: TiledSpec, local_vocab: int) -> jax.Array | None:
  """``[V_local]`` bool, False on padded columns; ``None`` when no column is padding."""
  offset = 0
  num_shards = 1
  if spec.vocab_axis_name is not None:
    num_shards = lax.axis_size(spec.vocab_axis_name)
    offset = lax.axis_index(spec.vocab_axis_name) * local_vocab
  if local_vocab * num_shards == spec.vocab_size:
    return None
  return offset + jnp.arange(local_vocab) < spec.vocab_size


def _tiled_sweep(spec: TiledSpec, coeffs, teacher_hidden, student_hidden, teacher_unembed, student_unembed, mask,
                 labels, with_grads: bool):
  """One pass over (pair, token block) tiles: the per-pair sums and, if ``with_grads``, the student gradients.

  Returns:
    ``(loss, pair_sums, stats)`` or ``(loss, pair_sums, stats, d_student_hidden, d_student_unembed)`` where
    loss = Σ_i c_i (S_i + λ C_i) (C_i the CE sums, only with ``labels``), ``stats`` are the ``[P]`` masked sums
    of ``spec.token_statistics`` and, with labels, ``stats[CROSS_ENTROPY]`` = C (``{}`` without either), and
    the gradients are those of ``loss`` (float32, ``[P, N, Ds]`` and ``[Ds, V_local]``).
  """
  num_pairs, num_tokens, teacher_dim = teacher_hidden.shape
  student_dim = student_hidden.shape[-1]
  local_vocab = student_unembed.shape[1]
  block = min(spec.tile.block_tokens, num_tokens)
  num_blocks = -(-num_tokens // block)
  pad = num_blocks * block - num_tokens
  with_labels = labels is not None
  if pad:
    teacher_hidden = jnp.pad(teacher_hidden, ((0, 0), (0, pad), (0, 0)))
    student_hidden = jnp.pad(student_hidden, ((0, 0), (0, pad), (0, 0)))
    mask = jnp.pad(mask, (0, pad))
    if with_labels:
      labels = jnp.pad(labels, (0, pad))
  teacher_dtype = spec.tile.compute_dtype or jnp.result_type(teacher_hidden, teacher_unembed)
  student_dtype = spec.tile.compute_dtype or jnp.result_type(student_hidden, student_unembed)
  teacher_w = teacher_unembed.astype(teacher_dtype)
  student_w = student_unembed.astype(student_dtype)
  valid = _valid_columns(spec, local_vocab)

  def exclude_padding(logits):
    return logits if valid is None else jnp.where(valid, logits, -jnp.inf)

  steps = num_pairs * num_blocks
  xs = (teacher_hidden.reshape(steps, block, teacher_dim),
        student_hidden.reshape(steps, block, student_dim),
        jnp.tile(mask.reshape(num_blocks, block), (num_pairs, 1)),
        jnp.repeat(coeffs, num_blocks))
  if with_labels:
    xs = (*xs, jnp.tile(labels.reshape(num_blocks, block), (num_pairs, 1)))

  def step(d_unembed, tile_inputs):
    t_block, s_block, m_block, coeff, *y_block = tile_inputs
    # Masked rows are zeroed before the matmuls: nothing of them (NaN, inf) reaches a logit, dX or dW = Xᵀ G.
    valid = (m_block != 0)[:, None]
    t_block = jnp.where(valid, t_block, 0).astype(teacher_dtype)
    s_block = jnp.where(valid, s_block, 0).astype(student_dtype)
    t_logits = exclude_padding(jnp.matmul(t_block, teacher_w, preferred_element_type=jnp.float32))
    s_logits = jnp.matmul(s_block, student_w, preferred_element_type=jnp.float32)

    def block_values(logits):
      """Per token D + λ·CE (the differentiated value), with (D, CE) as aux (CE ``None`` without labels)."""
      logits = exclude_padding(logits)
      divergence = spec.per_token(t_logits, logits, m_block)
      if not with_labels:
        return divergence, (divergence, None)
      ce = cross_entropy(logits, y_block[0], m_block, reduction="none", vocab_axis_name=spec.vocab_axis_name)
      return divergence + spec.cross_entropy_weight * ce, (divergence, ce)

    stats = masked_statistic_sums(spec.token_statistics, t_logits, exclude_padding(s_logits), m_block)
    if not with_grads:
      _, (divergence, ce) = block_values(s_logits)
      return d_unembed, (jnp.sum(divergence), ce if ce is None else jnp.sum(ce), stats)
    values, vjp, (divergence, ce) = jax.vjp(block_values, s_logits, has_aux=True)
    (d_logits,) = vjp(jnp.full_like(values, coeff))  # dL/dz_S of this tile: the loss is Σ c·values
    d_logits = d_logits.astype(student_dtype)
    d_block = jnp.matmul(d_logits, student_w.T, preferred_element_type=jnp.float32)
    d_unembed = d_unembed + jnp.matmul(s_block.T, d_logits, preferred_element_type=jnp.float32)
    return d_unembed, (jnp.sum(divergence), ce if ce is None else jnp.sum(ce), stats, d_block)

  d_unembed0 = None
  if with_grads:
    d_unembed0 = jnp.zeros((student_dim, local_vocab), jnp.float32)
    sharded_axes = tuple(a for a in (spec.vocab_axis_name, spec.token_axis_name) if a is not None)
    if sharded_axes:  # inside shard_map the accumulator varies over the axes its tiles vary over
      d_unembed0 = lax.pcast(d_unembed0, sharded_axes, to="varying")
  d_unembed, outputs = lax.scan(step, d_unembed0, xs)
  per_pair = lambda x: x.reshape(num_pairs, num_blocks).sum(axis=1)  # noqa: E731
  pair_sums = per_pair(outputs[0])
  stats = {name: per_pair(x) for name, x in outputs[2].items()}
  if with_labels:
    stats = with_cross_entropy(stats, per_pair(outputs[1]))
  if spec.token_axis_name is not None:
    pair_sums, stats = lax.psum((pair_sums, stats), spec.token_axis_name)
  loss = jnp.dot(coeffs, _pair_totals(spec, pair_sums, stats))
  if not with_grads:
    return loss, pair_sums, stats
  d_hidden = outputs[3].reshape(num_pairs, num_blocks * block, student_dim)[:, :num_tokens]
  if spec.vocab_axis_name is not None:
    d_hidden = lax.psum(d_hidden, spec.vocab_axis_name)
  if spec.token_axis_name is not None:
    d_unembed = lax.psum(d_unembed, spec.token_axis_name)
  return loss, pair_sums, stats, d_hidden, d_unembed


def _pair_totals(spec: TiledSpec, pair_sums, stats):
  """S_i + λ C_i when the sweep has labels (``stats[CROSS_ENTROPY]``), else S_i: what each c_i multiplies."""
  return pair_sums + spec.cross_entropy_weight * stats[CROSS_ENTROPY] if CROSS_ENTROPY in stats else pair_sums


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def tiled_lens_sums(spec: TiledSpec, coeffs, teacher_hidden, student_hidden, teacher_unembed, student_unembed,
                    mask, labels=None):
  r"""Tiled ``(Σ_i c_i (S_i + λ C_i), S, stats)``, S_i = Σ_t m_t D(h^T_{it} W_T, h^S_{it} W_S); one ``custom_vjp``.

  Args:
    spec: static :class:`TiledSpec` (λ = ``spec.cross_entropy_weight``).
    coeffs: ``[P]`` float32 per-pair coefficients c (differentiable: dL/dc = S + λC).
    teacher_hidden: ``[P, N, Dt]``. student_hidden: ``[P, N, Ds]``.
    teacher_unembed: ``[Dt, V_pad]``. student_unembed: ``[Ds, V_pad]`` (zero-padded columns; see ``spec``).
    mask: ``[N]`` float32.
    labels: ``[N]`` int32 next-token ids, or ``None`` (then C = 0): C_i = Σ_t m_t CE(h^S_{it} W_S, y_t).

  Returns:
    ``(loss, pair_sums, stats)``: scalar float32, ``[P]`` float32 and ``{name: [P]}`` masked sums of
    ``spec.token_statistics`` plus ``stats[CROSS_ENTROPY]`` = C with labels. Only ``loss`` is differentiable, in
    ``coeffs``, ``student_hidden`` and ``student_unembed``; teacher inputs, ``mask`` and ``labels`` get none.
  """
  return _tiled_sweep(spec, coeffs, teacher_hidden, student_hidden, teacher_unembed, student_unembed, mask, labels,
                      with_grads=False)


def _tiled_lens_sums_fwd(spec, coeffs, teacher_hidden, student_hidden, teacher_unembed, student_unembed, mask,
                         labels):
  args = [a.value for a in (coeffs, teacher_hidden, student_hidden, teacher_unembed, student_unembed, mask)]
  labels = None if labels is None else labels.value
  if not (student_hidden.perturbed or student_unembed.perturbed):
    loss, pair_sums, stats = _tiled_sweep(spec, *args, labels, with_grads=False)
    return (loss, pair_sums, stats), (_pair_totals(spec, pair_sums, stats), None, None)
  loss, pair_sums, stats, d_hidden, d_unembed = _tiled_sweep(spec, *args, labels, with_grads=True)
  residuals = (_pair_totals(spec, pair_sums, stats), d_hidden.astype(args[2].dtype), d_unembed.astype(args[4].dtype))
  return (loss, pair_sums, stats), residuals


def _tiled_lens_sums_bwd(spec, residuals, cotangents):
  del spec
  pair_totals, d_hidden, d_unembed = residuals
  d_loss, d_pair_sums, d_stats = cotangents
  if not all(isinstance(d, SymbolicZero) for d in jax.tree.leaves(d_stats)):
    raise ValueError("token statistics (and the cross-entropy sums) are logged, not differentiated")
  if not isinstance(d_pair_sums, SymbolicZero):
    raise ValueError("the tiled lens kernel's per-pair sums (reduction='per_pair') are not differentiable; "
                     "differentiate reduction='mean' or 'sum', or use implementation='reference'")
  if isinstance(d_loss, SymbolicZero):
    return (None,) * 7
  d_coeffs = d_loss * pair_totals
  if d_hidden is None:
    return d_coeffs, None, None, None, None, None, None
  return (d_coeffs, None, d_loss.astype(d_hidden.dtype) * d_hidden, None,
          d_loss.astype(d_unembed.dtype) * d_unembed, None, None)


tiled_lens_sums.defvjp(_tiled_lens_sums_fwd, _tiled_lens_sums_bwd, symbolic_zeros=True)


def lens_loss(
    teacher_hidden: jax.Array,
    student_hidden: jax.Array,
    teacher_unembed: jax.Array,
    student_unembed: jax.Array,
    mask: jax.Array | None = None,
    *,
    divergence: str | Callable[..., jax.Array] = "jsd",
    divergence_kwargs: dict[str, Any] | None = None,
    layer_weights: jax.Array | None = None,
    reduction: Reduction = "mean",
    implementation: Implementation = "tiled",
    tile: TileConfig = TileConfig(),
    return_pair_sums: bool = False,
    token_statistics: TokenStatistics | None = None,
    labels: jax.Array | None = None,
    cross_entropy_weight: float = 0.0,
) -> jax.Array | tuple:
  r"""Logit-lens distillation loss over P layer pairs (the output KD term is the same call with P = 1).

  .. math::

     S_i = \sum_t m_t\, D\big(h^T_{it} W_T,\; h^S_{it} W_S\big), \qquad
     C_i = \sum_t m_t\, \mathrm{CE}\big(h^S_{it} W_S,\; y_t\big), \qquad R_i = S_i + \lambda C_i,

     \text{mean} = \frac{\sum_i w_i\, R_i / \max(\sum_t m_t, 1)}{\sum_i w_i}, \qquad
     \text{sum} = \sum_i w_i R_i, \qquad \text{per\_pair}_i = \frac{R_i}{\max(\sum_t m_t, 1)},

  with C = 0 unless ``labels`` are given (CE = logsumexp(z^S) − z^S_y, temperature 1). D is the divergence's
  per-token value (teacher first; float32 softmaxes). For gradient accumulation or
  multi-host, use ``reduction="sum"`` per micro-batch and divide the total by Σ_i w_i · Σ (global valid tokens).
  The teacher is frozen: ``teacher_hidden`` and ``teacher_unembed`` get zero gradient (stop-gradient), as does
  ``mask``; gradients flow into ``student_hidden``, ``student_unembed`` (and ``layer_weights``).

  Args:
    teacher_hidden: ``[P, N, Dt]`` teacher hidden states of the P pairs, tokens flattened (N = B·T), already
      normed if the normed lens is wanted.
    student_hidden: ``[P, N, Ds]`` student hidden states, pair i matching teacher pair i.
    teacher_unembed: ``[Dt, V]`` teacher unembedding (x @ W orientation).
    student_unembed: ``[Ds, V]`` student unembedding.
    mask: ``[N]`` bool or float token mask (1 = counted); ``None`` counts every token. Masked tokens contribute
      exactly 0 and exactly zero gradient whatever their hidden states hold (their rows are selected away before
      any arithmetic); an all-masked batch gives 0 with finite (zero) gradients. A NaN or inf reaching an unmasked
      token's logits makes the loss NaN.
    divergence: a name in ``DIVERGENCES`` (e.g. ``"jsd"``, ``"reverse_kl"``, ``"adaptive_kl"``) or a function
      with the family's signature.
    divergence_kwargs: the divergence's keyword hyper-parameters (e.g. ``{"beta": 0.5}``, ``{"temperature": 2.0}``).
    layer_weights: ``[P]`` non-negative per-pair weights w (default all 1).
    reduction: ``"mean"`` (scalar), ``"sum"`` (scalar) or ``"per_pair"`` (``[P]``, for logging; the tiled
      implementation does not differentiate it).
    implementation: ``"tiled"`` (memory O(N·D·P + block·V)) or ``"reference"`` (materialises ``[P, N, V]``).
    tile: static :class:`TileConfig` (block size, vocabulary padding, matmul compute dtype).
    return_pair_sums: also return the ``[P]`` float32 per-pair sums S_i of the same sweep (stop-gradient), e.g.
      to log every pair while differentiating one call over all P pairs.
    token_statistics: a function ``(teacher_logits [b, V], student_logits [b, V]) -> {name: [b]}`` of per-token
      values to log; the same sweep also returns their masked sums ``{name: [P]}`` = Σ_t m_t x_it (stop-gradient,
      no second pass over the vocabulary). It sees the divergence's logits before any temperature.
    labels: ``[N]`` integer next-token ids y, or ``None``: the student's cross-entropy rides in the same sweep
      (each tile differentiates D + λ·CE of the logits it holds; an id outside ``[0, V)`` selects no logit, so
      masked tokens may hold −100). Its sums C come back as ``stats["cross_entropy"]`` (:data:`CROSS_ENTROPY`).
    cross_entropy_weight: λ ≥ 0, the CE's weight relative to the divergence (needs ``labels``; λ = 0 with labels
      computes C for logging without training on it).

  Returns:
    float32 scalar, or ``[P]`` for ``"per_pair"``; with ``return_pair_sums``, ``(that, S)`` (S the divergence
    sums alone); with ``token_statistics`` or ``labels``, the statistics' sums ``{name: [P]}`` (stop-gradient)
    appended as the last element of the tuple.

  Raises:
    ValueError: on P or N mismatch between the hidden states, vocabulary mismatch between the unembeddings, a
      hidden size that does not match its unembedding, a mask that is not ``[N]``, ``layer_weights`` that are
      not ``[P]``, negative or (for the mean) summing to 0, labels that are not ``[N]``, a negative or non-finite
      ``cross_entropy_weight`` or one without labels, or an unknown reduction / implementation.
    TypeError: if an input is not floating point, or labels are not integers.

  Examples:
    >>> import jax.numpy as jnp
    >>> hidden = jnp.arange(12.0).reshape(1, 3, 4) / 10          # P = 1 pair, N = 3 tokens, D = 4
    >>> unembed = jnp.eye(4, 5)                                   # V = 5
    >>> print(f"{float(lens_loss(hidden, -hidden, unembed, unembed)):.4f}")   # JSD, β = 0.5
    0.0356
    >>> print(f"{float(lens_loss(hidden, -hidden, unembed, unembed, divergence='forward_kl')):.4f}")
    0.1321

  References:
    nostalgebraist, `interpreting GPT: the logit lens
    <https://www.lesswrong.com/posts/AcKRB8wDpdaN6v6ru/interpreting-gpt-the-logit-lens>`_, 2020.
    Dhakal et al., `DistillLens: Symmetric Knowledge Distillation Through Logit Lens
    <https://arxiv.org/abs/2602.13567>`_, 2026.
  """
  check_lens_inputs(teacher_hidden, student_hidden, teacher_unembed, student_unembed, mask, layer_weights,
                    reduction, implementation)
  check_cross_entropy_inputs(labels, cross_entropy_weight, jnp.shape(teacher_hidden)[1:2])
  num_pairs, num_tokens, _ = jnp.shape(teacher_hidden)
  vocab_size = jnp.shape(student_unembed)[1]
  mask = jnp.ones((num_tokens,), jnp.float32) if mask is None else jnp.asarray(mask).astype(jnp.float32)
  per_token = per_token_divergence(divergence, divergence_kwargs, tiled=implementation == "tiled")
  coeffs, count = pair_coefficients(layer_weights, mask, num_pairs, reduction)
  labels = None if labels is None else jnp.asarray(labels).astype(jnp.int32)
  spec = TiledSpec(per_token=per_token, vocab_size=vocab_size, tile=tile, token_statistics=token_statistics,
                   cross_entropy_weight=float(cross_entropy_weight))
  if implementation == "reference":
    pair_sums, stats = reference_pair_sums(per_token, teacher_hidden, student_hidden, teacher_unembed,
                                           student_unembed, mask, tile.compute_dtype, token_statistics, labels)
    loss = jnp.dot(coeffs, _pair_totals(spec, pair_sums, stats))
  else:
    loss, pair_sums, stats = tiled_lens_sums(spec, coeffs, teacher_hidden, student_hidden,
                                             pad_vocab(teacher_unembed, tile.vocab_multiple),
                                             pad_vocab(student_unembed, tile.vocab_multiple), mask, labels)
  if reduction == "per_pair":
    loss = _pair_totals(spec, pair_sums, stats) / jnp.maximum(count, 1.0)
  out = (loss, lax.stop_gradient(pair_sums)) if return_pair_sums else (loss,)
  if token_statistics is not None or labels is not None:
    out = (*out, lax.stop_gradient(stats))
  return out if len(out) > 1 else loss
