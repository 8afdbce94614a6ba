"""Report figures (matplotlib, Agg backend, PNG): layer profiles, reliability diagrams, training curves.

- **Layer profile** (DistillLens Figure 1 style): a divergence between teacher and student logit-lens
  distributions at every mapped layer pair, one line per student, with 95% bootstrap CI bars.
- **Reliability diagram**: accuracy vs confidence of the student's next-token prediction per ECE bin.
- **Training curves**: namespaced metrics (``distill/forward_kl``, ``task/ce``, …) against ``step`` from the
  training JSONL logs (one JSON object per line).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from jaxlens.eval.keys import OUTPUT_KEY, lens_keys  # noqa: E402

PROFILE_METRICS = ("forward_kl", "reverse_kl", "jsd", "top1_agreement")


def plot_layer_profile(report: dict, path: str, metrics: Sequence[str] = PROFILE_METRICS) -> str:
  """Per-layer-pair ``metrics`` of every student (x: pair, y: token mean with CI bars); returns ``path``."""
  keys = lens_keys(report) + [OUTPUT_KEY]
  fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
  for ax, metric in zip(axes[0], metrics):
    names = list(report["students"])
    for n, (name, s) in enumerate(report["students"].items()):
      al = s.get("alignment", {})
      xs = [i for i, k in enumerate(keys) if k in al]
      stats = [al[keys[i]]["metrics"][metric] for i in xs]
      shift = 0.06 * (n - (len(names) - 1) / 2)  # side by side, so equal values stay visible
      ax.errorbar([x + shift for x in xs], [st["mean"] for st in stats],
                  yerr=[[st["mean"] - st["ci_low"] for st in stats], [st["ci_high"] - st["mean"] for st in stats]],
                  marker="o", ms=3, capsize=2, label=name)
    ax.set_xticks(range(len(keys)), [k.removeprefix("lens/") for k in keys], rotation=60, fontsize=7)
    ax.set_title(metric)
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel("teacher vs student (token mean)")
  axes[0][-1].legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def plot_reliability(report: dict, path: str, key: str = OUTPUT_KEY) -> str:
  """Reliability diagrams (accuracy vs confidence per bin) of every student at ``key``; returns ``path``."""
  students = [(n, s["alignment"][key]) for n, s in report["students"].items() if key in s.get("alignment", {})]
  cols = max(1, min(5, len(students)))
  rows = max(1, -(-len(students) // cols))
  fig, axes = plt.subplots(rows, cols, figsize=(2.8 * cols, 2.8 * rows), squeeze=False)
  for ax, (name, block) in zip(axes.flat, students):
    rel = block["reliability"]
    nb = len(rel["counts"])
    centers = [(b + 0.5) / nb for b in range(nb)]
    filled = [i for i, c in enumerate(rel["counts"]) if c > 0]
    ax.bar([centers[i] for i in filled], [rel["accuracy"][i] for i in filled], width=1.0 / nb, alpha=0.7,
           edgecolor="k")  # accuracy per confidence bin
    ax.plot([rel["confidence"][i] for i in filled], [rel["accuracy"][i] for i in filled], "r.", ms=4)  # (conf, acc)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ece = block["metrics"]["student_ece"]["mean"]
    ax.set_title(f"{name}\nECE {ece:.4f}", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
  for ax in axes[:, 0]:
    ax.set_ylabel("accuracy")
  for ax in list(axes.flat)[len(students):]:
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def read_jsonl(path: str) -> list[dict]:
  """The JSON objects of a JSONL file, one per non-empty line."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


#: Training-log metrics plotted by default, in panel order (those logged with a non-zero value in some run).
CURVE_METRICS = ("loss/total", "loss/ce", "loss/output", "loss/lens", "eval/loss/total", "eval/loss/ce",
                 "eval/loss/output", "eval/loss/lens")


def plot_training_curves(logs: dict[str, str], path: str, keys: Sequence[str] | None = None) -> str | None:
  """Metric-vs-step curves from training JSONL logs, one panel per metric, one colour per run.

  Args:
    logs: run name → JSONL path (records with ``step`` and namespaced metric keys).
    path: output PNG.
    keys: metrics to plot; default the :data:`CURVE_METRICS` that some run logs with a non-zero value.

  Returns:
    ``path``, or None if no log holds a plottable metric.
  """
  records = {name: [r for r in read_jsonl(p) if "step" in r] for name, p in logs.items() if os.path.exists(p)}
  if keys is None:
    keys = [k for k in CURVE_METRICS if any(isinstance(r.get(k), (int, float)) and r[k] != 0
                                            for rs in records.values() for r in rs)]
  if not keys:
    return None
  colors = {name: f"C{i}" for i, name in enumerate(records)}
  cols = min(4, len(keys))
  rows = -(-len(keys) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows + 0.5), squeeze=False)
  for ax, key in zip(axes.flat, keys):
    for name, rs in records.items():
      pts = [(r["step"], r[key]) for r in rs if isinstance(r.get(key), (int, float))]
      if pts:
        ax.plot(*zip(*pts), color=colors[name], lw=1, marker="." if len(pts) < 20 else None)
    ax.set_title(key, fontsize=8)
    ax.set_xlabel("step", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(keys):]:
    ax.axis("off")
  fig.legend([plt.Line2D([], [], color=c) for c in colors.values()], list(colors), loc="lower center",
             ncol=min(len(colors), 8), fontsize=7, frameon=False)
  fig.tight_layout(rect=(0, 0.06, 1, 1))
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def plot_all(report: dict, out_dir: str, training_logs: dict[str, str] | None = None) -> dict[str, str]:
  """Every figure the report supports; returns name → path."""
  paths = {}
  if lens_keys(report):
    paths["layer_profile"] = plot_layer_profile(report, os.path.join(out_dir, "layer_profile.png"))
  if any("alignment" in s for s in report["students"].values()):  # benchmark-only reports have no alignment
    paths["reliability"] = plot_reliability(report, os.path.join(out_dir, "reliability.png"))
  if training_logs:
    curves = plot_training_curves(training_logs, os.path.join(out_dir, "training_curves.png"))
    if curves:
      paths["training_curves"] = curves
  return paths
