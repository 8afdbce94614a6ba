"""The training run: set-up (models, data, mesh, optimizer, resume) and the one loop.

Per step: next global batch (each process feeds its own rows) → jitted step on the mesh → every ``log_every``
steps a metric record → every ``eval_every`` steps the held-out loss → every ``save_every`` steps (and at the
end, and on SIGTERM / preemption) a checkpoint. A run resumes from the latest checkpoint in ``out_dir``
(``resume=auto``) and continues bit-identically: parameters, optimizer state, step, RNG and the data
iterator position are all restored, and the resolved config must match the stored one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxlens
from jaxlens import data as jdata
from jaxlens.data.teacher_responses import read_teacher_responses
from jaxlens.data.teacher_responses import with_teacher_responses
from jaxlens import models
from jaxlens.parallel import distributed
from jaxlens.parallel import mesh as pmesh
from jaxlens.run import checkpoints
from jaxlens.run import config as tconfig
from jaxlens.run import model_sources
from jaxlens.train.objective import Objective
from jaxlens.train.objective import normalise
from jaxlens.train.objective import resolve_layer_pairs
from jaxlens.train.optimizer import learning_rate_schedule
from jaxlens.train.optimizer import make_optimizer
from jaxlens.train.state import initial_state
from jaxlens.train.state import jit_step
from jaxlens.train.step import ModelParts
from jaxlens.train.step import make_eval_sums
from jaxlens.train.step import make_train_step
from jaxlens.train.step import metric_dict
from jaxlens.train.metrics import MetricsLogger
from jaxlens.train import on_policy

# Keys that may differ between a checkpoint's config and the resuming run: they change where and how often
# things are written or how the devices are arranged, never the numbers of the run.
RESUMABLE_KEYS = ("preset", "out_dir", "log_every", "eval_every", "eval_batches", "progress", "save_every",
                  "keep_checkpoints", "resume", "parallel.")


@dataclasses.dataclass
class RunResult:
  """What a finished (or interrupted) run reports: the step reached, losses, and where things are."""

  out_dir: str
  step: int
  interrupted: bool
  first_loss: float | None
  last_loss: float | None
  eval_losses: dict[int, float]
  checkpoint: str | None
  eval_ce: dict[int, float] = dataclasses.field(default_factory=dict)  # held-out CE (only when alpha < 1)


@dataclasses.dataclass
class Setup:
  """Everything the loop needs, built once."""

  cfg: tconfig.TrainConfig
  mesh: Any
  teacher: models.CausalLM
  student: models.CausalLM
  objective: Objective
  initial_state: dict
  teacher_params: Any
  train_iter: jdata.BatchIterator
  eval_rows: list
  pad_id: int
  student_blocks: tuple[int, ...] | None = None


# ----------------------------------------------------------------------------------------------------- set-up
def config_mismatches(stored: tconfig.TrainConfig, cfg: tconfig.TrainConfig) -> list[str]:
  """``key: stored → current`` for every setting that must not change when resuming."""
  def flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
      if isinstance(v, dict):
        out.update(flat(v, f"{prefix}{k}."))
      else:
        out[f"{prefix}{k}"] = list(v) if isinstance(v, (list, tuple)) else v
    return out
  old, new = flat(tconfig.to_dict(stored)), flat(tconfig.to_dict(cfg))
  keys = sorted(set(old) | set(new))
  return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys
          if not k.startswith(RESUMABLE_KEYS) and old.get(k) != new.get(k)]


def build_models(cfg: tconfig.TrainConfig) -> tuple[models.CausalLM, models.CausalLM]:
  """Teacher (frozen, in ``precision.teacher_params``) and student (float32 master weights), compute dtype set.

  Raises:
    ValueError: if teacher and student vocabularies differ.
  """
  compute = cfg.precision.compute_dtype
  teacher = model_sources.load_teacher(cfg.teacher, dtype=compute)
  student = model_sources.make_student(cfg.student, teacher, dtype=compute, remat=cfg.precision.remat)
  if teacher.config.vocab_size != student.config.vocab_size:
    raise ValueError(f"teacher vocabulary {teacher.config.vocab_size} != student vocabulary "
                     f"{student.config.vocab_size}: token-level distillation needs one vocabulary")
  model_sources.cast_params(teacher, cfg.precision.teacher_params_dtype)
  attention = attention_kernel(cfg.precision)
  teacher.use_attention(attention)
  student.use_attention(attention)
  return teacher, student


def attention_kernel(precision: tconfig.PrecisionConfig) -> str:
  """``precision.attention`` with ``auto`` resolved: ``cudnn`` on a GPU with bfloat16 compute, else ``xla``."""
  if precision.attention != "auto":
    return precision.attention
  on_gpu = jax.devices()[0].platform == "gpu"
  return "cudnn" if on_gpu and precision.compute == "bfloat16" else "xla"


def build_data(cfg: tconfig.TrainConfig, vocab_size: int) -> tuple[jdata.BatchIterator, list, int]:
  """The training iterator (this process's rows of every global batch), the held-out examples, the pad id.

  Raises:
    ValueError: if the tokenizer's ids exceed the models' vocabulary, or there are fewer training examples
      than one global batch.
  """
  tokenizer = model_sources.load_run_tokenizer(cfg.data)
  if tokenizer.vocab_size > vocab_size:
    raise ValueError(f"tokenizer has {tokenizer.vocab_size} tokens but the models' vocabulary is {vocab_size}")
  train, held_out = jdata.split(cfg.data)
  if cfg.data.teacher_responses:
    train = teacher_responses_for(cfg, train)
  train_iter = jdata.BatchIterator(jdata.tokenize(train, tokenizer, cfg.data), global_batch_size=cfg.batch_size,
                                   seq_len=cfg.data.seq_len, pad_id=tokenizer.pad_id, seed=cfg.seed, shuffle=True,
                                   drop_last=True, process_index=jax.process_index(),
                                   process_count=jax.process_count())
  return train_iter, jdata.tokenize(held_out, tokenizer, cfg.data), tokenizer.pad_id


def teacher_responses_for(cfg: tconfig.TrainConfig, train: list) -> list:
  """SeqKD: the training examples with the teacher's responses of ``data.teacher_responses``.

  Raises:
    ConfigError: the file is missing or malformed, or its prompts differ from the training prompts.
  """
  try:
    return with_teacher_responses(train, read_teacher_responses(cfg.data.teacher_responses))
  except (OSError, ValueError) as e:
    raise tconfig.ConfigError(f"data.teacher_responses={cfg.data.teacher_responses}: {e}") from None


def eval_batches(setup: Setup) -> list[dict]:
  """The fixed held-out batches: the first ``eval_batches`` global batches of the held-out rows in file order
  (none when the split left no held-out example)."""
  cfg = setup.cfg
  if not setup.eval_rows:
    return []
  return jdata.fixed_batches(setup.eval_rows, batch_size=cfg.batch_size, seq_len=cfg.data.seq_len,
                             pad_id=setup.pad_id, num_batches=cfg.eval_batches, process_index=jax.process_index(),
                             process_count=jax.process_count())


def to_global(batch: dict, sharding) -> dict:
  """This process's numpy rows (``1 / process_count`` of the global batch) → global ``jax.Array`` s sharded over
  the batch axes. The explicit global shape makes JAX refuse a sharding that does not split the rows over the
  processes that way, instead of taking each process's rows for the whole batch."""
  def make(x):
    return jax.make_array_from_process_local_data(sharding, x, (x.shape[0] * jax.process_count(), *x.shape[1:]))
  return {k: make(np.asarray(batch[k])) for k in jdata.BATCH_KEYS}


def abstract(tree):
  """``jax.ShapeDtypeStruct`` s with the shardings of ``tree``'s arrays (orbax restore targets)."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def run_facts(setup: Setup) -> dict:
  """The ``run`` checkpoint item (what evaluation needs besides the config)."""
  return {"teacher_model": dataclasses.asdict(setup.teacher.config),
          "student_model": dataclasses.asdict(setup.student.config),
          "layer_pairs": [[t, s] for t, s in zip(setup.objective.pairs.teacher_layers,
                                                  setup.objective.pairs.student_layers)],
          "student_blocks": None if setup.student_blocks is None else list(setup.student_blocks),
          "jaxlens_version": jaxlens.__version__}


# ------------------------------------------------------------------------------------------------------- loop
class _Stop:
  """SIGTERM sets the flag; the loop checks it at every step boundary (then saves and exits cleanly).

  Single-process runs only. In a multi-process run JAX's preemption notifier catches SIGTERM (sent to any one
  process, as a pod's maintenance notice is) and orbax's ``reached_preemption`` makes every process stop and
  save at the same step; a Python handler would replace that notifier and let one process stop alone while
  the others wait for it in the next collective.
  """

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    if jax.process_count() > 1:
      return self
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: preemption is then only seen through orbax
      self._previous = None
    return self

  def _handle(self, signum, frame):
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def jit_train_step(cfg: tconfig.TrainConfig, objective: Objective, student: models.CausalLM,
                   teacher: models.CausalLM, optimizer, schedule, mesh, state: dict):
  """The jitted step ``(state, teacher_params, batch) -> (state, metrics)`` exactly as the loop runs it: the
  state donated and kept in its shardings, the metrics replicated (``bench/step.py`` times this function)."""
  return jit_step(make_train_step(objective, ModelParts.of(student), ModelParts.of(teacher), optimizer, schedule,
                                  cfg.grad_accum), state, mesh)


def train(cfg: tconfig.TrainConfig) -> RunResult:
  """Run (or resume) training as configured; see the module docstring.

  Raises:
    jaxlens.run.config.ConfigError: ``resume=never`` with checkpoints present, or a resumed run whose
      config differs in a setting that changes the numbers (named).
    jaxlens.run.checkpoints.CheckpointError: an unreadable or incompatible checkpoint (the path is named; nothing
      is overwritten).
    ValueError: a mesh that does not match the devices, a batch not divisible over the mesh, a bad layer map.
  """
  p = cfg.parallel
  distributed.initialize(p.distributed, p.coordinator_address or None, p.num_processes or None,
                         p.process_id if p.process_id >= 0 else None)
  main = distributed.is_main_process()
  mesh = pmesh.make_mesh(p.data, p.fsdp, p.tensor)
  shards = pmesh.batch_divisor(mesh)
  if cfg.micro_batch_size % shards:
    raise ValueError(f"the micro-batch (batch_size / grad_accum = {cfg.micro_batch_size}) must be divisible by "
                     f"data × fsdp = {shards} mesh shards")
  if shards % jax.process_count():
    raise ValueError(f"data × fsdp = {shards} batch shards cannot be split over {jax.process_count()} processes: "
                     "each process feeds its own rows, so data × fsdp must be a multiple of the process count")

  out_dir = os.path.abspath(cfg.out_dir)
  manager = checkpoints.open_manager(out_dir, max_to_keep=cfg.keep_checkpoints)
  latest = manager.latest_step()
  if latest is not None and cfg.resume == "never":
    raise tconfig.ConfigError(f"{checkpoints.checkpoint_dir(out_dir)} already holds checkpoints (latest step "
                              f"{latest}); use resume=auto to continue it or another out_dir")

  teacher, student = build_models(cfg)
  blocks = model_sources.student_blocks(cfg.student, teacher.config.num_layers)
  objective = Objective(cfg.loss, resolve_layer_pairs(cfg.loss, teacher.config.num_layers,
                                                      student.config.num_layers, blocks))
  optimizer = make_optimizer(cfg.optim, cfg.steps, student.config.family)
  schedule = learning_rate_schedule(cfg.optim, cfg.steps)
  state, teacher_params = initial_state(cfg, student, teacher, mesh, optimizer)
  train_iter, eval_rows, pad_id = build_data(cfg, teacher.config.vocab_size)
  setup = Setup(cfg, mesh, teacher, student, objective, state, teacher_params, train_iter, eval_rows, pad_id,
                blocks)

  if latest is not None:
    state = resume(setup, manager, latest)
  start = int(state["step"])
  logger = MetricsLogger(out_dir, total_steps=cfg.steps, start_step=start, enabled=main, progress=cfg.progress)
  if main:
    with open(os.path.join(out_dir, "config.json"), "w") as f:
      json.dump(tconfig.to_dict(cfg), f, indent=1)
  describe(setup, logger, start)

  s_parts, t_parts = ModelParts.of(student), ModelParts.of(teacher)
  step_fn = jit_train_step(cfg, objective, student, teacher, optimizer, schedule, mesh, state)
  eval_fn = jax.jit(make_eval_sums(objective, s_parts, t_parts, cfg.grad_accum))
  batch_sharding = pmesh.batch_sharding(mesh)
  mixer = on_policy.run_mixer(cfg, student, mesh)
  held_out = [to_global(b, batch_sharding) for b in eval_batches(setup)]

  def evaluate(step):
    sums = None
    for batch in held_out:
      got = eval_fn(state["params"], teacher_params, batch)
      sums = got if sums is None else jax.tree.map(jnp.add, sums, got)
    record = logger.log(step, {k: float(v) for k, v in metric_dict(normalise(sums)).items()}, prefix="eval/")
    eval_losses[step] = record["eval/loss/total"]
    ce = f", CE {record['eval/loss/ce']:.4f}" if objective.uses_ce else ""
    if objective.uses_ce:
      eval_ce[step] = record["eval/loss/ce"]
    logger.write(f"step {step}: held-out loss {eval_losses[step]:.4f}{ce}")

  eval_losses: dict[int, float] = {}
  eval_ce: dict[int, float] = {}
  first_loss = last_loss = None
  interrupted = False
  if start == 0 and held_out:
    evaluate(0)
  window_t0, window_tokens, window_steps = time.time(), 0, 0
  with _Stop() as stop:
    step = start
    while step < cfg.steps:
      local = next(train_iter)
      batch = to_global(local, batch_sharding)
      if mixer is None:
        window_tokens += int(local["attention_mask"].sum()) * jax.process_count()
      else:
        batch, sampling_metrics, real_tokens = mixer(state, batch)
        window_tokens += real_tokens
      state, metrics = step_fn(state, teacher_params, batch)
      step += 1
      window_steps += 1
      if step % cfg.log_every == 0 or step == cfg.steps or step == start + 1:
        values = {k: float(v) for k, v in metrics.items()}  # float() waits for the step: timings are real
        elapsed = max(time.time() - window_t0, 1e-9)
        values["tokens_per_s"] = window_tokens / elapsed
        values["ms_per_step"] = 1000 * elapsed / window_steps
        if mixer is not None:
          values.update(sampling_metrics)
        logger.log(step, values)
        first_loss = values["loss/total"] if first_loss is None else first_loss
        last_loss = values["loss/total"]
        logger.progress(step, {"loss": last_loss, "tok/s": values["tokens_per_s"]})
        window_t0, window_tokens, window_steps = time.time(), 0, 0
      if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps and held_out:
        evaluate(step)
      preempted = stop.requested or manager.reached_preemption(step)
      if (cfg.save_every and step % cfg.save_every == 0) or step == cfg.steps or preempted:
        save(setup, manager, state, step, force=preempted)
      if preempted:
        interrupted = True
        logger.write(f"stop requested (SIGTERM/preemption): saved step {step}, exiting")
        break
  if not interrupted and held_out and step == cfg.steps and cfg.steps not in eval_losses and start < cfg.steps:
    evaluate(step)
  manager.wait_until_finished()
  final = manager.latest_step()
  manager.close()
  logger.close()
  return RunResult(out_dir, step, interrupted, first_loss, last_loss, eval_losses,
                   None if final is None else os.path.join(checkpoints.checkpoint_dir(out_dir), str(final)), eval_ce)


def save(setup: Setup, manager, state: dict, step: int, force: bool = False) -> None:
  """Checkpoint ``state`` at ``step`` with the data position, config and run facts."""
  checkpoints.save(manager, step, params=state["params"], opt_state=state["opt_state"],
                   train={"step": state["step"], "rng": state["rng"]}, data=setup.train_iter.state(),
                   config=tconfig.to_dict(setup.cfg), run=run_facts(setup), force=force)


def resume(setup: Setup, manager, step: int) -> dict:
  """The training state restored from ``step`` (config checked first; data iterator repositioned).

  Raises:
    ConfigError: if a setting that changes the numbers differs from the checkpoint's.
    CheckpointError: if the checkpoint is unreadable or does not fit the models.
  """
  path = os.path.join(checkpoints.checkpoint_dir(setup.cfg.out_dir), str(step))
  stored = checkpoints.read_run(setup.cfg.out_dir, step).config
  diff = config_mismatches(stored, setup.cfg)
  if diff:
    raise tconfig.ConfigError(f"cannot resume from {path}: its config differs in {'; '.join(diff)} "
                              "(use another out_dir for a different run)")
  state = setup.initial_state
  try:
    got = checkpoints.restore(manager, step, {"params": abstract(state["params"]),
                                              "opt_state": abstract(state["opt_state"]),
                                              "train": abstract({"step": state["step"], "rng": state["rng"]})})
  except checkpoints.CheckpointError as e:
    others = sorted(set(manager.all_steps()) - {step})
    hint = (f"; nothing was written. Earlier checkpoints {others} are untouched: move {path} away to resume "
            "from the newest of them" if others else "; nothing was written")
    raise checkpoints.CheckpointError(f"{e}{hint}") from e
  if int(got["train"]["step"]) != step:
    raise checkpoints.CheckpointError(f"checkpoint {path} holds step {int(got['train']['step'])}, not {step}")
  setup.train_iter.restore(got["data"])
  return {"params": got["params"], "opt_state": got["opt_state"], "step": got["train"]["step"],
          "rng": got["train"]["rng"]}


def describe(setup: Setup, logger: MetricsLogger, start: int) -> None:
  """Print the derived numbers once (process 0)."""
  cfg, mesh = setup.cfg, setup.mesh
  pairs = list(zip(setup.objective.pairs.teacher_layers, setup.objective.pairs.student_layers))
  lines = [
      f"jaxlens train: preset {cfg.preset}, out_dir {os.path.abspath(cfg.out_dir)}",
      f"  devices {jax.device_count()} ({jax.devices()[0].platform}) in {jax.process_count()} process(es); "
      f"mesh data×fsdp×tensor = {mesh.shape['data']}×{mesh.shape['fsdp']}×{mesh.shape['tensor']}",
      f"  teacher {cfg.teacher.source}: {setup.teacher.config.num_layers} layers, "
      f"{models.num_params(setup.teacher) / 1e6:.1f}M params; student {cfg.student.source}: "
      f"{setup.student.config.num_layers} layers, {models.num_params(setup.student) / 1e6:.1f}M params",
      f"  objective (1-{cfg.loss.alpha})·CE + {cfg.loss.alpha}·({cfg.loss.output_divergence} + "
      f"{cfg.loss.lens_weight}·{cfg.loss.lens_divergence} lens on pairs {pairs}"
      + (f" + {cfg.loss.feature_mse_weight}·feature-MSE" if cfg.loss.feature_mse_weight else "") + ")",
      f"  {cfg.steps} steps × {cfg.batch_size} sequences × {cfg.data.seq_len} tokens "
      f"({cfg.grad_accum} micro-batches); {setup.train_iter.num_rows} training / {len(setup.eval_rows)} held-out "
      f"examples; lr {cfg.optim.lr} {cfg.optim.schedule}",
  ]
  if cfg.data.on_policy_fraction:
    lines.append(f"  on-policy: each row's response sampled by the student with probability "
                 f"{cfg.data.on_policy_fraction} (≤ {cfg.data.new_tokens} tokens, temperature "
                 f"{cfg.data.sample_temperature}, top-p {cfg.data.sample_top_p})")
  if cfg.data.teacher_responses:
    lines.append(f"  SeqKD: training responses from {cfg.data.teacher_responses}")
  if start:
    lines.append(f"  resumed from step {start}")
  for line in lines:
    logger.write(line)
