"""Token-weighted gradient accumulation: k micro-batches with unequal token counts == one large batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from train_fixtures import RANDOM_STUDENT
from train_fixtures import build
from train_fixtures import host
from train_fixtures import random_batch
from train_fixtures import tiny_config

from jaxlens.parallel.mesh import make_mesh
from jaxlens.train.step import ModelParts
from jaxlens.train.step import accumulate
from jaxlens.train.step import micro_batches


def test_accumulated_gradients_equal_the_large_batch_gradients():
  # loss.alpha < 1 exercises every term's normalisation: CE, output divergence and the lens pairs.
  cfg = tiny_config(loss__alpha=0.5, loss__implementation="reference", **RANDOM_STUDENT)
  pieces = build(cfg, make_mesh(devices=jax.devices()[:1]))
  lengths = np.array([12, 4, 11, 5, 12, 7, 3, 9])  # micro-batches of rows {j, j+4}: 16, 11, 14, 14 tokens
  batch = {k: jnp.asarray(v) for k, v in random_batch(1, 8, 12, lengths=lengths).items()}
  counts = np.asarray(micro_batches(batch, 4)["loss_mask"].sum(axis=(1, 2)))
  assert len(set(counts.tolist())) > 2, counts  # unequal token counts per micro-batch

  parts = ModelParts.of(pieces.student), ModelParts.of(pieces.teacher)
  params = pieces.state["params"]
  def run(k):
    return jax.jit(lambda p: accumulate(pieces.objective, *parts, p, pieces.teacher_params, batch, k))(params)
  (g1, s1), (g4, s4) = run(1), run(4)
  # Exact arithmetic; the tolerances only absorb float32 summation order (different block sums).
  for key in s1:
    np.testing.assert_allclose(float(s4[key]), float(s1[key]), rtol=2e-5, err_msg=key)
  mean1 = host(jax.tree.map(lambda g: g / s1["count"], g1))
  mean4 = host(jax.tree.map(lambda g: g / s4["count"], g4))
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(mean4)[0], jax.tree.leaves(mean1)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))

