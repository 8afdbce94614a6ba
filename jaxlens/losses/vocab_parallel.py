r"""The tiled logit-lens loss with the vocabulary sharded over a mesh axis (and, optionally, tokens over another).

Each device holds ``[D, V_pad / n]`` of both unembeddings, computes its slice of every logit tile, and the
divergence functions combine the slices with ``psum``/``pmax`` over the vocabulary axis (their
``vocab_axis_name``), so every softmax and sum is over the whole vocabulary. The student's hidden-state gradient is
the ``psum`` of the per-slice ``G W_Sᵀ``; the unembedding gradient stays sharded. With a token axis, the per-pair
sums, the valid-token count and the unembedding gradient are ``psum``-ed over it. The values and gradients equal
:func:`jaxlens.losses.lens_loss` (same kernel, same tiles), up to float summation order.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import AxisType
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

from jaxlens.losses.lens import Reduction
from jaxlens.losses.lens import TileConfig
from jaxlens.losses.lens import TiledSpec
from jaxlens.losses.lens import check_lens_inputs
from jaxlens.losses.lens import pad_vocab
from jaxlens.losses.lens import pair_coefficients
from jaxlens.losses.lens import per_token_divergence
from jaxlens.losses.lens import tiled_lens_sums


def vocab_parallel_lens_loss(
    teacher_hidden: jax.Array,
    student_hidden: jax.Array,
    teacher_unembed: jax.Array,
    student_unembed: jax.Array,
    mask: jax.Array | None = None,
    *,
    mesh: Mesh,
    vocab_axis: str = "tensor",
    token_axis: str | None = None,
    divergence: str | Callable[..., jax.Array] = "jsd",
    divergence_kwargs: dict[str, Any] | None = None,
    layer_weights: jax.Array | None = None,
    reduction: Reduction = "mean",
    tile: TileConfig = TileConfig(),
) -> jax.Array:
  r""":func:`~jaxlens.losses.lens_loss` (tiled) under ``jax.shard_map``, vocabulary sharded over ``vocab_axis``.

  .. math::

     \text{mean} = \frac{\sum_i w_i\, S_i / \max(\sum_t m_t, 1)}{\sum_i w_i}, \qquad
     S_i = \sum_t m_t\, D\big(h^T_{it} W_T,\; h^S_{it} W_S\big),

  where every vocabulary reduction inside D runs over all shards. The vocabulary is padded with zero columns
  (−inf logits, excluded exactly) to a multiple of ``mesh.shape[vocab_axis] × tile.vocab_multiple``. Teacher
  inputs and ``mask`` get zero gradient (stop-gradient); gradients flow into ``student_hidden``,
  ``student_unembed`` and ``layer_weights``.

  Args:
    teacher_hidden: ``[P, N, Dt]``; sharded over ``token_axis`` along N if given, else replicated.
    student_hidden: ``[P, N, Ds]``, laid out like ``teacher_hidden``.
    teacher_unembed: ``[Dt, V]``; sharded over ``vocab_axis`` along V.
    student_unembed: ``[Ds, V]``; sharded over ``vocab_axis`` along V.
    mask: ``[N]`` bool or float token mask, or ``None`` (all tokens count).
    mesh: the device mesh; must have ``vocab_axis`` (and ``token_axis`` if given). Inputs are resharded to the
      layout above: by ``shard_map`` for ``Auto`` axes, by ``jax.reshard`` (under ``jax.set_mesh``) for ``Explicit``.
    vocab_axis: mesh axis that shards the vocabulary.
    token_axis: mesh axis that shards the tokens, or ``None``.
    divergence: a name in ``DIVERGENCES`` or a function with the family's signature.
    divergence_kwargs: the divergence's keyword hyper-parameters.
    layer_weights: ``[P]`` non-negative per-pair weights (default all 1).
    reduction: ``"mean"``, ``"sum"`` or ``"per_pair"`` (not differentiable), as in ``lens_loss``.
    tile: static :class:`TileConfig`.

  Returns:
    float32 scalar, or ``[P]`` for ``"per_pair"``; replicated.

  Raises:
    ValueError: everything :func:`~jaxlens.losses.lens_loss` raises for, a mesh without ``vocab_axis`` or
      ``token_axis``, equal axes, or N not divisible by the number of token shards.
  """
  check_lens_inputs(teacher_hidden, student_hidden, teacher_unembed, student_unembed, mask, layer_weights,
                    reduction, "tiled")
  for axis in (vocab_axis, token_axis):
    if axis is not None and axis not in mesh.shape:
      raise ValueError(f"mesh axes {tuple(mesh.shape)} do not include {axis!r}")
  if vocab_axis == token_axis:
    raise ValueError(f"vocab_axis and token_axis must differ, both are {vocab_axis!r}")
  num_pairs, num_tokens, _ = jnp.shape(teacher_hidden)
  token_shards = 1 if token_axis is None else mesh.shape[token_axis]
  if num_tokens % token_shards:
    raise ValueError(f"N={num_tokens} tokens do not divide over {token_shards} shards of mesh axis {token_axis!r}")
  vocab_size = jnp.shape(student_unembed)[1]
  multiple = mesh.shape[vocab_axis] * tile.vocab_multiple
  mask = jnp.ones((num_tokens,), jnp.float32) if mask is None else jnp.asarray(mask).astype(jnp.float32)
  weights = jnp.ones((num_pairs,), jnp.float32) if layer_weights is None else jnp.asarray(layer_weights, jnp.float32)
  per_token = per_token_divergence(divergence, divergence_kwargs, vocab_axis_name=vocab_axis, tiled=True)
  spec = TiledSpec(per_token=per_token, vocab_size=vocab_size, tile=tile, vocab_axis_name=vocab_axis,
                   token_axis_name=token_axis)

  def shard_loss(t_hidden, s_hidden, t_unembed, s_unembed, shard_mask, pair_weights):
    coeffs, count = pair_coefficients(pair_weights, shard_mask, num_pairs, reduction, token_axis)
    loss, pair_sums, _ = tiled_lens_sums(spec, coeffs, t_hidden, s_hidden, t_unembed, s_unembed, shard_mask)
    return pair_sums / jnp.maximum(count, 1.0) if reduction == "per_pair" else loss

  hidden_spec = PartitionSpec(None, token_axis, None)
  unembed_spec = PartitionSpec(None, vocab_axis)
  in_specs = (hidden_spec, hidden_spec, unembed_spec, unembed_spec, PartitionSpec(token_axis), PartitionSpec())
  args = (teacher_hidden, student_hidden, pad_vocab(teacher_unembed, multiple), pad_vocab(student_unembed, multiple),
          mask, weights)
  if AxisType.Explicit in mesh.axis_types:  # explicit sharding: move the inputs to the layout shard_map expects
    args = tuple(jax.reshard(x, NamedSharding(mesh, s)) for x, s in zip(args, in_specs))
  sharded = jax.shard_map(shard_loss, mesh=mesh, in_specs=in_specs, out_specs=PartitionSpec())
  return sharded(*args)
