"""What an evaluation scores, rebuilt from training run folders without the training code.

Every trained student is a run folder written by ``train.py``; its checkpoint holds the resolved training
config and the run facts (:mod:`jaxlens.run.checkpoints`), from which :mod:`jaxlens.run.model_sources` rebuilds the
teacher and the student. The held-out data are the training config's held-out split (same source, template,
tokenizer, lengths and split seed), so no student has seen them. The special path ``baseline`` names the
untrained student: the training config's student source (e.g. teacher blocks 0, 3, …) built from the
teacher, with the same lens layer pairs. All students must share one teacher and one data configuration.
Evaluation runs in float32 whatever the training precision.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from jaxlens import data, models
from jaxlens.run import checkpoints, model_sources
from jaxlens.run.config import DataConfig, TrainConfig

#: The ``students=`` path of the untrained, teacher-initialised student.
BASELINE = "baseline"

#: ``students=name=hf:FOLDER``: an exported (or any) Hugging Face folder, scored on benchmark sets.
HF_PREFIX = "hf:"

#: Run-config groups that must agree between the students of one evaluation.
SHARED_CONFIG = ("teacher", "student", "data")


class GenerationSet(NamedTuple):
  """Held-out prompts to answer and their reference responses.

  Attributes:
    tokenizer: the run's tokenizer (``decode``).
    prompts: ``[N]`` prompt token lists (the training template, no response).
    references: ``[N]`` lists of reference responses (every held-out response to that prompt).
    eos_id: end of response.
    pad_id: padding id.
  """

  tokenizer: Any
  prompts: list[list[int]]
  references: list[list[str]]
  eos_id: int
  pad_id: int


class EvalSetup(NamedTuple):
  """Everything :func:`jaxlens.eval.cli.evaluate_students` needs.

  Attributes:
    teacher: the frozen teacher.
    students: name → student model, in the order of the ``students=`` argument.
    batches: the fixed held-out data ``Batch`` dicts (teacher forcing).
    layer_pairs: name → ``[(teacher_layer, student_layer), ...]`` lens pairs of the training objective.
    generation_set: prompts and references for the generation metrics.
    description: JSON-ready facts for the report (teacher, students' runs and steps, data).
  """

  teacher: models.CausalLM
  students: dict[str, models.CausalLM]
  batches: list[dict[str, np.ndarray]]
  layer_pairs: dict[str, list[tuple[int, int]]]
  generation_set: GenerationSet
  description: dict[str, Any]


def held_out_examples(data_cfg: DataConfig) -> list[dict[str, str]]:
  """The held-out examples of a run's ``data`` config: its source split by content hash with its split seed
  (:func:`jaxlens.data.split`, the split training held out).

  Raises:
    ValueError: if the held-out split is empty.
  """
  _, held_out = data.split(data_cfg)
  if not held_out:
    raise ValueError(f"the held-out split of {data_cfg.source!r} is empty "
                     f"(held_out_fraction={data_cfg.held_out_fraction})")
  return held_out


def held_out_batches(examples: Sequence[Mapping[str, str]], tokenizer, data_cfg: DataConfig, *,
                     batch_size: int, num_batches: int) -> list[dict[str, np.ndarray]]:
  """The first ``num_batches`` batches of ``batch_size`` tokenised held-out examples, in split order.

  Tokenised exactly like training (template, ``seq_len``, ``max_prompt_len``); one example per row (no
  packing), the last batch filled with all-padding rows whose masks are 0 (:func:`jaxlens.data.fixed_batches`,
  the trainer's held-out batches).
  """
  return data.fixed_batches(data.tokenize(examples, tokenizer, data_cfg), batch_size=batch_size,
                            seq_len=data_cfg.seq_len, pad_id=tokenizer.pad_id, num_batches=num_batches)


def generation_set(examples: Sequence[Mapping[str, str]], tokenizer, data_cfg: DataConfig, *,
                   num_prompts: int) -> GenerationSet:
  """The first ``num_prompts`` distinct held-out prompts (those within ``max_prompt_len`` tokens), each with
  every held-out response to it as a reference."""
  references: dict[str, list[str]] = {}
  for example in examples:
    references.setdefault(data.format_prompt(example, data_cfg.template), []).append(example["output"])
  prompts, refs = [], []
  for text, outputs in references.items():
    ids = tokenizer.encode(text)
    if len(ids) <= data_cfg.max_prompt_len:
      prompts.append(ids)
      refs.append(outputs)
    if len(prompts) == num_prompts:
      break
  return GenerationSet(tokenizer, prompts, refs, tokenizer.eos_id, tokenizer.pad_id)


def check_finite(model: models.CausalLM, what: str) -> None:
  """Raise :class:`~jaxlens.run.checkpoints.NonFiniteError` if ``model``'s parameters hold NaN or ±inf (a NaN
  model would otherwise score as perfect under some divergences)."""
  from flax import nnx
  bad = checkpoints.array_digests(nnx.to_pure_dict(nnx.state(model, nnx.Param)))[1]
  if bad:
    shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    raise checkpoints.NonFiniteError(f"{what} has NaN or inf parameters in {len(bad)} array(s): {shown}; refusing "
                                     "to evaluate it")


def _differences(a: TrainConfig, b: TrainConfig) -> list[str]:
  def shown(cfg, group):
    return json.dumps(dataclasses.asdict(getattr(cfg, group)), sort_keys=True)
  return [f"{group}: {shown(a, group)} vs {shown(b, group)}" for group in SHARED_CONFIG
          if getattr(a, group) != getattr(b, group)]


def load_setup(cfg) -> EvalSetup:
  """Rebuild teacher, students, held-out batches and prompts for an :class:`~jaxlens.eval.cli.EvalConfig`.

  Args:
    cfg: the evaluation config (``student_paths()``, ``batch_size``, ``eval_batches``, ``gen_examples``).

  Returns:
    :class:`EvalSetup`.

  Raises:
    ValueError: if only ``baseline`` students are listed (a run folder is needed for the teacher, data and
      layer map), or the runs differ in teacher, student architecture or data.
    jaxlens.run.checkpoints.CheckpointError: on a missing, unreadable or corrupt run folder.
    jaxlens.run.checkpoints.NonFiniteError: if the teacher or a student has NaN or ±inf parameters.
  """
  paths = cfg.student_paths()
  runs = {name: path for name, path in paths.items() if path != BASELINE}
  if not runs:
    raise ValueError(f"students={cfg.students!r}: at least one trained run folder is needed; the {BASELINE!r} "
                     "student is built from a run's config")
  teacher, loaded, infos = None, {}, {}
  for name, path in runs.items():
    run_teacher, loaded[name], infos[name] = model_sources.load_run_models(path)
    teacher = run_teacher if teacher is None else teacher  # every run rebuilds the same teacher (checked below)
  reference = next(iter(infos.values()))
  for name, info in infos.items():
    problems = _differences(reference.config, info.config)
    if problems:
      raise ValueError(f"run {runs[name]!r} differs from {reference.path!r} in {'; '.join(problems)}; one "
                       "evaluation compares students of one teacher on one data set")
  students, layer_pairs = {}, {}
  for name, path in paths.items():
    if path == BASELINE:
      students[name] = model_sources.make_student(reference.config.student, teacher)
      pairs = reference.run["layer_pairs"]
    else:
      students[name] = loaded[name]
      pairs = infos[name].run["layer_pairs"]
    layer_pairs[name] = [tuple(map(int, pair)) for pair in pairs]
  check_finite(teacher, f"the teacher ({reference.config.teacher.source})")
  for name, model in students.items():
    check_finite(model, f"student {name!r} ({paths[name]})")
  data_cfg = reference.config.data
  tokenizer = model_sources.load_run_tokenizer(data_cfg)
  examples = held_out_examples(data_cfg)
  batches = held_out_batches(examples, tokenizer, data_cfg, batch_size=cfg.batch_size, num_batches=cfg.eval_batches)
  prompts = generation_set(examples, tokenizer, data_cfg, num_prompts=cfg.gen_examples)
  description = {
      "teacher": dataclasses.asdict(reference.config.teacher), "teacher_model": reference.run["teacher_model"],
      "student_model": reference.run["student_model"], "data": dataclasses.asdict(data_cfg),
      "runs": {name: {"path": info.path, "step": info.step, "loss": dataclasses.asdict(info.config.loss)}
               for name, info in infos.items()},
      "held_out_examples": len(examples), "sequences": int(sum(np.asarray(b["loss_mask"]).any(1).sum() for b in batches)),
      "prompts": len(prompts.prompts)}
  return EvalSetup(teacher, students, batches, layer_pairs, prompts, description)


class BenchmarkModels(NamedTuple):
  """The models a benchmark evaluation samples from, each with its own tokenizer.

  Attributes:
    models: name → ``(model, tokenizer)``: every student in ``students=`` order, then ``"teacher"`` when a run
      folder names one.
    template: the prompt template (``template=``, else the runs' ``data.template``).
    description: JSON-ready facts for the report (sources, runs' steps).
  """

  models: dict[str, tuple[models.CausalLM, Any]]
  template: str
  description: dict[str, Any]


def load_benchmark_models(cfg) -> BenchmarkModels:
  """Every student of an :class:`~jaxlens.eval.cli.EvalConfig` (run folders, ``baseline``, ``hf:FOLDER``) and the
  runs' teacher, for sampling on benchmark sets.

  Raises:
    ValueError: ``baseline`` without a run folder, no template (neither ``template=`` nor a run folder), or run
      folders with different teachers.
    FileNotFoundError: a missing ``hf:`` folder or tokenizer.
    jaxlens.run.checkpoints.CheckpointError: on a missing or unreadable run folder.
  """
  paths = cfg.student_paths()
  runs = {name: path for name, path in paths.items() if path != BASELINE and not path.startswith(HF_PREFIX)}
  if BASELINE in paths.values() and not runs:
    raise ValueError(f"the {BASELINE!r} student is built from a run's config; name a run folder too")
  teacher, loaded, infos = None, {}, {}
  for name, path in runs.items():
    run_teacher, loaded[name], infos[name] = model_sources.load_run_models(path)
    teacher = run_teacher if teacher is None else teacher
  reference = next(iter(infos.values()), None)
  for name, info in infos.items():
    if info.config.teacher != reference.config.teacher:
      raise ValueError(f"run {runs[name]!r} has another teacher than {reference.path!r}; one evaluation compares "
                       "students of one teacher")
  template = cfg.template or (reference.config.data.template if reference else "")
  if not template and cfg.prompt_from == "template":
    raise ValueError("benchmark prompts need a template: pass template=chatml|alpaca or prompt_from=file (no run "
                     "folder names one)")
  run_tokenizer = model_sources.load_run_tokenizer(reference.config.data) if reference else None
  out, sources = {}, {}
  for name, path in paths.items():
    if path.startswith(HF_PREFIX):
      folder = path.removeprefix(HF_PREFIX)
      out[name] = (models.from_pretrained(folder), models.load_tokenizer(folder))
      sources[name] = {"hf": folder}
    elif path == BASELINE:
      out[name] = (model_sources.make_student(reference.config.student, teacher), run_tokenizer)
      sources[name] = {"baseline": reference.path}
    else:
      out[name] = (loaded[name], run_tokenizer)
      sources[name] = {"run": infos[name].path, "step": infos[name].step}
  if teacher is not None:
    out["teacher"] = (teacher, run_tokenizer)
    sources["teacher"] = {"teacher": dataclasses.asdict(reference.config.teacher)}
  return BenchmarkModels(out, template, {"models": sources, "template": template})
