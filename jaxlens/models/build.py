"""Construct a model of any supported family from its :class:`~jaxlens.models.config.ModelConfig`."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlens.models.base import CausalLM
from jaxlens.models.config import ModelConfig
from jaxlens.models.gpt2 import GPT2
from jaxlens.models.layers import RematPolicy
from jaxlens.models.llama import Llama

MODEL_CLASSES: dict[str, type[CausalLM]] = {"gpt2": GPT2, "llama": Llama}


def build_model(cfg: ModelConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32,
                remat: bool | RematPolicy = False) -> CausalLM:
  """A randomly initialised :class:`GPT2` or :class:`Llama` for ``cfg.family``.

  Args:
    cfg: the architecture.
    rngs: random streams (``rngs.params()`` draws the weights).
    dtype: compute dtype (e.g. ``jnp.bfloat16``); norms and softmax stay float32.
    param_dtype: parameter storage dtype (e.g. float32 master weights with bf16 compute).
    remat: block rematerialisation: False/"none", True/"block", or "dots" (keep matmul outputs).

  Returns:
    The model (an ``nnx.Module``); wrap in ``nnx.eval_shape`` to get only shapes.
  """
  return MODEL_CLASSES[cfg.family](cfg, rngs=rngs, dtype=dtype, param_dtype=param_dtype, remat=remat)


def num_params(model: CausalLM) -> int:
  """How many parameters ``model`` holds (also for an abstract ``nnx.eval_shape`` model)."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
