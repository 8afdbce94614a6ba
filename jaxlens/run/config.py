"""Typed training configuration: grouped frozen dataclasses, YAML presets and ``key=value`` overrides.

Resolution order: the dataclass defaults, then each preset named on the command line (``configs/<name>.yaml``,
applied left to right; a preset may name its own ``base:`` presets), then the ``key=value`` overrides, which
always win whatever their position (``tiny steps=6 fkl`` = ``tiny fkl steps=6``)::

  python train.py                                   # preset "smollm2" (the embedded CPU default)
  python train.py tiny steps=6 loss.alpha=0.5       # a preset, then overrides
  python train.py gpt2-xl-base fkl teacher.path=... # a recipe preset, then a baseline's loss preset

Keys are dotted (``loss.alpha``, ``optim.lr``, ``parallel.tensor``); top-level keys (``steps``, ``seed``,
``out_dir``, ``batch_size``, …) have no dot. Unknown keys, wrong types and invalid values raise
:class:`ConfigError` with the offending key, value and the accepted ones.

The parser (:func:`flat_fields`, :func:`build_config`, :func:`help_text`, :func:`from_dict`) takes the config
class as its first argument, so every CLI of jaxlens (``train.py``, ``eval.py``) parses and documents its
frozen dataclass the same way.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import typing
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import yaml

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")
DEFAULT_PRESET = "smollm2"


class ConfigError(ValueError):
  """A configuration that cannot be used: unknown key, wrong type, invalid value or unknown preset."""


def opt(default: Any, help: str):  # noqa: A002 - "help" reads best at the call sites
  """A dataclass field with its ``--help`` text."""
  return dataclasses.field(default=default, metadata={"help": help})


def _check(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)


def _one_of(key: str, value: Any, choices: Sequence[Any]) -> None:
  _check(value in choices, f"{key}={value!r} is not one of {list(choices)}")


# --------------------------------------------------------------------------------------------------- models
MODEL_SOURCES = ("smollm2", "random", "hf", "teacher_layers", "run")
FAMILIES = ("llama", "gpt2")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Where a model comes from. ``random`` uses the architecture fields; the others read them from weights."""

  source: str = opt("smollm2", "smollm2 (the registry GGUF) | random | hf (a save_pretrained folder) | "
                    "teacher_layers (student only: every k-th teacher block, embeddings and final norm) | "
                    "run (student only: the latest checkpoint of a train.py run folder)")
  path: str = opt("", "hf: folder with config.json + weights | run: a train.py run folder (out_dir)")
  every: int = opt(3, "teacher_layers: keep teacher blocks 0, k, 2k, …")
  blocks: tuple[int, ...] = opt((), "teacher_layers: the kept teacher blocks, increasing (overrides every), "
                                "e.g. 0,3,6,9,12,15,18,21,24,29")
  family: str = opt("llama", "random: llama | gpt2")
  vocab_size: int = opt(49152, "random: vocabulary size V")
  hidden_size: int = opt(64, "random: residual width D")
  num_layers: int = opt(4, "random: number of blocks L")
  num_heads: int = opt(4, "random: attention heads")
  num_kv_heads: int = opt(2, "random: key/value heads (llama GQA)")
  head_dim: int = opt(16, "random: per-head width")
  intermediate_size: int = opt(128, "random: MLP width")
  seed: int = opt(0, "random: initialisation seed")

  def validate(self, name: str) -> None:
    _one_of(f"{name}.source", self.source, MODEL_SOURCES)
    _one_of(f"{name}.family", self.family, FAMILIES)
    if self.source == "hf":
      _check(bool(self.path), f"{name}.source=hf needs {name}.path (a save_pretrained folder)")
    if self.source == "run":
      _check(name == "student", f"{name}.source=run is only valid for the student")
      _check(bool(self.path), f"{name}.source=run needs {name}.path (a train.py run folder)")
    _check(list(self.blocks) == sorted(set(self.blocks)) and all(b >= 0 for b in self.blocks),
           f"{name}.blocks must be increasing, unique and >= 0, got {list(self.blocks)}")
    if self.source == "teacher_layers":
      _check(name == "student", f"{name}.source=teacher_layers is only valid for the student")
      _check(self.every >= 1, f"{name}.every must be >= 1, got {self.every}")
    for field in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                  "intermediate_size"):
      _check(getattr(self, field) >= 1, f"{name}.{field} must be >= 1, got {getattr(self, field)}")
    _check(self.num_heads % self.num_kv_heads == 0,
           f"{name}.num_heads={self.num_heads} is not a multiple of {name}.num_kv_heads={self.num_kv_heads}")


# ------------------------------------------------------------------------------------------------------ data
SPLITS = ("prompt", "example")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Instruction data: source, prompt template, tokenisation and the held-out split."""

  source: str = opt("chatterbot", "chatterbot (registry corpus) | wordnet (Debian wordnet-base: define / use / "
                    "synonym tasks) | a local .json/.jsonl file of instruction records")
  template: str = opt("chatml", "prompt template: chatml | alpaca (the Dolly/Alpaca 'Below is an instruction…')")
  tokenizer: str = opt("smollm2", "smollm2 (the GGUF's tokenizer) | a .gguf file | a folder with tokenizer.json")
  seq_len: int = opt(64, "tokens per sequence (prompt + response + EOS, right-padded)")
  max_prompt_len: int = opt(48, "prompts longer than this are dropped")
  held_out_fraction: float = opt(0.1, "share of examples held out (content-hash split) for eval losses")
  split: str = opt("prompt", "prompt: examples sharing a prompt or a response stay on one side (leak-free) | "
                   "example: each example hashed alone (the first experiment's split)")
  split_seed: int = opt(0, "seed of the train / held-out split (shared by every run of a comparison)")
  on_policy_fraction: float = opt(0.0, "lambda: each step, each row's response is sampled by the current student "
                                  "with this probability (GKD; 0 = off-policy, 1 = fully on-policy)")
  max_new_tokens: int = opt(0, "most tokens of a sampled response (0 = seq_len - max_prompt_len); "
                            "max_prompt_len + max_new_tokens must fit in seq_len")
  sample_temperature: float = opt(1.0, "temperature of on-policy / teacher-response sampling (0 = greedy)")
  sample_top_p: float = opt(1.0, "nucleus mass of on-policy / teacher-response sampling (1 = off)")
  sampling_dtype: str = opt("auto", "compute dtype of on-policy sampling: auto (bfloat16 on GPU/TPU, else "
                            "precision.compute) | float32 | bfloat16")
  teacher_responses: str = opt("", "SeqKD: a JSONL of teacher responses to the training prompts (written by "
                               "python -m jaxlens.train.teacher_responses) replacing the dataset's responses")

  def validate(self) -> None:
    from jaxlens.data import TEMPLATES
    _check(self.source in ("chatterbot", "wordnet") or self.source.endswith((".json", ".jsonl")),
           f"data.source={self.source!r}: expected chatterbot, wordnet or a local .json / .jsonl file")
    _one_of("data.template", self.template, TEMPLATES)
    _check(self.seq_len >= 2, f"data.seq_len must be >= 2, got {self.seq_len}")
    _check(1 <= self.max_prompt_len < self.seq_len,
           f"data.max_prompt_len must be in [1, data.seq_len={self.seq_len}), got {self.max_prompt_len}")
    _check(0.0 < self.held_out_fraction < 1.0,
           f"data.held_out_fraction must be in (0, 1), got {self.held_out_fraction}")
    _one_of("data.split", self.split, SPLITS)
    _check(0.0 <= self.on_policy_fraction <= 1.0,
           f"data.on_policy_fraction must be in [0, 1], got {self.on_policy_fraction}")
    _check(self.max_new_tokens >= 0, f"data.max_new_tokens must be >= 0, got {self.max_new_tokens}")
    _check(self.max_prompt_len + self.max_new_tokens <= self.seq_len,
           f"data.max_new_tokens={self.max_new_tokens} leaves no room: data.max_prompt_len={self.max_prompt_len} + "
           f"max_new_tokens must be <= data.seq_len={self.seq_len} (at most "
           f"{self.seq_len - self.max_prompt_len}, or 0 for that)")
    _check(self.sample_temperature >= 0, f"data.sample_temperature must be >= 0, got {self.sample_temperature}")
    _check(0.0 < self.sample_top_p <= 1.0, f"data.sample_top_p must be in (0, 1], got {self.sample_top_p}")
    _one_of("data.sampling_dtype", self.sampling_dtype, ("auto", "float32", "bfloat16"))

  @property
  def new_tokens(self) -> int:
    """The sampled response budget: ``max_new_tokens``, or ``seq_len − max_prompt_len`` when 0."""
    return self.max_new_tokens or self.seq_len - self.max_prompt_len


# ------------------------------------------------------------------------------------------------------ loss
LAYER_MAPS = ("uniform", "construction")
IMPLEMENTATIONS = ("tiled", "reference")


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """The objective ``(1 − alpha)·CE + alpha·(L_output + lens_weight·L_lens + feature_mse_weight·L_mse)``."""

  alpha: float = opt(1.0, "weight of the distillation terms; 1 − alpha weighs the cross-entropy on labels")
  output_divergence: str = opt("reverse_kl", "divergence at the output (teacher-first); 'a+b' sums two, "
                               "e.g. forward_kl+reverse_kl")
  lens_divergence: str = opt("jsd", "divergence between teacher and student logit-lens distributions")
  lens_weight: float = opt(1.0, "lambda: weight of the lens term (0 disables it)")
  teacher_layers: tuple[int, ...] = opt((), "teacher hidden-state indices of the lens pairs (HF convention, "
                                        "'after k blocks'); empty = uniform map of num_lens_pairs")
  student_layers: tuple[int, ...] = opt((), "student indices paired with teacher_layers (same length)")
  num_lens_pairs: int = opt(5, "uniform map: pairs at depth fractions 1/(n+1) … n/(n+1)")
  layer_map: str = opt("uniform", "without explicit lists: uniform (DistillLens: both models at depth k/(n+1)) | "
                       "construction (student pairs at depth k/(n+1), each with the teacher hidden state after "
                       "the teacher block that student block was copied from)")
  lens_norm: bool = opt(False, "apply each model's final norm before its lens unembedding (DistillLens: no)")
  reference_mask_bug: bool = opt(False, "reproduce the reference code's lens-mask misalignment "
                                 "(mask.repeat(N, 1) on b*N+i rows) for parity studies")
  temperature: float = opt(1.0, "softmax temperature tau of every divergence")
  beta: float = opt(0.5, "jsd mixture weight: m = beta·p + (1 − beta)·q")
  skew: float = opt(0.1, "skew_kl / skew_reverse_kl mixture weight alpha (DistiLLM)")
  tad_k: int = opt(10, "tad: size K of the teacher's top-K head")
  tad_beta: float = opt(2.0, "tad: weight of the tail term")
  head_rule: str = opt("official", "adaptive_kl head rule: official (code) | paper")
  mu: float = opt(0.5, "adaptive_kl head mass")
  akl_swap: bool = opt(False, "adaptive_kl: AKL-r, the AKL paper's ablation with the head and tail weights swapped")
  mix_weight: float = opt(0.5, "mix: forward-KL share w of w·KL(p||q) + (1 − w)·KL(q||p)")
  feature_mse_weight: float = opt(0.0, "mu: weight of the feature-MSE baseline term (learned projection "
                                  "teacher width -> student width on the lens pairs)")
  implementation: str = opt("tiled", "lens/output loss kernel: tiled (never materialises [N, V]) | reference")
  block_tokens: int = opt(1024, "tiled kernel: tokens per tile (live logits ~ 2 x block_tokens x V float32)")

  def validate(self) -> None:
    from jaxlens.losses import DIVERGENCES, HEAD_RULES
    _check(0.0 <= self.alpha <= 1.0, f"loss.alpha must be in [0, 1], got {self.alpha}")
    for name in self.output_divergences():
      _check(name in DIVERGENCES, f"loss.output_divergence: unknown divergence {name!r}; known: {sorted(DIVERGENCES)}")
    _check(self.lens_divergence in DIVERGENCES,
           f"loss.lens_divergence: unknown divergence {self.lens_divergence!r}; known: {sorted(DIVERGENCES)}")
    for key in ("lens_weight", "feature_mse_weight"):
      _check(getattr(self, key) >= 0, f"loss.{key} must be >= 0, got {getattr(self, key)}")
    _check(len(self.teacher_layers) == len(self.student_layers),
           f"loss.teacher_layers {list(self.teacher_layers)} and loss.student_layers {list(self.student_layers)} "
           "must have the same length")
    _check(self.num_lens_pairs >= 1, f"loss.num_lens_pairs must be >= 1, got {self.num_lens_pairs}")
    _check(self.temperature > 0, f"loss.temperature must be > 0, got {self.temperature}")
    _check(0.0 <= self.beta <= 1.0, f"loss.beta must be in [0, 1], got {self.beta}")
    _check(0.0 <= self.skew <= 1.0, f"loss.skew must be in [0, 1], got {self.skew}")
    _check(self.tad_k >= 1, f"loss.tad_k must be >= 1, got {self.tad_k}")
    _check(self.tad_beta >= 0, f"loss.tad_beta must be >= 0, got {self.tad_beta}")
    _check(0.0 < self.mu < 1.0, f"loss.mu must be in (0, 1), got {self.mu}")
    _one_of("loss.head_rule", self.head_rule, HEAD_RULES)
    _one_of("loss.layer_map", self.layer_map, LAYER_MAPS)
    _check(0.0 <= self.mix_weight <= 1.0, f"loss.mix_weight must be in [0, 1], got {self.mix_weight}")
    _one_of("loss.implementation", self.implementation, IMPLEMENTATIONS)
    _check(self.block_tokens >= 1, f"loss.block_tokens must be >= 1, got {self.block_tokens}")

  def output_divergences(self) -> tuple[str, ...]:
    """The summed output divergences (``"forward_kl+reverse_kl"`` → two)."""
    return tuple(n.strip() for n in self.output_divergence.split("+"))


# ----------------------------------------------------------------------------------------------------- optim
SCHEDULES = ("cosine", "linear", "constant")
DECAY_RULES = ("reference", "all", "none")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """AdamW, learning-rate schedule and clipping."""

  lr: float = opt(1e-4, "peak learning rate")
  lr_min: float = opt(1e-7, "final learning rate of the cosine/linear decay")
  schedule: str = opt("cosine", "cosine | linear | constant (after warm-up)")
  warmup_steps: int = opt(0, "linear warm-up steps from 0 to lr")
  weight_decay: float = opt(0.01, "AdamW decoupled weight decay")
  decay_rule: str = opt("reference", "which parameters decay: reference (all but biases and GPT-2 LayerNorm "
                        "weights) | all | none")
  b1: float = opt(0.9, "Adam beta1")
  b2: float = opt(0.999, "Adam beta2")
  eps: float = opt(1e-8, "Adam epsilon")
  clip_norm: float = opt(1.0, "global gradient-norm clip (0 disables)")

  def validate(self) -> None:
    _check(self.lr > 0, f"optim.lr must be > 0, got {self.lr}")
    _check(0 <= self.lr_min <= self.lr, f"optim.lr_min must be in [0, optim.lr={self.lr}], got {self.lr_min}")
    _one_of("optim.schedule", self.schedule, SCHEDULES)
    _one_of("optim.decay_rule", self.decay_rule, DECAY_RULES)
    _check(self.warmup_steps >= 0, f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
    _check(self.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {self.weight_decay}")
    _check(0 <= self.b1 < 1 and 0 <= self.b2 < 1, f"optim.b1/b2 must be in [0, 1), got {self.b1}, {self.b2}")
    _check(self.eps > 0, f"optim.eps must be > 0, got {self.eps}")
    _check(self.clip_norm >= 0, f"optim.clip_norm must be >= 0, got {self.clip_norm}")


# ------------------------------------------------------------------------------------------------- precision
DTYPES = ("float32", "bfloat16")  # jax.numpy dtype names
REMAT = ("none", "block", "dots")
ATTENTION = ("xla", "cudnn", "auto")


@dataclasses.dataclass(frozen=True)
class PrecisionConfig:
  """Compute and storage dtypes, rematerialisation and the attention kernel; master weights and optimizer state
  are always float32."""

  compute: str = opt("float32", "activation / matmul dtype of both models: float32 | bfloat16")
  teacher_params: str = opt("float32", "storage dtype of the frozen teacher's weights: float32 | bfloat16")
  remat: str = opt("none", "student rematerialisation in the backward pass: none | block (keep each block's "
                   "input, recompute the rest) | dots (also keep matmul outputs); true/false mean block/none")
  attention: str = opt("xla", "attention kernel of both models: xla (any device) | cudnn (GPU flash attention, "
                       "needs compute=bfloat16) | auto (cudnn on a GPU with compute=bfloat16, else xla)")

  def __post_init__(self):  # the former boolean switch: true/false (YAML bools or strings) = block/none
    flag = str(self.remat).lower()
    if flag in ("true", "1", "yes", "false", "0", "no"):
      object.__setattr__(self, "remat", "block" if flag in ("true", "1", "yes") else "none")

  def validate(self) -> None:
    _one_of("precision.compute", self.compute, DTYPES)
    _one_of("precision.teacher_params", self.teacher_params, DTYPES)
    _one_of("precision.remat", self.remat, REMAT)
    _one_of("precision.attention", self.attention, ATTENTION)
    _check(self.attention != "cudnn" or self.compute == "bfloat16",
           f"precision.attention=cudnn needs precision.compute=bfloat16, got {self.compute}")

  @property
  def compute_dtype(self):
    """``compute`` as a ``jax.numpy`` dtype (the names of :data:`DTYPES` are ``jax.numpy`` attributes)."""
    import jax.numpy as jnp
    return getattr(jnp, self.compute)

  @property
  def teacher_params_dtype(self):
    """``teacher_params`` as a ``jax.numpy`` dtype."""
    import jax.numpy as jnp
    return getattr(jnp, self.teacher_params)


# -------------------------------------------------------------------------------------------------- parallel
@dataclasses.dataclass(frozen=True)
class ParallelConfig:
  """Device mesh (product of the three sizes = device count; one may be -1) and multi-process start-up."""

  data: int = opt(-1, "data-parallel mesh axis size (-1 = the remaining devices)")
  fsdp: int = opt(1, "fully-sharded data-parallel axis size (batch and parameters split)")
  tensor: int = opt(1, "tensor-parallel axis size (parameters split along heads/hidden/vocab)")
  distributed: str = opt("auto", "jax.distributed.initialize: auto (if a coordinator is given) | on | off")
  coordinator_address: str = opt("", "host:port of process 0 (or env JAXLENS_COORDINATOR)")
  num_processes: int = opt(0, "number of processes (0 = env JAXLENS_NUM_PROCESSES or auto-detect)")
  process_id: int = opt(-1, "this process's index (-1 = env JAXLENS_PROCESS_ID or auto-detect)")

  def validate(self) -> None:
    for key in ("data", "fsdp", "tensor"):
      value = getattr(self, key)
      _check(value >= 1 or value == -1, f"parallel.{key} must be >= 1 or -1, got {value}")
    _check([self.data, self.fsdp, self.tensor].count(-1) <= 1, "at most one of parallel.data/fsdp/tensor may be -1")
    _one_of("parallel.distributed", self.distributed, ("auto", "on", "off"))


# ----------------------------------------------------------------------------------------------------- train
RESUME = ("auto", "never")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything one training run needs; stored (resolved) in every checkpoint.

  The defaults are the library's: the SmolLM2 models and data with DistillLens as released (α = 1, RKL output,
  raw-lens JSD on the uniform map). The embedded default, the ``smollm2`` preset that ``python train.py`` uses,
  overrides the student's blocks and the objective (``configs/smollm2.yaml``).
  """

  # --- run ---
  preset: str = opt(DEFAULT_PRESET, "the preset(s) this config was built from (set by the positional names)")
  out_dir: str = opt("runs/smollm2", "run folder: checkpoints, metrics.jsonl, tensorboard/, config.json")
  seed: int = opt(0, "seed of data order, student initialisation and step RNG")
  # --- schedule (units: optimizer steps; batch sizes in sequences) ---
  steps: int = opt(24, "optimizer steps")
  batch_size: int = opt(4, "global sequences per optimizer step (over all hosts and devices)")
  grad_accum: int = opt(1, "micro-batches per step (batch_size must be a multiple); token-weighted")
  # --- logging and evaluation ---
  log_every: int = opt(2, "steps between metric records (JSONL, TensorBoard, progress bar)")
  eval_every: int = opt(0, "steps between held-out eval losses (0 = only at the end)")
  eval_batches: int = opt(2, "held-out batches per evaluation (fixed, the same every time)")
  progress: bool = opt(True, "draw a tqdm progress bar (process 0 only)")
  # --- checkpoints ---
  save_every: int = opt(0, "steps between checkpoints (0 = only at the end); SIGTERM always saves")
  keep_checkpoints: int = opt(2, "how many most recent checkpoints to keep")
  max_nonfinite_steps: int = opt(3, "stop the run after this many consecutive steps with a non-finite loss or "
                                 "gradients (such steps are never applied)")
  resume_data_changed: bool = opt(False, "allow resuming a run whose data (contents or held-out split) differ "
                                  "from the ones its checkpoint recorded")
  resume: str = opt("auto", "auto: continue from the latest checkpoint in out_dir | never: start fresh "
                    "(refuses an out_dir that already holds checkpoints)")
  # --- groups ---
  teacher: ModelSpec = dataclasses.field(default_factory=ModelSpec)
  student: ModelSpec = dataclasses.field(default_factory=lambda: ModelSpec(source="teacher_layers"))
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  loss: LossConfig = dataclasses.field(default_factory=LossConfig)
  optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
  precision: PrecisionConfig = dataclasses.field(default_factory=PrecisionConfig)
  parallel: ParallelConfig = dataclasses.field(default_factory=ParallelConfig)

  def validate(self) -> TrainConfig:
    """Check every field; returns ``self``.

    Raises:
      ConfigError: naming the first invalid key and value.
    """
    for key in ("steps", "batch_size", "grad_accum", "log_every", "eval_batches", "keep_checkpoints",
                "max_nonfinite_steps"):
      _check(getattr(self, key) >= 1, f"{key} must be >= 1, got {getattr(self, key)}")
    for key in ("eval_every", "save_every"):
      _check(getattr(self, key) >= 0, f"{key} must be >= 0, got {getattr(self, key)}")
    _check(self.batch_size % self.grad_accum == 0,
           f"batch_size={self.batch_size} must be a multiple of grad_accum={self.grad_accum}")
    _one_of("resume", self.resume, RESUME)
    _check(bool(self.out_dir), "out_dir must not be empty")
    self.teacher.validate("teacher")
    _check(self.teacher.source != "teacher_layers", "teacher.source=teacher_layers is only valid for the student")
    self.student.validate("student")
    for group in (self.data, self.loss, self.optim, self.precision, self.parallel):
      group.validate()
    return self

  @property
  def micro_batch_size(self) -> int:
    return self.batch_size // self.grad_accum


# ------------------------------------------------------------------------------------------ flat key access
# The parser below works for any frozen dataclass whose fields are int, float, bool, str, tuple[int, ...] or
# (one level deep) another such dataclass: TrainConfig here, EvalConfig in jaxlens.eval.cli.
TRAIN_COMMAND = "python train.py"


def _field_default(f: dataclasses.Field) -> Any:
  return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _groups(cls: type) -> dict[str, type]:
  """The fields of ``cls`` that are themselves dataclasses (``loss`` → :class:`LossConfig`)."""
  hints = typing.get_type_hints(cls)
  return {f.name: hints[f.name] for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}


def flat_fields(cls: type = TrainConfig) -> dict[str, tuple[Any, Any, str]]:
  """Every settable key of ``cls`` → ``(type, default, help)``, in declaration order (``loss.alpha``, ``steps``).

  Defaults come from the field declarations (``cls`` is never instantiated); help from ``opt(..., help)``.
  """
  out = {}
  hints = typing.get_type_hints(cls)
  for f in dataclasses.fields(cls):
    if dataclasses.is_dataclass(hints[f.name]):
      group_default = _field_default(f)
      sub_hints = typing.get_type_hints(hints[f.name])
      for g in dataclasses.fields(hints[f.name]):
        out[f"{f.name}.{g.name}"] = (sub_hints[g.name], getattr(group_default, g.name), g.metadata.get("help", ""))
    else:
      out[f.name] = (hints[f.name], _field_default(f), f.metadata.get("help", ""))
  return out


def _unknown(key: str, known: Sequence[str], command: str) -> ConfigError:
  close = difflib.get_close_matches(key, known, n=3)
  hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else f"; see {command} --help"
  return ConfigError(f"unknown config key {key!r}{hint}")


def _convert(key: str, kind: Any, raw: Any) -> Any:
  """Convert a YAML value or a command-line string to the field's type; ConfigError on a mismatch."""
  if typing.get_origin(kind) is tuple:
    if isinstance(raw, str):
      raw = [t for t in (s.strip() for s in raw.strip("[]()").split(",")) if t]
    if not isinstance(raw, (list, tuple)):
      raise ConfigError(f"{key}: expected a comma-separated list of int, got {raw!r}")
    return tuple(_convert(key, int, item) for item in raw)
  if kind is bool:
    if isinstance(raw, bool):
      return raw
    if isinstance(raw, str) and raw.lower() in ("true", "false", "1", "0", "yes", "no"):
      return raw.lower() in ("true", "1", "yes")
    raise ConfigError(f"{key}: expected true/false, got {raw!r}")
  if kind is int:
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
      raise ConfigError(f"{key}: expected int, got {raw!r}")
    try:
      return int(raw) if not isinstance(raw, str) else int(raw, 10)
    except (TypeError, ValueError, OverflowError):
      raise ConfigError(f"{key}: expected int, got {raw!r}") from None
  if kind is float:
    if isinstance(raw, bool):
      raise ConfigError(f"{key}: expected float, got {raw!r}")
    try:
      value = float(raw)
    except (TypeError, ValueError):
      raise ConfigError(f"{key}: expected float, got {raw!r}") from None
    if not math.isfinite(value):
      raise ConfigError(f"{key}: expected a finite number, got {raw!r}")
    return value
  if kind is str:
    if raw is None or isinstance(raw, (dict, list)):
      raise ConfigError(f"{key}: expected a string, got {raw!r}")
    return str(raw)
  raise TypeError(f"unsupported config field type {kind!r} for {key}")


def _flatten(tree: Mapping[str, Any], where: str, cls: type = TrainConfig) -> dict[str, Any]:
  """Nested YAML mapping → ``{"loss.alpha": 0.5, "steps": 6}``; groups must be mappings."""
  groups = _groups(cls)
  out = {}
  for key, value in tree.items():
    if key in groups:
      if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: {key!r} must be a mapping of {key}.* keys, got {value!r}")
      out.update({f"{key}.{k}": v for k, v in value.items()})
    else:
      out[key] = value
  return out


def available_presets() -> list[str]:
  """Preset names (``configs/*.yaml`` without the extension)."""
  return sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".yaml"))


def load_preset(name: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
  """The flat ``key → raw value`` of preset ``name``, its ``base:`` presets applied first.

  Raises:
    ConfigError: on an unknown preset, a ``base`` cycle, or a preset that is not a mapping.
  """
  path = os.path.join(CONFIG_DIR, f"{name}.yaml")
  if not os.path.exists(path):
    raise ConfigError(f"unknown preset {name!r}; known: {available_presets()}")
  if name in _seen:
    raise ConfigError(f"preset base cycle: {' -> '.join((*_seen, name))}")
  try:
    with open(path) as f:
      tree = yaml.safe_load(f) or {}
  except yaml.YAMLError as e:
    mark = getattr(e, "problem_mark", None)
    where = f"{path}:{mark.line + 1}" if mark is not None else path
    raise ConfigError(f"{where}: malformed YAML ({getattr(e, 'problem', None) or type(e).__name__})") from None
  if not isinstance(tree, Mapping):
    raise ConfigError(f"{path}: a preset must be a mapping, got {type(tree).__name__}")
  tree = dict(tree)
  bases = tree.pop("base", [])
  values = {}
  for base in [bases] if isinstance(bases, str) else bases:
    values.update(load_preset(base, (*_seen, name)))
  values.update(_flatten(tree, path))
  return values


def build_config(cls: type, values: Mapping[str, Any], where: str = "config", command: str = TRAIN_COMMAND):
  """A validated ``cls`` (a frozen config dataclass) from flat ``key → raw value`` pairs (strings or YAML scalars).

  Keys not given keep the field defaults; ``cls.validate()`` runs when ``cls`` has one. ``command`` names the
  CLI whose ``--help`` an unknown key without a close match points to.

  Raises:
    ConfigError: on an unknown key (with close matches), a value of the wrong type or an invalid value
      (prefixed with ``where``).
  """
  fields = flat_fields(cls)
  groups = _groups(cls)
  top, nested = {}, {name: {} for name in groups}
  for key, raw in values.items():
    if key not in fields:
      raise _unknown(key, list(fields), command)
    value = _convert(key, fields[key][0], raw)
    group, _, name = key.rpartition(".")
    (nested[group] if group else top)[name] = value
  kwargs = dict(top)
  for f in dataclasses.fields(cls):
    if f.name in groups:
      kwargs[f.name] = dataclasses.replace(_field_default(f), **nested[f.name])
  try:
    cfg = cls(**kwargs)
    return cfg.validate() if hasattr(cfg, "validate") else cfg
  except ConfigError as e:
    raise ConfigError(f"{where}: {e}") from None


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
  """``["steps=6", "loss.alpha=0.5"]`` → ``{"steps": "6", "loss.alpha": "0.5"}``.

  Raises:
    ConfigError: on an item without ``=`` or with an empty key.
  """
  out = {}
  for item in items:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
      raise ConfigError(f"expected key=value, got {item!r}")
    out[key.strip()] = raw
  return out


def resolve(argv: Sequence[str]) -> TrainConfig:
  """Command-line words → :class:`TrainConfig`: preset names and ``key=value`` overrides.

  Presets are applied in the order named, then every override (wherever it stands), so an explicit
  ``key=value`` always wins over a preset. With no preset name, :data:`DEFAULT_PRESET` is used.

  Raises:
    ConfigError: on an unknown preset or any invalid key / value.
  """
  presets = [word for word in argv if "=" not in word]
  overrides = [word for word in argv if "=" in word]
  presets = presets or [DEFAULT_PRESET]
  values: dict[str, Any] = {}
  for name in presets:
    values.update(load_preset(name))
  values["preset"] = "+".join(presets)
  values.update(parse_overrides(overrides))
  return build_config(TrainConfig, values, where=f"presets {presets} + overrides")


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
  """JSON-able nested dict (tuples become lists); :func:`from_dict` inverts it."""
  return dataclasses.asdict(cfg)


#: Keys added to :class:`TrainConfig` after runs were stored, with the value that reproduces how those runs behaved:
#: a stored config without the key gets this value, not today's default (:func:`from_stored`).
STORED_DEFAULTS = {"data.split": "example"}


def from_stored(tree: Mapping[str, Any]) -> TrainConfig:
  """The :class:`TrainConfig` of a run folder's stored config (:func:`to_dict` of any earlier version): keys it
  lacks take their :data:`STORED_DEFAULTS` value, else the field default.

  Raises:
    ConfigError: on unknown keys or invalid values.
  """
  values = _flatten(tree, "stored config")
  values = {**{k: v for k, v in STORED_DEFAULTS.items() if k not in values}, **values}
  return build_config(TrainConfig, values, where="stored config")


def from_dict(tree: Mapping[str, Any], cls: type = TrainConfig):
  """The ``cls`` (default :class:`TrainConfig`) of a nested dict written by :func:`to_dict`.

  Raises:
    ConfigError: on unknown keys or invalid values.
  """
  return build_config(cls, _flatten(tree, "stored config", cls), where="stored config")


def help_text(cls: type = TrainConfig, usage: str | None = None, top_group: str = "run") -> str:
  """Every option of ``cls``: its key, type, default and meaning, grouped; after ``usage``.

  Args:
    cls: the config dataclass (its fields' ``opt(..., help)`` texts are shown).
    usage: the lines above the options; default: train.py's usage and the presets.
    top_group: the heading of the keys without a dot.
  """
  if usage is None:
    usage = (f"usage: {TRAIN_COMMAND} [PRESET ...] [key=value ...]   (presets in order, then every key=value)\n\n"
             f"presets (configs/*.yaml; default {DEFAULT_PRESET!r}): {', '.join(available_presets())}")
  lines = [usage, "", "options (key  type  default  meaning):"]
  group = None
  for key, (kind, default, text) in flat_fields(cls).items():
    head = key.rpartition(".")[0] or top_group
    if head != group:
      group = head
      lines.append(f"  [{group}]")
    kind_name = "int list" if typing.get_origin(kind) is tuple else kind.__name__
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    lines.append(f"    {key}  ({kind_name}, default {shown!r})  {text}")
  return "\n".join(lines)
