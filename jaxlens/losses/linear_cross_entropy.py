r"""Fused linear cross-entropy: the next-token CE of hidden states through an unembedding, without ``[N, V]`` logits.

.. math::

   z_t = h_t W, \qquad S = \sum_t m_t \big(\operatorname{logsumexp}(z_t) - z_{t, y_t}\big), \qquad
   \text{mean} = S / \max(\textstyle\sum_t m_t, 1)

Two implementations share this contract. ``"reference"`` materialises the logits and calls
:func:`jaxlens.losses.cross_entropy` (the oracle). ``"tiled"`` streams blocks of ``block_tokens`` tokens (tokamax's
chunked-XLA layout): per block one ``[block, V]`` float32 logit tile is alive, so memory is O(N·D + block·V). Its one
``jax.custom_vjp`` forms the gradients inside the forward sweep, as the lens kernel does (:mod:`jaxlens.losses.lens`
explains why, with measurements): per block ``G = m · (softmax(z) − onehot(y))``, ``dH = G Wᵀ`` is written out and
``dW = Σ H_blockᵀ G`` is accumulated in float32; the backward only scales them by the incoming cotangent. When
nothing asks for a gradient (evaluation) the sweep computes the value alone.

The vocabulary is padded with zero columns to a multiple of ``TileConfig.vocab_multiple`` and the padded logits
are set to −inf, so they drop out of the log-sum-exp exactly and get exactly zero gradient. Softmaxes and sums run
in float32 whatever the matmul dtype (``TileConfig.compute_dtype``, float32 accumulation).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import jax
import jax.numpy as jnp
from jax import lax

from jaxlens.losses._checks import check_labels
from jaxlens.losses.cross_entropy import cross_entropy
from jaxlens.losses.lens import TileConfig
from jaxlens.losses.lens import pad_vocab

Implementation = Literal["tiled", "reference"]
_REDUCTIONS = ("mean", "sum")
_IMPLEMENTATIONS = ("tiled", "reference")


@dataclasses.dataclass(frozen=True)
class _Spec:
  vocab_size: int  # the true V: padded columns at or beyond it are excluded
  tile: TileConfig


def _sweep(spec: _Spec, hidden, unembed, labels, mask, with_grads: bool):
  """One pass over token blocks: ``S``, and if ``with_grads`` also ``dS/dhidden`` ``[N, D]`` and ``dS/dunembed``
  ``[D, V_pad]`` (float32)."""
  num_tokens, dim = hidden.shape
  padded_vocab = unembed.shape[1]
  block = min(spec.tile.block_tokens, num_tokens)
  num_blocks = -(-num_tokens // block)
  pad = num_blocks * block - num_tokens
  if pad:
    hidden = jnp.pad(hidden, ((0, pad), (0, 0)))
    labels = jnp.pad(labels, (0, pad))
    mask = jnp.pad(mask, (0, pad))
  dtype = spec.tile.compute_dtype or jnp.result_type(hidden, unembed)
  w = unembed.astype(dtype)
  columns = jnp.arange(padded_vocab)
  valid = None if padded_vocab == spec.vocab_size else columns < spec.vocab_size
  xs = (hidden.reshape(num_blocks, block, dim), labels.reshape(num_blocks, block), mask.reshape(num_blocks, block))

  def step(d_unembed, block_inputs):
    h, y, m = block_inputs
    h = h.astype(dtype)
    logits = jnp.matmul(h, w, preferred_element_type=jnp.float32)  # [block, V_pad]
    if valid is not None:
      logits = jnp.where(valid, logits, -jnp.inf)
    top = lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    shifted = logits - top
    sum_exp = jnp.sum(jnp.exp(shifted), axis=-1)
    is_label = columns == y[:, None]  # an id outside [0, V) selects nothing (as cross_entropy)
    label_shifted = jnp.sum(jnp.where(is_label, shifted, 0.0), axis=-1)
    nll = jnp.log(sum_exp) - label_shifted
    value = jnp.sum(jnp.where(m > 0, m * nll, 0.0))
    if not with_grads:
      return d_unembed, (value,)
    probs = jnp.exp(shifted) / sum_exp[:, None]
    g = (m[:, None] * (probs - is_label.astype(jnp.float32))).astype(dtype)  # dS/dz of this block
    d_h = jnp.matmul(g, w.T, preferred_element_type=jnp.float32)
    d_unembed = d_unembed + jnp.matmul(h.T, g, preferred_element_type=jnp.float32)
    return d_unembed, (value, d_h)

  d0 = jnp.zeros((dim, padded_vocab), jnp.float32) if with_grads else None
  d_unembed, outputs = lax.scan(step, d0, xs)
  total = jnp.sum(outputs[0])
  if not with_grads:
    return total
  return total, outputs[1].reshape(num_blocks * block, dim)[:num_tokens], d_unembed


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _tiled_sum(spec: _Spec, hidden, unembed, labels, mask):
  return _sweep(spec, hidden, unembed, labels, mask, with_grads=False)


def _tiled_sum_fwd(spec, hidden, unembed, labels, mask):
  args = [a.value for a in (hidden, unembed, labels, mask)]
  if not (hidden.perturbed or unembed.perturbed):
    return _sweep(spec, *args, with_grads=False), (None, None)
  total, d_hidden, d_unembed = _sweep(spec, *args, with_grads=True)
  return total, (d_hidden.astype(args[0].dtype), d_unembed.astype(args[1].dtype))


def _tiled_sum_bwd(spec, residuals, d_total):
  del spec
  d_hidden, d_unembed = residuals
  if d_hidden is None:
    return None, None, None, None
  return (d_total.astype(d_hidden.dtype) * d_hidden, d_total.astype(d_unembed.dtype) * d_unembed, None, None)


_tiled_sum.defvjp(_tiled_sum_fwd, _tiled_sum_bwd, symbolic_zeros=True)


def linear_cross_entropy(
    hidden: jax.Array,
    unembed: jax.Array,
    labels: jax.Array,
    mask: jax.Array | None = None,
    *,
    reduction: Literal["mean", "sum"] = "mean",
    implementation: Implementation = "tiled",
    tile: TileConfig = TileConfig(),
) -> jax.Array:
  r"""Masked next-token cross-entropy of ``softmax(hidden @ unembed)``, never materialising the logits (tiled).

  .. math::

     S = \sum_t m_t \big(\operatorname{logsumexp}_v (h_t W)_v - (h_t W)_{y_t}\big), \qquad
     \text{sum} = S, \qquad \text{mean} = S / \max(\textstyle\sum_t m_t, 1)

  Equal to ``cross_entropy(hidden @ unembed, labels, mask)`` (float32 softmax) with the gradients of that
  composition w.r.t. ``hidden`` and ``unembed``; ``labels`` and ``mask`` get none. Masked tokens contribute exactly
  0 and exactly zero gradient whatever their label (e.g. −100).

  Args:
    hidden: ``[N, D]`` hidden states (e.g. the final normed states, tokens flattened).
    unembed: ``[D, V]`` unembedding (``x @ W`` orientation).
    labels: ``[N]`` integer next-token ids; an id outside ``[0, V)`` selects no logit.
    mask: ``[N]`` bool or float token weights (1 = counted); ``None`` counts every token.
    reduction: ``"mean"`` or ``"sum"``.
    implementation: ``"tiled"`` (O(N·D + block·V) memory) or ``"reference"`` (materialises ``[N, V]``).
    tile: static :class:`~jaxlens.losses.TileConfig` (block size, vocabulary padding, matmul dtype).

  Returns:
    A float32 scalar.

  Raises:
    ValueError: on shapes that do not fit together, an unknown reduction or implementation.
    TypeError: non-floating hidden / unembed or non-integer labels.

  Examples:
    >>> import jax.numpy as jnp
    >>> hidden = jnp.eye(2, 3)                      # N = 2 tokens, D = 3
    >>> unembed = jnp.array([[2.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    >>> print(f"{float(linear_cross_entropy(hidden, unembed, jnp.array([0, 1]))):.4f}")
    0.6187
  """
  hidden, unembed, labels = jnp.asarray(hidden), jnp.asarray(unembed), jnp.asarray(labels)
  if reduction not in _REDUCTIONS:
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
  if implementation not in _IMPLEMENTATIONS:
    raise ValueError(f"implementation must be one of {_IMPLEMENTATIONS}, got {implementation!r}")
  for name, x in (("hidden", hidden), ("unembed", unembed)):
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise TypeError(f"{name} must be floating point, got dtype {x.dtype}")
    if x.ndim != 2:
      raise ValueError(f"{name} must have rank 2, got shape {x.shape}")
  if hidden.shape[1] != unembed.shape[0]:
    raise ValueError(f"hidden {hidden.shape} has D={hidden.shape[1]} but unembed {unembed.shape} has "
                     f"D={unembed.shape[0]}")
  check_labels(labels, hidden.shape[:1])
  if mask is not None and jnp.shape(mask) != hidden.shape[:1]:
    raise ValueError(f"mask must have shape [N] = {hidden.shape[:1]}, got {jnp.shape(mask)}")
  mask = jnp.ones(hidden.shape[:1], jnp.float32) if mask is None else jnp.asarray(mask).astype(jnp.float32)
  # Masked rows are selected away before any arithmetic: a NaN/inf there reaches no value, dX or dW = Xᵀ G.
  hidden = jnp.where((mask != 0)[:, None], hidden, jnp.zeros((), jnp.result_type(hidden)))
  if implementation == "reference":
    dtype = tile.compute_dtype or jnp.result_type(hidden, unembed)
    logits = jnp.matmul(hidden.astype(dtype), unembed.astype(dtype), preferred_element_type=jnp.float32)
    total = cross_entropy(logits, labels, mask, reduction="sum")
  else:
    spec = _Spec(vocab_size=unembed.shape[1], tile=tile)
    total = _tiled_sum(spec, hidden, pad_vocab(unembed, tile.vocab_multiple), labels.astype(jnp.int32), mask)
  return total if reduction == "sum" else total / jnp.maximum(jnp.sum(mask), 1.0)
