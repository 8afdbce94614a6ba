"""The comparison experiment: train one student per distillation method, evaluate all, write one report.

  python experiments/sweep.py --scale cpu-tiny --out runs/sweep_cpu_tiny          # CI smoke scale, ~minutes
  python experiments/sweep.py --scale smollm2 --out runs/sweep_smollm2            # real teacher, CPU, short
  python experiments/sweep.py --scale smollm2-gpu --out runs/sweep_smollm2_gpu    # real teacher, one GPU
  python experiments/sweep.py --scale smollm2 --skip-trained --report report_normed --eval-extra norm=true \
      generation=false                                                             # re-evaluate: normed lens

Every method (``experiments/methods.yaml``) is trained by ``python train.py <scale presets> <method presets>
<scale overrides> <method overrides> out_dir=<out>/<method>`` with the same models, data, steps, seed and student
initialisation; then a single ``python eval.py`` call scores every student — plus the untrained
teacher-initialised student ``init`` — on the same held-out batches and sampling seeds and writes
``<out>/report/`` (report.json, report.md, plots). Finally :func:`check_report` asserts the report is complete
and internally consistent. Timings and the exact commands go to ``<out>/sweep_<report>.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def load_yaml(path: str):
  with open(path) as f:
    return yaml.safe_load(f)


def load_scale(scale: str) -> dict:
  """The scale file ``experiments/scales/<scale>.yaml`` (keys: description, train, eval, checkpoint, log).

  Raises:
    ValueError: on an unknown scale or a missing key.
  """
  path = os.path.join(HERE, "scales", f"{scale}.yaml")
  if not os.path.exists(path):
    known = sorted(f.removesuffix(".yaml") for f in os.listdir(os.path.join(HERE, "scales")))
    raise ValueError(f"unknown scale {scale!r}; known: {known}")
  spec = load_yaml(path)
  missing = {"train", "eval", "checkpoint", "log"} - set(spec)
  if missing:
    raise ValueError(f"{path} lacks {sorted(missing)}")
  return spec


def _run(cmd: list[str], log_path: str) -> float:
  t0 = time.time()
  with open(log_path, "w") as log:
    proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
  if proc.returncode != 0:
    with open(log_path) as log:
      tail = log.read()[-3000:]
    raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n--- {log_path} ---\n{tail}")
  return time.time() - t0


def train_commands(spec: dict, methods: dict, out: str) -> dict[str, list[str]]:
  """method → its ``train.py`` command line: the scale's presets, the method's presets, the scale's
  ``key=value`` overrides, the method's overrides, ``out_dir`` (train.py takes presets before overrides)."""
  def split(args):
    args = [str(a) for a in args]
    return [a for a in args if "=" not in a], [a for a in args if "=" in a]

  scale_presets, scale_overrides = split(spec["train"])
  commands = {}
  for name, method in methods.items():
    presets, overrides = split(method)
    commands[name] = [sys.executable, os.path.join(ROOT, "train.py"), *scale_presets, *presets, *scale_overrides,
                      *overrides, f"out_dir={os.path.join(out, name)}"]
  return commands


def eval_command(spec: dict, methods: dict, out: str, report: str = "report", extra: tuple[str, ...] = ()) -> list[str]:
  """The single ``eval.py`` command that scores every trained student and the untrained ``init`` student.

  Args:
    spec: the scale.
    methods: the trained methods.
    out: the sweep folder.
    report: the report folder's name inside ``out``.
    extra: ``key=value`` arguments after the scale's own (later values win), e.g. ``norm=true``.
  """
  runs = {name: spec["checkpoint"].format(run=os.path.join(out, name)) for name in methods}
  logs = {name: spec["log"].format(run=os.path.join(out, name)) for name in methods}
  students = ",".join(["init=baseline"] + [f"{n}={p}" for n, p in runs.items()])
  return [sys.executable, os.path.join(ROOT, "eval.py"), f"students={students}",
          "training_logs=" + ",".join(f"{n}={p}" for n, p in logs.items()), f"out={os.path.join(out, report)}",
          *map(str, spec["eval"]), *extra]


def training_seconds(spec: dict, methods: dict, out: str) -> dict[str, float | None]:
  """method → wall seconds of its training run (the last ``time`` of its JSONL log; None if absent)."""
  seconds = {}
  for name in methods:
    path = spec["log"].format(run=os.path.join(out, name))
    times = []
    if os.path.exists(path):
      with open(path) as f:
        times = [json.loads(line).get("time") for line in f if line.strip()]
    seconds[name] = max((t for t in times if t is not None), default=None)
  return seconds


def check_report(path: str, names: list[str]) -> dict:
  """Assert ``report.json`` holds every student with finite, consistent numbers; returns the report.

  Checks per student and alignment key: every CI brackets its mean; divergences ≥ 0, JSD ≤ ln 2, TV ≤ 1,
  agreement/overlap in [0, 1]; g_head + g_tail = 2·TV (token means of an identity); ECE in [0, 1]; every
  student scored on the same tokens and sequences; the teacher's CE is the same for every student; each paired
  difference equals the difference of the two means and lies in its interval.

  Raises:
    AssertionError: naming the first inconsistent number.
  """
  with open(path) as f:
    report = json.load(f)
  assert list(report["students"]) == names, (list(report["students"]), names)
  tol = 1e-4
  for name, student in report["students"].items():
    assert "output" in student["alignment"], name
    for key, block in student["alignment"].items():
      m = block["metrics"]
      where = f"{name}/{key}"
      for metric, stat in m.items():
        if isinstance(stat, dict):
          assert all(math.isfinite(stat[k]) for k in ("mean", "ci_low", "ci_high")), (where, metric, stat)
          assert stat["ci_low"] - tol <= stat["mean"] <= stat["ci_high"] + tol, (where, metric, stat)
      for metric in ("forward_kl", "reverse_kl", "jsd", "tvd", "g_head", "g_tail", "entropy_gap"):
        assert m[metric]["mean"] >= -tol, (where, metric)
      assert m["jsd"]["mean"] <= math.log(2) + tol, (where, "jsd > ln 2")
      assert m["tvd"]["mean"] <= 1 + tol, (where, "tvd > 1")
      for metric in ("top1_agreement", "topk_overlap@5", "topk_overlap@10", "student_ece"):
        assert -tol <= m[metric]["mean"] <= 1 + tol, (where, metric)
      assert abs(m["g_head"]["mean"] + m["g_tail"]["mean"] - 2 * m["tvd"]["mean"]) <= 1e-3 * (1 + m["tvd"]["mean"]), \
          (where, "g_head + g_tail != 2 TV")
      assert m["num_tokens"] > 0, where
  for key in ("num_tokens", "num_sequences"):
    counts = {s["alignment"]["output"]["metrics"][key] for s in report["students"].values()}
    assert len(counts) == 1, (key, counts)
  teacher_ce = [s["alignment"]["output"]["metrics"]["teacher_ce"]["mean"] for s in report["students"].values()]
  assert max(teacher_ce) - min(teacher_ce) <= 1e-6 * (1 + abs(teacher_ce[0])), ("teacher_ce differs", teacher_ce)
  if "paired" in report:
    output = {name: s["alignment"]["output"]["metrics"] for name, s in report["students"].items()}
    ref = report["paired"]["reference"]
    for name, diffs in report["paired"]["students"].items():
      for metric, d in diffs.items():
        want = output[name][metric]["mean"] - output[ref][metric]["mean"]
        assert abs(d["mean"] - want) <= 1e-6 * (1 + abs(want)), (name, metric, "paired difference", d, want)
        assert d["ci_low"] - tol <= d["mean"] <= d["ci_high"] + tol, (name, metric, "paired CI", d)
  return report


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--scale", default="cpu-tiny", help="a file in experiments/scales/ (without .yaml)")
  parser.add_argument("--out", default=None, help="output folder (default runs/sweep_<scale>)")
  parser.add_argument("--methods", default=None, help="comma-separated subset of methods.yaml")
  parser.add_argument("--skip-trained", action="store_true", help="reuse runs that already hold a checkpoint")
  parser.add_argument("--train-only", action="store_true", help="train (the missing) runs, do not evaluate")
  parser.add_argument("--report", default="report", help="report folder name inside --out")
  parser.add_argument("--eval-extra", nargs="*", default=[], help="eval.py key=value arguments added last, "
                      "e.g. norm=true generation=false")
  parser.add_argument("--dry-run", action="store_true", help="print the commands only")
  args = parser.parse_args(argv)
  spec = load_scale(args.scale)
  methods = load_yaml(os.path.join(HERE, "methods.yaml"))
  if args.methods:
    unknown = set(args.methods.split(",")) - set(methods)
    if unknown:
      raise ValueError(f"unknown methods {sorted(unknown)}; known: {sorted(methods)}")
    methods = {k: v for k, v in methods.items() if k in args.methods.split(",")}
  out = os.path.abspath(args.out or os.path.join(ROOT, "runs", f"sweep_{args.scale}"))
  os.makedirs(out, exist_ok=True)
  commands = train_commands(spec, methods, out)
  evaluation = eval_command(spec, methods, out, args.report, tuple(args.eval_extra))
  if args.dry_run:
    for cmd in [*commands.values(), evaluation]:
      print(" ".join(cmd))
    return 0
  timings = {}
  for name, cmd in commands.items():
    if args.skip_trained and os.path.isdir(os.path.join(out, name, "checkpoints")):
      print(f"[sweep] {name}: reusing {os.path.join(out, name)}", flush=True)
      continue
    print(f"[sweep] training {name}: {' '.join(cmd[1:])}", flush=True)
    timings[name] = _run(cmd, os.path.join(out, f"train_{name}.log"))
  if args.train_only:
    return 0
  print(f"[sweep] evaluating: {' '.join(evaluation[1:])}", flush=True)
  timings["eval"] = _run(evaluation, os.path.join(out, f"eval_{args.report}.log"))
  check_report(os.path.join(out, args.report, "report.json"), ["init", *methods])
  with open(os.path.join(out, f"sweep_{args.report}.json"), "w") as f:
    json.dump({"scale": args.scale, "spec": spec, "methods": methods, "seconds": timings,
               "train_seconds": training_seconds(spec, methods, out),
               "train_commands": {k: " ".join(v[1:]) for k, v in commands.items()},
               "eval_command": " ".join(evaluation[1:])}, f, indent=1)
  print(f"[sweep] report: {os.path.join(out, args.report, 'report.md')}  seconds: {timings}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
