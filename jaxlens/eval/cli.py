"""``python eval.py key=value ...``: evaluate students against their teacher and write the report folder.

Examples::

  # a trained student (a train.py run folder) and the untrained teacher-initialised student it started from
  python eval.py students=init=baseline,distilllens=runs/smollm2 out=runs/smollm2/eval

  # several runs of one comparison, greedy decoding, SBERT on, training curves in the report
  python eval.py students=fkl=runs/fkl,rkl=runs/rkl greedy=true sbert=true \\
      training_logs=fkl=runs/fkl/metrics.jsonl,rkl=runs/rkl/metrics.jsonl out=runs/eval

Each run folder's checkpoint carries the resolved training config; the teacher, the held-out data and the lens
layer map are rebuilt from it (:mod:`jaxlens.eval.loading`), so every student is scored against the teacher it
was trained with, on data it never saw. Deterministic: the held-out split comes from the run's config, a fixed
``eval_batches`` × ``batch_size`` of it is scored, and the bootstrap and sampling seeds are fixed. Prints one
``student/key/metric value [lo, hi]`` line per metric and writes ``report.json``, ``report.md`` and the plots
(:mod:`jaxlens.eval.report`).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence

from jaxlens.run.checkpoints import CheckpointError
from jaxlens.run.checkpoints import NonFiniteError
from jaxlens.eval import generation as gen
from jaxlens.eval import loading
from jaxlens.eval import report as rp
from jaxlens.eval.alignment import OUTPUT_KEY, AlignmentConfig, paired_difference
from jaxlens.eval.sampling import sample_responses
from jaxlens.eval.teacher_forced import evaluate_alignment


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Evaluation settings; every field can be set as ``key=value`` on the command line."""

  # --- what to evaluate ---
  students: str = ""  # comma-separated name=path: train.py run folders, or "baseline" (the untrained student)
  out: str = "eval_out"  # report folder
  training_logs: str = ""  # comma-separated name=path.jsonl for the metric-vs-step plot
  reference: str = ""  # a student name: report every other student's paired difference to it at the output
  # --- held-out data (the runs' held-out split; units: sequences) ---
  batch_size: int = 8  # sequences per teacher-forced batch; prompts per generate call (at most gen_examples)
  eval_batches: int = 4  # fixed number of teacher-forced batches
  # --- alignment ---
  norm: bool = False  # final norm before the lens unembedding (DistillLens: False)
  temperature: float = 1.0  # tau of p and q (no tau^2)
  mu: float = 0.5  # AKL head mass of g_head / g_tail / head_mass_error
  head_rule: str = "official"  # AKL head rule: official | paper
  block_tokens: int = 256  # tokens per streamed metric block (memory ~ block_tokens x V floats)
  num_bootstrap: int = 1000  # bootstrap resamples over sequences for the 95% CIs
  seed: int = 0  # bootstrap seed
  # --- generation ---
  generation: bool = True
  gen_examples: int = 32  # distinct held-out prompts to answer
  seeds: str = "10,20,30,40,50"  # sampling seeds (one run each)
  max_new_tokens: int = 64
  greedy: bool = False  # argmax decoding (one run)
  sample_temperature: float = 1.0  # sampling temperature (ignored when greedy)
  top_p: float = 1.0
  no_repeat_ngram_size: int = 6
  sbert: bool = False  # SBERT cosine with all-MiniLM-L6-v2 (CPU)
  plots: bool = True

  def __post_init__(self):
    for name in ("batch_size", "eval_batches", "gen_examples", "max_new_tokens", "num_bootstrap"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
    students = self.student_paths()
    if self.reference and self.reference not in students:
      raise ValueError(f"reference={self.reference!r} is not one of the students {list(students)}")
    if self.training_logs:
      parse_pairs(self.training_logs, "training_logs")
    self.alignment_config()
    self.sampling_config()

  def student_paths(self) -> dict[str, str]:
    """Student name → run folder (or ``"baseline"``), in command-line order."""
    return parse_pairs(self.students, "students")

  def alignment_config(self) -> AlignmentConfig:
    return AlignmentConfig(temperature=self.temperature, mu=self.mu, head_rule=self.head_rule,
                           block_tokens=self.block_tokens)

  def sampling_config(self) -> gen.SamplingConfig:
    try:
      seeds = tuple(int(s) for s in self.seeds.split(","))
    except ValueError:
      raise ValueError(f"seeds: expected comma-separated ints, got {self.seeds!r}") from None
    return gen.SamplingConfig(seeds=seeds, greedy=self.greedy, temperature=self.sample_temperature,
                              top_p=self.top_p, no_repeat_ngram_size=self.no_repeat_ngram_size,
                              max_new_tokens=self.max_new_tokens,
                              batch_size=min(self.batch_size, self.gen_examples))


def parse_pairs(text: str, what: str) -> dict[str, str]:
  """``"a=x,b=y"`` → ``{"a": "x", "b": "y"}`` (order kept).

  Raises:
    ValueError: on an item without ``=``, an empty name or value, a repeated name, or no item at all.
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
    raise ValueError(f"{what}: expected name=value items, got {text!r}")
  return out


_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


def _convert(field: dataclasses.Field, raw: str):
  kind = _TYPES[field.type]
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
    ValueError: on an unknown key, a malformed item or a value of the wrong type or range.
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


def evaluate_students(setup: loading.EvalSetup, cfg: EvalConfig) -> dict:
  """Alignment (and generation) of every student of ``setup`` against its teacher: the report document.

  Args:
    setup: from :func:`jaxlens.eval.loading.load_setup`.
    cfg: :class:`EvalConfig`.

  Returns:
    the report document (:mod:`jaxlens.eval.report`), with the teacher's own generation scores and the
    seconds each phase took.
  """
  t0 = time.time()
  alignment = evaluate_alignment(setup.teacher, setup.students, setup.batches, layer_pairs=setup.layer_pairs,
                                 norm=cfg.norm, config=cfg.alignment_config(), num_bootstrap=cfg.num_bootstrap,
                                 seed=cfg.seed)
  report = {"config": dataclasses.asdict(cfg), "setup": setup.description,
            "seconds": {"alignment": time.time() - t0}, "students": {}}
  for name in setup.students:
    report["students"][name] = {"layer_pairs": [list(p) for p in setup.layer_pairs[name]],
                                "alignment": alignment[name]}
  if cfg.reference:
    ref = alignment[cfg.reference][OUTPUT_KEY]["per_sequence"]
    report["paired"] = {"reference": cfg.reference, "students": {
        name: {m: d.as_dict() for m, d in paired_difference(
            alignment[name][OUTPUT_KEY]["per_sequence"], ref, rp.PAIRED_METRICS, num_bootstrap=cfg.num_bootstrap,
            seed=cfg.seed).items()}
        for name in setup.students if name != cfg.reference}}
  if cfg.generation:
    t0 = time.time()
    for name, model in setup.students.items():
      report["students"][name]["generation"] = _generation(model, setup.generation_set, cfg)
    report["teacher"] = {"generation": _generation(setup.teacher, setup.generation_set, cfg)}
    report["seconds"]["generation"] = time.time() - t0
  return report


def _generation(model, gset: loading.GenerationSet, cfg: EvalConfig) -> dict:
  runs = sample_responses(model, gset.tokenizer, gset.prompts, cfg.sampling_config(), eos_id=gset.eos_id,
                          pad_id=gset.pad_id)
  scores = gen.score_runs(runs, gset.references, sbert=cfg.sbert)
  first = next(iter(runs.values()))
  scores["samples"] = [{"prompt": gset.tokenizer.decode(p), "response": r, "references": refs}
                       for p, r, refs in list(zip(gset.prompts, first, gset.references))[:3]]
  return scores


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of ``python eval.py`` / ``jaxlens-eval``; returns the exit status."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if any(a in ("-h", "--help", "help") for a in argv):
    print(__doc__)
    for f in dataclasses.fields(EvalConfig):
      print(f"  {f.name}={f.default}")
    return 0
  try:
    cfg = parse_args(argv)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  try:
    setup = loading.load_setup(cfg)
  except NonFiniteError as e:  # a NaN model is bad input, not a scoring result
    print(f"error: {e}", file=sys.stderr)
    return 2
  except (ValueError, FileNotFoundError, CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  report = evaluate_students(setup, cfg)
  logs = parse_pairs(cfg.training_logs, "training_logs") if cfg.training_logs else None
  paths = rp.write_report(report, cfg.out, training_logs=logs, plots=cfg.plots)
  for line in rp.print_lines(report):
    print(line)
  print(f"report: {paths['markdown']}")
  return 0
