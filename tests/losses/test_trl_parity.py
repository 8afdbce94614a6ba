"""Parity with TRL's ``generalized_jsd_loss`` (GKD trainer): values and student-logit gradients.

TRL masks with ``labels != -100``; ``reduction="batchmean"`` with labels divides the masked sum by the number of
valid tokens, i.e. jaxlens's masked token ``"mean"``; ``num_items_in_batch`` divides by a given global count, i.e.
jaxlens's ``(sum, count)``. TRL computes in the logits' dtype, so the comparison runs in float64 (x64).
At β = 0 / β = 1 TRL switches to KL(p‖q) / KL(q‖p); jaxlens's ``jsd`` tends to 0 there and ``forward_kl`` /
``reverse_kl`` give TRL's endpoint values.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch_divergences import x64  # noqa: F401  (fixture)

from jaxlens import losses

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
gkd_trainer = pytest.importorskip("trl.experimental.gkd.gkd_trainer", reason="trl with the GKD trainer is needed")
generalized_jsd_loss = gkd_trainer.GKDTrainer.generalized_jsd_loss


def _batch(seed):
  rng = np.random.default_rng(seed)
  teacher = 3.0 * rng.standard_normal((3, 5, 13))
  student = 3.0 * rng.standard_normal((3, 5, 13))
  labels = rng.integers(0, 13, (3, 5))
  labels[rng.random((3, 5)) < 0.35] = -100
  labels[0] = -100  # one fully masked sequence
  return teacher, student, labels


def _trl(teacher, student, labels, **kwargs):
  s = torch.tensor(student, requires_grad=True)
  value = generalized_jsd_loss(s, torch.tensor(teacher), labels=torch.tensor(labels), **kwargs)
  (grad,) = torch.autograd.grad(value, s)
  return value.detach().numpy(), grad.numpy()


def _jax(fn, teacher, student, labels, **kwargs):
  mask = jnp.asarray(labels != -100)
  value, grad = jax.jit(jax.value_and_grad(lambda s: fn(jnp.asarray(teacher), s, mask, **kwargs)))(
      jnp.asarray(student))
  return np.asarray(value), np.asarray(grad)


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_batchmean_equals_masked_token_mean(x64, beta, temperature):
  teacher, student, labels = _batch(int(beta * 10 + temperature))
  expected_value, expected_grad = _trl(teacher, student, labels, beta=beta, temperature=temperature)
  value, grad = _jax(losses.jsd, teacher, student, labels, beta=beta, temperature=temperature)
  np.testing.assert_allclose(value, expected_value, rtol=1e-10)
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-10, atol=1e-14)


def test_num_items_in_batch_equals_sum_over_global_count(x64):
  teacher, student, labels = _batch(4)
  expected_value, expected_grad = _trl(teacher, student, labels, beta=0.5, num_items_in_batch=40)
  value, grad = _jax(lambda t, s, m: losses.jsd(t, s, m, reduction="sum") / 40.0, teacher, student, labels)
  np.testing.assert_allclose(value, expected_value, rtol=1e-10)
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-10, atol=1e-14)
  total, count = losses.masked_sum_and_count(
      losses.jsd(teacher, student, reduction="none"), jnp.asarray(labels != -100)
  )
  np.testing.assert_allclose(total / 40.0, expected_value, rtol=1e-10)
  assert float(count) == float((labels != -100).sum())


@pytest.mark.parametrize("beta,endpoint", [(0.0, losses.forward_kl), (1.0, losses.reverse_kl)])
def test_trl_endpoints_are_forward_and_reverse_kl(x64, beta, endpoint):
  teacher, student, labels = _batch(5)
  expected_value, expected_grad = _trl(teacher, student, labels, beta=beta)
  value, grad = _jax(endpoint, teacher, student, labels)
  np.testing.assert_allclose(value, expected_value, rtol=1e-10)
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-10, atol=1e-14)
  # jaxlens's JSD_β is continuous at the endpoints: exactly 0 at β ∈ {0, 1}, small just inside.
  jsd_end, _ = _jax(losses.jsd, teacher, student, labels, beta=beta)
  jsd_near, _ = _jax(losses.jsd, teacher, student, labels, beta=abs(beta - 1e-6))
  assert jsd_end == 0.0
  assert 0.0 < jsd_near < 1e-4 * expected_value
