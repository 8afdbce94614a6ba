"""The training state: what it holds, where each part lives on the mesh, and how step 0 is built.

.. code-block:: text

   state = {"params":    {"student": <nnx pure dict>, ["projection": [D_T, D_S] (feature-MSE only)]},
            "opt_state": <optax state of params>,
            "step":      int32 [],
            "rng":       uint32 [2] (key data),
            "guard":     {"skipped_steps", "nonfinite_streak", "max_nonfinite_streak"}: int32 []}

(``guard``: the divergence guard's counters, :mod:`jaxlens.train.step`; never checkpointed.)

This module is the one place that decides the training state's shardings: each model parameter by the model's
logical axes (:func:`jaxlens.models.param_shardings`), each optimizer moment like the parameter it follows, and
everything else (the projection, step counters, RNG) replicated. The trainer builds the state with arrays and the
planner the same tree abstractly (:func:`initial_state` with ``abstract=True``), so what is planned is what is
trained. Explicit output shardings also make the first step's input shardings equal its outputs', so the train
step compiles once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxlens import models
from jaxlens.parallel import mesh as pmesh
from jaxlens.run.config import TrainConfig
from jaxlens.train.step import initial_guard


def _initial_params(cfg: TrainConfig, widths: tuple[int, int], student_params) -> dict:
  """The trainable parameters: the student's and (feature-MSE only) the projection ``N(0, 1/D_T)``."""
  params = {"student": student_params}
  if cfg.loss.feature_mse_weight > 0:
    teacher_width, student_width = widths
    init = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 1), (teacher_width, student_width),
                             jnp.float32)
    params["projection"] = init / np.sqrt(teacher_width)
  return params


def _initial_rest(cfg: TrainConfig, optimizer: optax.GradientTransformation, params) -> dict:
  """The rest of the step-0 state: the optimizer state of ``params``, the step counter, the RNG key and the
  divergence-guard counters."""
  return {"opt_state": optimizer.init(params), "step": jnp.zeros((), jnp.int32),
          "rng": jax.random.key_data(jax.random.PRNGKey(cfg.seed)), "guard": initial_guard()}


def state_shardings(state, student_shardings, optimizer: optax.GradientTransformation, mesh) -> dict:
  """The sharding of every leaf of ``state`` (arrays or ``jax.ShapeDtypeStruct`` s, see the module docstring).

  Args:
    state: the training state or its shapes.
    student_shardings: the student parameters' shardings (:func:`jaxlens.models.param_shardings`).
    optimizer: the optimizer whose state ``state["opt_state"]`` is.
    mesh: the device mesh.
  """
  replicated = pmesh.replicated(mesh)
  params = {"student": student_shardings}
  if "projection" in state["params"]:
    params["projection"] = replicated
  opt_state = optax.tree_utils.tree_map_params(optimizer, lambda _, sharding: sharding, state["opt_state"], params,
                                               transform_non_params=lambda _: replicated,
                                               is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
  out = {"params": params, "opt_state": opt_state, "step": replicated, "rng": replicated}
  if "guard" in state:
    out["guard"] = jax.tree.map(lambda _: replicated, state["guard"])
  return out


def _with_shardings(shapes, shardings):
  """``jax.ShapeDtypeStruct`` s of ``shapes`` carrying ``shardings`` (abstract, placed values)."""
  return jax.tree.map(lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes,
                      shardings)


def initial_state(cfg: TrainConfig, student: models.CausalLM, teacher: models.CausalLM, mesh,
                  optimizer: optax.GradientTransformation, *, abstract: bool = False) -> tuple[dict, Any]:
  """The sharded step-0 training state and the sharded (frozen) teacher parameters.

  Args:
    cfg: the training config (``seed``, ``loss.feature_mse_weight``).
    student, teacher: the models (concrete, or from ``nnx.eval_shape`` when ``abstract``).
    mesh: the device mesh.
    optimizer: from :func:`jaxlens.train.optimizer.make_optimizer`.
    abstract: return ``jax.ShapeDtypeStruct`` s with the shardings instead of arrays (nothing materialised).

  Returns:
    ``(state, teacher_params)``.
  """
  student_params = nnx.to_pure_dict(nnx.state(student, nnx.Param))
  teacher_params = nnx.to_pure_dict(nnx.state(teacher, nnx.Param))
  student_shardings = models.param_shardings(student, mesh)
  teacher_shardings = models.param_shardings(teacher, mesh)
  make_params = functools.partial(_initial_params, cfg, (teacher.config.hidden_size, student.config.hidden_size))
  make_rest = functools.partial(_initial_rest, cfg, optimizer)
  param_shapes = jax.eval_shape(make_params, student_params)
  shapes = {"params": param_shapes, **jax.eval_shape(make_rest, param_shapes)}
  shardings = state_shardings(shapes, student_shardings, optimizer, mesh)
  if abstract:
    return _with_shardings(shapes, shardings), _with_shardings(teacher_params, teacher_shardings)
  params = jax.device_put(make_params(student_params), shardings["params"])
  rest = jax.jit(make_rest, out_shardings={k: v for k, v in shardings.items() if k != "params"})(params)
  return {"params": params, **rest}, jax.device_put(teacher_params, teacher_shardings)


def jit_step(step: Callable, state, mesh) -> Callable:
  """``step(state, teacher_params, batch) -> (state, metrics)`` jitted with ``state`` donated and the new state
  pinned to ``state``'s shardings (metrics replicated), so every step runs on the step-0 layout."""
  return jax.jit(step, donate_argnums=0,
                 out_shardings=(jax.tree.map(lambda x: x.sharding, state), pmesh.replicated(mesh)))
