"""Hypothesis properties of the divergences (float64): non-negativity, zero at q = p, JSD symmetry and bound,
TVD range, FKL/RKL duality, and the JSD_β / β → FKL limit."""

import math

import hypothesis.extra.numpy as hnp
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from torch_divergences import x64  # noqa: F401  (fixture)

from jaxlens import losses

# The x64 fixture only toggles a global flag, so sharing it across generated inputs is what we want.
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
LOGITS = hnp.arrays(np.float64, (2, 7), elements=st.floats(-8.0, 8.0, allow_nan=False, allow_infinity=False))
DIVERGENCE_NAMES = sorted(losses.DIVERGENCES)


def _per_token(name, teacher, student, **kwargs):
  return np.asarray(losses.get_divergence(name)(teacher, student, reduction="none", **kwargs))


@SETTINGS
@given(teacher=LOGITS, student=LOGITS, name=st.sampled_from(DIVERGENCE_NAMES))
def test_non_negative(x64, teacher, student, name):
  kwargs = {"k": 3} if name == "tad" else {}
  assert np.all(_per_token(name, teacher, student, **kwargs) >= -1e-12)


@SETTINGS
@given(teacher=LOGITS, shift=st.floats(-5.0, 5.0), name=st.sampled_from(DIVERGENCE_NAMES))
def test_zero_at_equal_distributions(x64, teacher, shift, name):
  kwargs = {"k": 3} if name == "tad" else {}
  np.testing.assert_allclose(_per_token(name, teacher, teacher + shift, **kwargs), 0.0, atol=1e-12)


@SETTINGS
@given(teacher=LOGITS, student=LOGITS)
def test_jsd_half_symmetric_and_bounded(x64, teacher, student):
  forward = _per_token("jsd", teacher, student)
  np.testing.assert_allclose(forward, _per_token("jsd", student, teacher), rtol=1e-10, atol=1e-14)
  assert np.all(forward <= math.log(2) + 1e-12)


@SETTINGS
@given(teacher=LOGITS, student=LOGITS)
def test_tvd_in_unit_interval(x64, teacher, student):
  value = _per_token("tvd", teacher, student)
  assert np.all((value >= 0) & (value <= 1 + 1e-12))


@SETTINGS
@given(teacher=LOGITS, student=LOGITS, temperature=st.floats(0.3, 4.0))
def test_forward_kl_is_reverse_kl_with_roles_swapped(x64, teacher, student, temperature):
  np.testing.assert_allclose(
      losses.forward_kl(student, teacher, temperature=temperature, reduction="none"),
      losses.reverse_kl(teacher, student, temperature=temperature, reduction="none"),
      rtol=1e-10, atol=1e-14,
  )


MODERATE_LOGITS = hnp.arrays(np.float64, (2, 7), elements=st.floats(-3.0, 3.0, allow_nan=False))


@SETTINGS
@given(teacher=MODERATE_LOGITS, student=MODERATE_LOGITS)
def test_jsd_over_beta_tends_to_forward_kl(x64, teacher, student):
  beta = 1e-8  # JSD_β/β = FKL − O(β·χ²(p‖q)), χ² ≤ max p/q ≤ e^12 here; (1 − β) would give RKL instead
  fkl = _per_token("forward_kl", teacher, student)
  np.testing.assert_allclose(_per_token("jsd", teacher, student, beta=beta) / beta, fkl, rtol=1e-3,
                             atol=2e-3)


def test_bounds_are_attained_by_disjoint_supports(x64):
  teacher = jnp.array([0.0, -jnp.inf])
  student = jnp.array([-jnp.inf, 0.0])
  np.testing.assert_allclose(losses.jsd(teacher, student), math.log(2), rtol=1e-12)
  np.testing.assert_allclose(losses.tvd(teacher, student), 1.0, rtol=1e-12)
