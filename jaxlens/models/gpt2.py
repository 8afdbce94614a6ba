"""GPT-2 (Radford et al., 2019) in Flax NNX, numerically matching Hugging Face ``GPT2LMHeadModel``.

Pre-LayerNorm blocks ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``, learned absolute positions, fused
QKV projection, biases everywhere, tied LM head by default. Shape letters as in :mod:`jaxlens.models.layers`
(S = 3 for the stacked q/k/v of the fused projection in parameter shapes).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlens.models.base import CausalLM
from jaxlens.models.config import ModelConfig
from jaxlens.models.layers import AttentionMask, LayerNorm, activation, attend, normal, param


class GPT2Attention(nnx.Module):
  """Multi-head causal self-attention with a fused ``[D, 3, H, K]`` QKV projection."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, dtype, param_dtype):
    d, h, k = cfg.hidden_size, cfg.num_heads, cfg.head_dim
    init = normal(cfg.initializer_range)
    self.qkv = param(rngs, (d, 3, h, k), ("embed", None, "heads", "head_dim"), param_dtype, init)
    self.qkv_bias = param(rngs, (3, h, k), (None, "heads", "head_dim"), param_dtype)
    self.o = param(rngs, (h, k, d), ("heads", "head_dim", "embed"), param_dtype, init)
    self.o_bias = param(rngs, (d,), (None,), param_dtype)
    self.dtype = dtype

  def __call__(self, x, mask: AttentionMask, kv_cache):
    qkv = jnp.einsum("btd,dshk->btshk", x, self.qkv[...].astype(self.dtype)) + self.qkv_bias[...].astype(
        self.dtype)  # [B, T, 3, H, K]
    out, kv_cache = attend(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], mask, kv_cache)  # [B, T, H, K]
    out = jnp.einsum("bthk,hkd->btd", out, self.o[...].astype(self.dtype)) + self.o_bias[...].astype(self.dtype)
    return out, kv_cache  # [B, T, D]


class GPT2MLP(nnx.Module):
  """``down(act(up(x)))`` with biases; ``act`` is ``activation_function`` (gelu_new for GPT-2)."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, dtype, param_dtype):
    d, f = cfg.hidden_size, cfg.intermediate_size
    init = normal(cfg.initializer_range)
    self.up = param(rngs, (d, f), ("embed", "mlp"), param_dtype, init)
    self.up_bias = param(rngs, (f,), ("mlp",), param_dtype)
    self.down = param(rngs, (f, d), ("mlp", "embed"), param_dtype, init)
    self.down_bias = param(rngs, (d,), (None,), param_dtype)
    self.act, self.dtype = cfg.activation, dtype

  def __call__(self, x):  # [B, T, D]
    hid = activation(self.act)(jnp.einsum("btd,df->btf", x, self.up[...].astype(self.dtype)) + self.up_bias[...].astype(
        self.dtype))  # [B, T, F]
    return jnp.einsum("btf,fd->btd", hid, self.down[...].astype(self.dtype)) + self.down_bias[...].astype(
        self.dtype)  # [B, T, D]


class GPT2Block(nnx.Module):
  """``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, dtype, param_dtype):
    self.attn_norm = LayerNorm(cfg.hidden_size, cfg.norm_eps, dtype=dtype, param_dtype=param_dtype)
    self.attn = GPT2Attention(cfg, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.mlp_norm = LayerNorm(cfg.hidden_size, cfg.norm_eps, dtype=dtype, param_dtype=param_dtype)
    self.mlp = GPT2MLP(cfg, rngs=rngs, dtype=dtype, param_dtype=param_dtype)

  def __call__(self, x, positions, mask: AttentionMask, kv_cache):  # positions unused: added at the embedding
    attn_out, kv_cache = self.attn(self.attn_norm(x), mask, kv_cache)
    x = x + attn_out  # [B, T, D]
    return x + self.mlp(self.mlp_norm(x)), kv_cache


class GPT2(CausalLM):
  """GPT-2 language model: token + position embeddings, ``num_layers`` blocks, ``ln_f``, LM head.

  Args:
    cfg: a ``family="gpt2"`` :class:`ModelConfig`.
    rngs: random streams for the initialisation (N(0, initializer_range²) weights, zero biases).
    dtype: compute dtype of activations (norms and softmax still run in float32).
    param_dtype: storage dtype of the parameters.
    remat: block rematerialisation (see :func:`jaxlens.models.layers.run_block`).
  """

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32,
               remat=False):
    if cfg.family != "gpt2":
      raise ValueError(f"GPT2 needs a gpt2 config, got family {cfg.family!r}")
    super().__init__(cfg, dtype=dtype, param_dtype=param_dtype, remat=remat)
    init = normal(cfg.initializer_range)
    self.embed = param(rngs, (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"), param_dtype, init)
    self.pos_embed = param(rngs, (cfg.max_position_embeddings, cfg.hidden_size), (None, "embed"), param_dtype, init)
    self.blocks = nnx.List([GPT2Block(cfg, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
                            for _ in range(cfg.num_layers)])
    self.norm = LayerNorm(cfg.hidden_size, cfg.norm_eps, dtype=dtype, param_dtype=param_dtype)
    if not cfg.tie_word_embeddings:
      self.lm_head = param(rngs, (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), param_dtype, init)

  def embed_tokens(self, input_ids: jax.Array, positions: jax.Array) -> jax.Array:
    """``wte[input_ids] + wpe[positions]`` ``[B, T, D]``."""
    x = jnp.take(self.embed[...], input_ids, axis=0) + jnp.take(self.pos_embed[...], positions, axis=0)
    return x.astype(self.dtype)
