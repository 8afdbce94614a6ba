"""Closed-form gradients (distilllens.md §1.7), teacher stop-gradient, masking and reductions, -inf vocabulary
padding, jit/vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from torch_divergences import x64  # noqa: F401  (fixture)

from jaxlens import losses

NAMES = sorted(losses.DIVERGENCES)
EXTRA = {"tad": {"k": 3}}


def _logits(seed, shape=(2, 5, 9), scale=2.5):
  rng = np.random.default_rng(seed)
  return jnp.asarray(scale * rng.standard_normal(shape)), jnp.asarray(scale * rng.standard_normal(shape))


def _grad(fn, teacher, student, **kwargs):
  return jax.jit(jax.grad(lambda s: fn(teacher, s, reduction="sum", **kwargs)))(student)


def test_closed_form_gradients(x64):
  teacher, student = _logits(0)
  p, q = jax.nn.softmax(teacher), jax.nn.softmax(student)
  np.testing.assert_allclose(_grad(losses.forward_kl, teacher, student), q - p, rtol=1e-10, atol=1e-15)
  log_ratio = jnp.log(q) - jnp.log(p)
  rkl = jnp.sum(q * log_ratio, -1, keepdims=True)
  np.testing.assert_allclose(_grad(losses.reverse_kl, teacher, student), q * (log_ratio - rkl), rtol=1e-10,
                             atol=1e-15)
  m = 0.5 * (p + q)
  log_qm = jnp.log(q / m)
  expected = 0.5 * q * (log_qm - jnp.sum(q * log_qm, -1, keepdims=True))
  np.testing.assert_allclose(_grad(losses.jsd, teacher, student), expected, rtol=1e-10, atol=1e-15)
  # Temperature τ: ∂FKL/∂z_S = (q_τ − p_τ)/τ, and τ² scaling multiplies it by τ².
  p2, q2 = jax.nn.softmax(teacher / 2.0), jax.nn.softmax(student / 2.0)
  np.testing.assert_allclose(_grad(losses.forward_kl, teacher, student, temperature=2.0), (q2 - p2) / 2.0,
                             rtol=1e-10, atol=1e-15)
  np.testing.assert_allclose(
      _grad(losses.forward_kl, teacher, student, temperature=2.0, scale_by_temperature_squared=True),
      2.0 * (q2 - p2), rtol=1e-10, atol=1e-15,
  )


@pytest.mark.parametrize("name", NAMES)
def test_check_grads_and_teacher_stop_gradient(x64, name):
  fn = losses.get_divergence(name)
  teacher, student = _logits(1, (2, 7))
  if name != "adaptive_kl":  # AKL's weights are stop-gradient by design: finite differences see through them
    check_grads(lambda s: fn(teacher, s, **EXTRA.get(name, {})), (student,), order=1, modes=["rev"])
  teacher_grad = jax.grad(lambda t: fn(t, student, **EXTRA.get(name, {})))(teacher)
  np.testing.assert_array_equal(teacher_grad, 0.0)


@pytest.mark.parametrize("name", NAMES)
def test_masked_tokens_contribute_nothing(name):
  fn = losses.get_divergence(name)
  kwargs = EXTRA.get(name, {})
  teacher, student = _logits(2)
  mask = np.ones((2, 5), np.float32)  # bool masks are covered by the torch and all-masked tests
  mask[1, 2:] = 0
  value, grad = jax.jit(jax.value_and_grad(
      lambda s: fn(teacher, s, jnp.asarray(mask), reduction="sum", **kwargs)))(student)
  assert np.all(np.isfinite(grad))
  np.testing.assert_array_equal(grad[1, 2:], 0.0)
  valid = mask.astype(bool)
  if name != "tad":  # TAD's sequence-mean normaliser couples tokens of a row, so compare per token only here
    subset = fn(teacher[valid], student[valid], reduction="sum", **kwargs)
    np.testing.assert_allclose(value, subset, rtol=1e-6)
  per_token = jax.jit(lambda t, s, m: fn(t, s, m, reduction="none", **kwargs))(teacher, student, mask)
  np.testing.assert_array_equal(per_token[1, 2:], 0.0)
  total, count = losses.masked_sum_and_count(per_token, jnp.asarray(mask))
  np.testing.assert_allclose(total, value, rtol=1e-6)
  np.testing.assert_allclose(losses.reduce_loss(per_token, jnp.asarray(mask)), total / count, rtol=1e-6)
  assert float(count) == 7.0


@pytest.mark.parametrize("name", [*NAMES, "cross_entropy"])
def test_all_masked_batch_is_zero_with_finite_grads(name):
  teacher, student = _logits(3)
  mask = jnp.zeros((2, 5), bool)
  if name == "cross_entropy":
    labels = jnp.zeros((2, 5), jnp.int32)
    value, grad = jax.value_and_grad(lambda s: losses.cross_entropy(s, labels, mask))(student)
  else:
    fn = losses.get_divergence(name)
    value, grad = jax.jit(jax.value_and_grad(lambda s: fn(teacher, s, mask, **EXTRA.get(name, {}))))(student)
  assert float(value) == 0.0
  np.testing.assert_array_equal(grad, 0.0)


def test_reduce_loss_and_sum_count():
  per_token = jnp.array([[1.0, 2.0], [3.0, 4.0]])
  mask = jnp.array([[1.0, 0.5], [0.0, 1.0]])
  np.testing.assert_allclose(losses.reduce_loss(per_token, mask, "sum"), 1.0 + 1.0 + 4.0)
  np.testing.assert_allclose(losses.reduce_loss(per_token, mask, "mean"), 6.0 / 2.5)
  np.testing.assert_allclose(losses.reduce_loss(per_token, mask, "none"), [[1.0, 1.0], [0.0, 4.0]])
  np.testing.assert_allclose(losses.reduce_loss(per_token, None, "mean"), 2.5)
  total, count = losses.masked_sum_and_count(per_token)
  assert (float(total), float(count)) == (10.0, 4.0)
  # Splitting a batch into micro-batches and summing (sum, count) gives the global token mean exactly.
  parts = [losses.masked_sum_and_count(per_token[i], mask[i]) for i in range(2)]
  np.testing.assert_allclose(sum(s for s, _ in parts) / sum(c for _, c in parts),
                             losses.reduce_loss(per_token, mask, "mean"))


@pytest.mark.parametrize("name", NAMES)
def test_padded_vocabulary_is_exact(name):
  """-inf logits (the tiled lens kernel's vocab padding) give the unpadded result, finite zero grads."""
  fn = losses.get_divergence(name)
  kwargs = EXTRA.get(name, {})
  teacher, student = _logits(4, (3, 4, 9))
  pad = jnp.full((3, 4, 5), -jnp.inf)
  padded_teacher, padded_student = jnp.concatenate([teacher, pad], -1), jnp.concatenate([student, pad], -1)
  value, grad = jax.jit(jax.value_and_grad(lambda s: fn(padded_teacher, s, temperature=1.5, **kwargs)))(
      padded_student)
  expected, expected_grad = jax.jit(jax.value_and_grad(lambda s: fn(teacher, s, temperature=1.5, **kwargs)))(
      student)
  np.testing.assert_allclose(value, expected, rtol=1e-6)
  np.testing.assert_allclose(grad[..., :9], expected_grad, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(grad[..., 9:], 0.0)


def test_cross_entropy_padded_vocabulary():
  _, student = _logits(5)
  labels = jnp.asarray(np.random.default_rng(5).integers(0, 9, (2, 5)))
  padded = jnp.concatenate([student, jnp.full((2, 5, 3), -jnp.inf)], -1)
  value, grad = jax.value_and_grad(lambda s: losses.cross_entropy(s, labels))(padded)
  np.testing.assert_allclose(value, losses.cross_entropy(student, labels), rtol=1e-6)
  assert np.all(np.isfinite(grad))
  np.testing.assert_array_equal(grad[..., 9:], 0.0)


@pytest.mark.parametrize("name", NAMES)
def test_jit_and_vmap(name):
  fn = losses.get_divergence(name)
  kwargs = EXTRA.get(name, {})
  teacher, student = _logits(6, (3, 4, 9))
  mask = jnp.asarray(np.random.default_rng(6).random((3, 4)) > 0.3)
  expected = jax.jit(lambda t, s, m: fn(t, s, m, reduction="none", **kwargs))(teacher, student, mask)
  # vmap over the batch axis keeps the token axis, over which TAD's normaliser averages, intact.
  mapped = jax.jit(jax.vmap(lambda t, s, m: fn(t, s, m, reduction="none", **kwargs)))
  np.testing.assert_allclose(mapped(teacher, student, mask), expected, rtol=1e-6, atol=1e-7)
  grad = jax.jit(jax.grad(lambda s: fn(teacher, s, mask, **kwargs)))(student)
  # Eager (un-jitted) gradient of the sum, divided by the count, equals the jitted gradient of the mean.
  np.testing.assert_allclose(grad, jax.grad(lambda s: fn(teacher, s, mask, reduction="sum", **kwargs))(student)
                             / jnp.sum(mask), rtol=1e-5, atol=1e-7)
