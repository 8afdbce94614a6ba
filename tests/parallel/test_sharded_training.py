"""The same 3 training steps on 1 device and on 8-device meshes (data × tensor, fsdp × tensor) agree."""

from __future__ import annotations

import os
import sys

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train"))
from train_fixtures import RANDOM_STUDENT  # noqa: E402
from train_fixtures import build  # noqa: E402
from train_fixtures import host  # noqa: E402
from train_fixtures import random_batch  # noqa: E402
from train_fixtures import tiny_config  # noqa: E402

from jaxlens.parallel import mesh as pmesh  # noqa: E402
from jaxlens.train.step import ModelParts  # noqa: E402
from jaxlens.train.step import make_train_step  # noqa: E402

STEPS = 3


def train_three_steps(mesh, **overrides):
  pieces = build(tiny_config(**RANDOM_STUDENT, **overrides), mesh)
  step = jax.jit(make_train_step(pieces.objective, ModelParts.of(pieces.student), ModelParts.of(pieces.teacher),
                                 pieces.optimizer, pieces.schedule, pieces.cfg.grad_accum), donate_argnums=0)
  state, losses = pieces.state, []
  for i in range(STEPS):
    local = random_batch(10 + i, 8, 12)
    batch = {k: jax.make_array_from_process_local_data(pmesh.batch_sharding(mesh), v) for k, v in local.items()}
    state, metrics = step(state, pieces.teacher_params, batch)
    losses.append(float(metrics["loss/total"]))
  return host(state["params"]), losses, state


@pytest.fixture(scope="module")
def single_device():
  return train_three_steps(pmesh.make_mesh(devices=jax.devices()[:1]), loss__alpha=0.5)


@pytest.mark.parametrize("shape", [(2, 1, 4), (1, 4, 2)], ids=["data2xtensor4", "fsdp4xtensor2"])
def test_mesh_matches_single_device(single_device, shape):
  assert jax.device_count() == 8
  mesh = pmesh.make_mesh(*shape)
  params, losses, state = train_three_steps(mesh, loss__alpha=0.5)
  want_params, want_losses, _ = single_device
  np.testing.assert_allclose(losses, want_losses, rtol=1e-5)
  for (path, got), want in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(want_params)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))
  # Parameters really are split: the embedding [V, D] over tensor (vocab) and fsdp (hidden).
  embed = state["params"]["student"]["embed"]
  assert embed.addressable_shards[0].data.shape == (256 // shape[2], 32 // shape[1])
