"""The training run: set-up (models, data, mesh, optimizer, resume) and the one loop.

Set-up checks every user input before any work (mesh, ``out_dir``, data file, layer map: a
:class:`~jaxlens.run.config.ConfigError` naming it). Per step: next global batch (each process feeds its own
rows) → jitted step on the mesh → every ``log_every`` steps a metric record → every ``eval_every`` steps the
held-out loss → every ``save_every`` steps (and at the end, and on SIGTERM / SIGINT / preemption) a checkpoint.

A run resumes from the newest *verified* checkpoint in ``out_dir`` (``resume=auto``; newer ones that fail
verification are moved to ``<out_dir>/rejected_checkpoints/`` with a one-line notice) and continues
bit-identically: parameters, optimizer state, step, RNG and the data iterator position are all restored; the
resolved config and the data digest (contents and split) must match the stored ones.

Divergence: a step whose loss or gradients are not finite is not applied (:mod:`jaxlens.train.step`); the
loop reads the counters when it logs or saves, never saves a state whose last step was skipped, and stops
with :class:`DivergedError` once ``max_nonfinite_steps`` consecutive steps were skipped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import tempfile
import time
from typing import Any
from typing import NamedTuple

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
from jaxlens.train.step import GUARD_KEYS
from jaxlens.train.step import ModelParts
from jaxlens.train.step import make_eval_sums
from jaxlens.train.step import make_train_step
from jaxlens.train.step import metric_dict
from jaxlens.train.metrics import MetricsLogger
from jaxlens.train.metrics import format_value
from jaxlens.train import on_policy

# Keys that may differ between a checkpoint's config and the resuming run: they change where and how often
# things are written or how the devices are arranged, never the numbers of the run.
RESUMABLE_KEYS = ("preset", "out_dir", "log_every", "eval_every", "eval_batches", "progress", "save_every",
                  "keep_checkpoints", "max_nonfinite_steps", "resume", "parallel.")
REJECTED_DIR = "rejected_checkpoints"


class DivergedError(RuntimeError):
  """The run stopped after ``max_nonfinite_steps`` consecutive non-finite steps (the message says where)."""


@dataclasses.dataclass
class RunResult:
  """What a finished (or interrupted) run reports: the step reached, losses, and where things are."""

  out_dir: str
  step: int
  interrupted: bool
  first_loss: float | None
  last_loss: float | None
  eval_losses: dict[int, float | None]
  checkpoint: str | None
  eval_ce: dict[int, float | None] = dataclasses.field(default_factory=dict)  # held-out CE (only when alpha < 1)
  stop_reason: str = ""


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
  data_digest: dict
  notices: list
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


class Data(NamedTuple):
  """The run's data: training iterator, held-out rows, pad id, tokenizer size, digest and notices."""

  train_iter: jdata.BatchIterator
  eval_rows: list
  pad_id: int
  tokenizer_vocab: int
  digest: dict
  notices: list


def load_data(cfg: tconfig.TrainConfig) -> Data:
  """Read, split and tokenise the data; every problem is a :class:`~jaxlens.run.config.ConfigError` naming
  ``data.source`` (and the file and line of a malformed record), raised before any model is built.

  A split that leaves no held-out example (a small file) turns held-out evaluation off, with a notice. The
  digest ``{"examples", "contents", "split"}`` (sha256 of the examples and of the held-out ones) is recorded
  in every checkpoint so that resuming on changed data is refused.
  """
  source = f"data.source={cfg.data.source!r}"
  try:
    train, held_out = jdata.split(cfg.data)
  except (OSError, ValueError, TypeError) as e:
    raise tconfig.ConfigError(f"{source}: {e}") from None
  try:
    tokenizer = model_sources.load_run_tokenizer(cfg.data)
  except (OSError, ValueError) as e:
    raise tconfig.ConfigError(f"data.tokenizer={cfg.data.tokenizer!r}: {e}") from None
  examples = train + held_out
  if cfg.data.teacher_responses:
    train = teacher_responses_for(cfg, train)
  digest = {"examples": len(examples),
            "contents": checkpoints.json_digest(sorted(checkpoints.json_digest(e) for e in train + held_out)),
            "split": checkpoints.json_digest(held_out)}
  tok = lambda ex: jdata.tokenize(ex, tokenizer, cfg.data)  # noqa: E731
  try:
    train_rows = tok(train)
  except ValueError as e:  # no training example left, or every prompt too long
    raise tconfig.ConfigError(f"{source}: {len(train)} training examples of {len(examples)}: {e} (see "
                              "data.max_prompt_len, data.seq_len, data.held_out_fraction)") from None
  notices, eval_rows = [], []
  try:
    eval_rows = tok(held_out) if held_out else []
  except ValueError:
    pass
  if not eval_rows:
    notices.append(f"note: {len(examples)} examples leave no usable held-out example at data.held_out_fraction="
                   f"{cfg.data.held_out_fraction}: held-out evaluation is off")
  try:
    train_iter = jdata.BatchIterator(train_rows, global_batch_size=cfg.batch_size, seq_len=cfg.data.seq_len,
                                     pad_id=tokenizer.pad_id, seed=cfg.seed, shuffle=True, drop_last=True,
                                     process_index=jax.process_index(), process_count=jax.process_count())
  except ValueError as e:
    raise tconfig.ConfigError(f"{source}: {len(train_rows)} usable training examples: {e}") from None
  return Data(train_iter, eval_rows, tokenizer.pad_id, tokenizer.vocab_size, digest, notices)


def check_vocab(tokenizer_vocab: int, vocab_size: int) -> None:
  """Raise ConfigError if the tokenizer's ids exceed the models' vocabulary."""
  if tokenizer_vocab > vocab_size:
    raise tconfig.ConfigError(f"data.tokenizer has {tokenizer_vocab} tokens but the models' vocabulary is "
                              f"{vocab_size}")


def build_data(cfg: tconfig.TrainConfig, vocab_size: int) -> tuple[jdata.BatchIterator, list, int]:
  """The training iterator (this process's rows of every global batch), the held-out examples, the pad id
  (:func:`load_data` with the vocabulary checked).

  Raises:
    ConfigError: as :func:`load_data`, or if the tokenizer's ids exceed the models' vocabulary.
  """
  got = load_data(cfg)
  check_vocab(got.tokenizer_vocab, vocab_size)
  return got.train_iter, got.eval_rows, got.pad_id


def check_out_dir(out_dir: str) -> None:
  """Create ``out_dir`` and prove it writable; ConfigError naming it otherwise."""
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise tconfig.ConfigError(f"out_dir={out_dir!r} is a file, not a folder")
  try:
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryFile(dir=out_dir):
      pass
  except OSError as e:
    raise tconfig.ConfigError(f"out_dir={out_dir!r} is not usable: {e.strerror or e}") from None


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
          "data_digest": setup.data_digest,
          "student_blocks": None if setup.student_blocks is None else list(setup.student_blocks),
          "jaxlens_version": jaxlens.__version__}


# ------------------------------------------------------------------------------------------------------- loop
class _Stop:
  """SIGTERM or SIGINT (Ctrl-C) sets the flag; the loop checks it at every step boundary (then saves and exits
  cleanly). A second SIGINT raises :class:`KeyboardInterrupt` at once (no save).

  Single-process runs only. In a multi-process run JAX's preemption notifier catches SIGTERM (sent to any one
  process, as a pod's maintenance notice is) and orbax's ``reached_preemption`` makes every process stop and
  save at the same step; a Python handler would replace that notifier and let one process stop alone while
  the others wait for it in the next collective.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested = False
    self.reason = ""
    self._previous = {}

  def __enter__(self):
    if jax.process_count() > 1:
      return self
    try:
      for sig in self.SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    except ValueError:  # not the main thread: preemption is then only seen through orbax
      pass
    return self

  def _handle(self, signum, frame):
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt("second Ctrl-C: stopped at once, without saving")
    self.requested = True
    self.reason = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)


def jit_train_step(cfg: tconfig.TrainConfig, objective: Objective, student: models.CausalLM,
                   teacher: models.CausalLM, optimizer, schedule, mesh, state: dict):
  """The jitted step ``(state, teacher_params, batch) -> (state, metrics)`` exactly as the loop runs it: the
  state donated and kept in its shardings, the metrics replicated (``bench/step.py`` times this function)."""
  return jit_step(make_train_step(objective, ModelParts.of(student), ModelParts.of(teacher), optimizer, schedule,
                                  cfg.grad_accum), state, mesh)


def train(cfg: tconfig.TrainConfig) -> RunResult:
  """Run (or resume) training as configured; see the module docstring.

  Raises:
    jaxlens.run.config.ConfigError: a user-input problem, before any work: a mesh that does not match the
      devices or the batch, an unusable ``out_dir``, a data problem (file and line named), a bad layer map,
      ``resume=never`` with checkpoints present, or a resumed run whose config or data differ (named).
    jaxlens.run.checkpoints.CheckpointError: no checkpoint of ``out_dir`` passes verification (each is named;
      nothing is written).
    DivergedError: ``max_nonfinite_steps`` consecutive non-finite steps (nothing saved after the last good
      checkpoint).
  """
  p = cfg.parallel
  distributed.initialize(p.distributed, p.coordinator_address or None, p.num_processes or None,
                         p.process_id if p.process_id >= 0 else None)
  main = distributed.is_main_process()
  try:
    mesh = pmesh.make_mesh(p.data, p.fsdp, p.tensor)
  except ValueError as e:
    raise tconfig.ConfigError(f"parallel.data/fsdp/tensor: {e}") from None
  shards = pmesh.batch_divisor(mesh)
  if cfg.micro_batch_size % shards:
    raise tconfig.ConfigError(f"the micro-batch (batch_size / grad_accum = {cfg.micro_batch_size}) must be "
                              f"divisible by data × fsdp = {shards} mesh shards")
  if shards % jax.process_count():
    raise tconfig.ConfigError(f"data × fsdp = {shards} batch shards cannot be split over {jax.process_count()} "
                              "processes: each process feeds its own rows, so data × fsdp must be a multiple of "
                              "the process count")

  out_dir = os.path.abspath(cfg.out_dir)
  check_out_dir(out_dir)
  stored_steps = checkpoint_steps(out_dir)
  if stored_steps and cfg.resume == "never":
    raise tconfig.ConfigError(f"{checkpoints.checkpoint_dir(out_dir)} already holds checkpoints (latest step "
                              f"{max(stored_steps)}); use resume=auto to continue it or another out_dir")

  data = load_data(cfg)
  teacher, student = build_models(cfg)
  check_vocab(data.tokenizer_vocab, teacher.config.vocab_size)
  blocks = model_sources.student_blocks(cfg.student, teacher.config.num_layers)
  objective = Objective(cfg.loss, resolve_layer_pairs(cfg.loss, teacher.config.num_layers,
                                                      student.config.num_layers, blocks))
  optimizer = make_optimizer(cfg.optim, cfg.steps, student.config.family)
  schedule = learning_rate_schedule(cfg.optim, cfg.steps)
  state, teacher_params = initial_state(cfg, student, teacher, mesh, optimizer)
  setup = Setup(cfg, mesh, teacher, student, objective, state, teacher_params, data.train_iter, data.eval_rows,
                data.pad_id, data.digest, list(data.notices), blocks)

  if stored_steps:
    state = resume(setup, out_dir)
  manager = checkpoints.open_manager(out_dir, max_to_keep=cfg.keep_checkpoints)
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
    ce = f", CE {format_value(record['eval/loss/ce'])}" if objective.uses_ce else ""
    if objective.uses_ce:
      eval_ce[step] = record["eval/loss/ce"]
    logger.write(f"step {step}: held-out loss {format_value(eval_losses[step])}{ce}")

  skipped_reported = 0

  def read_guard(metrics) -> dict[str, int]:
    """The step's guard counters (a host synchronisation: only when logging or saving); reports new skips."""
    nonlocal skipped_reported
    guard = {k: int(metrics[k]) for k in GUARD_KEYS}
    if guard["skipped_steps"] > skipped_reported:
      logger.write(f"step {step}: {guard['skipped_steps'] - skipped_reported} step(s) since the last report had a "
                   f"non-finite loss or gradients and were not applied ({guard['skipped_steps']} in all)")
      skipped_reported = guard["skipped_steps"]
    return guard

  eval_losses: dict[int, float | None] = {}
  eval_ce: dict[int, float | None] = {}
  first_loss = last_loss = None
  interrupted, stop_reason, diverged = False, "", None
  if start == 0 and held_out:
    evaluate(0)
  window_t0, window_tokens, window_steps = time.time(), 0, 0
  with _Stop() as stop:
    step = start
    while step < cfg.steps:
      local = next(setup.train_iter)
      batch = to_global(local, batch_sharding)
      if mixer is None:
        window_tokens += int(local["attention_mask"].sum()) * jax.process_count()
      else:
        batch, sampling_metrics, real_tokens = mixer(state, batch)
        window_tokens += real_tokens
      state, metrics = step_fn(state, teacher_params, batch)
      step += 1
      window_steps += 1
      guard = None
      if step % cfg.log_every == 0 or step == cfg.steps or step == start + 1:
        guard = read_guard(metrics)
        values = {k: float(v) for k, v in metrics.items()}  # float() waits for the step: timings are real
        elapsed = max(time.time() - window_t0, 1e-9)
        values["tokens_per_s"] = window_tokens / elapsed
        values["ms_per_step"] = 1000 * elapsed / window_steps
        if mixer is not None:
          values.update(sampling_metrics)
        record = logger.log(step, values)
        first_loss = record["loss/total"] if first_loss is None else first_loss
        last_loss = record["loss/total"]
        logger.progress(step, {"loss": values["loss/total"], "tok/s": values["tokens_per_s"]})
        window_t0, window_tokens, window_steps = time.time(), 0, 0
      if guard is not None and guard["max_nonfinite_streak"] >= cfg.max_nonfinite_steps:
        diverged = step
        break
      if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps and held_out:
        evaluate(step)
      preempted = stop.requested or manager.reached_preemption(step)
      if (cfg.save_every and step % cfg.save_every == 0) or step == cfg.steps or preempted:
        guard = guard or read_guard(metrics)
        if guard["max_nonfinite_streak"] >= cfg.max_nonfinite_steps:
          diverged = step
          break
        saved = save(setup, manager, state, step, guard, logger, force=preempted)
      if preempted:
        interrupted, stop_reason = True, stop.reason or "SIGTERM"  # JAX's preemption notice is a SIGTERM
        logger.write(f"stop requested ({'SIGINT' if stop_reason == 'SIGINT' else 'SIGTERM/preemption'}): "
                     + (f"saved step {step}" if saved else "nothing saved") + ", exiting")
        break
  if not interrupted and diverged is None and held_out and step == cfg.steps and cfg.steps not in eval_losses \
     and start < cfg.steps:
    evaluate(step)
  manager.wait_until_finished()
  final = manager.latest_step()
  manager.close()
  logger.close()
  last = None if final is None else os.path.join(checkpoints.checkpoint_dir(out_dir), str(final))
  if diverged is not None:
    raise DivergedError(f"training diverged: {guard['max_nonfinite_streak']} consecutive steps had a non-finite "
                        f"loss or gradients (seen at step {diverged}; max_nonfinite_steps={cfg.max_nonfinite_steps}); "
                        "they were not applied and nothing was saved after them; "
                        + (f"last good checkpoint: {last}" if last else "no checkpoint was saved") +
                        " (lower optim.lr or raise optim.warmup_steps)")
  return RunResult(out_dir, step, interrupted, first_loss, last_loss, eval_losses, last, eval_ce, stop_reason)


def save(setup: Setup, manager, state: dict, step: int, guard: dict, logger: MetricsLogger,
         force: bool = False) -> bool:
  """Checkpoint ``state`` at ``step`` with the data position, config and run facts, unless its last step was
  not applied (non-finite) or it holds a non-finite value (one line says so); returns whether it saved."""
  if guard["nonfinite_streak"]:
    logger.write(f"step {step}: not saved: its last {guard['nonfinite_streak']} step(s) had a non-finite loss or "
                 "gradients")
    return False
  try:
    return checkpoints.save(manager, step, params=state["params"], opt_state=state["opt_state"],
                            train={"step": state["step"], "rng": state["rng"]}, data=setup.train_iter.state(),
                            config=tconfig.to_dict(setup.cfg), run=run_facts(setup), force=force)
  except checkpoints.NonFiniteError as e:
    logger.write(f"step {step}: {e}")
    return False


def checkpoint_steps(out_dir: str) -> list[int]:
  """The committed checkpoint steps of ``out_dir`` (none if it has no checkpoint folder)."""
  if not os.path.isdir(checkpoints.checkpoint_dir(out_dir)):
    return []
  manager = checkpoints.open_manager(out_dir, read_only=True)
  steps = sorted(manager.all_steps())
  manager.close()
  return steps


def resume(setup: Setup, out_dir: str) -> dict:
  """The training state of the newest checkpoint of ``out_dir`` that passes verification.

  Newer checkpoints that fail (unreadable, corrupt, non-finite) are moved to ``<out_dir>/rejected_checkpoints/``
  and named in one notice line (``setup.notices``): they are never resumed from, and never outlive the
  verified one when old checkpoints are pruned.

  Raises:
    ConfigError: if the newest readable checkpoint's config or data digest differ from this run's.
    CheckpointError: if no checkpoint passes verification (each named; nothing moved or written).
  """
  manager = checkpoints.open_manager(out_dir, read_only=True)
  rejected, state = [], None
  try:
    for step in sorted(manager.all_steps(), reverse=True):
      try:
        state = restore_step(setup, manager, step)
        break
      except checkpoints.CheckpointError as e:
        rejected.append((step, str(e)))
  finally:
    manager.close()
  if state is None:
    raise checkpoints.CheckpointError("no checkpoint passes verification: " + "; ".join(r for _, r in rejected)
                                      + "; nothing was written (move them away to start afresh)")
  if rejected:
    moved = quarantine(out_dir, [s for s, _ in rejected])
    setup.notices.append(f"note: skipped checkpoint(s) failing verification, moved to {moved}: "
                         + "; ".join(r for _, r in rejected) + f"; resuming from the newest verified one, "
                         f"step {int(state['step'])}")
  return state


def quarantine(out_dir: str, steps: list[int]) -> str:
  """Move ``checkpoints/<step>`` folders to ``<out_dir>/rejected_checkpoints/`` (process 0; all processes wait)."""
  target = os.path.join(out_dir, REJECTED_DIR)
  if distributed.is_main_process():
    os.makedirs(target, exist_ok=True)
    for step in steps:
      dest, n = os.path.join(target, str(step)), 1
      while os.path.exists(dest):
        dest, n = os.path.join(target, f"{step}.{n}"), n + 1
      shutil.move(os.path.join(checkpoints.checkpoint_dir(out_dir), str(step)), dest)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("jaxlens: rejected checkpoints moved")
  return target


def restore_step(setup: Setup, manager, step: int) -> dict:
  """The training state restored and verified from ``step`` (config and data checked first; data iterator
  repositioned).

  Raises:
    ConfigError: if a setting that changes the numbers, or the data, differ from the checkpoint's.
    CheckpointError: if the checkpoint is unreadable, fails verification or does not fit the models.
  """
  cfg = setup.cfg
  path = os.path.join(checkpoints.checkpoint_dir(cfg.out_dir), str(step))
  info = checkpoints.read_run(cfg.out_dir, step)
  diff = config_mismatches(info.config, cfg)
  if diff:
    raise tconfig.ConfigError(f"cannot resume from {path}: its config differs in {'; '.join(diff)} "
                              "(use another out_dir for a different run)")
  stored = info.run.get("data_digest")
  if stored is not None and stored != setup.data_digest:
    changed = [k for k in ("contents", "split") if stored.get(k) != setup.data_digest[k]]
    if not cfg.resume_data_changed:
      raise tconfig.ConfigError(f"cannot resume from {path}: the data of {cfg.data.source!r} changed since it was "
                                f"saved ({' and '.join(changed)}: {stored['examples']} -> "
                                f"{setup.data_digest['examples']} examples); set resume_data_changed=true to "
                                "continue on the new data, or use another out_dir")
    setup.notices.append(f"note: resuming on changed data ({' and '.join(changed)}; resume_data_changed=true)")
  state = setup.initial_state
  got = checkpoints.restore(manager, step, {"params": abstract(state["params"]),
                                            "opt_state": abstract(state["opt_state"]),
                                            "train": abstract({"step": state["step"], "rng": state["rng"]})})
  if int(got["train"]["step"]) != step:
    raise checkpoints.CheckpointError(f"checkpoint {path} holds step {int(got['train']['step'])}, not {step}")
  try:
    setup.train_iter.restore(got["data"])
  except ValueError as e:  # a data position that does not fit this data (changed data allowed above)
    raise tconfig.ConfigError(f"cannot resume from {path}: its data position does not fit the data ({e})") from None
  return {"params": got["params"], "opt_state": got["opt_state"], "step": got["train"]["step"],
          "rng": got["train"]["rng"], "guard": state["guard"]}


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
  lines += setup.notices
  for line in lines:
    logger.write(line)
