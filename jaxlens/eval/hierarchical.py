"""Intervals over training seeds *and* evaluation sequences: a two-level (hierarchical) bootstrap.

A result unit is one training seed s of one method, scored on the same held-out sequences i = 1…n as every
other unit: per sequence the metric sum a_si = Σ_t m_t d_t and the token count n_si. The statistic is the mean
over seeds of each seed's token mean,

.. math::

   \\hat\\theta = \\frac{1}{S} \\sum_{s=1}^{S} \\frac{\\sum_i a_{si}}{\\sum_i n_{si}},

and one bootstrap replicate draws S seeds with replacement, then, independently for each drawn seed, n
sequences with replacement (multinomial weights w), and recomputes θ. A paired comparison of methods A and B
uses d_si = a^A_si − a^B_si on seeds both have (the same seed shares data order and start), with the same draws
for both — so the interval reflects how the two differ on the same seed and text. Percentile intervals.

With few seeds the seed level dominates and is coarse (3 seeds give 10 distinct seed multisets): read such
intervals as indicative. Everything here is numpy; nothing imports the training code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def _check(sums: Sequence[np.ndarray], tokens: Sequence[np.ndarray]) -> None:
  if not sums or len(sums) != len(tokens):
    raise ValueError(f"need one (sums, tokens) per seed and at least one seed, got {len(sums)} and {len(tokens)}")
  for a, n in zip(sums, tokens):
    if np.shape(a) != np.shape(n) or np.ndim(a) != 1 or len(a) == 0:
      raise ValueError(f"each seed needs [n] sums and tokens of one shape, got {np.shape(a)} and {np.shape(n)}")


def hierarchical_bootstrap(sums: Sequence[np.ndarray], tokens: Sequence[np.ndarray], *, num_bootstrap: int = 1000,
                           confidence: float = 0.95, seed: int = 0) -> dict[str, float]:
  """θ (the mean over seeds of each seed's token mean) with a seeds-then-sequences percentile interval.

  Args:
    sums: per seed, ``[n_s]`` per-sequence metric sums a_si (a paired difference: a^A − a^B).
    tokens: per seed, ``[n_s]`` per-sequence token counts n_si.
    num_bootstrap: replicates R.
    confidence: interval coverage.
    seed: RNG seed (same seed → same interval).

  Returns:
    ``{"mean", "ci_low", "ci_high", "seeds"}``.

  Raises:
    ValueError: on no seeds, mismatched shapes or ``confidence`` outside (0, 1).

  Examples:
    >>> r = hierarchical_bootstrap([np.array([1.0, 3.0]), np.array([2.0, 2.0])], [np.ones(2), np.ones(2)])
    >>> r["mean"], r["seeds"]
    (2.0, 2)
  """
  _check(sums, tokens)
  if not 0 < confidence < 1:
    raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
  sums = [np.asarray(a, np.float64) for a in sums]
  tokens = [np.asarray(n, np.float64) for n in tokens]
  num_seeds = len(sums)
  rng = np.random.default_rng(seed)
  drawn = rng.integers(num_seeds, size=(num_bootstrap, num_seeds))  # [R, S] seed of each slot
  replicate = np.zeros(num_bootstrap)
  for slot in range(num_seeds):
    for s in range(num_seeds):
      rows = np.flatnonzero(drawn[:, slot] == s)
      if not len(rows):
        continue
      n = len(sums[s])
      w = rng.multinomial(n, np.full(n, 1.0 / n), size=len(rows)).astype(np.float64)  # [r, n]
      replicate[rows] += (w @ sums[s]) / np.maximum(w @ tokens[s], 1.0)
  replicate /= num_seeds
  mean = float(np.mean([a.sum() / max(n.sum(), 1.0) for a, n in zip(sums, tokens)]))
  lo, hi = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
  return {"mean": mean, "ci_low": float(np.percentile(replicate, lo)), "ci_high": float(np.percentile(replicate, hi)),
          "seeds": num_seeds}


def paired_hierarchical_bootstrap(a: Mapping[int, tuple[np.ndarray, np.ndarray]],
                                  b: Mapping[int, tuple[np.ndarray, np.ndarray]], **kwargs) -> dict[str, float] | None:
  """θ_A − θ_B over the seeds both have, paired within seed (see the module docstring).

  Args:
    a, b: training seed → ``(sums [n], tokens [n])`` of each method, scored on the same sequences.
    **kwargs: :func:`hierarchical_bootstrap`'s.

  Returns:
    :func:`hierarchical_bootstrap`'s dict for the difference, or ``None`` when no seed is shared.

  Raises:
    ValueError: if the two methods' token counts differ on a shared seed (not the same sequences).
  """
  shared = sorted(set(a) & set(b))
  if not shared:
    return None
  for s in shared:
    if not np.array_equal(np.asarray(a[s][1]), np.asarray(b[s][1])):
      raise ValueError(f"seed {s}: the two methods were not scored on the same sequences and tokens")
  return hierarchical_bootstrap([np.asarray(a[s][0], np.float64) - np.asarray(b[s][0], np.float64) for s in shared],
                                [np.asarray(a[s][1]) for s in shared], **kwargs)


def tercile_edges(values: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
  """The 1/3 and 2/3 quantiles of the tokens' ``values`` (e.g. teacher entropy) among ``weights > 0``.

  Raises:
    ValueError: if no token has a positive weight.
  """
  kept = np.asarray(values, np.float64)[np.asarray(weights) > 0]
  if not len(kept):
    raise ValueError("no scored token to split into terciles")
  low, high = np.quantile(kept, [1 / 3, 2 / 3])
  return float(low), float(high)


def tercile_of(values: np.ndarray, edges: tuple[float, float]) -> np.ndarray:
  """Tercile index 0 (value ≤ low edge), 1 (≤ high edge) or 2 (above) of every value."""
  values = np.asarray(values, np.float64)
  return (values > edges[0]).astype(np.int64) + (values > edges[1]).astype(np.int64)
