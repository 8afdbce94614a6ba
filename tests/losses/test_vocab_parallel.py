"""The vocabulary-parallel lens loss on the 8-device CPU mesh equals the single-device kernel, values and grads.

V = 301 padded to a multiple of shards × 128: with 8 vocabulary shards, five shards hold only padding (all −inf).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType

from jaxlens.losses import TileConfig
from jaxlens.losses import lens_loss
from jaxlens.losses import vocab_parallel_lens_loss

NUM_PAIRS, NUM_TOKENS, TEACHER_DIM, STUDENT_DIM, VOCAB = 3, 78, 24, 16, 301
TILE = TileConfig(block_tokens=16)
WEIGHTS = jnp.array([1.0, 2.0, 0.5])
RTOL = 1e-5


def make_inputs(seed=0):
  rng = np.random.default_rng(seed)
  as32 = lambda x: jnp.asarray(x, jnp.float32)
  return (as32(rng.normal(size=(NUM_PAIRS, NUM_TOKENS, TEACHER_DIM))),
          as32(rng.normal(size=(NUM_PAIRS, NUM_TOKENS, STUDENT_DIM))),
          as32(rng.normal(size=(TEACHER_DIM, VOCAB)) * 0.5),
          as32(rng.normal(size=(STUDENT_DIM, VOCAB)) * 0.6),
          jnp.asarray(rng.random(NUM_TOKENS) > 0.3))


def value_and_grads(loss_fn, inputs):
  teacher_hidden, student_hidden, teacher_unembed, student_unembed, mask = inputs
  loss = lambda sh, sw, th, tw: loss_fn(th, sh, tw, sw, mask)
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(student_hidden, student_unembed, teacher_hidden,
                                                             teacher_unembed)


def assert_close(actual, expected):
  (value, grads), (expected_value, expected_grads) = actual, expected
  np.testing.assert_allclose(float(value), float(expected_value), rtol=RTOL)
  for grad, expected_grad in zip(grads, expected_grads):
    scale = float(np.max(np.abs(np.asarray(expected_grad))))
    np.testing.assert_allclose(np.asarray(grad), np.asarray(expected_grad), rtol=RTOL, atol=RTOL * scale)


@pytest.mark.parametrize("mesh_shape, token_axis, divergence, kwargs", [
    ((8,), None, "jsd", {}),
    ((8,), None, "adaptive_kl", {"head_rule": "paper"}),
    ((2, 4), "data", "adaptive_kl", {"head_rule": "official"}),
    ((2, 4), "data", "jsd", {"beta": 0.3}),
    ((2, 4), "data", "reverse_kl", {"temperature": 2.0}),
    ((2, 4), "data", "tvd", {}),
    ((2, 4), None, "skew_kl", {}),  # tokens replicated over the data axis
], ids=str)
def test_vocab_parallel_equals_single_device(mesh_shape, token_axis, divergence, kwargs):
  names = ("tensor",) if len(mesh_shape) == 1 else ("data", "tensor")
  mesh = jax.make_mesh(mesh_shape, names, axis_types=(AxisType.Auto,) * len(names))
  common = dict(divergence=divergence, divergence_kwargs=kwargs, layer_weights=WEIGHTS, tile=TILE)
  inputs = make_inputs()
  single = value_and_grads(lambda *a: lens_loss(*a, **common), inputs)
  sharded = value_and_grads(lambda *a: vocab_parallel_lens_loss(*a, mesh=mesh, token_axis=token_axis, **common),
                            inputs)
  assert_close(sharded, single)


def test_vocab_parallel_with_explicit_mesh_and_per_pair():
  mesh = jax.make_mesh((2, 4), ("data", "tensor"), axis_types=(AxisType.Explicit,) * 2)
  inputs = make_inputs(seed=1)
  expected = lens_loss(*inputs, reduction="per_pair", tile=TILE)
  with jax.set_mesh(mesh):
    per_pair = jax.jit(lambda *a: vocab_parallel_lens_loss(*a, mesh=mesh, token_axis="data", reduction="per_pair",
                                                           tile=TILE))(*inputs)
  np.testing.assert_allclose(np.asarray(per_pair), np.asarray(expected), rtol=RTOL)


@pytest.mark.parametrize("kwargs, message", [
    (dict(vocab_axis="model"), "do not include 'model'"),
    (dict(token_axis="tensor"), "must differ"),
    (dict(token_axis="data", num_tokens=77), "do not divide"),
])
def test_vocab_parallel_bad_arguments(kwargs, message):
  mesh = jax.make_mesh((2, 4), ("data", "tensor"), axis_types=(AxisType.Auto,) * 2)
  teacher_hidden, student_hidden, teacher_unembed, student_unembed, mask = make_inputs()
  num_tokens = kwargs.pop("num_tokens", NUM_TOKENS)
  with pytest.raises(ValueError, match=message):
    vocab_parallel_lens_loss(teacher_hidden[:, :num_tokens], student_hidden[:, :num_tokens], teacher_unembed,
                             student_unembed, mask[:num_tokens], mesh=mesh, **kwargs)
