"""NaN-honest losses (issue 15.3): a NaN/±inf reaching an unmasked token's logits gives NaN, never 0 or a dropped
token; a masked token contributes exactly nothing — value and gradient — whatever its logits or hidden states hold.

Every divergence, cross-entropy, the vocabulary-sharded path, and the lens kernel (tiled and reference). One batch
carries every kind of poison at once, on different tokens: a NaN entry, a +inf entry, a -inf entry and a row of
only -inf (plus a legitimate padded column of -inf on both sides, which is not poison).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxlens import losses

B, T, V = 2, 6, 9
KWARGS = {"tad": {"k": 3}, "adaptive_kl_eps0": {"eps": 0.0}}
NAMES = [*sorted(losses.DIVERGENCES), "adaptive_kl_eps0", "cross_entropy"]
# (b, t) -> what is written into that token's logits row; "-inf entry" is poison only if it is the student's
# column where the teacher has mass (an infinite RKL), so it is checked as "not finite" rather than NaN.
POISON = {(0, 1): "nan", (0, 4): "+inf", (1, 2): "row -inf", (1, 5): "nan row"}
PADDED_COLUMN = V - 1  # -inf on both sides everywhere: a padded vocabulary column, exact zeros


def _clean(seed=0):
  rng = np.random.default_rng(seed)
  teacher = 2.5 * rng.standard_normal((B, T, V)).astype(np.float32)
  student = 2.5 * rng.standard_normal((B, T, V)).astype(np.float32)
  teacher[..., PADDED_COLUMN] = student[..., PADDED_COLUMN] = -np.inf
  labels = rng.integers(0, V - 1, (B, T)).astype(np.int32)
  return teacher, student, labels


def _poison(logits):
  out = logits.copy()
  for (b, t), kind in POISON.items():
    if kind == "nan":
      out[b, t, 2] = np.nan
    elif kind == "+inf":
      out[b, t, 0] = np.inf
    elif kind == "row -inf":
      out[b, t, :] = -np.inf
    else:
      out[b, t, :] = np.nan
  return out


def _poisoned_mask():
  mask = np.ones((B, T), bool)
  for token in POISON:
    mask[token] = False
  return mask


def _loss(name):
  """``(teacher, student, mask, labels, **kw) -> loss`` for every name (cross-entropy ignores the teacher)."""
  if name == "cross_entropy":
    return lambda t, s, m, y, **kw: losses.cross_entropy(s, y, m, **kw)
  fn = losses.get_divergence(name.removesuffix("_eps0"))
  return lambda t, s, m, y, **kw: fn(t, s, m, **KWARGS.get(name, {}), **kw)


def _sides(name):
  return ["student"] if name == "cross_entropy" else ["teacher", "student"]


CASES = [(name, side) for name in NAMES for side in _sides(name)]


def _evaluate(name, labels):
  """jit of ``(teacher, student, mask) -> (per-token values, mean, (d mean/d student, d mean/d teacher))``."""
  fn = _loss(name)

  def evaluate(teacher, student, mask):
    mean = lambda s, t: fn(t, s, mask, labels)  # noqa: E731
    value, grads = jax.value_and_grad(mean, argnums=(0, 1))(student, teacher)
    return fn(teacher, student, mask, labels, reduction="none"), value, grads

  return jax.jit(evaluate)


@pytest.mark.parametrize("name,side", CASES)
def test_poison(name, side):
  teacher, student, labels = _clean()
  evaluate = _evaluate(name, labels)
  bad_t = _poison(teacher)  # the student case poisons both: the student's gradient must not see the teacher's
  bad_s = _poison(student) if side == "student" else student
  poisoned = ~_poisoned_mask()

  # Unmasked: NaN at exactly the poisoned tokens (and in the mean); the other tokens keep their values.
  unmasked = jnp.ones((B, T), bool)
  per_token, value, _ = evaluate(bad_t if side == "teacher" else teacher, bad_s, unmasked)
  clean_per_token, clean_value, _ = evaluate(teacher, student, unmasked)
  assert np.all(np.isnan(per_token[poisoned])), per_token
  assert np.isnan(float(value)) and np.isfinite(float(clean_value))
  if not (name == "tad" and side == "teacher"):  # TAD's normaliser averages the teacher over the sequence
    np.testing.assert_array_equal(per_token[~poisoned], clean_per_token[~poisoned])

  # Masked: exactly the clean value and gradient; zero value and gradient at the masked tokens.
  mask = jnp.asarray(~poisoned)
  per_token, value, (grad_s, grad_t) = evaluate(bad_t, bad_s, mask)
  _, clean_value, (clean_grad_s, _) = evaluate(teacher, student, mask)
  assert np.isfinite(float(value))
  np.testing.assert_array_equal(value, clean_value)
  np.testing.assert_array_equal(per_token[poisoned], 0.0)
  assert np.all(np.isfinite(grad_s)) and np.all(np.isfinite(grad_t))
  np.testing.assert_array_equal(grad_s, clean_grad_s)
  np.testing.assert_array_equal(grad_s[poisoned], 0.0)
  np.testing.assert_array_equal(grad_t, 0.0)  # the teacher is frozen


@pytest.mark.parametrize("name", [n for n in NAMES if n != "adaptive_kl_eps0"])
def test_vocab_sharded_path(name):
  if len(jax.devices()) < 3:
    pytest.skip("needs 3 devices (tests/conftest.py sets 8 CPU devices)")
  teacher, student, labels = _clean(2)
  kwargs = {"head_method": "threshold"} if name == "adaptive_kl" else {}
  mesh = Mesh(np.array(jax.devices()[:3]), ("vocab",))  # V = 9: three shards of 3 columns
  fn = _loss(name)
  sharded = jax.jit(jax.value_and_grad(jax.shard_map(
      lambda t, s, m, y: fn(t, s, m, y, vocab_axis_name="vocab", **kwargs), mesh=mesh,
      in_specs=(P(None, None, "vocab"), P(None, None, "vocab"), P(), P()), out_specs=P()), argnums=1))
  mask = jnp.asarray(_poisoned_mask())
  value, grad = sharded(_poison(teacher), _poison(student), mask, labels)
  clean_value, clean_grad = sharded(teacher, student, mask, labels)
  np.testing.assert_array_equal(value, clean_value)
  np.testing.assert_array_equal(grad, clean_grad)
  np.testing.assert_array_equal(grad[~np.asarray(mask)], 0.0)
  assert np.isnan(float(sharded(teacher, _poison(student), jnp.ones((B, T), bool), labels)[0]))


# ------------------------------------------------------------------------------------------------- the lens kernel
PAIRS, TOKENS, DIM, VOCAB = 2, 10, 6, 11
LENS_CASES = [("tiled", "jsd"), ("tiled", "reverse_kl"), ("tiled", "adaptive_kl"), ("reference", "jsd"),
              ("reference", "forward_kl"), ("reference", "tad")]


def _lens_inputs():
  rng = np.random.default_rng(3)
  th = rng.standard_normal((PAIRS, TOKENS, DIM)).astype(np.float32)
  sh = rng.standard_normal((PAIRS, TOKENS, DIM)).astype(np.float32)
  tw = rng.standard_normal((DIM, VOCAB)).astype(np.float32)
  sw = rng.standard_normal((DIM, VOCAB)).astype(np.float32)
  mask = np.ones(TOKENS, bool)
  mask[[1, 4, 9]] = False  # token 9 sits in the last, padded tile when block_tokens = 4
  return th, sh, tw, sw, mask


def _poison_hidden(hidden, tokens):
  out = hidden.copy()
  out[0, tokens[0], 1] = np.nan
  out[1, tokens[1], :] = np.inf
  out[:, tokens[2], 3] = -np.inf
  return out


@pytest.mark.parametrize("implementation,divergence", LENS_CASES)
def test_lens_kernel(implementation, divergence):
  th, sh, tw, sw, mask = _lens_inputs()
  kwargs = {"k": 3} if divergence == "tad" else {}
  loss = functools.partial(losses.lens_loss, divergence=divergence, divergence_kwargs=kwargs,
                           implementation=implementation, tile=losses.TileConfig(block_tokens=4, vocab_multiple=8))
  value_and_grad = jax.jit(jax.value_and_grad(lambda s, w, t, m: loss(t, s, tw, w, m), argnums=(0, 1)))
  masked = np.flatnonzero(~mask)
  bad_t, bad_s = _poison_hidden(th, masked), _poison_hidden(sh, masked)
  value, (grad_h, grad_w) = value_and_grad(bad_s, sw, bad_t, mask)
  clean_value, (clean_grad_h, clean_grad_w) = value_and_grad(sh, sw, th, mask)
  assert np.isfinite(float(value)) and np.all(np.isfinite(grad_h)) and np.all(np.isfinite(grad_w))
  np.testing.assert_array_equal(value, clean_value)
  np.testing.assert_array_equal(grad_h[:, masked], 0.0)
  np.testing.assert_array_equal(grad_h, clean_grad_h)
  np.testing.assert_array_equal(grad_w, clean_grad_w)
  # The same poison at unmasked tokens: NaN, whichever side carries it; a NaN weight reaches every token.
  unmasked = np.ones(TOKENS, bool)
  for args in ((sh, sw, bad_t, unmasked), (bad_s, sw, th, unmasked), (sh, _nan_at(sw), th, mask)):
    assert np.isnan(float(value_and_grad(*args)[0]))


def _nan_at(unembed):
  out = unembed.copy()
  out[0, 3] = np.nan
  return out


def test_vocab_parallel_lens_masked_poison():
  if len(jax.devices()) < 4:
    pytest.skip("needs 4 devices (tests/conftest.py sets 8 CPU devices)")
  th, sh, tw, sw, mask = _lens_inputs()
  mesh = Mesh(np.array(jax.devices()[:4]).reshape(2, 2), ("tokens", "vocab"))
  loss = functools.partial(losses.vocab_parallel_lens_loss, mesh=mesh, vocab_axis="vocab", token_axis="tokens",
                           tile=losses.TileConfig(block_tokens=4, vocab_multiple=8))
  value_and_grad = jax.jit(jax.value_and_grad(lambda s, t: loss(t, s, tw, sw, mask)))
  masked = np.flatnonzero(~mask)
  value, grad = value_and_grad(_poison_hidden(sh, masked), _poison_hidden(th, masked))
  clean_value, clean_grad = value_and_grad(sh, th)
  np.testing.assert_array_equal(value, clean_value)
  np.testing.assert_array_equal(grad[:, masked], 0.0)
  np.testing.assert_array_equal(grad, clean_grad)
  assert np.isnan(float(value_and_grad(_poison_hidden(sh, [0, 2, 3]), th)[0]))


@pytest.mark.parametrize("implementation", ["tiled", "reference"])
def test_linear_cross_entropy(implementation):
  _, sh, _, sw, mask = _lens_inputs()
  hidden = sh[0]
  labels = np.arange(TOKENS, dtype=np.int32) % VOCAB
  loss = functools.partial(losses.linear_cross_entropy, implementation=implementation,
                           tile=losses.TileConfig(block_tokens=4, vocab_multiple=8))
  value_and_grad = jax.jit(jax.value_and_grad(lambda h, w, m: loss(h, w, labels, m), argnums=(0, 1)))
  masked = np.flatnonzero(~mask)
  bad = hidden.copy()
  bad[masked[0], 1], bad[masked[1]], bad[masked[2], 3] = np.nan, np.inf, -np.inf
  value, (grad_h, grad_w) = value_and_grad(bad, sw, mask)
  clean_value, (clean_grad_h, clean_grad_w) = value_and_grad(hidden, sw, mask)
  np.testing.assert_array_equal(value, clean_value)
  np.testing.assert_array_equal(grad_h[masked], 0.0)
  np.testing.assert_array_equal(grad_h, clean_grad_h)
  np.testing.assert_array_equal(grad_w, clean_grad_w)
  assert np.isnan(float(value_and_grad(bad, sw, np.ones(TOKENS, bool))[0]))


# ------------------------------------------------------------------------------- the issue's repro, and the bounds
def test_issue_repro_values_are_nan_not_zero():
  teacher, student, _ = _clean(4)
  nan = np.full_like(student, np.nan)
  assert np.isnan(float(losses.reverse_kl(teacher, nan)))  # was 0.0
  assert np.isnan(float(losses.forward_kl(nan, student)))  # was 0.0
  one_bad = teacher.copy()
  one_bad[0, 0, 3] = np.nan  # was silently dropped from the mean
  assert np.isnan(float(losses.forward_kl(one_bad, student)))
  one_bad[0, 0] = -np.inf
  assert np.isnan(float(losses.forward_kl(one_bad, student)))
  lens = jax.jit(functools.partial(losses.lens_loss, divergence="reverse_kl"))
  assert np.isnan(float(lens(jnp.ones((1, 3, 4)), jnp.full((1, 3, 4), jnp.nan), jnp.eye(4, 5), jnp.eye(4, 5))))


def test_jsd_and_tvd_stay_in_range_under_rounding():
  rng = np.random.default_rng(5)
  teacher = jnp.asarray(4.0 * rng.standard_normal((16, 1024)), jnp.float32)
  student = teacher + jnp.asarray(1e-6 * rng.standard_normal((16, 1024)), jnp.float32)
  per_token = jax.jit(functools.partial(losses.jsd, reduction="none"), static_argnames="beta")
  assert np.all(np.asarray(per_token(teacher, student)) >= 0.0)
  assert np.all(np.asarray(per_token(teacher, student, beta=0.1)) >= 0.0)
  disjoint_t = jnp.where(jnp.arange(1024) < 512, 0.0, -jnp.inf) + 1e-3 * teacher
  disjoint_s = jnp.where(jnp.arange(1024) >= 512, 0.0, -jnp.inf) + 1e-3 * student
  tv = np.asarray(jax.jit(functools.partial(losses.tvd, reduction="none"))(disjoint_t, disjoint_s))
  assert np.all((tv >= 0.0) & (tv <= 1.0)) and np.all(tv > 1 - 1e-5)
  # The clamp is in value only: the gradient is the unclamped formula's (straight-through).
  grad = jax.jit(jax.grad(lambda s: losses.jsd(teacher[:2], s)))(student[:2])
  assert np.all(np.isfinite(grad))


def test_check_finite_raises_for_unmasked_only():
  mask = jnp.array([True, False])
  logits = jnp.array([[0.0, 1.0], [jnp.nan, 1.0]])
  checked = jax.jit(lambda x, m: losses.check_finite(x, "student logits", m))
  np.testing.assert_array_equal(checked(logits, mask), logits)  # the NaN is masked: no error
  with pytest.raises(Exception, match="student logits has 1 non-finite value"):
    jax.block_until_ready(checked(logits, jnp.array([True, True])))
  loss = jax.jit(lambda t, s: losses.check_finite(losses.reverse_kl(t, s), "kd loss"))
  with pytest.raises(Exception, match="kd loss has 1 non-finite value"):
    jax.block_until_ready(loss(logits[:1], logits[1:]))
  with pytest.raises(ValueError, match="prefix"):
    losses.check_finite(logits, mask=jnp.ones(3))
