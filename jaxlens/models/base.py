"""The forward pass shared by every family: embeddings → blocks → final norm → LM head, with every hidden state.

A family (``gpt2.py``, ``llama.py``) subclasses :class:`CausalLM` and provides ``embed_tokens``, ``blocks``,
``norm``, and either tied embeddings (``embed``) or an ``lm_head``. Each block is called as
``block(x, positions, mask, kv_cache) -> (x, kv_cache)``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlens.models.config import ModelConfig
from jaxlens.models.layers import ATTENTION_IMPLEMENTATIONS, REMAT_POLICIES, AttentionImplementation, AttentionMask
from jaxlens.models.layers import RematPolicy, run_block


class KVCache(NamedTuple):
  """Preallocated keys and values of every layer for incremental decoding.

  Attributes:
    keys: ``num_layers`` arrays ``[B, S, G, K]`` (S = the total length the cache can hold).
    values: ``num_layers`` arrays ``[B, S, G, K]``.
    valid: ``[B, S]`` bool, slots holding real tokens.
    index: ``[]`` int32, the next slot to write.
  """

  keys: tuple[jax.Array, ...]
  values: tuple[jax.Array, ...]
  valid: jax.Array
  index: jax.Array


class ModelOutput(NamedTuple):
  """Result of a forward pass.

  Attributes:
    logits: ``[B, T, V]`` in the compute dtype, or None when called with ``return_logits=False``.
    hidden_states: ``num_layers + 1`` arrays ``[B, T, D]`` (HF convention): ``[0]`` the embeddings,
      ``[i]`` for 1 ≤ i < L the residual stream after block i (before the final norm), ``[L]`` the output
      of the final norm.
    cache: the updated :class:`KVCache` when one was passed, else None.
  """

  logits: jax.Array | None
  hidden_states: tuple[jax.Array, ...]
  cache: KVCache | None = None


def default_positions(attention_mask: jax.Array) -> jax.Array:
  """Positions ``max(cumsum(mask) − 1, 0)`` ``[B, T]`` int32: 0, 1, … over real tokens (left or right padding)."""
  return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)


class CausalLM(nnx.Module):
  """Base of the decoder families; see the module docstring for what a subclass provides."""

  config: ModelConfig
  blocks: nnx.List

  def __init__(self, config: ModelConfig, *, dtype, param_dtype, remat: bool | RematPolicy):
    policy = ("block" if remat else "none") if isinstance(remat, bool) else remat
    if policy not in REMAT_POLICIES:
      raise ValueError(f"remat must be a bool or one of {REMAT_POLICIES}, got {remat!r}")
    self.config, self.dtype, self.param_dtype, self.remat = config, dtype, param_dtype, policy
    self.attention: AttentionImplementation = "xla"

  def use_attention(self, implementation: AttentionImplementation) -> CausalLM:
    """Selects the attention kernel of full-sequence passes (``"xla"`` | ``"cudnn"``; see
    :func:`jaxlens.models.layers.attend`); returns ``self``.

    Raises:
      ValueError: on an unknown kernel, or ``"cudnn"`` with a compute dtype other than bfloat16/float16.
    """
    if implementation not in ATTENTION_IMPLEMENTATIONS:
      raise ValueError(f"attention must be one of {ATTENTION_IMPLEMENTATIONS}, got {implementation!r}")
    if implementation == "cudnn" and jnp.dtype(self.dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
      raise ValueError(f"cuDNN attention needs a bfloat16/float16 compute dtype, got {jnp.dtype(self.dtype)}")
    self.attention = implementation
    return self

  def embed_tokens(self, input_ids: jax.Array, positions: jax.Array) -> jax.Array:
    """The input embeddings ``[B, T, D]`` of ``input_ids`` ``[B, T]`` at ``positions`` ``[B, T]``."""
    raise NotImplementedError

  def unembedding(self) -> jax.Array:
    """The LM head ``W`` ``[D, V]`` in the compute dtype, used as ``x @ W`` (tied: the embedding transposed)."""
    w = self.embed[...].T if self.config.tie_word_embeddings else self.lm_head[...]
    return w.astype(self.dtype)

  def final_norm(self, h: jax.Array) -> jax.Array:
    """The final LayerNorm (GPT-2) / RMSNorm (Llama) of ``h`` ``[..., D]``."""
    return self.norm(h)

  def logit_lens(self, h: jax.Array, norm: bool = False) -> jax.Array:
    """Logit-lens logits ``[..., V]`` = (final_norm(h) if ``norm`` else h) @ unembedding().

    Args:
      h: ``[..., D]`` hidden states (e.g. ``hidden_states[i]``).
      norm: apply the final norm first (use for pre-norm states ``hidden_states[i]``, i < L).
    """
    h = self.final_norm(h) if norm else h.astype(self.dtype)
    return jnp.einsum("...d,dv->...v", h, self.unembedding())

  def init_cache(self, batch_size: int, max_length: int) -> KVCache:
    """An empty :class:`KVCache` for ``batch_size`` sequences of at most ``max_length`` tokens."""
    cfg = self.config
    shape = (batch_size, max_length, cfg.num_kv_heads, cfg.head_dim)
    zeros = tuple(jnp.zeros(shape, self.dtype) for _ in range(cfg.num_layers))
    return KVCache(zeros, zeros, jnp.zeros((batch_size, max_length), bool), jnp.zeros((), jnp.int32))

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
               positions: jax.Array | None = None, *, return_logits: bool = True,
               cache: KVCache | None = None) -> ModelOutput:
    """Forward pass over the full sequence, returning every hidden state.

    Args:
      input_ids: ``[B, T]`` int token ids.
      attention_mask: ``[B, T]`` 1 for real tokens, 0 for padding (left or right); default all ones.
      positions: ``[B, T]`` int positions; default ``max(cumsum(mask) − 1, 0)``, plus the number of valid cache
        slots when a cache is given (so decode steps continue each row's count).
      return_logits: compute ``[B, T, V]`` logits (False: logits is None, e.g. when a tiled lens loss
        projects the hidden states itself).
      cache: a :class:`KVCache` to extend: the T tokens are written at slots ``cache.index + t`` and attend
        to every earlier valid slot (prefill and decode steps of :func:`jaxlens.models.generate`).

    Returns:
      :class:`ModelOutput` (logits, ``num_layers + 1`` hidden states, updated cache or None).

    Raises:
      ValueError: if ``input_ids`` is not ``[B, T]`` or the mask / positions shapes differ from it.
    """
    if input_ids.ndim != 2:
      raise ValueError(f"input_ids must be [B, T], got shape {input_ids.shape}")
    for name, arr in (("attention_mask", attention_mask), ("positions", positions)):
      if arr is not None and arr.shape != input_ids.shape:
        raise ValueError(f"{name} shape {arr.shape} != input_ids shape {input_ids.shape}")
    b, t = input_ids.shape
    attention_mask = jnp.ones((b, t), jnp.int32) if attention_mask is None else attention_mask
    real = attention_mask.astype(bool)
    if positions is None:
      positions = default_positions(attention_mask)
      if cache is not None:
        positions = positions + cache.valid.sum(-1, keepdims=True, dtype=jnp.int32)
    positions = positions.astype(jnp.int32)
    if cache is None:
      mask = AttentionMask(jnp.arange(t), real, jnp.zeros((), jnp.int32), self.attention)
    else:
      valid = jax.lax.dynamic_update_slice(cache.valid, real, (0, cache.index))  # [B, S]
      mask = AttentionMask(cache.index + jnp.arange(t), valid, cache.index, self.attention)
    x = self.embed_tokens(input_ids, positions)  # [B, T, D]
    hidden, keys, values = [x], [], []
    for i, block in enumerate(self.blocks):
      kv = None if cache is None else (cache.keys[i], cache.values[i])
      x, kv = run_block(self.remat, block, x, positions, mask, kv)  # [B, T, D]
      hidden.append(x)
      if kv is not None:
        keys.append(kv[0])
        values.append(kv[1])
    hidden[-1] = self.final_norm(x)
    logits = self.logit_lens(hidden[-1]) if return_logits else None
    new_cache = None if cache is None else KVCache(tuple(keys), tuple(values), mask.valid, cache.index + t)
    return ModelOutput(logits, tuple(hidden), new_cache)
