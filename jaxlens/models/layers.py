"""Family-agnostic pieces of a decoder: annotated parameters, norms, activations, masked attention, block remat.

Shape letters: B batch, T query tokens, S key slots (the sequence, or the KV cache), D hidden, H query heads,
G key/value heads, R = H / G query heads per KV head, K head dim, F MLP width, V vocabulary.
Norms and the attention softmax run in float32 whatever the compute dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx
from flax import struct

RematPolicy = Literal["none", "block", "dots"]
REMAT_POLICIES = ("none", "block", "dots")
AttentionImplementation = Literal["xla", "cudnn"]
ATTENTION_IMPLEMENTATIONS = ("xla", "cudnn")


def param(rngs: nnx.Rngs | None, shape: tuple[int, ...], axes: tuple[str | None, ...], dtype,
          init: Callable = jax.nn.initializers.zeros) -> nnx.Param:
  """A parameter ``init(key, shape, dtype)`` annotated with one logical axis name per dimension.

  The ``axes`` metadata (``"vocab"``, ``"embed"``, ``"heads"``, ``"kv_heads"``, ``"head_dim"``, ``"mlp"`` or
  ``None`` = replicated) is what :func:`jaxlens.models.sharding.param_partition_specs` maps to mesh axes.
  """
  if len(axes) != len(shape):
    raise ValueError(f"axes {axes} must name every dimension of shape {shape}")
  return nnx.Param(init(rngs.params() if rngs is not None else None, shape, dtype), axes=axes)


def normal(std: float) -> Callable:
  """Initializer N(0, std²)."""
  return jax.nn.initializers.normal(std)


class LayerNorm(nnx.Module):
  """y = (x − mean(x)) / sqrt(var(x) + eps) · scale + bias over the last axis, computed in float32."""

  def __init__(self, dim: int, eps: float, *, dtype, param_dtype):
    self.scale = param(None, (dim,), (None,), param_dtype, jax.nn.initializers.ones)
    self.bias = param(None, (dim,), (None,), param_dtype)
    self.eps, self.dtype = eps, dtype

  def __call__(self, x: jax.Array) -> jax.Array:  # [..., D] -> [..., D]
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
    return (y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)).astype(self.dtype)


class RMSNorm(nnx.Module):
  """y = x / sqrt(mean(x²) + eps) · scale over the last axis, computed in float32."""

  def __init__(self, dim: int, eps: float, *, dtype, param_dtype):
    self.scale = param(None, (dim,), (None,), param_dtype, jax.nn.initializers.ones)
    self.eps, self.dtype = eps, dtype

  def __call__(self, x: jax.Array) -> jax.Array:  # [..., D] -> [..., D]
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.square(x32).mean(-1, keepdims=True) + self.eps)
    return (y * self.scale[...].astype(jnp.float32)).astype(self.dtype)


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """The HF activation ``name``: gelu_new / gelu_pytorch_tanh = tanh-approximate GELU, gelu = exact GELU."""
  return {"gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
          "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
          "gelu": lambda x: jax.nn.gelu(x, approximate=False),
          "silu": jax.nn.silu, "relu": jax.nn.relu}[name]


@struct.dataclass
class AttentionMask:
  """Which key slots each query may see: slot s is visible from query t iff ``valid[b, s]`` and s ≤ ``slots[t]``.

  Attributes:
    slots: ``[T]`` int32, the cache slot of each query token (``arange(T)`` without a cache).
    valid: ``[B, S]`` bool, the key slots holding real tokens (padding and unwritten cache slots are False).
    index: ``[]`` int32, the slot the first query token is written to (0 without a cache).
    implementation: static, the kernel of :func:`attend` without a KV cache (see there).
  """

  slots: jax.Array
  valid: jax.Array
  index: jax.Array
  implementation: AttentionImplementation = struct.field(pytree_node=False, default="xla")


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask,
           kv_cache: tuple[jax.Array, jax.Array] | None) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
  """Causal, padding-masked scaled dot-product attention with grouped KV heads and an optional KV cache.

  .. math::
    o_{bth} = \\sum_s \\mathrm{softmax}_s\\big(q_{bth} \\cdot k_{bsg} / \\sqrt{K} + m_{bts}\\big)\\, v_{bsg},
    \\quad g = \\lfloor h / R \\rfloor,\\ m_{bts} = 0 \\text{ if visible else } -\\infty \\text{ (finite min)}

  Args:
    q: ``[B, T, H, K]`` queries (already rotated for RoPE models).
    k: ``[B, T, G, K]`` keys of the T new tokens.
    v: ``[B, T, G, K]`` values of the T new tokens.
    mask: visibility of the key slots (see :class:`AttentionMask`).
    kv_cache: ``([B, S, G, K], [B, S, G, K])`` cached keys/values, or None (then S = T and k, v are the keys).

  Returns:
    ``([B, T, H, K]`` outputs in ``q.dtype``, the updated cache with k, v written at ``mask.index`` or None).
    A query that sees no slot (a padding token) gets a uniform average instead of NaN.

  Kernels: both go through :func:`jax.nn.dot_product_attention` (scores and softmax in float32).
  ``mask.implementation="xla"`` (the default and the fallback) applies the full ``[B, T, S]`` visibility mask.
  ``"cudnn"`` (GPU, bf16/fp16 only) runs cuDNN's flash attention with its causal mask and the key-padding mask
  as a ``[B, 1, 1, S]`` bias, never forming ``[B, H, T, S]`` scores; it is used only without a KV cache (training
  and teacher-forced evaluation: query t is slot t), a cache step falls back to ``"xla"``.
  """
  if kv_cache is not None:
    start = (0, mask.index, 0, 0)
    kv_cache = (jax.lax.dynamic_update_slice(kv_cache[0], k.astype(kv_cache[0].dtype), start),
                jax.lax.dynamic_update_slice(kv_cache[1], v.astype(kv_cache[1].dtype), start))
    k, v = kv_cache
  v = v.astype(q.dtype)
  k = k.astype(q.dtype)
  if mask.implementation == "cudnn" and kv_cache is None:
    return jax.nn.dot_product_attention(q, k, v, mask=mask.valid[:, None, None, :], is_causal=True,
                                        implementation="cudnn"), None
  visible = mask.valid[:, None, :] & (jnp.arange(k.shape[1])[None, None, :] <= mask.slots[None, :, None])  # [B, T, S]
  return jax.nn.dot_product_attention(q, k, v, mask=visible[:, None], implementation="xla"), kv_cache


def run_block(policy: RematPolicy, block: nnx.Module, *args):
  """``block(*args)``, rematerialised in the backward pass per ``policy``.

  ``"none"`` stores every activation; ``"block"`` keeps only the block's inputs and recomputes the rest;
  ``"dots"`` also keeps the outputs of matmuls without batch dimensions
  (``jax.checkpoint_policies.dots_with_no_batch_dims_saveable``).
  """
  if policy == "none":
    return block(*args)
  checkpoint_policy = None if policy == "block" else jax.checkpoint_policies.dots_with_no_batch_dims_saveable
  return nnx.remat(lambda module, *a: module(*a), policy=checkpoint_policy)(block, *args)
