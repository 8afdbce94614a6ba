"""Tiny models, configs and batches shared by the training and parallelism tests (seeded, a few KB each)."""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from jaxlens.run import config as tconfig
from jaxlens.train import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCAB = 256

# A 4-block random teacher and a 2-block student of its blocks 0 and 2; vocabulary and widths divisible by
# 2 and 4 so every mesh of the tests can shard them.
TINY = {"teacher.source": "random", "teacher.vocab_size": VOCAB, "teacher.hidden_size": 32,
        "teacher.num_layers": 4, "teacher.num_heads": 4, "teacher.num_kv_heads": 2, "teacher.head_dim": 8,
        "teacher.intermediate_size": 64, "teacher.seed": 0, "student.source": "teacher_layers",
        "student.every": 2, "loss.num_lens_pairs": 2, "loss.block_tokens": 16, "optim.lr": 1e-2,
        "steps": 3, "batch_size": 8, "optim.warmup_steps": 1}

# A random 2-block student (seed 1) of the same widths: far from the teacher, so every divergence is O(1).
RANDOM_STUDENT = {"student__source": "random", "student__vocab_size": VOCAB, "student__hidden_size": 32,
                  "student__num_layers": 2, "student__num_heads": 4, "student__num_kv_heads": 2,
                  "student__head_dim": 8, "student__intermediate_size": 64, "student__seed": 1}


def tiny_config(**overrides) -> tconfig.TrainConfig:
  """The tiny config with ``key=value`` overrides (dotted keys as keyword names with ``__``)."""
  values = dict(TINY)
  values.update({k.replace("__", "."): v for k, v in overrides.items()})
  return tconfig.build_config(tconfig.TrainConfig, values)


def random_batch(seed: int, batch: int, seq: int, vocab: int = VOCAB, lengths=None) -> dict:
  """A right-padded batch with per-row prompt/response lengths (so rows carry unequal token counts)."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, vocab, (batch, seq)).astype(np.int32)
  lengths = rng.integers(seq // 3, seq + 1, batch) if lengths is None else np.asarray(lengths)
  prompt = np.maximum(1, lengths // 3)
  t = np.arange(seq)[None, :]
  attention = (t < lengths[:, None]).astype(np.int32)
  loss_mask = ((t >= prompt[:, None] - 1) & (t < lengths[:, None] - 1)).astype(np.float32)
  return {"input_ids": ids, "attention_mask": attention, "positions": (t * attention).astype(np.int32),
          "loss_mask": loss_mask, "labels": np.roll(ids, -1, axis=1)}


@dataclasses.dataclass
class Pieces:
  """Everything the step needs for a config on a mesh."""

  cfg: tconfig.TrainConfig
  teacher: object
  student: object
  objective: object
  optimizer: object
  schedule: object
  state: dict
  teacher_params: object


def sharpen(model, scale: float) -> None:
  """Multiply the (tied) embedding by ``scale`` in place: logits with std ~2-3 instead of ~0.1, so every
  divergence is O(1) and comparisons are not dominated by float32 rounding of near-zero values."""
  model.embed[...] = model.embed[...] * scale


def build(cfg: tconfig.TrainConfig, mesh, embed_scale: float = 30.0) -> Pieces:
  """Models, objective, optimizer and the sharded step-0 state of ``cfg`` on ``mesh`` (the trainer's own code)."""
  from jaxlens.train.objective import Objective
  from jaxlens.train.objective import resolve_layer_pairs
  from jaxlens.train.optimizer import learning_rate_schedule
  from jaxlens.train.optimizer import make_optimizer
  from jaxlens.train.state import initial_state
  teacher, student = trainer.build_models(cfg)
  sharpen(teacher, embed_scale)
  sharpen(student, embed_scale)
  objective = Objective(cfg.loss, resolve_layer_pairs(cfg.loss, teacher.config.num_layers,
                                                      student.config.num_layers))
  optimizer = make_optimizer(cfg.optim, cfg.steps, student.config.family)
  state, teacher_params = initial_state(cfg, student, teacher, mesh, optimizer)
  return Pieces(cfg, teacher, student, objective, optimizer, learning_rate_schedule(cfg.optim, cfg.steps), state,
                teacher_params)


def host(tree):
  """A pytree of numpy copies (gathers sharded arrays)."""
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)
