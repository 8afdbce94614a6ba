"""Evaluation reports: one JSON document, a Markdown summary and the plots, in one folder.

The report document is

.. code-block:: text

   {"config": {...}, "setup": {...}, "seconds": {...}, ["paired": {"reference": name, "students":
       {name: {metric: {"mean", "ci_low", "ci_high"}}}},]
    "students": {name: {"layer_pairs": [[t, s], ...],
                        "alignment": {"output" | "lens/T{t}-S{s}":
                            {"metrics": {metric: {"mean", "ci_low", "ci_high"} | float}, "reliability": {...}}},
                        "generation": {"rougeL": {"mean", "std", "per_seed"}, "sbert": {...}, "samples": [...]},
                        "benchmarks": {set: {"rougeL": …, ["sbert": …,] "samples": [...]}}}},
    "teacher": {"generation": {...}, "benchmarks": {...}}}

A benchmark evaluation (``benchmark=``) has ``"benchmark_setup": {"models", "template", "sets"}`` instead of
``"setup"``, and only ``"benchmarks"`` entries.

Markdown cells are ``mean ± half-width`` of the 95% bootstrap interval (alignment; 4 and 2 significant
digits) or ``mean ± std`` over sampling seeds (generation).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

from jaxlens.eval.keys import OUTPUT_KEY, lens_keys

#: Output-alignment columns of the summary table, in order.
SUMMARY_METRICS = ("forward_kl", "reverse_kl", "jsd", "tvd", "top1_agreement", "topk_overlap@5",
                   "topk_overlap@10", "g_head", "g_tail", "head_mass_error", "tail_mass_error@10",
                   "entropy_gap", "student_ece", "student_ce")


#: Metrics of the paired-difference table (student − reference at the output, same sequences).
PAIRED_METRICS = ("forward_kl", "reverse_kl", "jsd", "tvd", "top1_agreement", "g_head", "g_tail", "student_ce")


def _cell(stat) -> str:
  if stat is None:
    return "–"
  if isinstance(stat, dict) and "ci_low" in stat:
    return f"{stat['mean']:.4g} ± {(stat['ci_high'] - stat['ci_low']) / 2:.2g}"
  if isinstance(stat, dict) and "std" in stat:
    return f"{stat['mean']:.2f} ± {stat['std']:.2f}"
  return f"{float(stat):.4g}"


def markdown(report: dict, metrics: Sequence[str] = SUMMARY_METRICS, lens_metric: str = "jsd") -> str:
  """Render the report as Markdown: the output-alignment table, generation table, per-layer ``lens_metric``.

  Args:
    report: the report document (module docstring).
    metrics: output-alignment metric columns.
    lens_metric: the metric of the per-layer table.

  Returns:
    Markdown text.
  """
  students = report["students"]
  lines = _setup_lines(report) + _benchmark_lines(report)
  if any("alignment" in s for s in students.values()):
    lines += ["## Teacher-forced alignment at the output", "",
              "Masked token means ± half-width of the 95% bootstrap CI over sequences.", "",
              "| student | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
  for name, s in students.items():
    if "alignment" not in s:
      continue
    m = s["alignment"].get(OUTPUT_KEY, {}).get("metrics", {})
    lines.append(f"| {name} | " + " | ".join(_cell(m.get(k)) for k in metrics) + " |")
  if "paired" in report:
    paired = report["paired"]
    lines += ["", f"## Paired differences to `{paired['reference']}` at the output", "",
              "Student − reference token means on the same sequences, with the 95% paired-bootstrap CI.", "",
              "| student | " + " | ".join(PAIRED_METRICS) + " |", "|---|" + "---:|" * len(PAIRED_METRICS)]
    for name, diffs in paired["students"].items():
      lines.append(f"| {name} | " + " | ".join(
          f"{d['mean']:+.4g} [{d['ci_low']:+.3g}, {d['ci_high']:+.3g}]" for d in (diffs[m] for m in PAIRED_METRICS))
          + " |")
  gen_names = sorted({k for s in students.values() for k in s.get("generation", {}) if k != "samples"})
  if gen_names:
    lines += ["", "## Generation (mean ± std over sampling seeds)", "",
              "| student | " + " | ".join(gen_names) + " |", "|---|" + "---:|" * len(gen_names)]
    rows = list(students.items()) + ([("teacher", report["teacher"])] if "teacher" in report else [])
    for name, s in rows:
      lines.append(f"| {name} | " + " | ".join(_cell(s.get("generation", {}).get(g)) for g in gen_names) + " |")
  keys = lens_keys(report)
  if keys:
    lines += ["", f"## Logit-lens alignment per layer pair: {lens_metric}", "",
              "| student | " + " | ".join(k.removeprefix("lens/") for k in keys) + " |",
              "|---|" + "---:|" * len(keys)]
    for name, s in students.items():
      al = s.get("alignment", {})
      lines.append(f"| {name} | " + " | ".join(_cell(al.get(k, {}).get("metrics", {}).get(lens_metric))
                                                 for k in keys) + " |")
  return "\n".join(lines) + "\n"


def _benchmark_lines(report: dict) -> list[str]:
  """The benchmark table: one row per model, ``set metric`` columns of mean ± std over seeds (none if absent)."""
  rows = list(report["students"].items()) + ([("teacher", report["teacher"])] if "teacher" in report else [])
  columns = list(dict.fromkeys((b, m) for _, s in rows for b, scores in s.get("benchmarks", {}).items()
                               for m in scores if m != "samples"))
  if not columns:
    return []
  sets = report.get("benchmark_setup", {}).get("sets", {})
  lines = ["## Instruction-following sets (×100, mean ± std over sampling seeds)", "",
           "Sets: " + ", ".join(f"`{b}` ({sets.get(b, {}).get('examples', '?')} examples)" for b in
                                dict.fromkeys(b for b, _ in columns)) + f"; seeds {report['config']['seeds']}.", "",
           "| model | " + " | ".join(f"{b} {m}" for b, m in columns) + " |", "|---|" + "---:|" * len(columns)]
  for name, s in rows:
    lines.append(f"| {name} | " + " | ".join(_cell(s.get("benchmarks", {}).get(b, {}).get(m)) for b, m in columns)
                 + " |")
  return lines + [""]


def _setup_lines(report: dict) -> list[str]:
  """A short "Setup" section from the report's ``setup`` facts (none if absent)."""
  setup = report.get("setup")
  if not setup:
    return []
  teacher, student, data = setup["teacher_model"], setup["student_model"], setup["data"]
  tokens = {s["alignment"][OUTPUT_KEY]["metrics"]["num_tokens"] for s in report["students"].values()}
  lines = ["## Setup", "",
           f"- teacher: `{setup['teacher']['source']}` ({teacher['family']}, {teacher['num_layers']} blocks, "
           f"d={teacher['hidden_size']}); students: {student['num_layers']} blocks, d={student['hidden_size']}",
           f"- held-out data: `{data['source']}` ({data['template']} template, seq_len {data['seq_len']}), "
           f"{setup['sequences']} sequences / {', '.join(f'{t:.0f}' for t in sorted(tokens))} scored tokens; "
           f"generation: {setup['prompts']} prompts × seeds {report['config']['seeds']}"]
  for name, run in setup.get("runs", {}).items():
    loss = run["loss"]
    lines.append(f"- `{name}`: step {run['step']}, alpha {loss['alpha']}, output `{loss['output_divergence']}`"
                 + (f" ({loss['head_rule']} head)" if "adaptive_kl" in loss["output_divergence"] else "")
                 + (f", lens {loss['lens_weight']} × `{loss['lens_divergence']}`" if loss["lens_weight"] else ""))
  return lines + [""]


def _finite(obj):
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  if isinstance(obj, dict):
    return {k: _finite(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_finite(v) for v in obj]
  return obj


def print_lines(report: dict) -> list[str]:
  """One ``student/key/metric value [ci_low, ci_high]`` line per metric, in a fixed order."""
  lines = []
  rows = list(report["students"].items()) + ([("teacher", report["teacher"])] if "teacher" in report else [])
  for name, s in rows:
    for key, block in s.get("alignment", {}).items():
      for metric, stat in block["metrics"].items():
        if isinstance(stat, dict):
          lines.append(f"{name}/{key}/{metric} {stat['mean']:.6f} [{stat['ci_low']:.6f}, {stat['ci_high']:.6f}]")
        else:
          lines.append(f"{name}/{key}/{metric} {stat:.0f}")
    for metric, stat in s.get("generation", {}).items():
      if metric == "samples":
        continue
      lines.append(f"{name}/generation/{metric} {stat['mean']:.4f} (std {stat['std']:.4f})")
    for bench, scores in s.get("benchmarks", {}).items():
      lines += [f"{name}/benchmark/{bench}/{metric} {stat['mean']:.4f} (std {stat['std']:.4f})"
                for metric, stat in scores.items() if metric != "samples"]
  return lines


def write_report(report: dict, out_dir: str | os.PathLike, *, training_logs: dict[str, str] | None = None,
                 plots: bool = True) -> dict[str, str]:
  """Write ``report.json``, ``report.md`` and (optionally) the plots into ``out_dir``.

  Args:
    report: the report document.
    out_dir: folder (created).
    training_logs: student name → training JSONL path, for the metric-vs-step plot.
    plots: draw the PNGs (:mod:`jaxlens.eval.plots`).

  Returns:
    dict artefact name → written path.
  """
  if "students" not in report or not report["students"]:
    raise ValueError("report must contain a non-empty 'students' mapping")
  os.makedirs(out_dir, exist_ok=True)
  paths = {"json": os.path.join(out_dir, "report.json"), "markdown": os.path.join(out_dir, "report.md")}
  with open(paths["json"], "w") as f:
    json.dump(_finite(report), f, indent=1, sort_keys=False)
  text = markdown(report)
  if plots:
    from jaxlens.eval import plots as plots_lib
    paths.update(plots_lib.plot_all(report, out_dir, training_logs=training_logs))
    figures = [p for k, p in paths.items() if k not in ("json", "markdown")]
    text += "\n## Figures\n\n" + "\n".join(f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in figures) + "\n"
  with open(paths["markdown"], "w") as f:
    f.write(text)
  return paths
