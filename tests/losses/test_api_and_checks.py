"""Public API surface, the registry, and the promised errors (static checks, also under jit)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlens import losses

LOGITS = jnp.zeros((2, 3, 5))


def test_registry_names_and_lookup():
  assert sorted(losses.DIVERGENCES) == [
      "adaptive_kl", "forward_kl", "jsd", "mix", "reverse_kl", "skew_kl", "skew_reverse_kl", "tad", "tvd",
  ]
  for name, fn in losses.DIVERGENCES.items():
    assert losses.get_divergence(name) is fn
    assert fn.__name__ == name
  with pytest.raises(ValueError, match="unknown divergence 'kl'; known: adaptive_kl, forward_kl, jsd"):
    losses.get_divergence("kl")


def test_all_is_sorted_and_complete():
  assert list(losses.__all__) == sorted(losses.__all__)
  for name in losses.__all__:
    assert hasattr(losses, name)


@pytest.mark.parametrize("name", sorted(losses.DIVERGENCES))
def test_common_errors(name):
  fn = losses.get_divergence(name)
  kwargs = {"k": 2} if name == "tad" else {}
  with pytest.raises(TypeError, match="teacher_logits must be floating-point logits, got dtype int32"):
    fn(jnp.zeros((2, 3, 5), jnp.int32), LOGITS, **kwargs)
  with pytest.raises(TypeError, match="student_logits must be floating-point"):
    fn(LOGITS, jnp.zeros((2, 3, 5), jnp.int32), **kwargs)
  with pytest.raises(ValueError, match=r"teacher_logits shape \(2, 3, 5\) and student_logits shape \(2, 3, 6\)"):
    fn(LOGITS, jnp.zeros((2, 3, 6)), **kwargs)
  with pytest.raises(ValueError, match=r"mask shape \(2, 5\) must equal the per-token shape \(2, 3\)"):
    fn(LOGITS, LOGITS, jnp.ones((2, 5)), **kwargs)
  with pytest.raises(ValueError, match=r"reduction must be one of \['mean', 'none', 'sum'\], got 'avg'"):
    fn(LOGITS, LOGITS, reduction="avg", **kwargs)
  for bad in (0.0, -1.0, float("inf")):
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
      fn(LOGITS, LOGITS, temperature=bad, **kwargs)
  # The checks are static: they also fire while tracing under jit.
  with pytest.raises(ValueError, match="mask shape"):
    jax.jit(lambda t, s, m: fn(t, s, m, **kwargs))(LOGITS, LOGITS, jnp.ones((3,)))


@pytest.mark.parametrize(
    "fn,kwargs,error,match",
    [
        (losses.jsd, {"beta": 1.5}, ValueError, r"beta must lie in \[0, 1\], got 1.5"),
        (losses.jsd, {"beta": -0.1}, ValueError, r"beta must lie in \[0, 1\]"),
        (losses.jsd, {"beta": jnp.float32(0.5)}, TypeError, "beta must be a Python number"),
        (losses.jsd, {"mixture_eps": -1e-8}, ValueError, "mixture_eps must be finite and >= 0"),
        (losses.skew_kl, {"alpha": 2.0}, ValueError, r"alpha must lie in \[0, 1\]"),
        (losses.skew_reverse_kl, {"alpha": -0.5}, ValueError, r"alpha must lie in \[0, 1\]"),
        (losses.adaptive_kl, {"mu": -0.1}, ValueError, "mu must be finite and >= 0"),
        (losses.adaptive_kl, {"eps": -1.0}, ValueError, "eps must be finite and >= 0"),
        (losses.adaptive_kl, {"head_rule": "code"}, ValueError, r"head_rule must be one of \['official', 'paper'\]"),
        (losses.adaptive_kl, {"head_method": "bisect"}, ValueError, "head_method must be one of"),
        (losses.tad, {"k": 0}, ValueError, "k must be an int >= 1, got 0"),
        (losses.tad, {"k": 6}, ValueError, r"k=6 exceeds the \(local\) vocabulary size 5"),
        (losses.tad, {"beta": -2.0}, ValueError, "beta must be finite and >= 0"),
    ],
)
def test_hyper_parameter_errors(fn, kwargs, error, match):
  with pytest.raises(error, match=match):
    fn(LOGITS, LOGITS, **kwargs)


def test_cross_entropy_errors():
  with pytest.raises(TypeError, match="labels must be integer token ids, got dtype float32"):
    losses.cross_entropy(LOGITS, jnp.zeros((2, 3)))
  with pytest.raises(ValueError, match=r"labels shape \(2,\) must equal the logits' shape without the vocabulary"):
    losses.cross_entropy(LOGITS, jnp.zeros((2,), jnp.int32))
  with pytest.raises(TypeError, match="student_logits must be floating-point"):
    losses.cross_entropy(jnp.zeros((2, 5), jnp.int32), jnp.zeros((2,), jnp.int32))


def test_reduce_loss_errors():
  with pytest.raises(ValueError, match="reduction must be one of"):
    losses.reduce_loss(jnp.zeros(3), None, "batchmean")
  with pytest.raises(ValueError, match=r"mask shape \(4,\) must equal the per-token shape \(3,\)"):
    losses.masked_sum_and_count(jnp.zeros(3), jnp.ones(4))
  with pytest.raises(TypeError, match="mask must be bool or numeric"):
    losses.reduce_loss(jnp.zeros(2), np.array(["a", "b"]))


def test_accepts_numpy_and_returns_float32_for_float32_and_bf16():
  rng = np.random.default_rng(0)
  teacher, student = rng.standard_normal((2, 4, 7)), rng.standard_normal((2, 4, 7))
  for dtype in (np.float32, jnp.bfloat16):
    out = losses.forward_kl(teacher.astype(dtype), student.astype(dtype), reduction="none")
    assert out.dtype == jnp.float32 and out.shape == (2, 4)
