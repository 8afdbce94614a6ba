"""Compiled temporary memory of ``value_and_grad``: the tiled lens kernel vs the materialised reference.

Shapes where the logits dominate (N·V ≫ N·D + D·V): the reference holds several ``[P, N, V]`` float32 arrays, the
tiled kernel one ``[block, V]`` tile per model plus O(N·D·P) hidden-state gradients, flat in P.
"""

import jax
import jax.numpy as jnp
import pytest

from jaxlens.losses import TileConfig
from jaxlens.losses import lens_loss

NUM_TOKENS, DIM, VOCAB = 2048, 64, 8192
TILE = TileConfig(block_tokens=256)


def temp_bytes(num_pairs, implementation):
  hidden = jax.ShapeDtypeStruct((num_pairs, NUM_TOKENS, DIM), jnp.float32)
  unembed = jax.ShapeDtypeStruct((DIM, VOCAB), jnp.float32)
  mask = jax.ShapeDtypeStruct((NUM_TOKENS,), jnp.float32)
  loss = lambda th, sh, tw, sw, m: lens_loss(th, sh, tw, sw, m, implementation=implementation, tile=TILE)
  compiled = jax.jit(jax.value_and_grad(loss, argnums=(1, 3))).lower(hidden, hidden, unembed, unembed, mask).compile()
  analysis = compiled.memory_analysis()
  if analysis is None:
    pytest.skip("this backend reports no compiled memory analysis")
  return analysis.temp_size_in_bytes


def test_tiled_temp_memory_is_a_fraction_of_naive_and_flat_in_pairs():
  naive_5 = temp_bytes(5, "reference")
  tiled_5 = temp_bytes(5, "tiled")
  tiled_10 = temp_bytes(10, "tiled")
  stacked_logits = 5 * NUM_TOKENS * VOCAB * 4
  assert naive_5 >= stacked_logits  # the reference really materialises the [P, N, V] logits
  assert tiled_5 <= naive_5 / 5, (tiled_5, naive_5)
  assert tiled_5 < stacked_logits / 5, (tiled_5, stacked_logits)
  assert tiled_10 < 1.1 * tiled_5, (tiled_5, tiled_10)
