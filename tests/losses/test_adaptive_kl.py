"""AKL: the head rules on the worked example, their limits, sort vs sort-free head search, AKL(p, p) = 0.

The official-code and paper-rule float64 torch ports are compared on random logits in test_divergences_torch.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch_divergences as ref
from torch_divergences import x64  # noqa: F401  (fixture)

from jaxlens import losses
from jaxlens.losses.head_set import head_mask
from jaxlens.losses.per_token import head_tail_gaps


def _gaps(p, q, mu, rule, method):
  p, q = jnp.asarray(p), jnp.asarray(q)
  return head_tail_gaps(p, q, head_mask(p, mu, rule, method=method))


# headtail.md §1.4's example lists p = [0.3, 0.3, 0.4] as "sorted", which it is not: sorted descending it is
# (0.4, 0.3, 0.3), cumulative (0.4, 0.7, 1.0). With μ = 0.5 the official head is {(1)} = {token 2} (mass 0.4),
# the paper head is {(1), (2)} (mass 0.7); the doc's head *sets* are right, its masses (0.3, 0.6) are those of the
# unsorted list. q ties tokens 0 and 1 so the paper rule's choice between the two 0.3 tokens does not matter.
WORKED_P = np.array([0.3, 0.3, 0.4])
WORKED_Q = np.array([0.2, 0.2, 0.6])  # |p − q| = (0.1, 0.1, 0.2)


@pytest.mark.parametrize("rule,expected_head_gap", [("official", 0.2), ("paper", 0.3)])
def test_worked_example(x64, rule, expected_head_gap):
  g_head, g_tail = _gaps(WORKED_P, WORKED_Q, 0.5, rule, "sort")
  np.testing.assert_allclose([g_head, g_tail], [expected_head_gap, 0.4 - expected_head_gap], rtol=1e-12)
  torch_w_head, _ = ref.akl_ratio(torch.tensor(np.log(WORKED_P)), torch.tensor(np.log(WORKED_Q)), head_rule=rule)
  np.testing.assert_allclose(g_head / (g_head + g_tail), torch_w_head.numpy(), rtol=1e-12)
  value = losses.adaptive_kl(np.log(WORKED_P), np.log(WORKED_Q), head_rule=rule, eps=0.0)
  fkl = losses.forward_kl(np.log(WORKED_P), np.log(WORKED_Q))
  rkl = losses.reverse_kl(np.log(WORKED_P), np.log(WORKED_Q))
  w_head = expected_head_gap / 0.4
  np.testing.assert_allclose(value, w_head * fkl + (1 - w_head) * rkl, rtol=1e-12)


def test_worked_example_without_ties_sort_free(x64):
  p, q = np.array([0.25, 0.35, 0.4]), np.array([0.2, 0.5, 0.3])  # sorted (0.4, 0.35, 0.25)
  for rule, head in [("official", [2]), ("paper", [1, 2])]:
    expected = np.abs(p - q)[head].sum()
    for method in ("sort", "threshold"):
      np.testing.assert_allclose(_gaps(p, q, 0.5, rule, method)[0], expected, rtol=1e-12)


def _random_logits(seed, shape=(64, 37), scale=3.0):
  rng = np.random.default_rng(seed)
  return scale * rng.standard_normal(shape), scale * rng.standard_normal(shape)


@pytest.mark.parametrize("rule", ["official", "paper"])
@pytest.mark.parametrize("mu", [0.0, 0.2, 0.5, 0.9, 1.5])
def test_sort_free_head_equals_sort_rule(rule, mu):
  teacher, student = _random_logits(int(mu * 10))
  p, q = jax.nn.softmax(jnp.asarray(teacher, jnp.float32)), jax.nn.softmax(jnp.asarray(student, jnp.float32))
  np.testing.assert_allclose(_gaps(p, q, mu, rule, "threshold"), _gaps(p, q, mu, rule, "sort"), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(
      losses.adaptive_kl(teacher, student, mu=mu, head_rule=rule, head_method="threshold", reduction="none"),
      losses.adaptive_kl(teacher, student, mu=mu, head_rule=rule, head_method="sort", reduction="none"),
      rtol=1e-6,
  )


@pytest.mark.parametrize("method", ["sort", "threshold"])
def test_limits(x64, method):
  teacher, student = _random_logits(1, (4, 9))
  fkl = losses.forward_kl(teacher, student, reduction="none")
  rkl = losses.reverse_kl(teacher, student, reduction="none")

  def akl(mu, rule):
    return losses.adaptive_kl(teacher, student, mu=mu, head_rule=rule, head_method=method, eps=0.0,
                              reduction="none")

  # Head = everything (μ above the total mass): w_head = 1, AKL = FKL, for both rules.
  np.testing.assert_allclose(akl(1.5, "official"), fkl, rtol=1e-12)
  np.testing.assert_allclose(akl(1.5, "paper"), fkl, rtol=1e-12)
  # Empty head: the paper rule with μ = 0 (the exclusive cumulative mass 0 is already ≥ μ): AKL = RKL.
  np.testing.assert_allclose(akl(0.0, "paper"), rkl, rtol=1e-12)
  # The official rule with μ = 0 keeps the top-1 token: the weights come from that single token's gap.
  p = np.asarray(jax.nn.softmax(jnp.asarray(teacher)))
  q = np.asarray(jax.nn.softmax(jnp.asarray(student)))
  top = np.argmax(p, -1)
  gap = np.abs(p - q)
  w_head = gap[np.arange(4), top] / gap.sum(-1)
  np.testing.assert_allclose(akl(0.0, "official"), w_head * fkl + (1 - w_head) * rkl, rtol=1e-12)
  assert np.all((w_head > 0) & (w_head < 1))


@pytest.mark.parametrize("method", ["sort", "threshold"])
def test_akl_of_identical_distributions_is_zero_with_finite_grads(method):
  logits = jnp.asarray(_random_logits(2, (3, 17))[0], jnp.float32)
  value, grad = jax.jit(jax.value_and_grad(lambda s: losses.adaptive_kl(logits, s, head_method=method)))(logits)
  assert abs(float(value)) < 1e-7  # exactly 0 eagerly; XLA fusion under jit may round p and q differently
  assert np.all(np.isfinite(grad))
  np.testing.assert_allclose(grad, 0.0, atol=1e-7)
  # eps = 0 reproduces the official code's 0/0.
  assert np.isnan(float(losses.adaptive_kl(logits, logits, eps=0.0)))


def test_weights_are_stop_gradient_closed_form(x64):
  """∂AKL/∂z_S = w_h (q − p) + w_t q [(log q − log p) − RKL] with constant weights (headtail.md §1.6)."""
  teacher, student = _random_logits(3, (5, 12))
  grad = jax.jit(jax.grad(lambda s: losses.adaptive_kl(teacher, s, reduction="sum")))(jnp.asarray(student))
  p, q = jax.nn.softmax(jnp.asarray(teacher)), jax.nn.softmax(jnp.asarray(student))
  w_head, w_tail = ref.akl_ratio(torch.tensor(teacher), torch.tensor(student), eps=1e-12)
  w_head, w_tail = w_head.numpy()[:, None], w_tail.numpy()[:, None]
  log_ratio = np.log(q) - np.log(p)
  rkl = np.sum(q * log_ratio, -1, keepdims=True)
  expected = w_head * (q - p) + w_tail * q * (log_ratio - rkl)
  np.testing.assert_allclose(grad, expected, rtol=1e-10, atol=1e-14)


def test_sort_under_vocab_sharding_is_refused():
  with pytest.raises(ValueError, match="head_method='threshold'"):
    losses.adaptive_kl(jnp.zeros((2, 4)), jnp.zeros((2, 4)), head_method="sort", vocab_axis_name="v")
