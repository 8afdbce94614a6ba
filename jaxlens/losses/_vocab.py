"""Reductions over the vocabulary axis, sharded or not: the one code path every divergence goes through.

With ``axis_name=None`` the last axis holds the whole vocabulary. With a mesh axis name the last axis is this
device's shard of the vocabulary (the caller is inside ``jax.shard_map``) and every reduction combines the shards
with ``lax.psum`` / ``lax.pmax`` / ``lax.all_gather``, so the results equal the unsharded ones.

``-inf`` entries (padded vocabulary columns) are exact zeros of the distribution: they add nothing to any sum and
get finite (zero) gradients, because every ``log`` is guarded with the "double where" pattern. The guards test for
exactly ``-inf``, never for "finite" or "> 0", so a NaN (or a ``+inf`` logit, which log-softmax turns into NaN)
propagates into the result instead of being dropped.
"""

import math

import jax.numpy as jnp
from jax import lax


def vocab_sum(x: jnp.ndarray, axis_name: str | None) -> jnp.ndarray:
  """Σ over the (possibly sharded) vocabulary axis: ``[..., V] -> [...]``."""
  total = jnp.sum(x, axis=-1)
  return total if axis_name is None else lax.psum(total, axis_name)


def vocab_max(x: jnp.ndarray, axis_name: str | None) -> jnp.ndarray:
  """max over the (possibly sharded) vocabulary axis, without gradient: ``[..., V] -> [...]``."""
  largest = jnp.max(lax.stop_gradient(x), axis=-1)
  return largest if axis_name is None else lax.pmax(largest, axis_name)


def vocab_ids(local_size: int, axis_name: str | None) -> jnp.ndarray:
  """Global vocabulary ids of this device's columns: ``[V_local]`` int32."""
  ids = jnp.arange(local_size, dtype=jnp.int32)
  return ids if axis_name is None else ids + lax.axis_index(axis_name).astype(jnp.int32) * local_size


def vocab_kth_largest(x: jnp.ndarray, k: int, axis_name: str | None) -> jnp.ndarray:
  """The k-th largest entry over the vocabulary, without gradient: ``[..., V] -> [...]``.

  Sharded: local ``top_k`` on each shard, ``all_gather`` of the candidates, then ``top_k`` again.
  """
  candidates = lax.top_k(lax.stop_gradient(x), k)[0]
  if axis_name is not None:
    candidates = lax.all_gather(candidates, axis_name, axis=candidates.ndim - 1, tiled=True)
    candidates = lax.top_k(candidates, k)[0]
  return candidates[..., -1]


def vocab_logsumexp(x: jnp.ndarray, axis_name: str | None) -> jnp.ndarray:
  """log Σ exp over the vocabulary; ``-inf`` (with finite gradients) when every entry is ``-inf``."""
  largest = vocab_max(x, axis_name)
  shift = jnp.where(jnp.isfinite(largest), largest, 0.0)
  total = vocab_sum(jnp.exp(x - shift[..., None]), axis_name)
  positive = total != 0  # True for a NaN total: NaN propagates
  return jnp.where(positive, shift + jnp.log(jnp.where(positive, total, 1.0)), -jnp.inf)


def vocab_cumsum(x: jnp.ndarray, axis_name: str | None) -> jnp.ndarray:
  """Inclusive prefix sum along the (possibly sharded) vocabulary axis, in global vocabulary order: ``[..., V]``.

  Sharded: the local prefix sum plus the totals of the lower-indexed shards (one ``all_gather`` of ``[...]``).
  """
  local = jnp.cumsum(x, axis=-1)
  if axis_name is None:
    return local
  totals = lax.all_gather(local[..., -1], axis_name)  # [shards, ...]
  lower = jnp.arange(totals.shape[0]).reshape((-1,) + (1,) * (totals.ndim - 1)) < lax.axis_index(axis_name)
  return local + jnp.sum(jnp.where(lower, totals, 0), axis=0)[..., None]


def log_softmax(logits: jnp.ndarray, axis_name: str | None) -> jnp.ndarray:
  """log softmax over the (possibly sharded) vocabulary axis; ``-inf`` logits stay ``-inf``."""
  shifted = logits - vocab_max(logits, axis_name)[..., None]
  return shifted - jnp.log(vocab_sum(jnp.exp(shifted), axis_name))[..., None]


def kl_divergence(log_a: jnp.ndarray, log_b: jnp.ndarray, axis_name: str | None) -> jnp.ndarray:
  """KL(a ‖ b) = Σ_v a_v (log a_v − log b_v) from log-probabilities, with 0·log 0 = 0: ``[..., V] -> [...]``.

  Only exact ``-inf`` entries of ``log_a`` are dropped; a NaN anywhere in ``log_a`` or ``log_b`` gives NaN.
  """
  support = log_a != -jnp.inf
  safe_log_a = jnp.where(support, log_a, 0.0)
  safe_log_b = jnp.where(support, log_b, 0.0)
  terms = jnp.where(support, jnp.exp(safe_log_a) * (safe_log_a - safe_log_b), 0.0)
  return vocab_sum(terms, axis_name)


def log_mixture(log_a: jnp.ndarray, log_b: jnp.ndarray, weight_a: float) -> jnp.ndarray:
  """log(w·a + (1 − w)·b) elementwise via ``logaddexp`` (no eps), for a static weight w in [0, 1]."""
  if weight_a == 0.0:
    return log_b
  if weight_a == 1.0:
    return log_a
  x = log_a + math.log(weight_a)
  y = log_b + math.log1p(-weight_a)
  empty = (x == -jnp.inf) & (y == -jnp.inf)
  mixed = jnp.logaddexp(jnp.where(empty, 0.0, x), jnp.where(empty, 0.0, y))
  return jnp.where(empty, -jnp.inf, mixed)
