"""Values and student-logit gradients of every divergence vs float64 PyTorch references (torch_divergences.py).

Float64 to 1e-10, float32 to 1e-5, bf16 inputs: values to 1e-5 against the reference on the same bf16-rounded
logits (so the float32 internals are tested), gradients (returned in bf16) to 2e-2. See ``TOLERANCES``.
"""

import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch_divergences as ref
from torch_divergences import TOLERANCES
from torch_divergences import x64  # noqa: F401  (fixture)

from jaxlens import losses

SHAPE = (2, 3, 11)  # [B, T, V], V unaligned

# name -> (jax function, torch per-token reference, kwargs for both)
CASES = {
    "forward_kl": (losses.forward_kl, ref.forward_kl_per_token, {}),
    "reverse_kl": (losses.reverse_kl, ref.reverse_kl_per_token, {}),
    "jsd_half": (losses.jsd, ref.jsd_per_token, {"beta": 0.5}),
    "jsd_0.1": (losses.jsd, ref.jsd_per_token, {"beta": 0.1}),
    "jsd_0.9_eps": (losses.jsd, ref.jsd_per_token, {"beta": 0.9, "mixture_eps": 1e-8}),
    "skew_kl": (losses.skew_kl, ref.skew_kl_per_token, {"alpha": 0.1}),
    "skew_kl_0.3": (losses.skew_kl, ref.skew_kl_per_token, {"alpha": 0.3}),
    "skew_reverse_kl": (losses.skew_reverse_kl, ref.skew_reverse_kl_per_token, {"alpha": 0.1}),
    "tvd": (losses.tvd, ref.tvd_per_token, {}),
    "akl_official": (losses.adaptive_kl, ref.adaptive_kl_per_token, {"mu": 0.5, "head_rule": "official"}),
    "akl_paper": (losses.adaptive_kl, ref.adaptive_kl_per_token, {"mu": 0.5, "head_rule": "paper"}),
    "akl_official_mu0.8": (losses.adaptive_kl, ref.adaptive_kl_per_token, {"mu": 0.8, "head_rule": "official"}),
    "akl_r_official": (losses.adaptive_kl, ref.adaptive_kl_per_token, {"head_rule": "official", "swap_weights": True}),
    "akl_r_paper": (losses.adaptive_kl, ref.adaptive_kl_per_token, {"head_rule": "paper", "swap_weights": True}),
    "mix_0.3": (losses.mix, ref.kl_mixture_per_token, {"weight": 0.3}),
    "mix_0": (losses.mix, ref.kl_mixture_per_token, {"weight": 0.0}),
    "mix_1": (losses.mix, ref.kl_mixture_per_token, {"weight": 1.0}),
    "akl_threshold": (
        functools.partial(losses.adaptive_kl, head_method="threshold"),
        ref.adaptive_kl_per_token,
        {"mu": 0.5, "head_rule": "paper"},
    ),
}


def _logits(seed, shape=SHAPE, scale=3.0):
  rng = np.random.default_rng(seed)
  return scale * rng.standard_normal(shape), scale * rng.standard_normal(shape)


def _masks(kind):
  rng = np.random.default_rng(7)
  if kind is None:
    return None
  if kind == "bool":
    mask = rng.random(SHAPE[:-1]) > 0.3
    mask[0, 0] = False
    return mask
  return rng.random(SHAPE[:-1]) * (rng.random(SHAPE[:-1]) > 0.3)


def _jax_value_and_grad(fn, teacher, student, mask, dtype, **kwargs):
  def loss(s):
    out = fn(jnp.asarray(teacher, dtype), s, None if mask is None else jnp.asarray(mask), **kwargs)
    return jnp.sum(out), out

  (_, value), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(jnp.asarray(student, dtype))
  return np.asarray(value, np.float64), np.asarray(grad).astype(np.float64)


def _check(name, dtype, mask_kind, reduction, temperature, scale_t2):
  fn, reference, kwargs = CASES[name]
  teacher, student = _logits(zlib.crc32(f"{name}/{dtype}/{mask_kind}".encode()))
  if dtype == "bfloat16":  # the reference sees the same rounded logits
    teacher = np.asarray(jnp.asarray(teacher, jnp.bfloat16).astype(jnp.float32), np.float64)
    student = np.asarray(jnp.asarray(student, jnp.bfloat16).astype(jnp.float32), np.float64)
  mask = _masks(mask_kind)
  value, grad = _jax_value_and_grad(
      fn, teacher, student, mask, getattr(jnp, dtype), temperature=temperature, reduction=reduction,
      scale_by_temperature_squared=scale_t2, **kwargs,
  )
  expected_value, expected_grad = ref.value_and_grad(
      functools.partial(reference, temperature=temperature, **kwargs), teacher, student, mask, reduction,
      scale=temperature**2 if scale_t2 else 1.0,
  )
  rtol, atol = TOLERANCES[dtype]["value"]
  np.testing.assert_allclose(value, expected_value, rtol=rtol, atol=atol)
  rtol, atol = TOLERANCES[dtype]["grad"]
  np.testing.assert_allclose(grad, expected_grad, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize(
    "mask_kind,reduction,temperature,scale_t2",
    [(None, "mean", 1.0, False), ("bool", "sum", 2.0, True), ("float", "none", 0.7, False)],
)
def test_float64_matches_torch(x64, name, mask_kind, reduction, temperature, scale_t2):
  _check(name, "float64", mask_kind, reduction, temperature, scale_t2)


@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "jsd_half", "skew_kl", "skew_reverse_kl", "tvd",
                                  "akl_official"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_low_precision_matches_torch(name, dtype):
  _check(name, dtype, "bool", "mean", 1.5, False)


def test_bf16_inputs_are_computed_in_float32():
  teacher, student = _logits(3)
  out = losses.jsd(jnp.asarray(teacher, jnp.bfloat16), jnp.asarray(student, jnp.bfloat16), reduction="none")
  assert out.dtype == jnp.float32
  # Against the un-rounded float64 logits the only error is the bf16 rounding of the inputs: 2e-2 relative.
  expected, _ = ref.value_and_grad(ref.jsd_per_token, teacher, student, reduction="none")
  np.testing.assert_allclose(np.asarray(out), expected, rtol=2e-2, atol=1e-3)


@pytest.mark.parametrize("k,mask_kind", [(1, None), (3, "bool"), (10, "float")])
def test_tad_float64_matches_torch(x64, k, mask_kind):
  teacher, student = _logits(11 + k)
  mask = _masks(mask_kind)
  torch_mask = None if mask is None else torch.tensor(mask)
  value, grad = _jax_value_and_grad(losses.tad, teacher, student, mask, jnp.float64, k=k, beta=2.0,
                                    temperature=1.3, reduction="sum")
  expected_value, expected_grad = ref.value_and_grad(
      functools.partial(ref.tad_per_token, temperature=1.3, k=k, beta=2.0, mask=torch_mask),
      teacher, student, mask, "sum",
  )
  np.testing.assert_allclose(value, expected_value, rtol=1e-10)
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-10, atol=1e-13)


def test_tad_decomposition_is_exact_kl(x64):
  from jaxlens.losses._vocab import log_softmax
  from jaxlens.losses.tad import tad_terms

  teacher, student = _logits(5)
  log_p, log_q = log_softmax(jnp.asarray(teacher), None), log_softmax(jnp.asarray(student), None)
  head_term, tail_mass, weighted_tail = tad_terms(log_p, log_q, 4, None)
  np.testing.assert_allclose(
      head_term + weighted_tail, losses.forward_kl(teacher, student, reduction="none"), rtol=1e-12
  )
  expected_tail = 1 - np.sort(np.asarray(jnp.exp(log_p)), -1)[..., -4:].sum(-1)
  np.testing.assert_allclose(tail_mass, expected_tail, rtol=1e-12)


@pytest.mark.parametrize("dtype,tolerance", [("float64", 1e-10), ("float32", 1e-5)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_torch(x64, dtype, tolerance, reduction):
  _, student = _logits(9)
  rng = np.random.default_rng(9)
  labels = rng.integers(0, SHAPE[-1], SHAPE[:-1])
  mask = _masks("bool")
  labels_with_ignore = np.where(mask, labels, -100)  # arbitrary ids at masked positions

  def loss(s):
    out = losses.cross_entropy(s, jnp.asarray(labels_with_ignore), jnp.asarray(mask), reduction=reduction)
    return jnp.sum(out), out

  (_, value), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(jnp.asarray(student, getattr(jnp, dtype)))
  s = torch.tensor(student, requires_grad=True)
  expected = ref.reduce(ref.cross_entropy_per_token(s, torch.tensor(labels)), torch.tensor(mask), reduction)
  (expected_grad,) = torch.autograd.grad(expected.sum(), s)
  np.testing.assert_allclose(np.asarray(value), expected.detach().numpy(), rtol=tolerance, atol=tolerance / 10)
  np.testing.assert_allclose(np.asarray(grad), expected_grad.numpy(), rtol=tolerance, atol=tolerance / 10)
  if reduction == "mean":  # torch's own ignore_index mean agrees
    torch_ce = torch.nn.functional.cross_entropy(
        torch.tensor(student).reshape(-1, SHAPE[-1]), torch.tensor(labels_with_ignore).reshape(-1)
    )
    np.testing.assert_allclose(np.asarray(value), torch_ce.numpy(), rtol=tolerance)


@pytest.mark.parametrize("head_rule", ["official", "paper"])
def test_akl_head_weight_matches_torch_ratio(x64, head_rule):
  teacher, student = _logits(11)
  got = losses.adaptive_kl_head_weight(jnp.asarray(teacher), jnp.asarray(student), head_rule=head_rule,
                                       temperature=1.5)
  want, _ = ref.akl_ratio(torch.tensor(teacher), torch.tensor(student), 1.5, 0.5, head_rule, 1e-12)
  np.testing.assert_allclose(np.asarray(got), want.numpy(), rtol=1e-10, atol=1e-13)


def test_mixture_endpoints_are_the_two_kls(x64):
  teacher, student = _logits(12)
  t, s = jnp.asarray(teacher), jnp.asarray(student)
  np.testing.assert_allclose(losses.mix(t, s, weight=1.0), losses.forward_kl(t, s), rtol=1e-12)
  np.testing.assert_allclose(losses.mix(t, s, weight=0.0), losses.reverse_kl(t, s), rtol=1e-12)
  with pytest.raises(ValueError, match="weight"):
    losses.mix(t, s, weight=1.5)
