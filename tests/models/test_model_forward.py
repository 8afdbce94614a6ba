"""The shared forward pass: input checks, default positions, optional logits, and the KV-cache call path."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlens.models import ModelConfig, build_model, default_positions

CFG = ModelConfig(family="gpt2", vocab_size=31, hidden_size=16, num_layers=2, num_heads=2, num_kv_heads=2,
                  head_dim=8, intermediate_size=32, max_position_embeddings=16, norm_eps=1e-5, activation="gelu_new")


@nnx.jit
def forward(model, *args, **kwargs):
  return model(*args, **kwargs)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model(request):
  cfg = CFG if request.param == "gpt2" else ModelConfig(
      family="llama", vocab_size=31, hidden_size=16, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=4,
      intermediate_size=32, max_position_embeddings=16, norm_eps=1e-5, activation="silu", tie_word_embeddings=False)
  return build_model(cfg, rngs=nnx.Rngs(0))


def test_default_positions_count_real_tokens_for_left_and_right_padding():
  mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
  np.testing.assert_array_equal(default_positions(mask), [[0, 0, 0, 1, 2], [0, 1, 2, 2, 2]])


def test_left_padding_does_not_change_the_real_tokens(model):
  ids = jnp.array([[5, 6, 7, 8]])
  padded = forward(model, jnp.array([[0, 0, 5, 6, 7, 8]]), jnp.array([[0, 0, 1, 1, 1, 1]]))
  plain = forward(model, ids)
  np.testing.assert_allclose(padded.logits[:, 2:], plain.logits, atol=1e-5)
  for h_pad, h in zip(padded.hidden_states, plain.hidden_states, strict=True):
    np.testing.assert_allclose(h_pad[:, 2:], h, atol=1e-5)


def test_return_logits_false_keeps_hidden_states(model):
  ids = jnp.array([[1, 2, 3]])
  out = model(ids, return_logits=False)
  assert out.logits is None and len(out.hidden_states) == 3 and out.cache is None
  np.testing.assert_array_equal(out.hidden_states[-1], model(ids).hidden_states[-1])


def test_prefill_then_decode_with_cache_equals_the_full_forward(model):
  """Jitted (as generate runs it): prefill 4 tokens, then decode 2 one at a time."""
  ids = jnp.array([[0, 3, 4, 5, 6, 7], [9, 10, 11, 12, 13, 14]])
  mask = jnp.array([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
  full = forward(model, ids, mask).logits
  cache = model.init_cache(2, 8)
  out = forward(model, ids[:, :4], mask[:, :4], cache=cache)
  real = np.asarray(mask[:, :4], bool)  # a padding query sees no key; its output is arbitrary
  np.testing.assert_allclose(np.asarray(out.logits)[real], np.asarray(full[:, :4])[real], atol=1e-5)
  positions = default_positions(mask)
  out = forward(model, ids[:, 4:5], mask[:, 4:5], positions[:, 4:5], cache=out.cache)
  np.testing.assert_allclose(out.logits[:, 0], full[:, 4], atol=1e-5)
  out = forward(model, ids[:, 5:6], cache=out.cache)  # default positions continue from the valid cache slots
  np.testing.assert_allclose(out.logits[:, 0], full[:, 5], atol=1e-5)
  assert int(out.cache.index) == 6
  assert out.cache.keys[0].shape == (2, 8, model.config.num_kv_heads, model.config.head_dim)


@pytest.mark.parametrize("args, match", [
    ((jnp.zeros((2, 3, 1), jnp.int32),), "input_ids must be"),
    ((jnp.zeros((2, 3), jnp.int32), jnp.ones((2, 4))), "attention_mask shape"),
    ((jnp.zeros((2, 3), jnp.int32), None, jnp.zeros((3,), jnp.int32)), "positions shape"),
])
def test_bad_shapes_raise(model, args, match):
  with pytest.raises(ValueError, match=match):
    model(*args)


def test_bad_remat_and_family_mismatch_raise():
  with pytest.raises(ValueError, match="remat"):
    build_model(CFG, rngs=nnx.Rngs(0), remat="sometimes")
  from jaxlens.models import Llama
  with pytest.raises(ValueError, match="llama config"):
    Llama(CFG, rngs=nnx.Rngs(0))
