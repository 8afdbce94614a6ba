"""The tiled logit-lens kernel against the materialised reference: values and student gradients, every divergence.

Shapes are deliberately unaligned (N not a multiple of the block, V not a multiple of 128) with LM-scale logits
(std ≈ 2.5), and blocks small enough for ≥ 3 token tiles per pair. The teacher inputs are jit arguments (not
closed-over constants) so XLA does not constant-fold the teacher side at compile time.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlens.losses import DIVERGENCES
from jaxlens.losses import TileConfig
from jaxlens.losses import lens_loss

# Relative tolerance (of the largest reference magnitude) by matmul compute dtype.
TOLERANCE = {"float32": 1e-5, "bfloat16": 2e-2}

NUM_TOKENS, TEACHER_DIM, STUDENT_DIM, VOCAB = 77, 24, 16, 301
TILE = TileConfig(block_tokens=16)  # 5 token tiles per pair, the last one partial

DIVERGENCE_CASES = [
    ("forward_kl", {}),
    ("reverse_kl", {}),
    ("jsd", {}),
    ("jsd", {"beta": 0.1, "temperature": 2.0}),
    ("skew_kl", {}),
    ("skew_reverse_kl", {}),
    ("tvd", {}),
    ("adaptive_kl", {"head_rule": "official"}),
    ("adaptive_kl", {"head_rule": "paper"}),
    ("mix", {"weight": 0.3}),
]


def make_inputs(num_pairs, num_tokens=NUM_TOKENS, vocab=VOCAB, seed=0, masked_fraction=0.3):
  rng = np.random.default_rng(seed)
  teacher_hidden = rng.normal(size=(num_pairs, num_tokens, TEACHER_DIM))
  student_hidden = rng.normal(size=(num_pairs, num_tokens, STUDENT_DIM))
  teacher_unembed = rng.normal(size=(TEACHER_DIM, vocab)) * 0.5
  student_unembed = rng.normal(size=(STUDENT_DIM, vocab)) * 0.6
  mask = rng.random(num_tokens) >= masked_fraction
  as32 = lambda x: jnp.asarray(x, jnp.float32)
  return (as32(teacher_hidden), as32(student_hidden), as32(teacher_unembed), as32(student_unembed),
          jnp.asarray(mask))


def both_implementations(inputs, **kwargs):
  """``{impl: (value, (d_student_hidden, d_student_unembed))}`` for both implementations, one compile."""

  @jax.jit
  def run(teacher_hidden, student_hidden, teacher_unembed, student_unembed, mask):
    out = {}
    for implementation in ("reference", "tiled"):
      loss = lambda sh, sw: lens_loss(teacher_hidden, sh, teacher_unembed, sw, mask,
                                      implementation=implementation, **kwargs)
      out[implementation] = jax.value_and_grad(loss, argnums=(0, 1))(student_hidden, student_unembed)
    return out

  return run(*inputs)


def assert_close(actual, expected, dtype="float32"):
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  scale = max(float(np.max(np.abs(expected))), 1e-30)
  np.testing.assert_allclose(actual, expected, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype] * scale)


def assert_same(out, dtype="float32"):
  (ref_value, ref_grads), (tiled_value, tiled_grads) = out["reference"], out["tiled"]
  assert np.all(np.isfinite(np.asarray(tiled_value)))
  assert_close(tiled_value, ref_value, dtype)
  for tiled_grad, ref_grad in zip(tiled_grads, ref_grads):
    assert np.all(np.isfinite(np.asarray(tiled_grad)))
    assert_close(tiled_grad, ref_grad, dtype)


@pytest.mark.parametrize("divergence, kwargs", DIVERGENCE_CASES, ids=lambda c: str(c))
def test_tiled_equals_reference_for_every_divergence(divergence, kwargs):
  out = both_implementations(make_inputs(num_pairs=3), divergence=divergence, divergence_kwargs=kwargs,
                             layer_weights=jnp.array([1.0, 2.5, 0.5]), tile=TILE)
  assert_same(out)


def test_every_registered_divergence_is_covered():
  covered = {name for name, _ in DIVERGENCE_CASES} | {"tad"}  # tad: token-coupled, see test below
  assert covered == set(DIVERGENCES)


@pytest.mark.parametrize("num_pairs, reduction, tile", [
    (1, "mean", TILE),
    (5, "sum", TILE),
    (2, "mean", TileConfig()),  # one block: N < block_tokens
], ids=str)
def test_tiled_equals_reference_pairs_and_reductions(num_pairs, reduction, tile):
  out = both_implementations(make_inputs(num_pairs, seed=num_pairs), divergence="jsd", reduction=reduction,
                             tile=tile)
  assert_same(out)


def test_tiled_equals_reference_without_mask_and_aligned_vocab():
  teacher_hidden, student_hidden, teacher_unembed, student_unembed, _ = make_inputs(2, num_tokens=64, vocab=256)
  out = both_implementations((teacher_hidden, student_hidden, teacher_unembed, student_unembed, None),
                             divergence="reverse_kl", tile=TileConfig(block_tokens=16))
  assert_same(out)


def test_tiled_equals_reference_in_bfloat16_compute():
  tile = TileConfig(block_tokens=16, compute_dtype=jnp.bfloat16)
  out = both_implementations(make_inputs(3, seed=7), divergence="jsd", tile=tile)
  assert_same(out, "bfloat16")


def test_all_masked_gives_zero_with_finite_zero_grads():
  inputs = make_inputs(2, masked_fraction=1.1)
  assert not np.any(np.asarray(inputs[-1]))
  out = both_implementations(inputs, divergence="jsd", tile=TILE)
  for value, grads in out.values():
    assert float(value) == 0.0
    for grad in grads:
      np.testing.assert_array_equal(np.asarray(grad), 0.0)


def test_masked_tokens_get_exactly_zero_hidden_grad():
  inputs = make_inputs(2)
  out = both_implementations(inputs, divergence="reverse_kl", tile=TILE)
  masked = ~np.asarray(inputs[-1])
  d_hidden = np.asarray(out["tiled"][1][0])
  np.testing.assert_array_equal(d_hidden[:, masked], 0.0)
  assert np.all(np.abs(d_hidden[:, ~masked]).sum(-1) > 0)


def test_masked_tokens_do_not_change_the_loss():
  teacher_hidden, student_hidden, teacher_unembed, student_unembed, mask = make_inputs(2)
  keep = np.flatnonzero(np.asarray(mask))
  loss = jax.jit(lambda th, sh, m: lens_loss(th, sh, teacher_unembed, student_unembed, m, tile=TILE))
  full = loss(teacher_hidden, student_hidden, mask)
  subset = loss(teacher_hidden[:, keep], student_hidden[:, keep], None)
  np.testing.assert_allclose(float(full), float(subset), rtol=1e-6)


def test_forward_kl_gradient_matches_closed_form():
  # d/dz_S of Σ_t m_t KL(p_t ‖ q_t) / Σ m is m_t (q_t − p_t) / Σ m: an oracle independent of both implementations.
  teacher_hidden, student_hidden, teacher_unembed, student_unembed, mask = make_inputs(1, seed=3)
  out = both_implementations((teacher_hidden, student_hidden, teacher_unembed, student_unembed, mask),
                             divergence="forward_kl", tile=TILE)
  m = np.asarray(mask, np.float64)
  softmax = lambda z: np.exp(z - z.max(-1, keepdims=True)) / np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)
  h_s, w_s = np.asarray(student_hidden[0], np.float64), np.asarray(student_unembed, np.float64)
  p = softmax(np.asarray(teacher_hidden[0], np.float64) @ np.asarray(teacher_unembed, np.float64))
  d_logits = m[:, None] * (softmax(h_s @ w_s) - p) / m.sum()
  for implementation in ("reference", "tiled"):
    d_hidden, d_unembed = out[implementation][1]
    assert_close(d_hidden[0], d_logits @ w_s.T)
    assert_close(d_unembed, h_s.T @ d_logits)


def test_weighted_mean_and_sum_and_per_pair_agree():
  inputs = make_inputs(3)
  weights = jnp.array([1.0, 3.0, 0.0])
  count = float(np.sum(np.asarray(inputs[-1])))

  @jax.jit
  def reductions(teacher_hidden, student_hidden, teacher_unembed, student_unembed, mask):
    out = {}
    for implementation in ("reference", "tiled"):
      call = lambda reduction, **kw: lens_loss(teacher_hidden, student_hidden, teacher_unembed, student_unembed,
                                               mask, reduction=reduction, implementation=implementation,
                                               tile=TILE, **kw)
      out[implementation] = (call("per_pair"), call("mean", layer_weights=weights),
                             call("sum", layer_weights=weights), call("mean"))
    return out

  for per_pair, weighted_mean, weighted_sum, mean in reductions(*inputs).values():
    per_pair = np.asarray(per_pair)
    assert per_pair.shape == (3,)
    np.testing.assert_allclose(float(weighted_mean), per_pair @ weights / 4.0, rtol=1e-5)
    np.testing.assert_allclose(float(weighted_sum), count * per_pair @ weights, rtol=1e-5)
    np.testing.assert_allclose(float(mean), per_pair.mean(), rtol=1e-5)


def test_layer_weights_and_teacher_gradients():
  teacher_hidden, student_hidden, teacher_unembed, student_unembed, mask = make_inputs(3)

  @jax.jit
  def grads(weights, teacher_hidden, teacher_unembed):
    out = {}
    for implementation in ("reference", "tiled"):
      loss = lambda w, th, tw: lens_loss(th, student_hidden, tw, student_unembed, mask, layer_weights=w,
                                         implementation=implementation, tile=TILE)
      out[implementation] = jax.grad(loss, argnums=(0, 1, 2))(weights, teacher_hidden, teacher_unembed)
    return out

  out = grads(jnp.array([1.0, 2.0, 3.0]), teacher_hidden, teacher_unembed)
  assert_close(out["tiled"][0], out["reference"][0])
  for implementation in ("reference", "tiled"):  # the teacher is frozen: stop-gradient
    for grad in out[implementation][1:]:
      np.testing.assert_array_equal(np.asarray(grad), 0.0)


def test_tiled_per_pair_is_not_differentiable():
  inputs = make_inputs(2)
  loss = lambda sh: lens_loss(inputs[0], sh, *inputs[2:], reduction="per_pair", tile=TILE).sum()
  with pytest.raises(ValueError, match="not differentiable"):
    jax.jit(jax.grad(loss))(inputs[1])  # raised while tracing the backward


def _statistics(teacher_logits, student_logits):
  """Per-token values that need the whole vocabulary: the teacher's entropy and the student's top-1 match."""
  log_p = jax.nn.log_softmax(teacher_logits, axis=-1)
  entropy = -jnp.sum(jnp.where(jnp.isfinite(log_p), jnp.exp(log_p) * log_p, 0.0), axis=-1)
  agree = jnp.argmax(teacher_logits, -1) == jnp.argmax(student_logits, -1)
  return {"entropy": entropy, "top1": agree.astype(jnp.float32)}


def test_token_statistics_ride_in_the_same_sweep():
  """The tiled sweep's statistic sums equal the materialised ones, masked tokens (NaN rows included) count 0,
  and carrying statistics changes neither the loss nor its gradients."""
  teacher_hidden, student_hidden, teacher_unembed, student_unembed, mask = make_inputs(2)
  student_hidden = student_hidden.at[:, ~np.asarray(mask)].set(jnp.nan)  # masked rows hold NaN
  t_logits = np.einsum("pnd,dv->pnv", np.asarray(teacher_hidden, np.float64), np.asarray(teacher_unembed))
  s_logits = np.einsum("pnd,dv->pnv", np.asarray(student_hidden, np.float64), np.asarray(student_unembed))
  log_p = t_logits - np.log(np.exp(t_logits - t_logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
      - t_logits.max(-1, keepdims=True)
  m = np.asarray(mask, np.float64)
  want = {"entropy": np.sum(-np.sum(np.exp(log_p) * log_p, -1) * m, -1),
          "top1": np.sum(np.where(m > 0, t_logits.argmax(-1) == s_logits.argmax(-1), 0), -1)}

  @jax.jit
  def run(sh, sw):
    out = {}
    for implementation in ("reference", "tiled"):
      def loss(sh, sw, stats=None):
        return lens_loss(teacher_hidden, sh, teacher_unembed, sw, mask, divergence="adaptive_kl", tile=TILE,
                         implementation=implementation, reduction="sum", token_statistics=stats)
      (value, stats), grads = jax.value_and_grad(lambda a, b: loss(a, b, _statistics), argnums=(0, 1),
                                                 has_aux=True)(sh, sw)
      plain, plain_grads = jax.value_and_grad(loss, argnums=(0, 1))(sh, sw)
      out[implementation] = value, stats, grads, plain, plain_grads
    return out

  out = run(student_hidden, student_unembed)
  for implementation, (value, stats, grads, plain, plain_grads) in out.items():
    assert set(stats) == {"entropy", "top1"} and stats["top1"].shape == (2,)
    np.testing.assert_allclose(np.asarray(stats["entropy"]), want["entropy"], rtol=1e-5, err_msg=implementation)
    np.testing.assert_array_equal(np.asarray(stats["top1"]), want["top1"])
    assert np.isfinite(float(value)) and float(value) == float(plain)
    for g, h in zip(grads, plain_grads):
      np.testing.assert_array_equal(np.asarray(g), np.asarray(h))
  with_sums = lens_loss(teacher_hidden, student_hidden, teacher_unembed, student_unembed, mask, tile=TILE,
                        return_pair_sums=True, token_statistics=_statistics)
  assert len(with_sums) == 3 and with_sums[1].shape == (2,) and set(with_sums[2]) == {"entropy", "top1"}


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_cross_entropy_in_the_sweep_equals_the_separate_terms(reduction):
  """lens_loss(labels=y, cross_entropy_weight=λ) = D + λ·CE (CE of the same student logits, float64 numpy and
  the separate jaxlens losses), values and student gradients, for both implementations; masked tokens hold NaN
  hidden rows and label −100; the returned pair sums stay the divergence alone and the CE sums come back."""
  from jaxlens.losses import linear_cross_entropy
  teacher_hidden, student_hidden, teacher_unembed, student_unembed, mask = make_inputs(2, seed=3)
  labels = jnp.where(mask, jnp.asarray(np.random.default_rng(4).integers(0, VOCAB, NUM_TOKENS)), -100)
  student_hidden = student_hidden.at[:, ~np.asarray(mask)].set(jnp.nan)
  lam = 0.7
  m = np.asarray(mask, np.float64)
  s_logits = np.einsum("pnd,dv->pnv", np.where(m[None, :, None] > 0, np.asarray(student_hidden, np.float64), 0),
                       np.asarray(student_unembed, np.float64))
  top = s_logits.max(-1)
  lse = top + np.log(np.exp(s_logits - top[..., None]).sum(-1))
  picked = np.take_along_axis(s_logits, np.maximum(np.asarray(labels), 0)[None, :, None], -1)[..., 0]
  want_ce = np.sum(np.where(m > 0, lse - picked, 0.0), -1)  # [P]

  @jax.jit
  def run(sh, sw):
    out = {}
    for implementation in ("reference", "tiled"):
      def fused(sh, sw):
        loss, pair_sums, stats = lens_loss(teacher_hidden, sh, teacher_unembed, sw, mask, divergence="jsd",
                                           tile=TILE, implementation=implementation, reduction=reduction,
                                           return_pair_sums=True, labels=labels, cross_entropy_weight=lam)
        return loss, (pair_sums, stats)

      def separate(sh, sw):
        divergence = lens_loss(teacher_hidden, sh, teacher_unembed, sw, mask, divergence="jsd", tile=TILE,
                               implementation=implementation, reduction="sum")
        ce = sum(linear_cross_entropy(sh[i], sw, labels, mask, reduction="sum", tile=TILE) for i in range(2))
        scale = 1.0 if reduction == "sum" else 1.0 / (2 * jnp.sum(mask))
        return scale * (divergence + lam * ce), divergence

      out[implementation] = (jax.value_and_grad(fused, argnums=(0, 1), has_aux=True)(sh, sw),
                             jax.value_and_grad(separate, argnums=(0, 1), has_aux=True)(sh, sw))
    return out

  for implementation, (((value, (pair_sums, stats)), grads), ((want, divergence), want_grads)) in \
      run(student_hidden, student_unembed).items():
    assert set(stats) == {"cross_entropy"}, implementation
    np.testing.assert_allclose(np.asarray(stats["cross_entropy"]), want_ce, rtol=1e-5, err_msg=implementation)
    np.testing.assert_allclose(float(jnp.sum(pair_sums)), float(divergence), rtol=1e-5, err_msg=implementation)
    assert_close(value, want)
    for g, w in zip(grads, want_grads):
      assert np.all(np.isfinite(np.asarray(g))), implementation
      assert_close(g, w)
    assert not np.any(np.asarray(grads[0])[:, ~np.asarray(mask)])  # masked (NaN) rows: exactly zero gradient


def test_cross_entropy_weight_zero_logs_without_training_on_it():
  inputs = make_inputs(1)
  labels = jnp.zeros((NUM_TOKENS,), jnp.int32)
  loss = lambda sh, **kw: lens_loss(inputs[0], sh, *inputs[2:], tile=TILE, reduction="sum", **kw)  # noqa: E731
  (value, stats), grad = jax.value_and_grad(lambda sh: loss(sh, labels=labels), has_aux=True)(inputs[1])
  plain, plain_grad = jax.value_and_grad(loss)(inputs[1])
  assert float(value) == float(plain) and float(stats["cross_entropy"][0]) > 0
  np.testing.assert_array_equal(np.asarray(grad), np.asarray(plain_grad))


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(cross_entropy_weight=0.5), ValueError, "needs labels"),
    (dict(labels=np.zeros(NUM_TOKENS, np.int32), cross_entropy_weight=-1.0), ValueError, "non-negative"),
    (dict(labels=np.zeros(NUM_TOKENS, np.int32), cross_entropy_weight=float("nan")), ValueError, "finite"),
    (dict(labels=np.zeros(NUM_TOKENS, np.int32), cross_entropy_weight=jnp.ones(())), TypeError, "Python number"),
    (dict(labels=np.zeros(NUM_TOKENS + 1, np.int32)), ValueError, "labels shape"),
    (dict(labels=np.zeros(NUM_TOKENS, np.float32)), TypeError, "integer"),
    (dict(labels=np.zeros(NUM_TOKENS, np.int32), token_statistics=lambda t, s: {"cross_entropy": t[:, 0]}),
     ValueError, "may not be named 'cross_entropy'"),
])
def test_bad_cross_entropy_inputs_raise(kwargs, error, message):
  with pytest.raises(error, match=message):
    lens_loss(*make_inputs(1), tile=TILE, **kwargs)


def test_token_statistics_are_refused_on_a_vocabulary_sharded_sweep():
  from jaxlens.losses.lens import TiledSpec
  with pytest.raises(ValueError, match="vocab_axis_name"):
    TiledSpec(per_token=None, vocab_size=8, tile=TILE, vocab_axis_name="model", token_statistics=_statistics)


def test_tad_runs_in_reference_and_is_refused_by_tiles():
  inputs = make_inputs(2)
  value = lens_loss(*inputs, divergence="tad", divergence_kwargs={"k": 5}, implementation="reference")
  assert np.isfinite(float(value)) and float(value) > 0
  with pytest.raises(ValueError, match="implementation='reference'"):
    lens_loss(*inputs, divergence="tad", tile=TILE)


@pytest.mark.parametrize("kwargs, message", [
    (dict(block_tokens=0), "block_tokens"),
    (dict(block_tokens=2.5), "block_tokens"),
    (dict(vocab_multiple=-128), "vocab_multiple"),
    (dict(compute_dtype=jnp.int32), "compute_dtype"),
])
def test_tile_config_validation(kwargs, message):
  with pytest.raises(ValueError, match=message):
    TileConfig(**kwargs)


def test_tile_config_is_hashable_and_canonical():
  assert hash(TileConfig(compute_dtype="bfloat16")) == hash(TileConfig(compute_dtype=jnp.bfloat16))


def _bad(**replace):
  teacher_hidden, student_hidden, teacher_unembed, student_unembed, mask = make_inputs(2, num_tokens=10)
  args = dict(teacher_hidden=teacher_hidden, student_hidden=student_hidden, teacher_unembed=teacher_unembed,
              student_unembed=student_unembed, mask=mask)
  kwargs = {k: replace.pop(k) for k in list(replace) if k not in args}
  args.update(replace)
  return args, kwargs


@pytest.mark.parametrize("replace, message", [
    (dict(student_hidden=jnp.zeros((3, 10, STUDENT_DIM))), r"\[P, N\]"),
    (dict(student_hidden=jnp.zeros((2, 11, STUDENT_DIM))), r"\[P, N\]"),
    (dict(student_unembed=jnp.zeros((STUDENT_DIM, VOCAB + 1))), "same vocabulary"),
    (dict(teacher_unembed=jnp.zeros((TEACHER_DIM + 1, VOCAB))), "teacher_unembed"),
    (dict(student_hidden=jnp.zeros((2, 10, STUDENT_DIM + 2))), "student_unembed"),
    (dict(mask=jnp.ones((11,))), "mask must have shape"),
    (dict(mask=jnp.ones((2, 10))), "mask must have shape"),
    (dict(layer_weights=jnp.ones((3,))), "layer_weights must have shape"),
    (dict(layer_weights=np.array([1.0, -1.0])), "non-negative"),
    (dict(layer_weights=np.array([0.0, 0.0])), "sum to 0"),
    (dict(reduction="none"), "reduction"),
    (dict(implementation="pallas"), "implementation"),
    (dict(divergence="kl"), "unknown divergence"),
    (dict(divergence_kwargs={"reduction": "sum"}), "may not set"),
    (dict(student_hidden=jnp.zeros((2, 10))), "rank 3"),
])
def test_bad_inputs_raise(replace, message):
  args, kwargs = _bad(**replace)
  with pytest.raises(ValueError, match=message):
    lens_loss(**args, **kwargs)


def test_integer_inputs_raise_type_error():
  args, _ = _bad(student_unembed=jnp.zeros((STUDENT_DIM, VOCAB), jnp.int32))
  with pytest.raises(TypeError, match="student_unembed"):
    lens_loss(**args)
