"""One jitted optimizer step: teacher and student forwards, token-weighted gradient accumulation, AdamW.

The training state is a pytree of arrays::

  {"params": {"student": <nnx pure dict, fp32>, ["projection": [D_T, D_S]]},
   "opt_state": <optax state>, "step": int32 [], "rng": uint32 [2],
   ["guard": {"skipped_steps", "nonfinite_streak", "max_nonfinite_streak"}: int32 []]}

**Divergence guard** (like ``optax.apply_if_finite``, inside the step: no host synchronisation): an update is
applied only if the loss, every gradient and the resulting parameters and optimizer state are finite;
otherwise parameters and optimizer state stay as they were (``step`` and ``rng`` still advance: the batch is
consumed). The optional ``guard`` counters (:func:`initial_guard`) count skipped steps, the current run of
consecutive skipped steps and its maximum; they are returned as metrics, so the loop reads them only when it
logs or saves and stops a run whose maximum reaches its limit.

``rng`` is the run's key (from ``seed``), advanced by ``fold_in`` every step and checkpointed, so a stochastic
component (e.g. dropout) would resume exactly; the jaxlens models have no dropout, so nothing draws from it yet.

The frozen teacher is an argument of the step (its weights sharded like the student's), never part of the
optimizer state; every teacher output is ``stop_gradient``.

A global batch ``[B, T]`` is split into ``k = grad_accum`` micro-batches (micro-batch j holds rows
``j, j + k, j + 2k, …``, so every data shard keeps its own rows). For micro-batch j the objective returns the
token-weighted sums S_j (loss numerator) and N_j (response tokens); the step applies

.. math::

   g = \\frac{\\sum_j \\nabla_\\theta S_j}{\\max(\\sum_j N_j, 1)}, \\qquad
   \\mathcal L = \\frac{\\sum_j S_j}{\\max(\\sum_j N_j, 1)}

which is exactly the gradient of the large-batch token mean, however tokens fall into micro-batches or hosts
(the sums run over the *global* batch inside one SPMD program).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxlens.data import BATCH_KEYS
from jaxlens.train.objective import Objective
from jaxlens.train.objective import normalise

GUARD_KEYS = ("skipped_steps", "nonfinite_streak", "max_nonfinite_streak")


def initial_guard() -> dict[str, jax.Array]:
  """Zeroed divergence-guard counters (the ``guard`` entry of the training state)."""
  return {k: jnp.zeros((), jnp.int32) for k in GUARD_KEYS}


def all_finite(tree) -> jax.Array:
  """Whether every floating-point leaf of ``tree`` is free of NaN and ±inf (a scalar bool)."""
  flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(flags)) if flags else jnp.bool_(True)


def guarded(ok: jax.Array, new, old):
  """``new`` where ``ok`` else ``old``, leaf by leaf (an exact select: no arithmetic on either)."""
  return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


@dataclasses.dataclass(frozen=True)
class ModelParts:
  """A model split for functional use: ``graphdef``, a template of its ``nnx.Param`` state, the other state."""

  graphdef: Any
  template: Any
  rest: Any

  @classmethod
  def of(cls, model: nnx.Module) -> ModelParts:
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return cls(graphdef, params, rest)

  def merge(self, pure_params) -> nnx.Module:
    """The module with ``pure_params`` (an nnx pure dict) as its parameters (traceable)."""
    state = jax.tree.map(lambda x: x, self.template)
    nnx.replace_by_pure_dict(state, pure_params)
    return nnx.merge(self.graphdef, state, self.rest)


def micro_batches(batch: dict, k: int) -> dict:
  """``[B, ...]`` → ``[k, B/k, ...]`` with micro-batch j = rows ``j, j+k, …`` (shard-local under data sharding)."""
  def split(x):
    b = x.shape[0]
    if b % k:
      raise ValueError(f"batch of {b} rows is not divisible into grad_accum={k} micro-batches")
    return jnp.swapaxes(x.reshape(b // k, k, *x.shape[1:]), 0, 1)
  return {key: split(batch[key]) for key in BATCH_KEYS}


def batch_sums(objective: Objective, student: ModelParts, teacher: ModelParts, params, teacher_params,
               batch: dict) -> tuple[jax.Array, dict]:
  """``(total_sum, sums)`` of one (micro-)batch: both forwards and :meth:`Objective.sums`."""
  teacher_model = teacher.merge(teacher_params)
  student_model = student.merge(params["student"])
  inputs = dict(attention_mask=batch["attention_mask"], positions=batch["positions"])
  t_out = teacher_model(batch["input_ids"], **inputs, return_logits=False)
  s_out = student_model(batch["input_ids"], **inputs, return_logits=False)
  sums = objective.sums(t_out.hidden_states, s_out.hidden_states, teacher_model.unembedding(),
                        student_model.unembedding(), batch,
                        teacher_norm=teacher_model.final_norm, student_norm=student_model.final_norm,
                        projection=params.get("projection"))
  return sums["total"], sums


def accumulate(objective: Objective, student: ModelParts, teacher: ModelParts, params, teacher_params,
               batch: dict, grad_accum: int, with_grads: bool = True) -> tuple[Any, dict]:
  """Gradient and metric *sums* over ``grad_accum`` micro-batches (a ``lax.scan``; gradients in float32).

  Returns:
    ``(grad_sums or None, sums)``; divide by ``max(sums["count"], 1)`` for means.
  """
  micro = micro_batches(batch, grad_accum)
  fn = lambda p, b: batch_sums(objective, student, teacher, p, teacher_params, b)  # noqa: E731
  first = jax.tree.map(lambda x: x[0], micro)
  shapes = jax.eval_shape(fn, params, first)[1]
  zero_sums = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), shapes)

  def body(carry, mb):
    grads_acc, sums_acc = carry
    if with_grads:
      grads, sums = jax.grad(fn, has_aux=True)(params, mb)
      grads_acc = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), grads_acc, grads)
    else:
      sums = fn(params, mb)[1]
    return (grads_acc, jax.tree.map(jnp.add, sums_acc, sums)), None

  zero_grads = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params) if with_grads else None
  (grads, sums), _ = jax.lax.scan(body, (zero_grads, zero_sums), micro)
  return grads, sums


def make_train_step(objective: Objective, student: ModelParts, teacher: ModelParts,
                    optimizer: optax.GradientTransformation, schedule: optax.Schedule,
                    grad_accum: int) -> Callable:
  """The (un-jitted) step ``(state, teacher_params, batch) -> (state, metrics)``.

  Metrics (float32 scalars, token means over the global batch): ``loss/total``, ``loss/ce``, ``loss/output``,
  ``loss/lens``, ``loss/mse``, ``lens/pair_<i>`` (each pair's token-mean divergence), with AKL at the output
  ``akl/head_weight`` (mean per-token forward-KL weight) and ``akl/head_weight_hist_<k>`` (share of tokens
  with weight in [k/10, (k+1)/10)), ``grad_norm`` (before
  clipping), ``lr`` (of this update), ``tokens`` (response tokens in the batch); with a ``guard`` in the state,
  its counters :data:`GUARD_KEYS` after this step. A non-finite update is not applied (module docstring).
  """
  def step(state, teacher_params, batch):
    grad_sums, sums = accumulate(objective, student, teacher, state["params"], teacher_params, batch, grad_accum)
    count = jnp.maximum(sums["count"], 1.0)
    grads = jax.tree.map(lambda g: g / count, grad_sums)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    ok = all_finite((sums["total"], grads, params, opt_state))
    new_state = {"params": guarded(ok, params, state["params"]),
                 "opt_state": guarded(ok, opt_state, state["opt_state"]), "step": state["step"] + 1,
                 "rng": jax.random.key_data(jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), 1))}
    metrics = metric_dict(normalise(sums))
    metrics["grad_norm"] = optax.tree.norm(grads)
    metrics["lr"] = jnp.asarray(schedule(state["step"]), jnp.float32)
    if "guard" in state:
      guard = state["guard"]
      streak = jnp.where(ok, 0, guard["nonfinite_streak"] + 1)
      new_state["guard"] = {"skipped_steps": guard["skipped_steps"] + (~ok).astype(jnp.int32),
                            "nonfinite_streak": streak,
                            "max_nonfinite_streak": jnp.maximum(guard["max_nonfinite_streak"], streak)}
      metrics.update(new_state["guard"])
    return new_state, metrics
  return step


def make_eval_sums(objective: Objective, student: ModelParts, teacher: ModelParts, grad_accum: int) -> Callable:
  """The (un-jitted) held-out evaluation ``(params, teacher_params, batch) -> sums`` (no gradients)."""
  def eval_sums(params, teacher_params, batch):
    return accumulate(objective, student, teacher, params, teacher_params, batch, grad_accum, with_grads=False)[1]
  return eval_sums


def metric_dict(means: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Objective means → namespaced metric keys (``loss/total``, ``lens/pair_0``, ``tokens``)."""
  out = {}
  for key, value in means.items():
    if key == "count":
      out["tokens"] = value
    elif key.startswith("lens_pair_"):
      out[f"lens/pair_{key.removeprefix('lens_pair_')}"] = value
    elif key.startswith("akl_head_weight_bin_"):
      out[f"akl/head_weight_hist_{key.removeprefix('akl_head_weight_bin_')}"] = value
    elif key == "akl_head_weight":
      out["akl/head_weight"] = value
    else:
      out[f"loss/{key}"] = value
  return out
