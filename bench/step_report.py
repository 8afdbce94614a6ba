"""The step benchmarks' JSON lines (``bench/step.py`` + ``bench/torch_step.py``, one run) → a markdown table.

Per pair and batch, every variant's tokens/s, step ms, process-CPU ms, MFU (accelerators only) and memory, and
the ratio of the jaxlens step's tokens/s to each variant's at the same batch — by wall time and by process CPU
time (the stable figure on a shared CPU machine). Then each variant's best tokens/s over its batches and its
largest fitting batch, with jaxlens' best over each other variant's best (the issue's targets compare each side at
its own best batch), and the op-time summary of any ``--profile`` record.

  python bench/step_report.py OUT/steps.jsonl > OUT/steps.md

``--compare A.jsonl B.jsonl`` instead compares two versions of the same step (e.g. two code versions, runs
interleaved A B A B …): per pair, variant and batch the median step and CPU ms of each file's repeated runs and
B ÷ A (> 1: A is faster), compiled memory, and whether the losses agree.
"""

from __future__ import annotations

import json
import statistics
import sys

ORDER = ("jaxlens", "naive", "torch_reference", "torch_liger")


def load(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.startswith("{")]


def fmt(value, spec: str, suffix: str = "") -> str:
  return "–" if value is None else format(value, spec) + suffix


def mfu(r: dict) -> float | None:
  """The record's MFU, on an accelerator only: a CPU step runs float32 against a bf16 matmul peak (not comparable)."""
  return None if r.get("platform") == "cpu" or "mfu" not in r else r["mfu"]


def profile_table(r: dict) -> list[str]:
  """A ``--profile`` record as two small tables: busy time by category, then the largest ops."""
  lines = [f"Profile of {r['variant']} at batch {r['batch']} ({r['steps']} traced steps, "
           f"{r['busy_ms_per_step']:.1f} busy ms per step summed over {r.get('platform', '?')} op lines):", "",
           "| category | ms / step | share |", "|---|---|---|"]
  lines += [f"| {c['category']} | {c['ms_per_step']:.1f} | {100 * c['share']:.1f}% |" for c in r["categories"]]
  lines += ["", "| op | category | calls / step | ms / step | share |", "|---|---|---|---|---|"]
  lines += [f"| `{o['op'][:60]}` | {o['category']} | {o['calls_per_step']:.0f} | {o['ms_per_step']:.1f} | "
            f"{100 * o['share']:.1f}% |" for o in r["ops"]]
  return lines + [""]


def report(records: list[dict]) -> str:
  steps = [r for r in records if r.get("kind") == "step"]
  peaks = {("torch" if r.get("side") == "torch" else "jax"): r["tflops"] for r in records if r.get("kind") == "peak"}
  lines = [f"Measured bf16 matmul peak: JAX {fmt(peaks.get('jax'), '.3g')} TFLOP/s, torch "
           f"{fmt(peaks.get('torch'), '.3g')} TFLOP/s (each side's MFU uses its own).", ""]
  for pair in dict.fromkeys(r["pair"] for r in steps):
    rows = [r for r in steps if r["pair"] == pair]
    lines += [f"### {pair} (T = {rows[0]['seq_len']}, scale {rows[0].get('scale', 1.0)})", "",
              "| batch | variant | tokens/s | step ms | CPU ms | MFU | peak GiB | compiled GiB | jaxlens × (wall) | "
              "jaxlens × (CPU) | loss |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for batch in sorted({r["batch"] for r in rows if "batch" in r}):
      at = {r["variant"]: r for r in rows if r.get("batch") == batch and "error" not in r}
      ours = at.get("jaxlens")
      for variant in sorted({r["variant"] for r in rows if r.get("batch") == batch},
                            key=lambda v: ORDER.index(v) if v in ORDER else 99):
        r = next(x for x in rows if x.get("batch") == batch and x["variant"] == variant)
        if "error" in r:
          lines.append(f"| {batch} | {variant} | {r['error']} | | | | | {fmt(r.get('compiled_gib'), '.2f')} | | | |")
          continue
        wall = ours["tokens_per_s"] / r["tokens_per_s"] if ours else None
        cpu = r["cpu_ms"] / ours["cpu_ms"] if ours and r.get("cpu_ms") and ours.get("cpu_ms") else None
        lines.append(f"| {batch} | {variant} | {r['tokens_per_s']:,.0f} | {r['step_ms']:.1f} | "
                     f"{fmt(r.get('cpu_ms'), '.0f')} | "
                     f"{fmt(mfu(r) and 100 * mfu(r), '.1f', '%')} | {fmt(r.get('peak_gib'), '.2f')} | "
                     f"{fmt(r.get('compiled_gib'), '.2f')} | {fmt(wall, '.2f')} | {fmt(cpu, '.2f')} | "
                     f"{fmt(r.get('loss'), '.5f')} |")
    best = {}
    for r in rows:
      beaten = best.get(r["variant"], {}).get("tokens_per_s", 0)
      if "error" not in r and r.get("tokens_per_s") and r["tokens_per_s"] > beaten:
        best[r["variant"]] = r
    maxima = {r["variant"]: r for r in records if r.get("kind") == "max_batch" and r["pair"] == pair}
    lines += ["", "| variant | best tokens/s (batch) | MFU there | largest batch that fits | jaxlens best × |",
              "|---|---|---|---|---|"]
    for variant in sorted(best, key=lambda v: ORDER.index(v) if v in ORDER else 99):
      r = best[variant]
      largest = maxima.get(variant, {}).get("batch")
      ratio = best["jaxlens"]["tokens_per_s"] / r["tokens_per_s"] if "jaxlens" in best else None
      lines.append(f"| {variant} | {r['tokens_per_s']:,.0f} ({r['batch']}) | "
                   f"{fmt(mfu(r) and 100 * mfu(r), '.1f', '%')} | {fmt(largest, 'd')} | "
                   f"{fmt(ratio, '.2f')} |")
    lines.append("")
    for r in (x for x in records if x.get("kind") == "profile" and x["pair"] == pair):
      lines += profile_table(r)
  errors = [r for r in records if r.get("kind") == "error"]
  lines += [f"- worker error ({r['pair']}, {r['variant']}): {r['error']}" for r in errors]
  return "\n".join(lines) + "\n"


def compare(a: list[dict], b: list[dict], names: tuple[str, str] = ("A", "B")) -> str:
  """Medians of repeated runs of the same steps in ``a`` and ``b``, and their ratio B ÷ A (see the module doc)."""
  def key(r):
    return r["pair"], r["variant"], r["batch"]

  def steps(records):
    return [r for r in records if r.get("kind") == "step" and "error" not in r]

  def runs(records, wanted):
    return [r for r in steps(records) if key(r) == wanted]

  keys = dict.fromkeys(key(r) for r in steps(a))
  na, nb = names
  lines = [f"| pair | variant | batch | runs {na} / {nb} | step ms {na} | step ms {nb} | {nb} ÷ {na} (wall) | "
           f"CPU ms {na} | CPU ms {nb} | {nb} ÷ {na} (CPU) | compiled GiB {na} / {nb} | same loss |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for wanted in keys:
    ra, rb = runs(a, wanted), runs(b, wanted)
    if not rb:
      continue
    wall = [statistics.median(r["step_ms"] for r in x) for x in (ra, rb)]
    cpu = [statistics.median(r["cpu_ms"] for r in x) for x in (ra, rb)]
    same = {r["loss"] for r in ra} == {r["loss"] for r in rb}
    lines.append(f"| {wanted[0]} | {wanted[1]} | {wanted[2]} | {len(ra)} / {len(rb)} | {wall[0]:.0f} | {wall[1]:.0f} | "
                 f"{wall[1] / wall[0]:.3f} | {cpu[0]:.0f} | {cpu[1]:.0f} | {cpu[1] / cpu[0]:.3f} | "
                 f"{ra[0]['compiled_gib']:.3f} / {rb[0]['compiled_gib']:.3f} | {'yes' if same else 'no'} |")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  if sys.argv[1:2] == ["--compare"]:
    paths = sys.argv[2:4]
    print(compare(load(paths[0]), load(paths[1]), tuple(p.rsplit("/", 1)[-1].removesuffix(".jsonl") for p in paths)),
          end="")
  else:
    print(report([r for path in sys.argv[1:] for r in load(path)]), end="")
