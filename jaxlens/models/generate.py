"""Autoregressive generation with a preallocated KV cache: one jitted prefill + ``lax.while_loop`` decode.

Sampling follows Hugging Face's order: no-repeat-n-gram ban, then temperature, top-k, top-p (nucleus), then a
categorical draw (``temperature=0``: argmax, i.e. greedy, which reproduces ``generate(do_sample=False)``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlens.models.base import CausalLM


@dataclasses.dataclass(frozen=True)
class _Sampling:
  max_new_tokens: int
  temperature: float
  top_k: int
  top_p: float
  no_repeat_ngram_size: int
  eos_ids: tuple[int, ...]
  pad_id: int


def generate(model: CausalLM, input_ids: jax.Array, attention_mask: jax.Array, max_new_tokens: int,
             rng: jax.Array, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             no_repeat_ngram_size: int = 0, eos_id: int | Sequence[int] | None = None, pad_id: int = 0) -> jax.Array:
  """Continue left-padded prompts by ``max_new_tokens`` tokens.

  At each step the next-token logits z (float32) are filtered and sampled:
  banned n-gram completions get −∞; then z/τ; top-k keeps the k largest; top-p keeps the smallest set of
  most likely tokens whose probability sums to ≥ p; the token is argmax (τ = 0) or a draw from softmax.
  A sequence that emitted an EOS id continues with ``pad_id``; the loop stops early once all have.

  Args:
    model: a :class:`~jaxlens.models.base.CausalLM`.
    input_ids: ``[B, T]`` int prompts, **left**-padded (every row's last token is real).
    attention_mask: ``[B, T]`` 1 real / 0 padding.
    max_new_tokens: tokens to generate (static: each value compiles once).
    rng: PRNG key (unused when greedy); the same key gives the same tokens.
    temperature: τ ≥ 0; 0 = greedy.
    top_k: keep the k most likely tokens (0 = off).
    top_p: nucleus mass in (0, 1] (1 = off).
    no_repeat_ngram_size: n > 0 bans any token that would repeat an n-gram of the real (unpadded) prompt and
      generated tokens, as HF's ``no_repeat_ngram_size``.
    eos_id: end-of-sequence id(s), or None to always run ``max_new_tokens`` steps.
    pad_id: token written after EOS.

  Returns:
    ``[B, T + max_new_tokens]`` int32: the prompt followed by the new tokens (``pad_id`` after EOS).

  Raises:
    ValueError: on bad shapes or settings, prompts not left-padded (checked when the mask is concrete), or a
      total length above ``config.max_position_embeddings``.
  """
  if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
    raise ValueError(f"input_ids and attention_mask must both be [B, T], got {input_ids.shape} and "
                     f"{attention_mask.shape}")
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  if temperature < 0 or top_k < 0 or not 0 < top_p <= 1 or no_repeat_ngram_size < 0:
    raise ValueError(f"need temperature >= 0, top_k >= 0, 0 < top_p <= 1, no_repeat_ngram_size >= 0; got "
                     f"{temperature=}, {top_k=}, {top_p=}, {no_repeat_ngram_size=}")
  total = input_ids.shape[1] + max_new_tokens
  if total > model.config.max_position_embeddings:
    raise ValueError(f"prompt length {input_ids.shape[1]} + max_new_tokens {max_new_tokens} = {total} exceeds "
                     f"max_position_embeddings {model.config.max_position_embeddings}")
  if not isinstance(attention_mask, jax.core.Tracer):
    mask = np.asarray(attention_mask)
    if not mask[:, -1].all():
      raise ValueError(f"generate needs left-padded prompts (last column of attention_mask all 1), rows "
                       f"{np.flatnonzero(mask[:, -1] == 0).tolist()} end in padding")
  eos_ids = () if eos_id is None else tuple(int(e) for e in np.atleast_1d(eos_id))
  sampling = _Sampling(int(max_new_tokens), float(temperature), int(top_k), float(top_p), int(no_repeat_ngram_size),
                       eos_ids, int(pad_id))
  graphdef, state = nnx.split(model)
  return _generate(graphdef, state, jnp.asarray(input_ids, jnp.int32), jnp.asarray(attention_mask, jnp.int32), rng,
                   sampling)


@functools.partial(jax.jit, static_argnames=("graphdef", "sampling"))
def _generate(graphdef, state, input_ids, attention_mask, rng, sampling: _Sampling):
  model = nnx.merge(graphdef, state)
  b, t = input_ids.shape
  n = sampling.max_new_tokens
  prefill = model(input_ids, attention_mask, return_logits=False, cache=model.init_cache(b, t + n))
  logits = model.logit_lens(prefill.hidden_states[-1][:, -1])  # [B, V]
  tokens = jnp.concatenate([input_ids, jnp.full((b, n), sampling.pad_id, jnp.int32)], axis=1)  # [B, T + N]
  real = jnp.concatenate([attention_mask.astype(bool), jnp.zeros((b, n), bool)], axis=1)  # [B, T + N]

  def cond(carry):
    step, _, _, _, _, done, _ = carry
    return (step < n) & ~done.all()

  def body(carry):
    step, tokens, real, cache, logits, done, rng = carry
    rng, key = jax.random.split(rng)
    slot = t + step
    nxt = _next_token(logits, tokens, real, slot, key, sampling)  # [B]
    nxt = jnp.where(done, sampling.pad_id, nxt)
    tokens = jax.lax.dynamic_update_slice(tokens, nxt[:, None], (0, slot))
    real = jax.lax.dynamic_update_slice(real, ~done[:, None], (0, slot))
    done = done | jnp.isin(nxt, jnp.asarray(sampling.eos_ids, jnp.int32))
    out = model(nxt[:, None], cache=cache)  # position = the row's count of real tokens so far
    return step + 1, tokens, real, out.cache, out.logits[:, 0], done, rng

  carry = (jnp.zeros((), jnp.int32), tokens, real, prefill.cache, logits, jnp.zeros((b,), bool), rng)
  return jax.lax.while_loop(cond, body, carry)[1]


def _next_token(logits, tokens, real, slot, key, sampling: _Sampling):
  """The next token ``[B]`` from logits ``[B, V]`` given the history ``tokens``/``real`` ``[B, S]`` before ``slot``."""
  logits = logits.astype(jnp.float32)
  neg_inf = jnp.finfo(jnp.float32).min
  if sampling.no_repeat_ngram_size:
    logits = jnp.where(_banned_ngram_tokens(tokens, real, slot, sampling.no_repeat_ngram_size, logits.shape[-1]),
                       neg_inf, logits)
  if sampling.temperature == 0:
    return jnp.argmax(logits, -1).astype(jnp.int32)
  logits = logits / sampling.temperature
  if sampling.top_k:
    kth = jax.lax.top_k(logits, min(sampling.top_k, logits.shape[-1]))[0][:, -1:]  # [B, 1]
    logits = jnp.where(logits < kth, neg_inf, logits)
  if sampling.top_p < 1:
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]  # [B, V] descending
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs  # probability of the strictly more likely tokens
    kept = jnp.where(mass_before < sampling.top_p, sorted_logits, jnp.inf).min(-1, keepdims=True)  # [B, 1]
    logits = jnp.where(logits < kept, neg_inf, logits)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def _banned_ngram_tokens(tokens, real, slot, n: int, vocab: int) -> jax.Array:
  """``[B, V]`` bool: tokens that would complete an n-gram already present among the real tokens before ``slot``.

  Window j (tokens j … j+n−1, all real, ending before ``slot``) bans its last token when its first n−1 tokens
  equal the n−1 tokens just before ``slot``.
  """
  b, s = tokens.shape
  width = s - n + 1
  windows = jnp.stack([tokens[:, k:k + width] for k in range(n)], axis=-1)  # [B, J, n]
  windows_real = jnp.stack([real[:, k:k + width] for k in range(n)], axis=-1).all(-1)  # [B, J]
  start = jnp.maximum(slot - (n - 1), 0)
  prefix = jax.lax.dynamic_slice(tokens, (0, start), (b, n - 1))  # [B, n-1]
  prefix_real = jax.lax.dynamic_slice(real, (0, start), (b, n - 1)).all(-1) & (slot >= n - 1)  # [B]
  ends_before = jnp.arange(width) + n - 1 < slot  # [J]
  match = (windows[:, :, :-1] == prefix[:, None]).all(-1) & windows_real & ends_before & prefix_real[:, None]
  return jnp.zeros((b, vocab), bool).at[jnp.arange(b)[:, None], windows[:, :, -1]].max(match)
