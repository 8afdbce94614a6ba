r"""The AKL head set of a distribution: the one implementation of the head rules (Wu et al., 2024).

With p sorted descending — stably, ties in vocabulary order — and C_k = Σ_{i ≤ k} p_(i) the inclusive cumulative
mass, the head H is a sorted prefix:

.. math::

   H_{official} = \{(k) : C_k \le \mu\} \cup \{(1)\}, \qquad
   H_{paper} = \{(k) : C_k - p_{(k)} < \mu\}

``"official"`` is the AKL authors' code (and DistillLens's baseline): the largest prefix with mass ≤ μ, plus the
top-1 token always. ``"paper"`` is the AKL paper: the smallest prefix with mass ≥ μ (the token crossing μ is in
the head). Example: p = (0.3, 0.4, 0.3), μ = 0.5 — official head {token 1}, paper head {tokens 1, 0}.

Two methods compute the same set:

* ``"sort"``: sorts p (O(V log V); the literal algorithm of the official code; whole vocabulary on one device).
* ``"threshold"``: sort-free. Where the top ``HEAD_CANDIDATES`` tokens (``lax.top_k``, stable) carry more than μ
  (official) or at least μ (paper), the prefix ends among them and is read off their cumulative sum (peaked
  distributions). Otherwise (flat ones, e.g. early logit-lens layers) the head is {p_j > v} plus the first tokens
  tied at one value v: v comes from a bisection over the bit patterns of p (for p ≥ 0 their integer order is the
  float order; 31 masked sums over V for float32, 63 for float64) for the smallest t with Σ_{p_i ≥ t} p_i ≤ μ
  (official; v is the largest p below t) or Σ_{p_i > t} p_i < μ (paper; v = t), and a tied token of tie rank r
  (0-based, vocabulary order) is in the head iff A + (r + 1)·v ≤ μ (official) or A + r·v < μ (paper), A the mass
  above v. Under vocabulary sharding only the bisection runs (sums ``psum``-ed, tie ranks offset by the lower
  shards' tie counts). Both methods equal the stable-sort definition, ties included, up to float summation order.
"""

from typing import Literal

import jax.numpy as jnp
from jax import lax

from jaxlens.losses._checks import check_choice
from jaxlens.losses._checks import check_non_negative
from jaxlens.losses._vocab import vocab_cumsum
from jaxlens.losses._vocab import vocab_max
from jaxlens.losses._vocab import vocab_sum

HeadRule = Literal["official", "paper"]
HeadMethod = Literal["sort", "threshold"]
#: The AKL head rules, ``"official"`` (the authors' code) and ``"paper"``.
HEAD_RULES = ("official", "paper")
#: The head-set methods: ``"sort"`` (sorts the vocabulary) and ``"threshold"`` (sort-free, shardable).
HEAD_METHODS = ("sort", "threshold")
#: Candidates of the sort-free fast path: the head is found among the top ``HEAD_CANDIDATES`` tokens whenever they
#: hold more than μ of the mass, else by bisection.
HEAD_CANDIDATES = 128


def head_mask(
    p: jnp.ndarray,
    mu: float = 0.5,
    head_rule: HeadRule = "official",
    *,
    method: HeadMethod = "threshold",
    vocab_axis_name: str | None = None,
) -> jnp.ndarray:
  r"""The AKL head set H of the distribution ``p`` as a boolean mask in vocabulary order (see the module doc).

  .. math::

     H_{official} = \{(k) : C_k \le \mu\} \cup \{(1)\}, \qquad H_{paper} = \{(k) : C_k - p_{(k)} < \mu\}

  Args:
    p: probabilities ``[..., V]`` (float32 or float64); under ``vocab_axis_name`` this device's shard of V.
    mu: head mass threshold μ ≥ 0.
    head_rule: ``"official"`` or ``"paper"``.
    method: ``"threshold"`` (sort-free; the only method under vocabulary sharding) or ``"sort"``.
    vocab_axis_name: mesh axis sharding ``V`` inside ``jax.shard_map``, or ``None``.

  Returns:
    bool ``[..., V]``. Not differentiable (a set); a NaN in a row of ``p`` makes that row's mask meaningless.

  Raises:
    ValueError: an unknown head rule or method, μ < 0, or ``method="sort"`` with ``vocab_axis_name``.

  Examples:
    >>> import jax.numpy as jnp
    >>> p = jnp.array([0.3, 0.4, 0.3])
    >>> head_mask(p, 0.5, "official").tolist(), head_mask(p, 0.5, "paper").tolist()
    ([False, True, False], [True, True, False])
  """
  check_head_args(mu, head_rule, method, vocab_axis_name)
  p = jnp.asarray(p)
  official = head_rule == "official"
  if method == "sort":
    order = jnp.argsort(-p, axis=-1, stable=True)
    return _unsort(_sorted_prefix_head(jnp.take_along_axis(p, order, axis=-1), mu, official), order)
  if vocab_axis_name is not None:
    return _bisected_head_mask(p, mu, official, vocab_axis_name)
  top_p, top_i = lax.optimization_barrier(lax.top_k(p, min(HEAD_CANDIDATES, p.shape[-1])))
  incl = jnp.cumsum(top_p, axis=-1)
  resolved = (incl[..., -1] > mu if official else incl[..., -1] >= mu) | (top_p.shape[-1] == p.shape[-1])
  fast = _unsort(_sorted_prefix_head(top_p, mu, official), top_i, p.shape[-1])
  return lax.cond(jnp.all(resolved), lambda: fast,
                  lambda: jnp.where(resolved[..., None], fast, _bisected_head_mask(p, mu, official)))


def check_head_args(mu, head_rule, method, vocab_axis_name) -> None:
  """Raises ``ValueError`` for μ < 0, an unknown rule or method, or ``"sort"`` on a sharded vocabulary."""
  check_non_negative("mu", mu)
  check_choice("head_rule", head_rule, HEAD_RULES)
  check_choice("head_method", method, HEAD_METHODS)
  if method == "sort" and vocab_axis_name is not None:
    raise ValueError(
        "head_method='sort' needs the whole vocabulary on one device; use head_method='threshold' with "
        f"vocab_axis_name={vocab_axis_name!r}"
    )


def _sorted_prefix_head(p_sorted: jnp.ndarray, mu: float, official: bool) -> jnp.ndarray:
  """The head rule on descending probabilities ``[..., K]`` (a full sort or a top-K prefix): bool ``[..., K]``."""
  inclusive = jnp.cumsum(p_sorted, axis=-1)
  if official:
    return (inclusive <= mu) | (jnp.arange(p_sorted.shape[-1]) == 0)
  return inclusive - p_sorted < mu


def _unsort(head_sorted: jnp.ndarray, order: jnp.ndarray, vocab_size: int | None = None) -> jnp.ndarray:
  """Scatters a mask given at vocabulary ids ``order [..., K]`` back to vocabulary order ``[..., V]``."""
  vocab_size = head_sorted.shape[-1] if vocab_size is None else vocab_size
  rows = head_sorted.reshape(-1, head_sorted.shape[-1])
  ids = order.reshape(rows.shape)
  scattered = jnp.zeros((rows.shape[0], vocab_size), bool).at[jnp.arange(rows.shape[0])[:, None], ids].set(rows)
  return scattered.reshape(head_sorted.shape[:-1] + (vocab_size,))


def _bisected_head_mask(p: jnp.ndarray, mu: float, official: bool, axis_name: str | None = None) -> jnp.ndarray:
  """The head mask of ``p [..., V]`` by bisection over its bit patterns (see the module doc); shardable."""
  int_dtype = jnp.int64 if p.dtype == jnp.float64 else jnp.int32
  steps = 63 if p.dtype == jnp.float64 else 31  # bit patterns of non-negative floats lie in [0, 2^steps)
  bits = lax.bitcast_convert_type(p, int_dtype)

  def mass_within_bound(b):  # does threshold bit pattern b select little enough mass for the rule?
    t = lax.bitcast_convert_type(b, p.dtype)[..., None]
    if official:
      return vocab_sum(jnp.where(p >= t, p, 0.0), axis_name) <= mu
    return vocab_sum(jnp.where(p > t, p, 0.0), axis_name) < mu

  def bisect(_, bounds):
    lo, hi = bounds  # invariant: mass_within_bound(hi), and not for any b < lo
    mid = lo + (hi - lo) // 2
    ok = mass_within_bound(mid)
    return jnp.where(ok, lo, mid + 1), jnp.where(ok, mid, hi)

  hi = vocab_max(bits, axis_name) + 1  # above every p: selects nothing, within both bounds
  _, t = lax.fori_loop(0, steps, bisect, (jnp.zeros_like(hi), hi))
  t = t[..., None]
  if official:
    v = vocab_max(jnp.where(bits < t, p, 0.0), axis_name)[..., None]  # the largest p below t
  else:
    v = lax.bitcast_convert_type(t, p.dtype)
  above = vocab_sum(jnp.where(p > v, p, 0.0), axis_name)[..., None]
  tied = p == v
  tie_rank = (vocab_cumsum(tied.astype(jnp.int32), axis_name) - 1).astype(p.dtype)
  if official:  # ... and the top-1 token always: the first token tied at the maximum when v is the maximum
    top1 = (tie_rank == 0) & (v >= vocab_max(p, axis_name)[..., None])
    return (p > v) | (tied & ((above + (tie_rank + 1) * v <= mu) | top1))
  return (p > v) | (tied & (above + tie_rank * v < mu))

