"""``python eval.py key=value ...``: evaluate students against their teacher and write the report folder.

Examples::

  # a trained student (a train.py run folder) and the untrained teacher-initialised student it started from
  python eval.py students=init=baseline,distilllens=runs/smollm2 out=runs/smollm2/eval

  # several runs of one comparison, greedy decoding, SBERT on, training curves in the report
  python eval.py students=fkl=runs/fkl,rkl=runs/rkl greedy=true sbert=true \\
      training_logs=fkl=runs/fkl/metrics.jsonl,rkl=runs/rkl/metrics.jsonl out=runs/eval

  # instruction-following sets (MiniLLM / Alpaca JSONL): every student, the teacher and an exported folder
  python eval.py students=s=runs/smollm2,exported=hf:exports/student benchmark=dolly=data/dolly.jsonl \\
      max_new_tokens=256 out=runs/eval-sets

Each run folder's checkpoint carries the resolved training config; the teacher, the held-out data and the lens
layer map are rebuilt from it (:mod:`jaxlens.eval.loading`), so every student is scored against the teacher it
was trained with, on data it never saw. Deterministic: the held-out split comes from the run's config, a fixed
``eval_batches`` × ``batch_size`` of it is scored, and the bootstrap and sampling seeds are fixed. Prints one
``student/key/metric value [lo, hi]`` line per metric and writes ``report.json``, ``report.md`` and the plots
(:mod:`jaxlens.eval.report`). With ``benchmark=`` it samples answers to the given JSONL sets instead and scores
them per set (:mod:`jaxlens.eval.benchmarks`, ``docs/eval.md``). Bad options and malformed benchmark lines exit
with status 2 and one ``error:`` line before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence

from jaxlens.data import TEMPLATES
from jaxlens.run import config as rconfig
from jaxlens.run.checkpoints import CheckpointError
from jaxlens.run.checkpoints import NonFiniteError
from jaxlens.run.config import ConfigError, opt
from jaxlens.eval import generation as gen
from jaxlens.eval import loading
from jaxlens.eval import report as rp
from jaxlens.eval.alignment import AlignmentConfig, paired_difference
from jaxlens.eval.keys import OUTPUT_KEY
from jaxlens.eval.benchmarks import PROMPT_SOURCES, BenchmarkExample, prompt_texts, read_benchmarks
from jaxlens.eval.sampling import sample_responses
from jaxlens.eval.teacher_forced import evaluate_alignment


COMMAND = "python eval.py"


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Evaluation settings; every field can be set as ``key=value`` on the command line (``python eval.py --help``)."""

  # --- what to evaluate ---
  students: str = opt("", "comma-separated name=path: train.py run folders, 'baseline' (the runs' untrained "
                      "student), or hf:FOLDER (an exported save_pretrained folder; benchmark= sets only)")
  out: str = opt("eval_out", "report folder (report.json, report.md, plots)")
  training_logs: str = opt("", "comma-separated name=path.jsonl for the metric-vs-step plot")
  reference: str = opt("", "a student name: report every other student's paired difference to it at the output")
  # --- external instruction sets (docs/eval.md) ---
  benchmark: str = opt("", "comma-separated NAME=PATH JSONL instruction sets (instruction, input, output [str or "
                       "list], optional prompt): sampled generation scored per set instead of the held-out split")
  prompt_from: str = opt("template", "benchmark prompts: template (the runs' data.template, or template=) | file "
                         "(each line's own 'prompt' field)")
  template: str = opt("", "prompt template for benchmark prompts: chatml | alpaca (default: the runs' data.template)")
  benchmark_examples: int = opt(0, "examples per benchmark set, from the top of the file (0 = all)")
  # --- held-out data (the runs' held-out split; units: sequences) ---
  batch_size: int = opt(8, "sequences per teacher-forced batch; prompts per generate call")
  eval_batches: int = opt(4, "fixed number of teacher-forced batches")
  # --- alignment ---
  norm: bool = opt(False, "final norm before the lens unembedding (DistillLens: False)")
  temperature: float = opt(1.0, "tau of p and q (no tau^2)")
  mu: float = opt(0.5, "AKL head mass of g_head / g_tail / head_mass_error")
  head_rule: str = opt("official", "AKL head rule: official | paper")
  block_tokens: int = opt(256, "tokens per streamed metric block (memory ~ block_tokens x V floats)")
  num_bootstrap: int = opt(1000, "bootstrap resamples over sequences for the 95% CIs")
  seed: int = opt(0, "bootstrap seed")
  # --- generation (the MiniLLM / DistillLens protocol by default) ---
  generation: bool = opt(True, "score sampled responses to held-out prompts (ROUGE-L, SBERT)")
  gen_examples: int = opt(32, "distinct held-out prompts to answer")
  seeds: str = opt("10,20,30,40,50", "sampling seeds (one run each; mean ± std over them)")
  max_new_tokens: int = opt(64, "tokens generated per prompt")
  greedy: bool = opt(False, "argmax decoding (one run)")
  sample_temperature: float = opt(1.0, "sampling temperature (ignored when greedy)")
  top_p: float = opt(1.0, "nucleus mass (1 = off)")
  no_repeat_ngram_size: int = opt(6, "forbid repeating an n-gram of this size (0 = off)")
  sbert: bool = opt(False, "SBERT cosine with all-MiniLM-L6-v2 (CPU; needs the registry asset)")
  plots: bool = opt(True, "draw the report's PNG figures")

  def validate(self) -> EvalConfig:
    """Check every field; returns ``self``.

    Raises:
      ConfigError: naming the first invalid key and value.
    """
    for name in ("batch_size", "eval_batches", "gen_examples", "max_new_tokens", "num_bootstrap"):
      if getattr(self, name) < 1:
        raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
    if self.benchmark_examples < 0:
      raise ConfigError(f"benchmark_examples must be >= 0, got {self.benchmark_examples}")
    if self.prompt_from not in PROMPT_SOURCES:
      raise ConfigError(f"prompt_from={self.prompt_from!r} is not one of {list(PROMPT_SOURCES)}")
    if self.template and self.template not in TEMPLATES:
      raise ConfigError(f"template={self.template!r} is not one of {list(TEMPLATES)}")
    students = self.student_paths()
    hf = [name for name, path in students.items() if path.startswith(loading.HF_PREFIX)]
    if hf and not self.benchmark:
      raise ConfigError(f"students {hf} are hf: folders, which are scored on benchmark= sets only")
    if self.benchmark and "teacher" in students:
      raise ConfigError("with benchmark=, 'teacher' names the runs' teacher; give the student another name")
    if self.reference and self.reference not in students:
      raise ConfigError(f"reference={self.reference!r} is not one of the students {list(students)}")
    if self.training_logs:
      parse_pairs(self.training_logs, "training_logs")
    if self.benchmark:
      self.benchmark_paths()
    try:
      self.alignment_config()
      self.sampling_config()
    except ValueError as e:
      raise ConfigError(str(e)) from None
    return self

  def student_paths(self) -> dict[str, str]:
    """Student name → run folder, ``"baseline"`` or ``"hf:FOLDER"``, in command-line order."""
    return parse_pairs(self.students, "students")

  def benchmark_paths(self) -> dict[str, str]:
    """Benchmark set name → JSONL path, in command-line order."""
    return parse_pairs(self.benchmark, "benchmark")

  def alignment_config(self) -> AlignmentConfig:
    return AlignmentConfig(temperature=self.temperature, mu=self.mu, head_rule=self.head_rule,
                           block_tokens=self.block_tokens)

  def sampling_config(self) -> gen.SamplingConfig:
    try:
      seeds = tuple(int(s) for s in self.seeds.split(","))
    except ValueError:
      raise ConfigError(f"seeds: expected comma-separated ints, got {self.seeds!r}") from None
    return gen.SamplingConfig(seeds=seeds, greedy=self.greedy, temperature=self.sample_temperature,
                              top_p=self.top_p, no_repeat_ngram_size=self.no_repeat_ngram_size,
                              max_new_tokens=self.max_new_tokens,
                              batch_size=min(self.batch_size, self.gen_examples))


def parse_pairs(text: str, what: str) -> dict[str, str]:
  """``"a=x,b=y"`` → ``{"a": "x", "b": "y"}`` (order kept).

  Raises:
    ConfigError: on an item without ``=``, an empty name or value, a repeated name, or no item at all.
  """
  out = {}
  for item in filter(None, (t.strip() for t in text.split(","))):
    name, sep, value = item.partition("=")
    if not sep or not name or not value:
      raise ConfigError(f"{what}: expected name=value items, got {item!r}")
    if name in out:
      raise ConfigError(f"{what}: repeated name {name!r}")
    out[name] = value
  if not out:
    raise ConfigError(f"{what}: expected name=value items, got {text!r}")
  return out


def parse_args(argv: Sequence[str]) -> EvalConfig:
  """``key=value`` arguments → :class:`EvalConfig` (the parser of ``train.py``: :mod:`jaxlens.run.config`).

  Raises:
    ConfigError: on an unknown key (with close matches), a malformed item or a value of the wrong type or range.
  """
  return rconfig.build_config(EvalConfig, rconfig.parse_overrides(argv), where="eval options", command=COMMAND)


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


def evaluate_benchmarks(bench: loading.BenchmarkModels, sets: dict[str, list[BenchmarkExample]],
                        cfg: EvalConfig) -> dict:
  """Sampled responses of every model to every benchmark set, scored against the references: the report document.

  Each model's prompts are tokenised with its own tokenizer; sampling follows ``cfg`` (default: the reference
  protocol, seeds 10…50, temperature 1, top-p 1); ROUGE-L (and SBERT with ``sbert=true``) are the mean ± std over
  seeds of the per-example scores (:func:`jaxlens.eval.generation.score_runs`).

  Returns:
    ``{"config", "setup", "seconds", "students": {name: {"benchmarks": {set: scores}}}, ["teacher": …]}``.
  """
  t0 = time.time()
  sampling = dataclasses.replace(cfg.sampling_config(), batch_size=cfg.batch_size)
  report = {"config": dataclasses.asdict(cfg), "benchmark_setup": {**bench.description, "sets": {}},
            "students": {}}
  for set_name, examples in sets.items():
    examples = examples[:cfg.benchmark_examples or None]
    texts = prompt_texts(examples, bench.template, cfg.prompt_from)
    report["benchmark_setup"]["sets"][set_name] = {"examples": len(examples), "prompt_from": cfg.prompt_from}
    references = [e.references for e in examples]
    for name, (model, tokenizer) in bench.models.items():
      runs = sample_responses(model, tokenizer, tokenizer.encode_batch(texts), sampling, eos_id=tokenizer.eos_id,
                              pad_id=tokenizer.pad_id)
      scores = gen.score_runs(runs, references, sbert=cfg.sbert)
      first = next(iter(runs.values()))
      scores["samples"] = [{"prompt": t, "response": r, "references": refs}
                           for t, r, refs in list(zip(texts, first, references))[:3]]
      entry = report.setdefault("teacher", {}) if name == "teacher" else report["students"].setdefault(name, {})
      entry.setdefault("benchmarks", {})[set_name] = scores
  report["seconds"] = {"benchmarks": time.time() - t0}
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
    print(rconfig.help_text(EvalConfig, f"usage: {COMMAND} key=value ...", top_group="eval"))
    return 0
  try:
    cfg = parse_args(argv)
    sets = read_benchmarks(cfg.benchmark_paths(), prompt_from=cfg.prompt_from) if cfg.benchmark else None
  except ValueError as e:  # ConfigError, BenchmarkError (file:line): before any model is loaded
    print(f"error: {e}", file=sys.stderr)
    return 2
  if sets is not None:
    try:
      bench = loading.load_benchmark_models(cfg)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
      print(f"error: {e}", file=sys.stderr)
      return 1
    return _write(evaluate_benchmarks(bench, sets, cfg), cfg)
  try:
    setup = loading.load_setup(cfg)
  except NonFiniteError as e:  # a NaN model is bad input, not a scoring result
    print(f"error: {e}", file=sys.stderr)
    return 2
  except (ValueError, FileNotFoundError, CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return _write(evaluate_students(setup, cfg), cfg)


def _write(report: dict, cfg: EvalConfig) -> int:
  """Write the report folder and print its metric lines; the exit status 0."""
  logs = parse_pairs(cfg.training_logs, "training_logs") if cfg.training_logs else None
  paths = rp.write_report(report, cfg.out, training_logs=logs, plots=cfg.plots)
  for line in rp.print_lines(report):
    print(line)
  print(f"report: {paths['markdown']}")
  return 0
