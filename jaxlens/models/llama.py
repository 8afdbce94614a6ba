"""Llama (Touvron et al., 2023; Llama 3 RoPE scaling) in Flax NNX, numerically matching HF ``LlamaForCausalLM``.

Pre-RMSNorm blocks ``x + attn(norm(x))`` then ``x + mlp(norm(x))``, rotary position embeddings (half-split
``rotate_half`` layout), grouped-query attention, SwiGLU MLP. Covers SmolLM2 and Llama 3.x checkpoints.
Shape letters as in :mod:`jaxlens.models.layers`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlens.models.base import CausalLM
from jaxlens.models.config import ModelConfig
from jaxlens.models.layers import AttentionMask, RMSNorm, activation, attend, normal, param


def rope_inverse_frequencies(cfg: ModelConfig) -> np.ndarray:
  """RoPE inverse frequencies ``[K/2]`` float32: ``θ^(−2i/K)``, rescaled per band for ``rope_type="llama3"``.

  llama3: wavelengths λ = 2π/f longer than ``orig/low_freq_factor`` are divided by ``factor``, those shorter than
  ``orig/high_freq_factor`` are kept, and the band between interpolates smoothly (HF ``_compute_llama3_parameters``).
  """
  k = cfg.head_dim
  inv = 1.0 / cfg.rope_theta ** (np.arange(0, k, 2, dtype=np.float64) / k)
  if cfg.rope_type == "llama3":
    orig = cfg.rope_original_max_position_embeddings
    low, high = orig / cfg.rope_low_freq_factor, orig / cfg.rope_high_freq_factor
    wavelength = 2 * math.pi / inv
    smooth = (orig / wavelength - cfg.rope_low_freq_factor) / (cfg.rope_high_freq_factor - cfg.rope_low_freq_factor)
    mid = (1 - smooth) * inv / cfg.rope_factor + smooth * inv
    inv = np.where(wavelength > low, inv / cfg.rope_factor, np.where(wavelength < high, inv, mid))
  return inv.astype(np.float32)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
  """Rotate ``x`` ``[B, T, H, K]`` by ``positions`` ``[B, T]``: ``x·cos + rotate_half(x)·sin`` (in float32).

  With angles a = position · inv_freq ``[B, T, K/2]`` and x = (x₁, x₂) split in halves:
  ``(x₁ cos a − x₂ sin a, x₂ cos a + x₁ sin a)``.
  """
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, K/2]
  cos, sin = jnp.cos(angles)[:, :, None], jnp.sin(angles)[:, :, None]  # [B, T, 1, K/2]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


class LlamaAttention(nnx.Module):
  """Grouped-query causal self-attention with RoPE on queries and keys."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, dtype, param_dtype):
    d, h, g, k = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    init = normal(cfg.initializer_range)
    self.q = param(rngs, (d, h, k), ("embed", "heads", "head_dim"), param_dtype, init)
    self.k = param(rngs, (d, g, k), ("embed", "kv_heads", "head_dim"), param_dtype, init)
    self.v = param(rngs, (d, g, k), ("embed", "kv_heads", "head_dim"), param_dtype, init)
    self.o = param(rngs, (h, k, d), ("heads", "head_dim", "embed"), param_dtype, init)
    if cfg.attention_bias:
      self.q_bias = param(rngs, (h, k), ("heads", "head_dim"), param_dtype)
      self.k_bias = param(rngs, (g, k), ("kv_heads", "head_dim"), param_dtype)
      self.v_bias = param(rngs, (g, k), ("kv_heads", "head_dim"), param_dtype)
      self.o_bias = param(rngs, (d,), (None,), param_dtype)
    self.cfg, self.bias, self.dtype = cfg, cfg.attention_bias, dtype

  def _project(self, x, name: str):
    y = jnp.einsum("btd,dhk->bthk", x, getattr(self, name)[...].astype(self.dtype))  # [B, T, H|G, K]
    return y + getattr(self, f"{name}_bias")[...].astype(self.dtype) if self.bias else y

  def __call__(self, x, positions, mask: AttentionMask, kv_cache):
    inv_freq = rope_inverse_frequencies(self.cfg)  # [K/2], a compile-time constant
    q = apply_rope(self._project(x, "q"), positions, inv_freq)  # [B, T, H, K]
    k = apply_rope(self._project(x, "k"), positions, inv_freq)  # [B, T, G, K]
    out, kv_cache = attend(q, k, self._project(x, "v"), mask, kv_cache)  # [B, T, H, K]
    out = jnp.einsum("bthk,hkd->btd", out, self.o[...].astype(self.dtype))  # [B, T, D]
    return (out + self.o_bias[...].astype(self.dtype) if self.bias else out), kv_cache


class LlamaMLP(nnx.Module):
  """SwiGLU: ``down(act(gate(x)) · up(x))`` (act = silu for Llama)."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, dtype, param_dtype):
    d, f = cfg.hidden_size, cfg.intermediate_size
    init = normal(cfg.initializer_range)
    self.gate = param(rngs, (d, f), ("embed", "mlp"), param_dtype, init)
    self.up = param(rngs, (d, f), ("embed", "mlp"), param_dtype, init)
    self.down = param(rngs, (f, d), ("mlp", "embed"), param_dtype, init)
    if cfg.mlp_bias:
      self.gate_bias = param(rngs, (f,), ("mlp",), param_dtype)
      self.up_bias = param(rngs, (f,), ("mlp",), param_dtype)
      self.down_bias = param(rngs, (d,), (None,), param_dtype)
    self.act, self.bias, self.dtype = cfg.activation, cfg.mlp_bias, dtype

  def _project(self, x, name: str, spec: str):
    y = jnp.einsum(spec, x, getattr(self, name)[...].astype(self.dtype))
    return y + getattr(self, f"{name}_bias")[...].astype(self.dtype) if self.bias else y

  def __call__(self, x):  # [B, T, D]
    gate = activation(self.act)(self._project(x, "gate", "btd,df->btf"))  # [B, T, F]
    hid = gate * self._project(x, "up", "btd,df->btf")  # [B, T, F]
    return self._project(hid, "down", "btf,fd->btd")  # [B, T, D]


class LlamaBlock(nnx.Module):
  """``x + attn(input_layernorm(x))``, then ``x + mlp(post_attention_layernorm(x))``."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, dtype, param_dtype):
    self.attn_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps, dtype=dtype, param_dtype=param_dtype)
    self.attn = LlamaAttention(cfg, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps, dtype=dtype, param_dtype=param_dtype)
    self.mlp = LlamaMLP(cfg, rngs=rngs, dtype=dtype, param_dtype=param_dtype)

  def __call__(self, x, positions, mask: AttentionMask, kv_cache):
    attn_out, kv_cache = self.attn(self.attn_norm(x), positions, mask, kv_cache)
    x = x + attn_out  # [B, T, D]
    return x + self.mlp(self.mlp_norm(x)), kv_cache


class Llama(CausalLM):
  """Llama language model: token embeddings, ``num_layers`` blocks, final RMSNorm, LM head (tied or not).

  Args:
    cfg: a ``family="llama"`` :class:`ModelConfig`.
    rngs: random streams for the initialisation (N(0, initializer_range²) weights, zero biases).
    dtype: compute dtype of activations (norms, RoPE and softmax still run in float32).
    param_dtype: storage dtype of the parameters.
    remat: block rematerialisation (see :func:`jaxlens.models.layers.run_block`).
  """

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32,
               remat=False):
    if cfg.family != "llama":
      raise ValueError(f"Llama needs a llama config, got family {cfg.family!r}")
    super().__init__(cfg, dtype=dtype, param_dtype=param_dtype, remat=remat)
    init = normal(cfg.initializer_range)
    self.embed = param(rngs, (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"), param_dtype, init)
    self.blocks = nnx.List([LlamaBlock(cfg, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
                            for _ in range(cfg.num_layers)])
    self.norm = RMSNorm(cfg.hidden_size, cfg.norm_eps, dtype=dtype, param_dtype=param_dtype)
    if not cfg.tie_word_embeddings:
      self.lm_head = param(rngs, (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), param_dtype, init)

  def embed_tokens(self, input_ids: jax.Array, positions: jax.Array) -> jax.Array:
    """``embed_tokens[input_ids]`` ``[B, T, D]`` (positions enter through RoPE inside attention)."""
    return jnp.take(self.embed[...], input_ids, axis=0).astype(self.dtype)
