"""The per-token API on log-probabilities (losses.per_token) and the one AKL head set (losses.head_set).

The logits-level divergences are wrappers over per_token (their torch/TRL parity tests cover it); here: the head
set's methods agree with a stable sort on tied probabilities — unsharded, float64, and with the vocabulary sharded
(tie ranks across shards) — and the AKL weights exposed for logging are the ones the loss uses.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
from torch_divergences import x64  # noqa: F401  (fixture)

from jaxlens import losses
from jaxlens.losses import per_token


def _stable_sort_head(p_row, mu, rule):
  order = np.argsort(-p_row, kind="stable")
  ps = p_row[order]
  incl = np.cumsum(ps)
  head_sorted = ((incl <= mu) | (np.arange(len(ps)) == 0)) if rule == "official" else ((incl - ps) < mu)
  head = np.zeros(len(ps), bool)
  head[order[head_sorted]] = True
  return head


def _tied_probabilities(dtype, vocab=244):
  """Flat rows (bisection path) and peaked rows (top-k path), on a coarse logit grid: many exact ties.

  The last row is uniform; μ·V is kept off integers so its head does not hinge on the rounding of k/V vs μ.
  """
  rng = np.random.default_rng(7)
  z = np.concatenate([np.round(4.0 * rng.standard_normal((6, vocab))),
                      0.25 * np.round(2.0 * rng.standard_normal((6, vocab))),
                      np.zeros((1, vocab))])  # all tied
  return np.asarray(jax.nn.softmax(jnp.asarray(z, dtype)))


@pytest.mark.parametrize("rule", ["official", "paper"])
@pytest.mark.parametrize("mu", [0.0, 0.45, 0.9])
def test_head_methods_equal_the_stable_sort_on_ties(rule, mu):
  p = _tied_probabilities(jnp.float32)
  want = np.stack([_stable_sort_head(row.astype(np.float64), mu, rule) for row in p])
  for method in ("sort", "threshold"):
    np.testing.assert_array_equal(losses.head_mask(p, mu, rule, method=method), want, err_msg=method)


def test_head_mask_float64(x64):
  p = _tied_probabilities(jnp.float64)
  for rule in ("official", "paper"):
    want = np.stack([_stable_sort_head(row, 0.45, rule) for row in p])
    np.testing.assert_array_equal(losses.head_mask(jnp.asarray(p), 0.45, rule), want)


@pytest.mark.parametrize("rule", ["official", "paper"])
def test_sharded_head_mask_counts_ties_across_shards(rule):
  if len(jax.devices()) < 4:
    pytest.skip("needs 4 devices (tests/conftest.py sets 8 CPU devices)")
  p = _tied_probabilities(jnp.float32)
  mesh = Mesh(np.array(jax.devices()[:4]), ("vocab",))
  sharded = jax.jit(jax.shard_map(functools.partial(losses.head_mask, mu=0.45, head_rule=rule, vocab_axis_name="vocab"),
                                  mesh=mesh, in_specs=P(None, "vocab"), out_specs=P(None, "vocab")))
  want = np.stack([_stable_sort_head(row.astype(np.float64), 0.45, rule) for row in p])
  np.testing.assert_array_equal(sharded(jnp.asarray(p)), want)


def test_akl_weights_are_the_ones_the_loss_uses():
  rng = np.random.default_rng(8)
  teacher, student = 3.0 * rng.standard_normal((2, 5, 31)), 3.0 * rng.standard_normal((2, 5, 31))
  mask = rng.random((2, 5)) > 0.3
  weights = losses.adaptive_kl_weights(teacher, student, mask, mu=0.6, head_rule="paper", temperature=1.5)
  fkl = losses.forward_kl(teacher, student, mask, temperature=1.5, reduction="none")
  rkl = losses.reverse_kl(teacher, student, mask, temperature=1.5, reduction="none")
  akl = losses.adaptive_kl(teacher, student, mask, mu=0.6, head_rule="paper", temperature=1.5, reduction="none")
  np.testing.assert_allclose(akl, weights.w_head * fkl + weights.w_tail * rkl, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose((weights.w_head + weights.w_tail)[mask], 1.0, rtol=1e-6)
  tv = np.asarray(losses.tvd(teacher, student, mask, temperature=1.5, reduction="none"))
  np.testing.assert_allclose((weights.g_head + weights.g_tail)[mask], 2 * tv[mask], rtol=1e-5)
  for field in weights:
    np.testing.assert_array_equal(np.asarray(field)[~mask], 0.0)
  # The per-token function on log-probabilities gives the same weights.
  log_p = jax.nn.log_softmax(jnp.asarray(teacher, jnp.float32) / 1.5)
  log_q = jax.nn.log_softmax(jnp.asarray(student, jnp.float32) / 1.5)
  direct = per_token.akl_weights(log_p, log_q, mu=0.6, head_rule="paper")
  np.testing.assert_allclose(np.asarray(direct.w_head)[mask], np.asarray(weights.w_head)[mask], rtol=1e-5)
