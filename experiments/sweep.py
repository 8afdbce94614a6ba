"""The comparison experiment, one unit at a time: a unit is one (arm, training seed), trained and evaluated.

  python experiments/sweep.py --scale smollm2 --budget-minutes 90      # run the missing CPU units that fit
  python experiments/sweep.py --scale smollm2-gpu --budget-minutes 8   # the same sweep on one GPU
  python experiments/sweep.py --scale smollm2 --report                 # aggregate the units present
  python experiments/sweep.py --scale smollm2 --dry-run                # print the commands, run nothing

A scale (``experiments/scales/<scale>.yaml``) fixes the models, data, schedule, seeds, arms (in the order they are
run) and evaluation. Before any unit the sweep builds, once per machine, the shared start: the **heal**, a short
supervised run from the scale's layer-dropped student (``runs/sweep_<scale>/heal``); every unit starts from its
checkpoint (``student.source=run``). A unit trains ``train.py <scale presets> <arm presets> <scale overrides>
<arm overrides> seed=<s> student.source=run student.path=<heal>`` (``experiments/methods.yaml``), then scores the
student on the fixed held-out batches (:func:`jaxlens.eval.units.score_student`: per-sequence sums at the output,
every lens pair and each teacher-entropy tercile) and writes ``<results>/units/<arm>-seed<s>.json`` (small, no
checkpoint; committed). Two seed-less units describe the starting points: ``init`` (the layer-dropped student
before the heal) and ``start`` (the healed student every arm starts from). ``<results>/teacher_lens.json`` holds
the teacher's own lens CE and entropy per layer and the entropy tercile edges.

A unit's file is written atomically after its evaluation, so a unit killed at any point has no file and is redone
by the next call (its run folder is wiped first); a file that does not parse or validate is deleted and redone,
never counted. ``--budget-minutes`` runs the missing units in order while the next one is expected to fit (the
median duration of the units done so far, else the scale's estimate) and stops cleanly between units.
``--report`` aggregates whatever units are present (:mod:`jaxlens.eval.hierarchical`: seeds, then sequences;
comparisons paired within seed) into ``<results>/report.{json,md}`` and lists the missing ones. An unknown arm or
preset fails before any training, with one ``error:`` line (exit 2).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from jaxlens.run import config as tconfig  # noqa: E402

SCHEMA = 1
SPECIAL_UNITS = ("init", "start")
MATCH = re.compile(r"\{head_weight:([A-Za-z0-9_.\-]+)\}")
#: Output metrics compared in the report (paired against the references), lens and tercile metrics; the default
#: references (a scale's ``references`` adds others).
REPORT_OUTPUT = ("forward_kl", "reverse_kl", "jsd", "tvd", "top1_agreement", "g_head", "g_tail", "entropy_gap",
                 "student_ce")
REPORT_LENS = ("jsd", "forward_kl", "top1_agreement")
REPORT_TERCILE = ("forward_kl", "reverse_kl", "tvd", "g_head", "g_tail")
REFERENCES = ("fkl", "mix_matched")


class SweepError(ValueError):
  """A sweep that cannot start: unknown scale, arm or preset, or an invalid command line."""


def load_yaml(path: str):
  with open(path) as f:
    return yaml.safe_load(f)


def load_scale(scale: str) -> dict:
  """``experiments/scales/<scale>.yaml`` with its defaults filled in.

  Keys: ``description``, ``train`` (presets and overrides of every run), ``heal`` (added for the heal),
  ``seeds``, ``arms`` (names of methods.yaml, in run order), ``eval`` (``sequences``, ``batch_size``,
  ``block_tokens``, ``lens_norm``, ``num_bootstrap``), ``results`` (folder of units and report), ``unit_minutes``
  and ``heal_minutes`` (first estimates), ``references`` (the arms every other arm is compared to, paired; default
  ``fkl`` and ``mix_matched``).

  Raises:
    SweepError: on an unknown scale or a missing key.
  """
  path = os.path.join(HERE, "scales", f"{scale}.yaml")
  if not os.path.exists(path):
    known = sorted(f.removesuffix(".yaml") for f in os.listdir(os.path.join(HERE, "scales")))
    raise SweepError(f"unknown scale {scale!r}; known: {known}")
  spec = load_yaml(path)
  missing = {"train", "heal", "seeds", "arms", "eval", "results"} - set(spec)
  if missing:
    raise SweepError(f"{path} lacks {sorted(missing)}")
  spec.setdefault("unit_minutes", 5.0)
  spec.setdefault("heal_minutes", 5.0)
  spec.setdefault("references", list(REFERENCES))
  spec["name"] = scale
  return spec


def _split(args) -> tuple[list[str], list[str]]:
  args = [str(a) for a in args]
  return [a for a in args if "=" not in a], [a for a in args if "=" in a]


def train_args(spec: dict, arm_args, extra: list[str]) -> list[str]:
  """``train.py`` arguments: the scale's presets, the arm's presets, the scale's overrides, the arm's, ``extra``."""
  scale_presets, scale_overrides = _split(spec["train"])
  presets, overrides = _split(arm_args)
  return [*scale_presets, *presets, *scale_overrides, *overrides, *extra]


def validate(spec: dict, methods: dict, arms: list[str]) -> None:
  """Every arm exists, every command line resolves (presets, keys, values), and no two arms resolve to the same
  training config, before anything runs.

  Raises:
    SweepError: naming the first unknown arm, invalid command line or pair of identical arms.
  """
  unknown = [a for a in arms if a not in methods]
  if unknown:
    raise SweepError(f"unknown arm(s) {unknown} in scale {spec['name']!r}; known: {sorted(methods)}")
  stray = [r for r in spec.get("references", ()) if r not in spec["arms"]]
  if stray:
    raise SweepError(f"references {stray} are not arms of scale {spec['name']!r}")
  resolved = {}
  for arm in arms:
    for m in MATCH.finditer(" ".join(map(str, methods[arm]))):
      if m.group(1) not in methods:
        raise SweepError(f"arm {arm!r} matches the head weight of unknown arm {m.group(1)!r}")
    args = [MATCH.sub("0.5", str(a)) for a in methods[arm]]
    try:
      cfg = tconfig.resolve(train_args(spec, args, ["student.source=run", "student.path=heal", "out_dir=x"]))
    except tconfig.ConfigError as e:
      raise SweepError(f"arm {arm!r}: {e}") from None
    if args != [str(a) for a in methods[arm]]:
      continue  # a matched weight is only known from training; its arm is not compared here
    twin = next((other for other, c in resolved.items() if c == cfg), None)
    if twin is not None:  # e.g. a model preset's setting leaking into an arm that meant to differ
      raise SweepError(f"arms {twin!r} and {arm!r} resolve to the same training config in scale {spec['name']!r}")
    resolved[arm] = cfg
  try:
    tconfig.resolve(train_args(spec, spec["heal"], ["out_dir=x"]))
  except tconfig.ConfigError as e:
    raise SweepError(f"heal: {e}") from None


# ------------------------------------------------------------------------------------------------------ units
def unit_name(arm: str, seed: int | None) -> str:
  return arm if seed is None else f"{arm}-seed{seed}"


def unit_path(spec: dict, arm: str, seed: int | None) -> str:
  return os.path.join(ROOT, spec["results"], "units", f"{unit_name(arm, seed)}.json")


def _finite(values) -> bool:
  return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def load_unit(path: str, arm: str, seed: int | None) -> dict | None:
  """The unit at ``path`` if it is complete and consistent, else ``None`` (absent, truncated, or invalid)."""
  try:
    with open(path) as f:
      unit = json.load(f)
    assert unit["schema"] == SCHEMA and unit["arm"] == arm and unit["seed"] == seed
    scores = unit["scores"]
    assert "output" in scores and len(scores) >= 4
    for key, block in scores.items():
      n = len(block["tokens"])
      assert n > 0 and len(block["seq_ids"]) == n and _finite(block["tokens"]), key
      for values in block["sums"].values():
        assert len(values) == n and _finite(values), key
    return unit
  except (OSError, ValueError, KeyError, TypeError, AssertionError):
    return None


def write_json_atomic(path: str, payload: dict) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(payload, f, separators=(",", ":"))
  os.replace(tmp, path)


def training_log_summary(run_dir: str) -> dict:
  """Wall seconds, first/last train loss and the AKL head weight (mean, mean histogram) of a run's log."""
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f if line.strip()]
  train = [r for r in records if "loss/total" in r]
  weights = [r["akl/head_weight"] for r in train if r.get("akl/head_weight") is not None]
  hist_keys = sorted((k for k in (train[0] if train else {}) if k.startswith("akl/head_weight_hist_")),
                     key=lambda k: int(k.rsplit("_", 1)[1]))
  out = {"seconds": max((r["time"] for r in records), default=None),
         "first_loss": train[0]["loss/total"] if train else None,
         "last_loss": train[-1]["loss/total"] if train else None,
         "logged_steps": [r["step"] for r in train]}
  if weights:
    out["akl_head_weight"] = statistics.fmean(weights)
    out["akl_head_weight_per_step"] = weights
    out["akl_head_weight_hist"] = [statistics.fmean(r[k] for r in train) for k in hist_keys]
  return out


class Evaluator:
  """The teacher, the fixed held-out batches and the lens pairs of a scale, built once per sweep call."""

  def __init__(self, spec: dict):
    from jaxlens import losses
    from jaxlens.eval import loading
    from jaxlens.eval.alignment import AlignmentConfig
    from jaxlens.run import model_sources
    self.spec = spec
    cfg = tconfig.resolve(train_args(spec, [], ["out_dir=x"]))
    self.cfg = cfg
    ev = spec["eval"]
    self.teacher = model_sources.load_teacher(cfg.teacher)
    tokenizer = model_sources.load_run_tokenizer(cfg.data)
    self.batches = loading.held_out_batches(loading.held_out_examples(cfg.data), tokenizer, cfg.data,
                                            batch_size=ev["batch_size"],
                                            num_batches=max(1, ev["sequences"] // ev["batch_size"]))
    blocks = model_sources.student_blocks(cfg.student, self.teacher.config.num_layers)
    pairs = losses.construction_layer_map(blocks, self.teacher.config.num_layers, cfg.loss.num_lens_pairs)
    self.layer_pairs = list(zip(pairs.teacher_layers, pairs.student_layers))
    self.config = AlignmentConfig(block_tokens=ev["block_tokens"])
    self._edges = None

  def entropy_edges(self) -> list[float]:
    """``<results>/entropy_edges.json`` (computed once per scale, committed): the teacher-entropy tercile edges."""
    from jaxlens.eval import units
    path = os.path.join(ROOT, self.spec["results"], "entropy_edges.json")
    if not os.path.exists(path):
      edges = units.teacher_entropy_edges(self.teacher, self.batches, self.spec["eval"]["block_tokens"])
      write_json_atomic(path, {"entropy_edges": list(edges)})
    return load_yaml(path)["entropy_edges"]

  def teacher_lens(self) -> dict:
    """``<results>/teacher_lens.json`` (computed once per scale, committed): the teacher's lens CE and entropy at
    every hidden state, raw and normed, on the first ``eval.profile_tokens`` (default 256) held-out tokens."""
    from jaxlens.eval import units
    path = os.path.join(ROOT, self.spec["results"], "teacher_lens.json")
    if not os.path.exists(path):
      t0 = time.time()
      tokens = int(self.spec["eval"].get("profile_tokens", 256))
      profile = units.teacher_lens_profile(self.teacher, self.batches[:1], block_tokens=tokens, max_blocks=1)
      write_json_atomic(path, {"profile": profile, "seconds": time.time() - t0})
    return load_yaml(path)

  def score(self, student) -> dict:
    from jaxlens.eval import units
    edges = self.entropy_edges()
    return {"layer_pairs": [list(p) for p in self.layer_pairs], "entropy_edges": edges,
            "scores": units.score_student(self.teacher, student, self.batches, layer_pairs=self.layer_pairs,
                                          lens_norm=self.spec["eval"].get("lens_norm", True), edges=tuple(edges),
                                          config=self.config)}


def _run(cmd: list[str], log_path: str) -> float:
  """Run ``cmd`` (a ``train.py`` line) with the JAX persistent compilation cache of this process's environment."""
  t0 = time.time()
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "w") as log:
    proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
  if proc.returncode != 0:
    with open(log_path) as log:
      tail = log.read()[-3000:]
    raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n--- {log_path} ---\n{tail}")
  return time.time() - t0


class Sweep:
  """One sweep call: the scale, the arms, the work folder, and the shared evaluator (lazily built)."""

  def __init__(self, spec: dict, methods: dict, arms: list[str], seeds: list[int], work: str):
    self.spec, self.methods, self.arms, self.seeds, self.work = spec, methods, arms, seeds, work
    self.heal_dir = os.path.join(work, "heal")
    self._evaluator = None

  def use_compilation_cache(self) -> None:
    """Share compiled programs between units (another seed of an arm compiles nothing): JAX's persistent
    compilation cache in ``JAX_COMPILATION_CACHE_DIR``, by default ``<work>/jax_cache``, for this process and the
    ``train.py`` runs it starts."""
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(self.work, "jax_cache"))
    import jax
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])

  @property
  def evaluator(self) -> Evaluator:
    if self._evaluator is None:
      self._evaluator = Evaluator(self.spec)
    return self._evaluator

  def planned(self) -> list[tuple[str, int | None]]:
    """Every unit of the sweep in run order: the two starting points, then the arms in groups of the scale's
    ``group_size`` (default 3), each group for every seed before the next group — so the first arms reach
    all their seeds early."""
    size = int(self.spec.get("group_size", 3))
    groups = [self.arms[i:i + size] for i in range(0, len(self.arms), size)]
    return [(a, None) for a in SPECIAL_UNITS] + [(arm, s) for g in groups for s in self.seeds for arm in g]

  def present(self, arm: str, seed: int | None) -> dict | None:
    return load_unit(unit_path(self.spec, arm, seed), arm, seed)

  def heal_command(self) -> list[str]:
    return [sys.executable, os.path.join(ROOT, "train.py"),
            *train_args(self.spec, self.spec["heal"], [f"out_dir={self.heal_dir}", "resume=never"])]

  def unit_dir(self, arm: str, seed: int) -> str:
    return os.path.join(self.work, "units", arm, f"seed{seed}")

  def matched_weight(self, arm: str, seed: int) -> str:
    """The mean AKL head weight logged by unit (``arm``, ``seed``), as a config value.

    Raises:
      LookupError: if that unit is not present (or logged no head weight).
    """
    source = self.present(arm, seed)
    if source is None or "akl_head_weight" not in source["training"]:
      raise LookupError(f"unit {unit_name(arm, seed)} is needed first (its mean AKL head weight)")
    return f"{source['training']['akl_head_weight']:.6f}"

  def unit_command(self, arm: str, seed: int, weight=None) -> list[str]:
    """The unit's ``train.py`` command (``{head_weight:ARM}`` filled by ``weight(ARM, seed)``, default
    :meth:`matched_weight`).

    Raises:
      LookupError: if the matched unit is not present yet.
    """
    weight = weight or self.matched_weight
    args = [MATCH.sub(lambda m: weight(m.group(1), seed), a) for a in map(str, self.methods[arm])]
    return [sys.executable, os.path.join(ROOT, "train.py"),
            *train_args(self.spec, args, [f"seed={seed}", "student.source=run", f"student.path={self.heal_dir}",
                                          f"out_dir={self.unit_dir(arm, seed)}", "resume=never", "progress=false"])]

  def ensure_heal(self) -> None:
    """Train the heal unless its run folder holds a finished checkpoint (a partial one is wiped and redone)."""
    from jaxlens.run import checkpoints
    heal = tconfig.resolve(train_args(self.spec, self.spec["heal"], ["out_dir=x"]))
    try:
      if checkpoints.read_run(self.heal_dir).step == heal.steps:
        return
    except Exception:  # noqa: BLE001 - absent or unreadable: rebuild
      pass
    shutil.rmtree(self.heal_dir, ignore_errors=True)
    print(f"[sweep] heal: {' '.join(self.heal_command()[1:])}", flush=True)
    seconds = _run(self.heal_command(), os.path.join(self.work, "heal.log"))
    write_json_atomic(os.path.join(ROOT, self.spec["results"], "heal.json"),
                      {"command": " ".join(self.heal_command()[2:]), "seconds": seconds,
                       "training": training_log_summary(self.heal_dir)})

  def run_unit(self, arm: str, seed: int | None) -> dict:
    """Train (unless a starting point) and score one unit; write its file. Returns the unit."""
    from jaxlens.run import model_sources
    t0 = time.time()
    payload = {"schema": SCHEMA, "scale": self.spec["name"], "arm": arm, "seed": seed}
    if arm == "init":
      student = model_sources.make_student(self.evaluator.cfg.student, self.evaluator.teacher)
      payload.update(command=None, training={})
    elif arm == "start":
      self.ensure_heal()
      student, _ = model_sources.load_run_student(self.heal_dir)
      payload.update(command=" ".join(self.heal_command()[2:]), training=training_log_summary(self.heal_dir))
    else:
      self.ensure_heal()
      cmd = self.unit_command(arm, seed)
      out = self.unit_dir(arm, seed)
      shutil.rmtree(out, ignore_errors=True)
      print(f"[sweep] {unit_name(arm, seed)}: train.py {' '.join(cmd[2:])}", flush=True)
      _run(cmd, os.path.join(out + ".log"))
      student, _ = model_sources.load_run_student(out)
      payload.update(command=" ".join(cmd[2:]), training=training_log_summary(out))
    t1 = time.time()
    payload.update(self.evaluator.score(student))
    payload["seconds"] = {"train": t1 - t0, "eval": time.time() - t1}
    write_json_atomic(unit_path(self.spec, arm, seed), payload)
    if arm not in SPECIAL_UNITS:  # the file is what counts: drop the checkpoints (~0.8 GB at SmolLM2 scale)
      shutil.rmtree(os.path.join(self.unit_dir(arm, seed), "checkpoints"), ignore_errors=True)
    return payload

  def estimate_seconds(self) -> float:
    done = [u["seconds"]["train"] + u["seconds"]["eval"] for a, s in self.planned() if s is not None
            for u in [self.present(a, s)] if u is not None]
    return statistics.median(done) if done else 60.0 * self.spec["unit_minutes"]

  def run(self, budget_minutes: float) -> int:
    """Run missing units in order while the next one is expected to fit; returns how many ran."""
    t0, ran = time.time(), 0
    for arm, seed in self.planned():
      path = unit_path(self.spec, arm, seed)
      if self.present(arm, seed) is not None:
        continue
      if os.path.exists(path):
        print(f"[sweep] {unit_name(arm, seed)}: invalid unit file, redoing it", flush=True)
        os.remove(path)
      left = 60 * budget_minutes - (time.time() - t0)
      need = self.estimate_seconds() if seed is not None else 60.0
      if arm != "init" and not os.path.isdir(self.heal_dir):
        need += 60.0 * self.spec["heal_minutes"]
      if need > left:
        print(f"[sweep] stopping before {unit_name(arm, seed)}: it needs ~{need / 60:.1f} min, "
              f"{max(left, 0) / 60:.1f} min of the budget left", flush=True)
        break
      try:
        unit = self.run_unit(arm, seed)
      except LookupError as e:
        print(f"[sweep] skipping: {e}", flush=True)
        continue
      ran += 1
      print(f"[sweep] {unit_name(arm, seed)} done in {sum(unit['seconds'].values()):.0f} s "
            f"(output CE {_ratio(unit['scores']['output'], 'student_ce'):.3f})", flush=True)
    return ran


def _ratio(block: dict, metric: str) -> float:
  return sum(block["sums"][metric]) / max(sum(block["tokens"]), 1.0)


# ----------------------------------------------------------------------------------------------------- report
def _per_seed(units: dict, arm: str, key: str, metric: str) -> dict:
  """seed → (sums, tokens) of one arm's metric at one score key (seed-less units under seed None)."""
  import numpy as np
  return {seed: (np.asarray(u["scores"][key]["sums"][metric]), np.asarray(u["scores"][key]["tokens"]))
          for (a, seed), u in units.items() if a == arm and key in u["scores"]}


def aggregate(sweep: Sweep, num_bootstrap: int) -> dict:
  """The report document of the units present (see the module docstring)."""
  from jaxlens.eval.hierarchical import hierarchical_bootstrap, paired_hierarchical_bootstrap
  units = {(a, s): u for a, s in sweep.planned() for u in [sweep.present(a, s)] if u is not None}
  missing = [unit_name(a, s) for a, s in sweep.planned() if (a, s) not in units]
  arms = [*SPECIAL_UNITS, *sweep.arms]
  first = next(iter(units.values()), None)
  keys = list(first["scores"]) if first else []
  edges = {tuple(u["entropy_edges"]) for u in units.values()}
  if len(edges) > 1:
    raise ValueError(f"units were scored with different teacher-entropy edges {edges}: not one evaluation")
  kw = dict(num_bootstrap=num_bootstrap, seed=0)

  def summary(arm, key, metric):
    per_seed = _per_seed(units, arm, key, metric)
    if not per_seed:
      return None
    seeds = sorted(per_seed, key=lambda s: -1 if s is None else s)
    return hierarchical_bootstrap([per_seed[s][0] for s in seeds], [per_seed[s][1] for s in seeds], **kw)

  report = {"scale": sweep.spec["name"], "description": sweep.spec.get("description", ""),
            "units_present": sorted(unit_name(a, s) for a, s in units), "units_missing": missing,
            "seeds": {arm: sorted(s for a, s in units if a == arm and s is not None) for arm in sweep.arms},
            "arms": {arm: sweep.methods.get(arm) for arm in sweep.arms}, "layer_pairs": first and first["layer_pairs"],
            "entropy_edges": first and first["entropy_edges"], "output": {}, "lens": {}, "terciles": {}, "paired": {},
            "training": {}}
  lens_keys = [k for k in keys if k.startswith("lens/")]
  tercile_keys = [k for k in keys if k.startswith("output/entropy_tercile_")]
  for arm in arms:
    present = [(a, s) for a, s in units if a == arm]
    if not present:
      continue
    report["output"][arm] = {m: summary(arm, "output", m) for m in REPORT_OUTPUT}
    report["lens"][arm] = {k: {m: summary(arm, k, m) for m in REPORT_LENS} for k in lens_keys}
    report["terciles"][arm] = {k: {m: summary(arm, k, m) for m in REPORT_TERCILE} for k in tercile_keys}
    weights = [units[p]["training"].get("akl_head_weight") for p in present]
    report["training"][arm] = {
        "seconds": [units[p]["seconds"] for p in present],
        "akl_head_weight": [w for w in weights if w is not None] or None,
        "mix_weight": [float(re.search(r"loss\.mix_weight=([0-9.]+)", units[p]["command"] or "").group(1))
                       for p in present if re.search(r"loss\.mix_weight=([0-9.]+)", units[p]["command"] or "")] or None}
  for ref in sweep.spec.get("references", REFERENCES):
    if ref not in report["output"]:
      continue
    block = {}
    for arm in sweep.arms:
      if arm == ref or arm not in report["output"]:
        continue
      diff = {"output": {}, "lens": {}, "terciles": {}}
      for m in REPORT_OUTPUT:
        diff["output"][m] = paired_hierarchical_bootstrap(_per_seed(units, arm, "output", m),
                                                          _per_seed(units, ref, "output", m), **kw)
      for k in lens_keys:
        diff["lens"][k] = {m: paired_hierarchical_bootstrap(_per_seed(units, arm, k, m), _per_seed(units, ref, k, m),
                                                            **kw) for m in REPORT_LENS}
      for k in tercile_keys:
        diff["terciles"][k] = {m: paired_hierarchical_bootstrap(_per_seed(units, arm, k, m),
                                                                _per_seed(units, ref, k, m), **kw)
                               for m in REPORT_TERCILE}
      block[arm] = diff
    report["paired"][ref] = block
  lens_path = os.path.join(ROOT, sweep.spec["results"], "teacher_lens.json")
  report["teacher_lens"] = load_yaml(lens_path) if os.path.exists(lens_path) else None
  heal_path = os.path.join(ROOT, sweep.spec["results"], "heal.json")
  report["heal"] = load_yaml(heal_path) if os.path.exists(heal_path) else None
  return report


def _fmt(stat: dict | None, digits: int = 3) -> str:
  """``mean [low, high]``; ``–`` when absent."""
  if stat is None:
    return "–"
  return f"{stat['mean']:.{digits}f} [{stat['ci_low']:.{digits}f}, {stat['ci_high']:.{digits}f}]"


def markdown(report: dict) -> str:
  """The report as Markdown tables (means [95% CI over seeds, then sequences]; paired differences)."""
  lines = [f"# Sweep report: scale `{report['scale']}`", "", report["description"], "",
           f"Units present ({len(report['units_present'])}): {', '.join(report['units_present']) or 'none'}", "",
           f"Units missing ({len(report['units_missing'])}): {', '.join(report['units_missing']) or 'none'}", "",
           "Intervals: 95% hierarchical bootstrap (resample training seeds, then held-out sequences within each);",
           "with fewer than 3 seeds an interval covers sequences only and states no result.", ""]
  seeds = lambda arm: "–" if arm in SPECIAL_UNITS else len(report["seeds"].get(arm, []))  # noqa: E731
  lines += ["## Output alignment (token means)", "",
            "| arm | seeds | " + " | ".join(REPORT_OUTPUT) + " |", "|---|---:|" + "---:|" * len(REPORT_OUTPUT)]
  for arm, stats in report["output"].items():
    lines.append(f"| {arm} | {seeds(arm)} | " + " | ".join(_fmt(stats[m]) for m in REPORT_OUTPUT) + " |")
  for ref, block in report["paired"].items():
    lines += ["", f"## Paired differences to `{ref}` (arm − {ref}, same seeds and sequences)", "",
              "| arm | seeds | " + " | ".join(REPORT_OUTPUT) + " |", "|---|---:|" + "---:|" * len(REPORT_OUTPUT)]
    for arm, diff in block.items():
      n = next((d["seeds"] for d in diff["output"].values() if d), 0)
      lines.append(f"| {arm} | {n} | " + " | ".join(_fmt(diff["output"][m]) for m in REPORT_OUTPUT) + " |")
  if report["terciles"]:
    lines += ["", "## Output alignment by teacher-entropy tercile (edges "
              f"{report['entropy_edges']} nats; 0 = peaked teacher, 2 = flat)", ""]
    keys = list(next(iter(report["terciles"].values())))
    lines += ["| arm | tercile | " + " | ".join(REPORT_TERCILE) + " |", "|---|---|" + "---:|" * len(REPORT_TERCILE)]
    for arm, by_key in report["terciles"].items():
      for k in keys:
        lines.append(f"| {arm} | {k.rsplit('_', 1)[1]} | " + " | ".join(_fmt(by_key[k][m]) for m in REPORT_TERCILE)
                     + " |")
    for ref, block in report["paired"].items():
      lines += ["", f"Paired to `{ref}` by tercile:", "",
                "| arm | tercile | " + " | ".join(REPORT_TERCILE) + " |", "|---|---|" + "---:|" * len(REPORT_TERCILE)]
      for arm, diff in block.items():
        for k in keys:
          lines.append(f"| {arm} | {k.rsplit('_', 1)[1]} | " + " | ".join(_fmt(diff["terciles"][k][m])
                                                                           for m in REPORT_TERCILE) + " |")
  if report["lens"]:
    keys = list(next(iter(report["lens"].values())))
    lines += ["", f"## Lens-pair JSD (pairs {report['layer_pairs']}: the construction map)", "",
              "| arm | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for arm, by_key in report["lens"].items():
      lines.append(f"| {arm} | " + " | ".join(_fmt(by_key[k]["jsd"]) for k in keys) + " |")
    for ref, block in report["paired"].items():
      lines += ["", f"Lens-pair JSD paired to `{ref}`:", "", "| arm | " + " | ".join(keys) + " |",
                "|---|" + "---:|" * len(keys)]
      for arm, diff in block.items():
        lines.append(f"| {arm} | " + " | ".join(_fmt(diff["lens"][k]["jsd"]) for k in keys) + " |")
  tl = report.get("teacher_lens")
  if tl:
    p = tl["profile"]
    lines += ["", "## The teacher's own logit lens (token means over the held-out tokens)", "",
              "| hidden state | CE raw | entropy raw | CE normed | entropy normed |", "|---:|---:|---:|---:|---:|"]
    for k in p["layers"]:
      lines.append(f"| {k} | {p['ce_raw'][k]:.2f} | {p['entropy_raw'][k]:.2f} | {p['ce_normed'][k]:.2f} | "
                   f"{p['entropy_normed'][k]:.2f} |")
  lines += ["", "## Training", "", "| arm | units | train s (mean) | eval s (mean) | AKL head weight | mix weight |",
            "|---|---:|---:|---:|---|---|"]
  for arm, t in report["training"].items():
    tr = statistics.fmean(s["train"] for s in t["seconds"])
    ev = statistics.fmean(s["eval"] for s in t["seconds"])
    hw = ", ".join(f"{w:.3f}" for w in t["akl_head_weight"]) if t["akl_head_weight"] else "–"
    mw = ", ".join(f"{w:.3f}" for w in t["mix_weight"]) if t["mix_weight"] else "–"
    lines.append(f"| {arm} | {len(t['seconds'])} | {tr:.0f} | {ev:.0f} | {hw} | {mw} |")
  return "\n".join(lines) + "\n"


def write_report(sweep: Sweep, num_bootstrap: int) -> dict:
  lens_path = os.path.join(ROOT, sweep.spec["results"], "teacher_lens.json")
  if not os.path.exists(lens_path) and any(sweep.present(a, s) for a, s in sweep.planned()):
    sweep.evaluator.teacher_lens()  # once per scale: the teacher's own lens profile
  report = aggregate(sweep, num_bootstrap)
  folder = os.path.join(ROOT, sweep.spec["results"])
  write_json_atomic(os.path.join(folder, "report.json"), report)
  with open(os.path.join(folder, "report.md"), "w") as f:
    f.write(markdown(report))
  print(f"[sweep] report of {len(report['units_present'])} units ({len(report['units_missing'])} missing): "
        f"{os.path.join(folder, 'report.md')}")
  return report


# ------------------------------------------------------------------------------------------------------- main
def build(argv) -> tuple[argparse.Namespace, Sweep]:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--scale", required=True, help="a file in experiments/scales/ (without .yaml)")
  parser.add_argument("--budget-minutes", type=float, default=None, help="run missing units that fit in M minutes")
  parser.add_argument("--report", action="store_true", help="aggregate the units present; list the missing ones")
  parser.add_argument("--arms", default=None, help="comma-separated subset of the scale's arms")
  parser.add_argument("--seeds", default=None, help="comma-separated subset of the scale's seeds")
  parser.add_argument("--results", default=None, help="override the scale's results folder (relative to the repo)")
  parser.add_argument("--work", default=None, help="run folders (default runs/sweep_<scale>)")
  parser.add_argument("--dry-run", action="store_true", help="print the heal and unit commands, run nothing")
  args = parser.parse_args(argv)
  spec = load_scale(args.scale)
  if args.results:
    spec["results"] = args.results
  methods = load_yaml(os.path.join(HERE, "methods.yaml"))
  arms = [str(a) for a in spec["arms"]]
  if args.arms:
    wanted = args.arms.split(",")
    bad = [a for a in wanted if a not in arms]
    if bad:
      raise SweepError(f"--arms {bad} are not arms of scale {args.scale!r}: {arms}")
    arms = wanted
  seeds = [int(s) for s in spec["seeds"]]
  if args.seeds:
    seeds = [int(s) for s in args.seeds.split(",")]
  validate(spec, methods, arms)
  work = os.path.abspath(args.work or os.path.join(ROOT, "runs", f"sweep_{args.scale}"))
  return args, Sweep(spec, methods, arms, seeds, work)


def main(argv=None) -> int:
  try:
    args, sweep = build(argv)
  except SweepError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.dry_run:
    print(" ".join(sweep.heal_command()))
    for arm, seed in sweep.planned():
      if seed is not None:
        print(" ".join(sweep.unit_command(arm, seed, weight=lambda ref, s: f"<head weight of {unit_name(ref, s)}>")))
    return 0
  if args.budget_minutes is not None:
    sweep.use_compilation_cache()
    ran = sweep.run(args.budget_minutes)
    print(f"[sweep] {ran} unit(s) run this call")
  if args.report or args.budget_minutes is None:
    write_report(sweep, sweep.spec["eval"].get("num_bootstrap", 1000))
  return 0



if __name__ == "__main__":
  sys.exit(main())
