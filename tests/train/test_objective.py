"""One training step's loss and gradients against a hand-composed reference with materialised logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.extend import core as jax_core
from train_fixtures import RANDOM_STUDENT
from train_fixtures import build
from train_fixtures import host
from train_fixtures import random_batch
from train_fixtures import tiny_config

from jaxlens import losses
from jaxlens.parallel.mesh import make_mesh
from jaxlens.train.objective import reference_bug_masks
from jaxlens.train.step import ModelParts
from jaxlens.train.step import accumulate
from jaxlens.train.step import make_train_step

CASES = {
    # DistillLens with some CE: RKL output + JSD lens on the raw residual stream.
    "llama-rkl-jsd": dict(loss__alpha=0.6, loss__output_divergence="reverse_kl", loss__lens_weight=0.7),
    # GPT-2, two output divergences summed (FKL and a 0.3/0.7 FKL/RKL mixture), normed lens with skew-KL,
    # learned feature-MSE projection.
    "gpt2-fkl+mix-normed-mse": dict(teacher__family="gpt2", teacher__num_kv_heads=4, loss__alpha=0.3,
                                    loss__output_divergence="forward_kl+mix", loss__mix_weight=0.3,
                                    loss__lens_norm=True,
                                    loss__lens_divergence="skew_kl", loss__skew=0.3,
                                    loss__feature_mse_weight=0.5, loss__implementation="reference"),
    # AKL-r output (swapped weights), reference implementation of the kernel, the reference code's lens-mask bug;
    # 40-token blocks, so the logged head weight is summed over ragged blocks (96 = 2 x 40 + 16 tokens).
    "llama-aklr-bugmask": dict(loss__alpha=1.0, loss__output_divergence="adaptive_kl", loss__head_rule="paper",
                               loss__akl_swap=True, loss__implementation="reference", loss__reference_mask_bug=True,
                               loss__block_tokens=40),
}


def reference_loss(pieces, params, batch):
  """(1−α)·CE + α·(Σ D_out + λ·mean_i D_lens,i + μ·MSE), each a masked token mean of materialised logits;
  with the CE and output means as aux."""
  cfg = pieces.cfg.loss
  teacher = pieces.teacher
  student = ModelParts.of(pieces.student).merge(params["student"])
  kw = dict(attention_mask=batch["attention_mask"], positions=batch["positions"])
  t_out, s_out = teacher(batch["input_ids"], **kw), student(batch["input_ids"], **kw)
  t_hs = [jax.lax.stop_gradient(h) for h in t_out.hidden_states]
  mask = batch["loss_mask"]
  wt, ws = jax.lax.stop_gradient(teacher.unembedding()), student.unembedding()
  kwargs = lambda name: {"forward_kl": {}, "reverse_kl": {}, "jsd": dict(beta=cfg.beta),  # noqa: E731
                         "skew_kl": dict(alpha=cfg.skew), "mix": dict(weight=cfg.mix_weight),
                         "adaptive_kl": dict(mu=cfg.mu, head_rule=cfg.head_rule, swap_weights=cfg.akl_swap)}[name]
  ce = losses.cross_entropy(s_out.logits, batch["labels"], mask)
  output = sum(losses.get_divergence(n)(t_hs[-1] @ wt, s_out.hidden_states[-1] @ ws, mask, **kwargs(n))
               for n in cfg.output_divergence.split("+"))
  pairs = list(zip(pieces.objective.pairs.teacher_layers, pieces.objective.pairs.student_layers))
  lens_terms = []
  for i, (t, s) in enumerate(pairs):
    th, sh = t_hs[t], s_out.hidden_states[s]
    if cfg.lens_norm:
      th, sh = teacher.final_norm(th), student.final_norm(sh)
    per_token = losses.get_divergence(cfg.lens_divergence)(th @ wt, sh @ ws, reduction="none",
                                                           **kwargs(cfg.lens_divergence))
    if cfg.reference_mask_bug:
      # The released code: rows b·P + i use mask row (b·P + i) mod B; denominator P·N_tok.
      b = mask.shape[0]
      rows = (np.arange(b) * len(pairs) + i) % b
      lens_terms.append(jnp.sum(per_token * mask[rows]) / jnp.sum(mask))
    else:
      lens_terms.append(jnp.sum(per_token * mask) / jnp.sum(mask))
  lens = sum(lens_terms) / len(pairs)
  mse = 0.0
  if cfg.feature_mse_weight:
    mse = sum(jnp.sum(jnp.mean((t_hs[t] @ params["projection"] - s_out.hidden_states[s]) ** 2, -1) * mask)
              / jnp.sum(mask) for t, s in pairs) / len(pairs)
  total = (1 - cfg.alpha) * ce + cfg.alpha * (output + cfg.lens_weight * lens + cfg.feature_mse_weight * mse)
  return total, {"ce": ce, "output": output}


@pytest.mark.parametrize("case", sorted(CASES))
def test_step_loss_and_gradients_match_hand_composed_reference(case):
  pieces = build(tiny_config(**CASES[case]), make_mesh(devices=jax.devices()[:1]))
  batch = {k: jnp.asarray(v) for k, v in random_batch(0, 8, 12).items()}
  params = pieces.state["params"]
  (want_loss, want_terms), want_grads = jax.value_and_grad(lambda p: reference_loss(pieces, p, batch),
                                                           has_aux=True)(params)

  parts = ModelParts.of(pieces.student), ModelParts.of(pieces.teacher)
  grad_sums, sums = jax.jit(lambda p: accumulate(pieces.objective, *parts, p, pieces.teacher_params, batch, 1))(params)
  count = float(sums["count"])
  assert count == float(batch["loss_mask"].sum())
  np.testing.assert_allclose(float(sums["total"]) / count, float(want_loss), rtol=2e-5)
  for term in ("output", "ce") if pieces.objective.uses_ce else ("output",):  # logged terms, CE fused or not
    np.testing.assert_allclose(float(sums[term]) / count, float(want_terms[term]), rtol=2e-5, atol=1e-8,
                               err_msg=term)  # atol: a near-zero divergence (float32 sums of ~1e-5 nats)
  got, want = host(jax.tree.map(lambda g: g / count, grad_sums)), host(want_grads)
  for (path, g), w in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=2e-4, atol=2e-7, err_msg=jax.tree_util.keystr(path))

  if pieces.cfg.loss.output_divergence == "adaptive_kl":  # the logged head weight: mean and histogram
    teacher, student = pieces.teacher, ModelParts.of(pieces.student).merge(params["student"])
    kw = dict(attention_mask=batch["attention_mask"], positions=batch["positions"])
    w = losses.adaptive_kl_head_weight(teacher(batch["input_ids"], **kw).logits,
                                       student(batch["input_ids"], **kw).logits, head_rule="paper")
    mask = np.asarray(batch["loss_mask"], np.float64)
    np.testing.assert_allclose(float(sums["akl_head_weight"]) / count, np.sum(np.asarray(w) * mask) / count,
                               rtol=1e-5)
    hist = [float(sums[f"akl_head_weight_bin_{k}"]) for k in range(10)]
    assert sum(hist) == count
    assert hist[int(np.floor(np.asarray(w)[mask > 0][0] * 10))] >= 1
  if case != "llama-rkl-jsd":
    return  # the full step is compiled once (it is slow to compile on CPU); its parts are checked above
  # The full step reports the same loss and the pre-clipping gradient norm, and applies AdamW to those grads.
  step = jax.jit(make_train_step(pieces.objective, *parts, pieces.optimizer, pieces.schedule, 1))
  new_state, metrics = step(pieces.state, pieces.teacher_params, batch)
  np.testing.assert_allclose(float(metrics["loss/total"]), float(want_loss), rtol=2e-5)
  np.testing.assert_allclose(float(metrics["loss/ce"]), float(want_terms["ce"]), rtol=2e-5)
  np.testing.assert_allclose(float(metrics["grad_norm"]), float(optax.tree.norm(want_grads)), rtol=1e-4)
  updates, _ = pieces.optimizer.update(want_grads, pieces.state["opt_state"], params)
  expected = optax.apply_updates(params, updates)
  for g, w in zip(jax.tree.leaves(host(new_state["params"])), jax.tree.leaves(host(expected))):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)
  assert int(new_state["step"]) == 1


def test_reference_bug_masks_follow_the_released_index_arithmetic():
  b, p, t = 4, 5, 3
  mask = np.arange(b * t, dtype=np.float32).reshape(b, t)
  # torch: lens rows are stack(dim=1).view(B*P) -> row r = (sample r // P, pair r % P);
  # M.repeat(P, 1) gives row r the mask of sample r % B.
  want = np.zeros((p, b, t), np.float32)
  for r in range(b * p):
    want[r % p, r // p] = mask[r % b]
  got = np.asarray(reference_bug_masks(jnp.asarray(mask), p))
  np.testing.assert_array_equal(got, want)
  wrong_rows = sum(not np.array_equal(want[r % p, r // p], mask[r // p]) for r in range(b * p))
  assert wrong_rows == 12  # distilllens.md §1.5: 12 of the 20 rows get another sample's mask
  assert got.sum() == p * mask.sum()  # the denominator P·N_tok is unchanged


def test_bfloat16_compute_keeps_float32_master_weights():
  mesh = make_mesh(devices=jax.devices()[:1])
  batch = {k: jnp.asarray(v) for k, v in random_batch(3, 4, 12).items()}
  sums = {}
  for compute in ("float32", "bfloat16"):
    pieces = build(tiny_config(precision__compute=compute, precision__teacher_params=compute,
                               loss__implementation="reference", **RANDOM_STUDENT), mesh)
    assert {x.dtype for x in jax.tree.leaves(pieces.state["params"])} == {jnp.dtype("float32")}
    parts = ModelParts.of(pieces.student), ModelParts.of(pieces.teacher)
    grads, sums[compute] = jax.jit(lambda p, pieces=pieces, parts=parts: accumulate(
        pieces.objective, *parts, p, pieces.teacher_params, batch, 1))(pieces.state["params"])
    assert {x.dtype for x in jax.tree.leaves(grads)} == {jnp.dtype("float32")}
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
  assert {x.dtype for x in jax.tree.leaves(pieces.teacher_params)} == {jnp.dtype("bfloat16")}
  np.testing.assert_allclose(float(sums["bfloat16"]["total"]), float(sums["float32"]["total"]), rtol=0.05)


def scans(jaxpr) -> int:
  """The ``scan`` loops in ``jaxpr`` and all its sub-jaxprs (each tiled kernel sweep over V is one)."""
  return sum((eqn.primitive.name == "scan") + sum(scans(sub) for sub in jax_core.jaxprs_in_params(eqn.params))
             for eqn in jaxpr.eqns)


def test_cross_entropy_rides_in_the_output_sweep():
  """With 0 < α < 1 the CE adds no sweep over the student's unembedding: it is computed from the output term's
  tiles. Sweeps of the differentiated objective: α = 1 output + lens; α = 0.5 the same; α = 0 the CE's alone."""
  batch = {k: jnp.asarray(v) for k, v in random_batch(0, 8, 12).items()}

  def sweeps(alpha):
    pieces = build(tiny_config(loss__alpha=alpha), make_mesh(devices=jax.devices()[:1]))
    parts = ModelParts.of(pieces.student), ModelParts.of(pieces.teacher)
    fn = lambda p: accumulate(pieces.objective, *parts, p, pieces.teacher_params, batch, 1)  # noqa: E731
    return scans(jax.make_jaxpr(fn)(pieces.state["params"]).jaxpr)

  distill, both, ce_only = sweeps(1.0), sweeps(0.5), sweeps(0.0)
  assert both == distill and ce_only == distill - 1, (distill, both, ce_only)
