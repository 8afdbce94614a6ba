"""AdamW with the reference decay mask, schedules and clipping, against PyTorch (the reference's optimizer)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from jaxlens.run.config import OptimConfig
from jaxlens.train.optimizer import decay_mask
from jaxlens.train.optimizer import learning_rate_schedule
from jaxlens.train.optimizer import make_optimizer


def test_cosine_without_warmup_is_torch_cosine_annealing():
  cfg = OptimConfig(lr=2e-4, lr_min=1e-7, schedule="cosine", warmup_steps=0)
  schedule = learning_rate_schedule(cfg, 100)
  for t in (0, 1, 37, 99, 100):
    want = 1e-7 + (2e-4 - 1e-7) * (1 + math.cos(math.pi * t / 100)) / 2  # CosineAnnealingLR(T_max, eta_min)
    np.testing.assert_allclose(float(schedule(t)), want, rtol=1e-5, atol=1e-10)


def test_warmup_then_linear_decay():
  schedule = learning_rate_schedule(OptimConfig(lr=1e-3, lr_min=0.0, schedule="linear", warmup_steps=10), 110)
  np.testing.assert_allclose([float(schedule(t)) for t in (0, 5, 10, 60, 110)], [0, 5e-4, 1e-3, 5e-4, 0],
                             atol=1e-9)
  with pytest.raises(ValueError, match="warmup_steps=10 must be < steps=10"):
    learning_rate_schedule(OptimConfig(warmup_steps=10), 10)


def test_reference_decay_mask():
  params = {"blocks": {0: {"attn": {"q": 1, "q_bias": 1}, "attn_norm": {"scale": 1, "bias": 1},
                           "mlp": {"up": 1}}},
            "embed": 1, "norm": {"scale": 1}}
  gpt2 = decay_mask(params, "gpt2", "reference")
  llama = decay_mask(params, "llama", "reference")
  assert gpt2["blocks"][0]["attn"] == {"q": True, "q_bias": False}
  assert gpt2["blocks"][0]["attn_norm"] == {"scale": False, "bias": False} and gpt2["norm"]["scale"] is False
  assert llama["blocks"][0]["attn_norm"] == {"scale": True, "bias": False} and llama["norm"]["scale"] is True
  assert gpt2["embed"] and llama["embed"] and gpt2["blocks"][0]["mlp"]["up"]
  assert not any(np.ravel(list(map(bool, __import__("jax").tree.leaves(decay_mask(params, "llama", "none"))))))


def test_adamw_clipping_and_mask_match_torch():
  rng = np.random.default_rng(0)
  w, b = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
  grads = [(rng.standard_normal((3, 4)).astype(np.float32) * 3, rng.standard_normal(4).astype(np.float32))
           for _ in range(3)]
  cfg = OptimConfig(lr=1e-2, lr_min=1e-4, schedule="cosine", weight_decay=0.1, clip_norm=1.0)
  tx = make_optimizer(cfg, 3, "gpt2")
  params = {"mlp": {"up": jnp.asarray(w), "up_bias": jnp.asarray(b)}}
  state = tx.init(params)

  tw, tb = torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)
  opt = torch.optim.AdamW([{"params": [tw], "weight_decay": 0.1}, {"params": [tb], "weight_decay": 0.0}], lr=1e-2,
                          betas=(0.9, 0.999), eps=1e-8)
  sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3, eta_min=1e-4)
  for gw, gb in grads:
    updates, state = tx.update({"mlp": {"up": jnp.asarray(gw), "up_bias": jnp.asarray(gb)}}, state, params)
    params = optax.apply_updates(params, updates)
    tw.grad, tb.grad = torch.tensor(gw), torch.tensor(gb)
    torch.nn.utils.clip_grad_norm_([tw, tb], 1.0)
    opt.step()
    sched.step()
  np.testing.assert_allclose(np.asarray(params["mlp"]["up"]), tw.detach().numpy(), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(params["mlp"]["up_bias"]), tb.detach().numpy(), rtol=1e-5, atol=1e-6)
