"""``python eval.py key=value ...``: evaluate students against their teacher and write the report folder.

Examples::

  # the teacher-initialised 10-layer SmolLM2 student (no training) against the SmolLM2 teacher
  python eval.py students=baseline=baseline out=runs/eval_baseline

  # trained students (checkpoint folders written by train.py), greedy decoding, SBERT on
  python eval.py students=fkl=runs/fkl,distilllens=runs/dl greedy=true sbert=true out=runs/eval

Deterministic: a fixed ``seed`` picks the held-out examples, a fixed ``eval_batches`` × ``batch_size`` of them
is scored, the bootstrap and sampling seeds are fixed. Prints one ``student/key/metric value [lo, hi]`` line per
metric and writes ``report.json``, ``report.md`` and the plots (:mod:`jaxlens.eval.report`).

A student checkpoint carries the resolved training config; the teacher, data and lens layer map are taken
from it (the training loading path), so every student is scored against the teacher it was trained with.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence

import numpy as np

from jaxlens.eval import alignment as al
from jaxlens.eval import generation as gen
from jaxlens.eval import report as rp


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Evaluation settings; every field can be set as ``key=value`` on the command line."""

  # --- what to evaluate ---
  students: str = "baseline=baseline"  # comma-separated name=path; path "baseline" = teacher-initialised student
  out: str = "eval_out"  # report folder
  training_logs: str = ""  # comma-separated name=path.jsonl for the metric-vs-step plot
  # --- held-out data (the training split's held-out part) ---
  seed: int = 0  # data selection, bootstrap and model init seed
  batch_size: int = 8  # sequences per teacher-forced batch
  eval_batches: int = 4  # fixed number of teacher-forced batches
  # --- alignment ---
  norm: bool = False  # final norm before the lens unembedding (DistillLens: False)
  temperature: float = 1.0
  mu: float = 0.5  # AKL head mass
  head_rule: str = "official"  # AKL head rule of g_head/g_tail: official | paper
  block_tokens: int = 256  # tokens per streamed metric block
  num_bootstrap: int = 1000  # bootstrap resamples (over sequences) for 95% CIs
  # --- generation ---
  generation: bool = True
  gen_examples: int = 32  # held-out prompts to answer
  seeds: str = "10,20,30,40,50"  # sampling seeds
  max_new_tokens: int = 64
  greedy: bool = False
  top_p: float = 1.0
  no_repeat_ngram_size: int = 6
  sbert: bool = False  # SBERT cosine with all-MiniLM-L6-v2 (CPU)
  plots: bool = True

  def __post_init__(self):
    for name in ("batch_size", "eval_batches", "gen_examples", "max_new_tokens", "num_bootstrap"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
    parse_pairs(self.students, "students")
    if self.training_logs:
      parse_pairs(self.training_logs, "training_logs")

  def alignment_config(self) -> al.AlignmentConfig:
    return al.AlignmentConfig(temperature=self.temperature, mu=self.mu, head_rule=self.head_rule,
                              block_tokens=self.block_tokens)

  def sampling_config(self) -> gen.SamplingConfig:
    return gen.SamplingConfig(seeds=tuple(int(s) for s in self.seeds.split(",")), greedy=self.greedy,
                              top_p=self.top_p, no_repeat_ngram_size=self.no_repeat_ngram_size,
                              max_new_tokens=self.max_new_tokens, batch_size=self.batch_size)


def parse_pairs(text: str, what: str) -> dict[str, str]:
  """``"a=x,b=y"`` → ``{"a": "x", "b": "y"}`` (order kept).

  Raises:
    ValueError: on an item without ``=``, an empty name, or a repeated name.
  """
  out = {}
  for item in filter(None, (t.strip() for t in text.split(","))):
    name, sep, value = item.partition("=")
    if not sep or not name or not value:
      raise ValueError(f"{what}: expected name=value items, got {item!r}")
    if name in out:
      raise ValueError(f"{what}: repeated name {name!r}")
    out[name] = value
  if not out:
    raise ValueError(f"{what}: empty")
  return out


def _convert(field: dataclasses.Field, raw: str):
  kind = field.type if isinstance(field.type, type) else {"str": str, "int": int, "float": float,
                                                          "bool": bool}[field.type]
  if kind is bool:
    if raw.lower() not in ("true", "false", "1", "0"):
      raise ValueError(f"{field.name}: expected true/false, got {raw!r}")
    return raw.lower() in ("true", "1")
  try:
    return kind(raw)
  except ValueError:
    raise ValueError(f"{field.name}: expected {kind.__name__}, got {raw!r}") from None


def parse_args(argv: Sequence[str]) -> EvalConfig:
  """``key=value`` arguments → :class:`EvalConfig`.

  Raises:
    ValueError: on an unknown key, a malformed item or a value of the wrong type.
  """
  fields = {f.name: f for f in dataclasses.fields(EvalConfig)}
  kwargs = {}
  for arg in argv:
    key, sep, raw = arg.partition("=")
    if not sep:
      raise ValueError(f"expected key=value, got {arg!r}")
    if key not in fields:
      raise ValueError(f"unknown key {key!r}; known: {', '.join(sorted(fields))}")
    kwargs[key] = _convert(fields[key], raw)
  return EvalConfig(**kwargs)


def evaluate_students(teacher, students: dict, batches: list, *, layer_pairs: dict, cfg: EvalConfig,
                      generation_set=None) -> dict:
  """Alignment (and generation) of every student against ``teacher``; the report document.

  Args:
    teacher: teacher model.
    students: name → student model.
    batches: the fixed held-out data ``Batch`` list.
    layer_pairs: name → ``[(teacher_layer, student_layer), ...]`` lens pairs of that student.
    cfg: :class:`EvalConfig`.
    generation_set: ``(tokenizer, prompts, references, eos_id, pad_id)`` or None to skip generation.

  Returns:
    the report document (:mod:`jaxlens.eval.report`), including the teacher's own generation scores.
  """
  report = {"config": dataclasses.asdict(cfg), "students": {}}
  sampling = cfg.sampling_config()
  for name, student in students.items():
    t0 = time.time()
    entry = {"layer_pairs": [list(p) for p in layer_pairs[name]],
             "alignment": al.evaluate_alignment(teacher, student, batches, layer_pairs=layer_pairs[name],
                                                norm=cfg.norm, config=cfg.alignment_config(),
                                                num_bootstrap=cfg.num_bootstrap, seed=cfg.seed)}
    if generation_set is not None:
      entry["generation"] = _generation(student, generation_set, sampling, cfg.sbert)
    entry["seconds"] = time.time() - t0
    report["students"][name] = entry
  if generation_set is not None:
    report["teacher"] = {"generation": _generation(teacher, generation_set, sampling, cfg.sbert)}
  return report


def _generation(model, generation_set, sampling, sbert):
  from jaxlens.eval.models_io import sample_responses
  tokenizer, prompts, references, eos_id, pad_id = generation_set
  runs = sample_responses(model, tokenizer, prompts, sampling, eos_id=eos_id, pad_id=pad_id)
  scores = gen.score_runs(runs, references, sbert=sbert)
  scores["samples"] = {"prompt_0": tokenizer.decode(list(prompts[0])), "response_0": runs[next(iter(runs))][0]}
  return scores


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of ``python eval.py`` / ``jaxlens-eval``."""
  from jaxlens.eval import loading
  cfg = parse_args(sys.argv[1:] if argv is None else argv)
  setup = loading.load_setup(cfg)
  report = evaluate_students(setup.teacher, setup.students, setup.batches, layer_pairs=setup.layer_pairs, cfg=cfg,
                             generation_set=setup.generation_set if cfg.generation else None)
  report["setup"] = setup.description
  logs = parse_pairs(cfg.training_logs, "training_logs") if cfg.training_logs else None
  paths = rp.write_report(report, cfg.out, training_logs=logs, plots=cfg.plots)
  for line in rp.print_lines(report):
    print(line)
  print(f"report: {paths['markdown']}")
  return 0
