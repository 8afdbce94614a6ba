"""The unit sweep: validation before training, the matched mixture, unit files, and a tiny end-to-end sweep
(heal, units written, report aggregated, a killed unit redone)."""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "experiments"))
import sweep  # noqa: E402


def _sweep(tmp_path, arms=("fkl", "akl_official", "mix_matched"), seeds=(0,)):
  spec = sweep.load_scale("cpu-tiny")
  spec["results"] = str(tmp_path / "results")
  methods = sweep.load_yaml(os.path.join(ROOT, "experiments", "methods.yaml"))
  return sweep.Sweep(spec, methods, list(arms), list(seeds), str(tmp_path / "work"))


def _unit(arm, seed, training=None, n=3):
  block = {"seq_ids": list(range(n)), "tokens": [5.0] * n, "sums": {"jsd": [0.5] * n, "student_ce": [9.0] * n}}
  return {"schema": sweep.SCHEMA, "scale": "cpu-tiny", "arm": arm, "seed": seed, "command": "x",
          "training": training or {}, "layer_pairs": [[1, 1]], "entropy_edges": [1.0, 2.0],
          "seconds": {"train": 1.0, "eval": 1.0},
          "scores": {k: block for k in ("output", "lens/T1-S1", "output/entropy_tercile_0",
                                        "output/entropy_tercile_1", "output/entropy_tercile_2")}}


def test_every_scale_and_arm_resolves_and_bad_arms_fail_first(tmp_path, capsys):
  methods = sweep.load_yaml(os.path.join(ROOT, "experiments", "methods.yaml"))
  assert {"sft", "fkl", "rkl", "mix_half", "mix_matched", "akl_official", "akl_paper", "aklr_official",
          "akl_paper_mu0.3", "akl_paper_mu0.7", "jsd", "distilllens", "distilllens_normed",
          "distilllens_akl"} <= set(methods)
  for scale in ("cpu-tiny", "smollm2", "smollm2-gpu"):
    spec = sweep.load_scale(scale)
    sweep.validate(spec, methods, [str(a) for a in spec["arms"]])
  spec = sweep.load_scale("cpu-tiny")
  with pytest.raises(sweep.SweepError, match=r"unknown arm\(s\) \['nope'\]"):
    sweep.validate(spec, methods, ["fkl", "nope"])
  with pytest.raises(sweep.SweepError, match=r"arm 'x': .*unknown preset 'nopreset'"):
    sweep.validate(spec, {"x": ["nopreset"]}, ["x"])
  with pytest.raises(sweep.SweepError, match=r"arm 'x': .*unknown config key 'loss.mixweight'"):
    sweep.validate(spec, {"x": ["mix", "loss.mixweight=0.3"]}, ["x"])
  with pytest.raises(sweep.SweepError, match="matches the head weight of unknown arm 'akl'"):
    sweep.validate(spec, {"x": ["mix", "loss.mix_weight={head_weight:akl}"]}, ["x"])
  with pytest.raises(sweep.SweepError, match="arms 'a' and 'b' resolve to the same training config"):
    sweep.validate(spec, {"a": ["fkl"], "b": ["fkl", "loss.alpha=0.5"]}, ["a", "b"])
  with pytest.raises(sweep.SweepError, match="unknown scale"):
    sweep.load_scale("nope")
  with pytest.raises(sweep.SweepError, match=r"references \['rkl'\] are not arms of scale 'cpu-tiny'"):
    sweep.validate({**spec, "references": ["fkl", "rkl"]}, methods, [str(a) for a in spec["arms"]])
  assert sweep.main(["--scale", "cpu-tiny", "--arms", "fkl,nope", "--work", str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: --arms ['nope'] are not arms") and err.count("\n") == 1
  assert not (tmp_path / "heal").exists()  # nothing was trained


def test_matched_mixture_takes_the_akl_units_mean_head_weight(tmp_path):
  s = _sweep(tmp_path)
  with pytest.raises(LookupError, match="akl_official-seed0 is needed first"):
    s.unit_command("mix_matched", 0)
  sweep.write_json_atomic(sweep.unit_path(s.spec, "akl_official", 0),
                          _unit("akl_official", 0, training={"akl_head_weight": 0.3141592}))
  cmd = s.unit_command("mix_matched", 0)
  assert "loss.mix_weight=0.314159" in cmd and "loss.output_divergence=mix" not in cmd and "mix" in cmd
  assert cmd[-6:-3] == ["seed=0", "student.source=run", f"student.path={s.heal_dir}"]
  with pytest.raises(LookupError, match="akl_official-seed1"):
    s.unit_command("mix_matched", 1)  # the same seed's AKL unit, never another's
  order = s.planned()
  assert order[:2] == [("init", None), ("start", None)] and order.index(("akl_official", 0)) < order.index(
      ("mix_matched", 0))


def test_unit_files_are_all_or_nothing(tmp_path):
  path = str(tmp_path / "u.json")
  sweep.write_json_atomic(path, _unit("fkl", 1))
  assert sweep.load_unit(path, "fkl", 1)["arm"] == "fkl"
  assert sweep.load_unit(path, "fkl", 2) is None  # another unit's file
  text = open(path).read()
  open(path, "w").write(text[: len(text) // 2])  # killed while writing (without the atomic rename)
  assert sweep.load_unit(path, "fkl", 1) is None
  bad = _unit("fkl", 1)
  bad["scores"]["output"] = dict(bad["scores"]["output"], sums={"jsd": [0.5, float("nan"), 0.5]})
  sweep.write_json_atomic(path, bad)
  assert sweep.load_unit(path, "fkl", 1) is None
  assert sweep.load_unit(str(tmp_path / "absent.json"), "fkl", 1) is None


@pytest.mark.slow
def test_tiny_sweep_end_to_end_redoes_a_killed_unit(tmp_path, monkeypatch):
  import jax
  # This process's JAX keeps the 8 simulated devices the other tests of this worker expect: start its backend
  # before XLA_FLAGS goes (the sweep scores units in-process); only the train.py subprocesses see one device.
  assert len(jax.devices()) == 8
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  results, work = tmp_path / "results", tmp_path / "work"
  args = ["--scale", "cpu-tiny", "--arms", "fkl", "--results", str(results), "--work", str(work)]
  assert sweep.main([*args, "--seeds", "0", "--budget-minutes", "60"]) == 0
  units = results / "units"
  assert sorted(os.listdir(units)) == ["fkl-seed0.json", "init.json", "start.json"]
  first = json.loads((units / "fkl-seed0.json").read_text())
  assert "student.source=run" in first["command"] and first["training"]["last_loss"] is not None
  assert {"output", "output/entropy_tercile_2"} <= set(first["scores"]) and any(
      k.startswith("lens/") for k in first["scores"])
  assert not (work / "units" / "fkl" / "seed0" / "checkpoints").exists()  # the file is the result
  heal = json.loads((results / "heal.json").read_text())
  assert "sft" in heal["command"] and (results / "entropy_edges.json").exists()

  # A unit killed mid-write leaves a truncated file and a half-written run folder: it is redone, not counted.
  (units / "fkl-seed0.json").write_text('{"schema": 1, "arm": "fkl", "seed": 0, "scores": {"out')
  (work / "units" / "fkl" / "seed0" / "checkpoints" / "3").mkdir(parents=True)
  assert sweep.main([*args, "--seeds", "0", "--budget-minutes", "60"]) == 0
  redone = json.loads((units / "fkl-seed0.json").read_text())
  assert redone["scores"]["output"] == first["scores"]["output"]  # deterministic: the same unit again

  # The report aggregates what is present and lists what is missing.
  assert sweep.main([*args, "--seeds", "0,1", "--report"]) == 0
  report = json.loads((results / "report.json").read_text())
  assert report["units_present"] == ["fkl-seed0", "init", "start"] and report["units_missing"] == ["fkl-seed1"]
  ce = report["output"]["fkl"]["student_ce"]
  assert ce["seeds"] == 1 and ce["ci_low"] <= ce["mean"] <= ce["ci_high"]
  md = (results / "report.md").read_text()
  assert (results / "teacher_lens.json").exists()  # written with the first report
  assert "Units missing (1): fkl-seed1" in md and "| fkl | 1 |" in md and "The teacher's own logit lens" in md
