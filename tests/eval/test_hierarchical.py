"""The seeds-then-sequences bootstrap: point estimates, pairing, coverage behaviour and errors."""

import numpy as np
import pytest

from jaxlens.eval.hierarchical import hierarchical_bootstrap, paired_hierarchical_bootstrap, tercile_edges, tercile_of


def _seed(rng, mean, n=40):
  tokens = rng.integers(5, 20, size=n).astype(float)
  return tokens * (mean + rng.normal(0, 0.3, size=n)), tokens


def test_mean_is_the_mean_of_per_seed_token_means():
  rng = np.random.default_rng(0)
  seeds = [_seed(rng, m) for m in (1.0, 2.0, 3.0)]
  r = hierarchical_bootstrap([a for a, _ in seeds], [n for _, n in seeds], num_bootstrap=500)
  want = np.mean([a.sum() / n.sum() for a, n in seeds])
  assert r["mean"] == pytest.approx(want) and r["seeds"] == 3
  assert r["ci_low"] < want < r["ci_high"]
  # the seed level matters: far-apart seeds give a much wider interval than one seed's sequences alone
  one = hierarchical_bootstrap([seeds[1][0]], [seeds[1][1]], num_bootstrap=500)
  assert (r["ci_high"] - r["ci_low"]) > 5 * (one["ci_high"] - one["ci_low"])
  assert hierarchical_bootstrap([a for a, _ in seeds], [n for _, n in seeds], num_bootstrap=500) == r  # seeded


def test_paired_differences_cancel_shared_variation():
  rng = np.random.default_rng(1)
  a, b = {}, {}
  for s, level in enumerate((0.0, 5.0, 10.0)):  # large seed effects shared by both methods
    sums, tokens = _seed(rng, level)
    a[s], b[s] = (sums + 0.1 * tokens, tokens), (sums, tokens)
  d = paired_hierarchical_bootstrap(a, b, num_bootstrap=500)
  assert d["mean"] == pytest.approx(0.1) and d["ci_low"] == pytest.approx(0.1) and d["ci_high"] == pytest.approx(0.1)
  b[3] = b[0]  # only shared seeds count
  assert paired_hierarchical_bootstrap(a, b, num_bootstrap=50)["seeds"] == 3
  assert paired_hierarchical_bootstrap({0: a[0]}, {1: b[1]}) is None
  with pytest.raises(ValueError, match="same sequences"):
    paired_hierarchical_bootstrap({0: a[0]}, {0: (b[0][0], b[0][1] + 1)})


def test_terciles_and_errors():
  values = np.arange(9.0)
  edges = tercile_edges(values, np.ones(9))
  assert tercile_of(values, edges).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
  assert tercile_edges(np.array([5.0, 1.0, 9.0]), np.array([0.0, 1.0, 1.0]))[0] == pytest.approx(1 + 8 / 3)
  with pytest.raises(ValueError, match="no scored token"):
    tercile_edges(values, np.zeros(9))
  with pytest.raises(ValueError, match="one \\(sums, tokens\\) per seed"):
    hierarchical_bootstrap([], [])
  with pytest.raises(ValueError, match="one shape"):
    hierarchical_bootstrap([np.ones(3)], [np.ones(2)])
