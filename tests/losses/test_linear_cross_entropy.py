"""The tiled fused linear cross-entropy against the materialised CE (float32) and torch float64.

Shapes exercise every edge the kernel handles: several token blocks with a ragged last one, a vocabulary that is not
a multiple of 128 (padded columns), masked tokens labelled −100, and an all-masked batch.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxlens.losses import TileConfig
from jaxlens.losses import cross_entropy
from jaxlens.losses import linear_cross_entropy

TOKENS, DIM, VOCAB = 75, 24, 333
TILE = TileConfig(block_tokens=16)


def inputs(seed=0):
  rng = np.random.default_rng(seed)
  hidden = rng.normal(size=(TOKENS, DIM))
  unembed = rng.normal(size=(DIM, VOCAB)) * 0.4
  labels = rng.integers(0, VOCAB, size=TOKENS)
  mask = rng.random(TOKENS) > 0.3
  labels[~mask] = -100
  return hidden, unembed, labels, mask


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_tiled_matches_materialised_cross_entropy_values_and_grads(reduction):
  hidden, unembed, labels, mask = inputs()
  h, w = jnp.asarray(hidden, jnp.float32), jnp.asarray(unembed, jnp.float32)
  y, m = jnp.asarray(labels), jnp.asarray(mask)

  def materialised(h, w):
    return cross_entropy(h @ w, y, m, reduction=reduction)

  def tiled(h, w):
    return linear_cross_entropy(h, w, y, m, reduction=reduction, tile=TILE)

  want, want_grads = jax.value_and_grad(materialised, argnums=(0, 1))(h, w)
  got, got_grads = jax.jit(jax.value_and_grad(tiled, argnums=(0, 1)))(h, w)
  np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
  for a, b in zip(got_grads, want_grads):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6 * float(jnp.max(jnp.abs(b))))
  reference = linear_cross_entropy(h, w, y, m, reduction=reduction, implementation="reference")
  np.testing.assert_allclose(float(reference), float(want), rtol=1e-6)
  assert float(jax.jit(tiled)(h, w)) == pytest.approx(float(got), rel=1e-6)  # value-only sweep agrees


def test_tiled_matches_torch_float64():
  hidden, unembed, labels, mask = inputs(seed=3)
  t_h = torch.tensor(hidden, requires_grad=True)
  t_w = torch.tensor(unembed.T.copy(), requires_grad=True)  # lm_head.weight [V, D]
  expected = torch.nn.functional.cross_entropy(t_h @ t_w.T, torch.tensor(labels), ignore_index=-100)
  expected.backward()

  loss = lambda h, w: linear_cross_entropy(h, w, jnp.asarray(labels), jnp.asarray(mask), tile=TILE)
  value, (d_h, d_w) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(jnp.asarray(hidden, jnp.float32),
                                                                       jnp.asarray(unembed, jnp.float32))
  np.testing.assert_allclose(float(value), expected.item(), rtol=1e-5)
  for actual, wanted in ((d_h, t_h.grad.numpy()), (d_w, t_w.grad.numpy().T)):
    np.testing.assert_allclose(np.asarray(actual), wanted, rtol=1e-4, atol=1e-5 * np.max(np.abs(wanted)))


def test_all_masked_gives_zero_and_zero_grads():
  hidden, unembed, labels, _ = inputs()
  mask = jnp.zeros(TOKENS, bool)
  value, grads = jax.value_and_grad(lambda h, w: linear_cross_entropy(h, w, jnp.asarray(labels), mask, tile=TILE),
                                    argnums=(0, 1))(jnp.asarray(hidden, jnp.float32), jnp.asarray(unembed, jnp.float32))
  assert float(value) == 0.0
  assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in grads)


def test_bfloat16_compute_stays_close():
  hidden, unembed, labels, mask = inputs(seed=5)
  h, w = jnp.asarray(hidden, jnp.float32), jnp.asarray(unembed, jnp.float32)
  exact = linear_cross_entropy(h, w, jnp.asarray(labels), jnp.asarray(mask), tile=TILE)
  low = linear_cross_entropy(h, w, jnp.asarray(labels), jnp.asarray(mask),
                             tile=TileConfig(block_tokens=16, compute_dtype=jnp.bfloat16))
  assert float(low) == pytest.approx(float(exact), rel=2e-2)


def test_bad_inputs_are_named():
  hidden, unembed, labels, mask = (jnp.asarray(x) for x in inputs())
  with pytest.raises(ValueError, match="D=24"):
    linear_cross_entropy(hidden, unembed[:5], labels, mask)
  with pytest.raises(ValueError, match="mask must have shape"):
    linear_cross_entropy(hidden, unembed, labels, mask[:3])
  with pytest.raises(ValueError, match="reduction"):
    linear_cross_entropy(hidden, unembed, labels, mask, reduction="none")
  with pytest.raises(TypeError, match="labels"):
    linear_cross_entropy(hidden, unembed, labels.astype(jnp.float32), mask)


def test_tiled_temp_memory_has_no_full_logits():
  n, d, v = 4096, 32, 8192
  args = (jax.ShapeDtypeStruct((n, d), jnp.float32), jax.ShapeDtypeStruct((d, v), jnp.float32),
          jax.ShapeDtypeStruct((n,), jnp.int32), jax.ShapeDtypeStruct((n,), jnp.float32))
  def temp(implementation):
    fn = lambda h, w, y, m: linear_cross_entropy(h, w, y, m, implementation=implementation,
                                                 tile=TileConfig(block_tokens=256))
    compiled = jax.jit(jax.value_and_grad(fn, argnums=(0, 1))).lower(*args).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:
      pytest.skip("this backend reports no compiled memory analysis")
    return analysis.temp_size_in_bytes
  logits_bytes = n * v * 4
  assert temp("reference") >= logits_bytes
  assert temp("tiled") < logits_bytes / 4
