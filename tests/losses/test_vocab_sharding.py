"""Vocabulary-sharded calls (``vocab_axis_name`` inside ``jax.shard_map``) equal unsharded ones, values and grads.

Runs on the 8 simulated CPU devices that tests/conftest.py sets up.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxlens import losses

VOCAB = 24
CASES = {
    "forward_kl": {},
    "reverse_kl": {},
    "jsd": {"beta": 0.3},
    "skew_kl": {},
    "skew_reverse_kl": {},
    "tvd": {},
    "adaptive_kl": {"head_rule": "official"},
    "adaptive_kl_paper": {"head_rule": "paper", "mu": 0.7},
    "tad": {"k": 3},
}


def _mesh(shards):
  if len(jax.devices()) < shards:
    pytest.skip(f"needs {shards} devices (tests/conftest.py sets 8 CPU devices)")
  return Mesh(np.array(jax.devices()[:shards]), ("vocab",))


def _inputs(seed):
  rng = np.random.default_rng(seed)
  teacher = jnp.asarray(3.0 * rng.standard_normal((2, 3, VOCAB)), jnp.float32)
  student = jnp.asarray(3.0 * rng.standard_normal((2, 3, VOCAB)), jnp.float32)
  mask = jnp.asarray(rng.random((2, 3)) > 0.3)
  return teacher, student, mask


@pytest.mark.parametrize(
    "case,shards", [(case, 4) for case in sorted(CASES)] + [("adaptive_kl", 8), ("jsd", 8), ("tad", 8)]
)
def test_sharded_equals_unsharded(case, shards):
  fn = losses.get_divergence(case.removesuffix("_paper"))
  kwargs = dict(CASES[case], temperature=1.3)
  teacher, student, mask = _inputs(shards)
  mesh = _mesh(shards)
  sharded = jax.shard_map(
      functools.partial(fn, vocab_axis_name="vocab", **kwargs),
      mesh=mesh, in_specs=(P(None, None, "vocab"), P(None, None, "vocab"), P()), out_specs=P(),
  )
  value, grad = jax.jit(jax.value_and_grad(lambda s: sharded(teacher, s, mask)))(student)
  expected, expected_grad = jax.jit(jax.value_and_grad(lambda s: fn(teacher, s, mask, **kwargs)))(student)
  np.testing.assert_allclose(value, expected, rtol=2e-6)
  np.testing.assert_allclose(grad, expected_grad, rtol=2e-5, atol=1e-7)


def test_sharded_cross_entropy():
  teacher, student, mask = _inputs(0)
  labels = jnp.asarray(np.random.default_rng(0).integers(0, VOCAB, (2, 3)))
  sharded = jax.shard_map(
      functools.partial(losses.cross_entropy, vocab_axis_name="vocab", reduction="none"),
      mesh=_mesh(4), in_specs=(P(None, None, "vocab"), P(), P()), out_specs=P(),
  )
  value, grad = jax.jit(jax.value_and_grad(lambda s: jnp.sum(sharded(s, labels, mask))))(student)
  expected, expected_grad = jax.jit(jax.value_and_grad(
      lambda s: jnp.sum(losses.cross_entropy(s, labels, mask, reduction="none"))))(student)
  np.testing.assert_allclose(value, expected, rtol=2e-6)
  np.testing.assert_allclose(grad, expected_grad, rtol=2e-5, atol=1e-7)
