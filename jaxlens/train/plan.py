"""Plan a training run for hardware you do not have: per-chip memory, fit, FLOPs and step time.

``python -m jaxlens.train.plan TOPOLOGY [PRESET ...] [key=value ...]`` (or ``python train.py --plan TOPOLOGY ...``)
builds the configured teacher, student and optimizer state *abstractly* (shapes and shardings only, no weights
are read or materialised), lowers the real jitted train step on a mesh over the target's chips and compiles it
ahead of time with libtpu (``pip install -e ".[tpu]"``; no TPU needed). It prints the per-chip memory the
compiler assigns (parameters, optimizer state, activations/temporaries), whether it fits the chip's HBM,
FLOPs per step (the compiler's count and an analytic 6·N·tokens count) and the step time at an assumed MFU.

TOPOLOGY is a libtpu topology name (``v5e:2x2``), a slice name (``v5e-8``, ``v5p-32``) or ``h100xN`` (an
*estimate*: the program compiled for N TPU v5p chips with the H100's memory and peak); the chip catalogue and
the names are :mod:`jaxlens.parallel.targets`. The abstract training state is the trainer's own
(:func:`jaxlens.train.state.initial_state` with ``abstract=True``), the models' architectures come from their
sources without weights (:func:`jaxlens.run.model_sources.model_config`).

Examples::

  python -m jaxlens.train.plan v5e:2x2 tiny
  python -m jaxlens.train.plan v5p-32 gpt2-xl-base teacher.path=gpt2-xl student.path=gpt2 parallel.data=1 \
      parallel.fsdp=-1 precision.remat=block
  python -m jaxlens.train.plan h100x8 llama7b-tinyllama teacher.path=huggyllama/llama-7b \
      student.path=TinyLlama/TinyLlama_v1.1 parallel.data=1 parallel.fsdp=8 --mfu 0.35
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlens import models
from jaxlens.data import BATCH_KEYS
from jaxlens.parallel import mesh as pmesh
from jaxlens.parallel.targets import GiB
from jaxlens.parallel.targets import Target
from jaxlens.parallel.targets import parse_target
from jaxlens.parallel.targets import target_devices
from jaxlens.run import config as tconfig
from jaxlens.run import model_sources
from jaxlens.train.objective import Objective
from jaxlens.train.objective import resolve_layer_pairs
from jaxlens.train.optimizer import learning_rate_schedule
from jaxlens.train.optimizer import make_optimizer
from jaxlens.train.state import initial_state
from jaxlens.train.state import jit_step
from jaxlens.train.step import ModelParts
from jaxlens.train.step import make_train_step

def shard_bytes(tree) -> int:
  """Bytes one device holds of a pytree of sharded ``jax.ShapeDtypeStruct`` / arrays.

  .. math::  \\sum_\\text{leaves} \\prod(\\text{shard shape}) \\cdot \\text{itemsize}

  (the largest shard: uneven splits round up, as XLA pads them). Leaves without a sharding count whole.
  """
  total = 0
  for leaf in jax.tree.leaves(tree):
    sharding = getattr(leaf, "sharding", None)
    shape = sharding.shard_shape(leaf.shape) if sharding is not None else leaf.shape
    total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
  return total


def matmul_params(cfg) -> int:
  """Weights of one forward pass's matmuls per token, LM head included, embedding look-ups excluded.

  .. math::  N = L\\,(D\\,H d + 2 D\\,G d + H d\\,D + k D F) + D V, \\quad k = 3 \\text{ (SwiGLU) or } 2

  with L layers, width D, H query / G key-value heads of size d, MLP width F, vocabulary V.

  Args:
    cfg: a :class:`jaxlens.models.ModelConfig`.
  """
  d, hd = cfg.hidden_size, cfg.head_dim
  attention = d * cfg.num_heads * hd + 2 * d * cfg.num_kv_heads * hd + cfg.num_heads * hd * d
  mlp = (3 if cfg.family == "llama" else 2) * d * cfg.intermediate_size
  return cfg.num_layers * (attention + mlp) + d * cfg.vocab_size


def analytic_flops(teacher, student, *, tokens: int, seq_len: int, lens_pairs: int) -> dict[str, float]:
  """Useful FLOPs of one distillation step (no recomputation counted; attention not halved for causality).

  .. math::

     F_S = 6 N_S \\cdot\\text{tokens} + 12 L_S T H_S d_S \\cdot\\text{tokens} \\quad\\text{(student, fwd + bwd)}

     F_T = 2 N_T \\cdot\\text{tokens} + 4 L_T T H_T d_T \\cdot\\text{tokens} \\quad\\text{(teacher, forward only)}

     F_\\text{lens} = P\\,(2 D_T V + 6 D_S V) \\cdot\\text{tokens} \\quad\\text{(P lens projections of both models)}

  with N from :func:`matmul_params` (the output pair's projections are the LM heads counted there).

  Args:
    teacher, student: :class:`jaxlens.models.ModelConfig`.
    tokens: tokens per optimizer step (global batch × sequence length).
    seq_len: sequence length T.
    lens_pairs: P, the number of lens layer pairs.

  Returns:
    ``{"student", "teacher", "lens", "total"}`` FLOPs per step.
  """
  student_flops = tokens * (6 * matmul_params(student)
                            + 12 * student.num_layers * seq_len * student.num_heads * student.head_dim)
  teacher_flops = tokens * (2 * matmul_params(teacher)
                            + 4 * teacher.num_layers * seq_len * teacher.num_heads * teacher.head_dim)
  lens_flops = tokens * lens_pairs * (2 * teacher.hidden_size * teacher.vocab_size
                                      + 6 * student.hidden_size * student.vocab_size)
  return {"student": float(student_flops), "teacher": float(teacher_flops), "lens": float(lens_flops),
          "total": float(student_flops + teacher_flops + lens_flops)}


@dataclasses.dataclass(frozen=True)
class Plan:
  """The planned step on one target.

  Attributes:
    target: what was planned for.
    mesh_shape: ``{"data", "fsdp", "tensor"}`` sizes.
    remat, grad_accum: the student's rematerialisation policy and micro-batches per step.
    teacher_params, student_params: parameter counts.
    tokens: tokens per optimizer step (global batch × sequence length).
    memory: bytes per chip: ``params`` (student, fp32 master), ``optimizer``, ``teacher``, ``batch`` (from the
      shardings), ``temporaries`` (activations, gradients, workspace: the compiler's temp buffers) and
      ``total`` (the compiler's arguments + outputs − donated aliases + temporaries).
    out_of_memory: the compiler's message when the program does not fit (``temporaries``/``total`` unknown).
    compiled_flops: FLOPs per step summed over chips (XLA's cost analysis; includes rematerialisation).
    analytic_flops: :func:`analytic_flops`.
    mfu: the assumed model FLOPs utilisation.
    compile_seconds: wall time of lowering + compiling.
  """

  target: Target
  mesh_shape: dict[str, int]
  remat: str
  grad_accum: int
  teacher_params: int
  student_params: int
  tokens: int
  memory: dict[str, int]
  out_of_memory: str | None
  compiled_flops: float | None
  analytic_flops: dict[str, float]
  mfu: float
  compile_seconds: float

  @property
  def fits(self) -> bool:
    """Whether the step fits the chip's HBM."""
    return self.out_of_memory is None and self.memory["total"] <= self.target.chip.hbm_bytes

  @property
  def step_seconds(self) -> float:
    """Analytic FLOPs / (chips × peak FLOP/s × MFU)."""
    return self.analytic_flops["total"] / (self.target.num_chips * self.target.chip.peak_flops * self.mfu)


def plan(cfg, target: Target, *, mfu: float = 0.4) -> Plan:
  """Compile ``cfg``'s train step for ``target`` from abstract shapes and report memory, fit and FLOPs.

  Nothing is materialised: models come from ``nnx.eval_shape``, the optimizer state from ``jax.eval_shape``,
  and the batch is ``jax.ShapeDtypeStruct`` s. The step is :func:`jaxlens.train.step.make_train_step`, jitted
  with the trainer's donation and output shardings, on the mesh ``parallel.data × fsdp × tensor`` over the
  target's chips.

  Args:
    cfg: a resolved :class:`~jaxlens.run.config.TrainConfig`.
    target: from :func:`parse_target`.
    mfu: assumed model FLOPs utilisation for the step time, in (0, 1].

  Raises:
    ValueError: bad ``mfu``, a mesh that does not cover the target's chips, a batch the mesh cannot split,
      or an ``hf`` model whose architecture is unknown.
    RuntimeError: libtpu missing.
  """
  if not 0 < mfu <= 1:
    raise ValueError(f"mfu must be in (0, 1], got {mfu}")
  mesh = pmesh.make_mesh(cfg.parallel.data, cfg.parallel.fsdp, cfg.parallel.tensor, devices=target_devices(target))
  if cfg.micro_batch_size % pmesh.batch_divisor(mesh):
    raise ValueError(f"the micro-batch (batch_size / grad_accum = {cfg.micro_batch_size}) must be divisible by "
                     f"data × fsdp = {pmesh.batch_divisor(mesh)} mesh shards")
  t_cfg = model_sources.model_config(cfg.teacher, "teacher")
  s_cfg = model_sources.model_config(cfg.student, "student", teacher=t_cfg)
  compute = cfg.precision.compute_dtype
  teacher = nnx.eval_shape(lambda: models.build_model(t_cfg, rngs=nnx.Rngs(0), dtype=compute,
                                                      param_dtype=cfg.precision.teacher_params_dtype))
  student = nnx.eval_shape(lambda: models.build_model(s_cfg, rngs=nnx.Rngs(0), dtype=compute,
                                                      remat=cfg.precision.remat))
  optimizer = make_optimizer(cfg.optim, cfg.steps, s_cfg.family)
  state, teacher_params = initial_state(cfg, student, teacher, mesh, optimizer, abstract=True)
  rows = (cfg.batch_size, cfg.data.seq_len)
  batch = {k: jax.ShapeDtypeStruct(rows, jnp.float32 if k == "loss_mask" else jnp.int32,
                                   sharding=pmesh.batch_sharding(mesh)) for k in BATCH_KEYS}

  pairs = resolve_layer_pairs(cfg.loss, t_cfg.num_layers, s_cfg.num_layers,
                              model_sources.student_blocks(cfg.student, t_cfg.num_layers))
  objective = Objective(cfg.loss, pairs)
  step = make_train_step(objective, ModelParts.of(student), ModelParts.of(teacher), optimizer,
                         learning_rate_schedule(cfg.optim, cfg.steps), cfg.grad_accum)
  jitted = jit_step(step, state, mesh)
  memory = {"params": shard_bytes(state["params"]), "optimizer": shard_bytes(state["opt_state"]),
            "teacher": shard_bytes(teacher_params), "batch": shard_bytes(batch)}
  start = time.perf_counter()
  out_of_memory = compiled_flops = None
  try:
    compiled = jitted.lower(state, teacher_params, batch).compile()
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    out_of_memory = str(e).split("\n")[0]
    memory.update(temporaries=0, total=sum(memory.values()))
  else:
    stats = compiled.memory_analysis()
    memory["temporaries"] = stats.temp_size_in_bytes
    memory["total"] = (stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes
                       + stats.temp_size_in_bytes)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    compiled_flops = float(cost["flops"]) * target.num_chips if cost and "flops" in cost else None
  tokens = cfg.batch_size * cfg.data.seq_len
  return Plan(target=target, mesh_shape=dict(mesh.shape), remat=cfg.precision.remat, grad_accum=cfg.grad_accum,
              teacher_params=models.num_params(teacher), student_params=models.num_params(student), tokens=tokens,
              memory=memory, out_of_memory=out_of_memory, compiled_flops=compiled_flops,
              analytic_flops=analytic_flops(t_cfg, s_cfg, tokens=tokens, seq_len=cfg.data.seq_len,
                                            lens_pairs=len(pairs.teacher_layers)),
              mfu=mfu, compile_seconds=time.perf_counter() - start)


def _gib(n: float) -> str:
  return f"{n / GiB:.2f} GiB" if n >= GiB / 10 else f"{n / 2**20:.2f} MiB"


def _seconds(s: float) -> str:
  return f"{s:.2f} s" if s >= 1 else f"{s * 1e3:.2f} ms" if s >= 1e-3 else f"{s * 1e6:.1f} µs"


def format_plan(p: Plan) -> str:
  """A human-readable report of :func:`plan`'s result."""
  chip, mem = p.target.chip, p.memory
  kind = "ESTIMATE (compiled for TPU v5p as a proxy for XLA:GPU)" if p.target.estimate else "compiled with libtpu"
  mesh = "×".join(str(p.mesh_shape[a]) for a in ("data", "fsdp", "tensor"))
  lines = [
      f"plan for {p.target.name}: {p.target.num_chips} × {chip.name} ({_gib(chip.hbm_bytes)} HBM, "
      f"{chip.peak_flops / 1e12:.0f} TFLOP/s bf16), {kind} [{p.target.topology}]",
      f"  mesh data×fsdp×tensor = {mesh}; remat {p.remat}; {p.grad_accum} micro-batch(es); "
      f"teacher {p.teacher_params / 1e6:.1f}M params, student {p.student_params / 1e6:.1f}M; {p.tokens} tokens/step",
      "  per-chip memory:",
      f"    student params (fp32)     {_gib(mem['params'])}",
      f"    optimizer state           {_gib(mem['optimizer'])}",
      f"    teacher params            {_gib(mem['teacher'])}",
      f"    batch                     {_gib(mem['batch'])}",
  ]
  if p.out_of_memory:
    lines += [f"    activations/temporaries   (does not fit: {p.out_of_memory})",
              f"  fits: NO (the compiler ran out of {_gib(chip.hbm_bytes)} HBM)"]
  else:
    lines += [f"    activations/temporaries   {_gib(mem['temporaries'])}",
              f"    total (compiler)          {_gib(mem['total'])} of {_gib(chip.hbm_bytes)} "
              f"({100 * mem['total'] / chip.hbm_bytes:.0f} %)",
              f"  fits: {'yes' if p.fits else 'NO'}"]
  flops = p.analytic_flops
  lines += [f"  FLOPs/step: analytic {flops['total']:.3e} (student 6N·tokens {flops['student']:.2e}, teacher "
            f"forward {flops['teacher']:.2e}, lens projections {flops['lens']:.2e})"
            + (f"; compiler {p.compiled_flops:.3e}" if p.compiled_flops else ""),
            f"  step time at {100 * p.mfu:.0f} % MFU: {_seconds(p.step_seconds)} "
            f"({p.tokens / p.step_seconds:,.0f} tokens/s); compiled in {p.compile_seconds:.1f} s"]
  return "\n".join(lines)


MARKDOWN_HEADER = ("| target | preset | mesh d×f×t | remat, accum | student+optimizer / chip | teacher / chip | "
                   "activations+temps / chip | total / HBM | fits | FLOPs/step (analytic) | step @ MFU |\n"
                   "|---|---|---|---|---|---|---|---|---|---|---|")


def markdown_row(p: Plan, preset: str) -> str:
  """One row of the ``docs/scaling.md`` table (columns of :data:`MARKDOWN_HEADER`)."""
  mem, chip = p.memory, p.target.chip
  mesh = "×".join(str(p.mesh_shape[a]) for a in ("data", "fsdp", "tensor"))
  name = f"{p.target.name} (estimate)" if p.target.estimate else p.target.name
  needed = re.search(r"temporaries \(([\d.]+\s*[KMGT]i?B?)\)", p.out_of_memory or "")
  temps = (f"OOM ({needed.group(1)})" if needed else "OOM") if p.out_of_memory else _gib(mem["temporaries"])
  total = f"> {_gib(chip.hbm_bytes)}" if p.out_of_memory else f"{_gib(mem['total'])} / {_gib(chip.hbm_bytes)}"
  return (f"| {name} | {preset} | {mesh} | {p.remat}, {p.grad_accum} | "
          f"{_gib(mem['params'] + mem['optimizer'])} | {_gib(mem['teacher'])} | {temps} | {total} | "
          f"{'yes' if p.fits else '**no**'} | {p.analytic_flops['total']:.2e} | "
          f"{_seconds(p.step_seconds)} @ {100 * p.mfu:.0f} % |")


def main(argv=None) -> int:
  """``python -m jaxlens.train.plan TOPOLOGY [PRESET ...] [key=value ...] [--mfu F]``; returns the exit status."""
  parser = argparse.ArgumentParser(prog="python -m jaxlens.train.plan", description=__doc__.split("\n\n")[0],
                                   epilog="TOPOLOGY: v5e:2x2, v4:2x2x2, v5e-64, v5p-32, v6e-16, h100x8, …")
  parser.add_argument("topology", help="libtpu topology, slice name or h100xN (estimate)")
  parser.add_argument("config", nargs="*", help="training presets, then key=value overrides (as train.py)")
  parser.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOPs utilisation (default 0.4)")
  parser.add_argument("--markdown", action="store_true", help="print one row of the docs/scaling.md table")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  try:
    target = parse_target(args.topology)
    cfg = tconfig.resolve(args.config)
    result = plan(cfg, target, mfu=args.mfu)
  except (ValueError, RuntimeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(markdown_row(result, cfg.preset) if args.markdown else format_plan(result))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
