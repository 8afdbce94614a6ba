"""The comparison sweep: command lines, and the cpu-tiny end-to-end run (train → eval → consistent report)."""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "experiments"))
import sweep  # noqa: E402

# An output-only KD method and the lens method with AKL at the output: every code path of the sweep (plain and
# adaptive output divergences, lens term, untrained baseline), within the CI budget.
CI_METHODS = ["fkl", "distilllens_akl"]


def test_every_method_shares_the_scale_settings(tmp_path):
  spec = sweep.load_scale("cpu-tiny")
  methods = sweep.load_yaml(os.path.join(ROOT, "experiments", "methods.yaml"))
  assert set(methods) == {"sft", "fkl", "rkl", "jsd", "akl_official", "akl_paper", "distilllens", "distilllens_akl"}
  cmds = sweep.train_commands(spec, methods, str(tmp_path))
  for name, cmd in cmds.items():
    args = cmd[2:-1]
    presets = [a for a in args if "=" not in a]
    assert args[:len(presets)] == presets, name  # train.py takes presets before overrides
    assert set(map(str, spec["train"])) | set(map(str, methods[name])) == set(args), name
    assert cmd[-1] == f"out_dir={tmp_path / name}"
  assert cmds["akl_paper"][2:] == ["tiny", "akl", *[str(x) for x in spec["train"][1:]], "loss.head_rule=paper",
                                   f"out_dir={tmp_path / 'akl_paper'}"]
  ev = sweep.eval_command(spec, methods, str(tmp_path))
  assert ev[2].startswith("students=init=baseline,sft=") and ev[-len(spec["eval"]):] == [str(x) for x in spec["eval"]]
  with pytest.raises(ValueError, match="unknown scale"):
    sweep.load_scale("nope")


def _metrics(**changes):
  stat = lambda m: {"mean": m, "ci_low": m - 0.01, "ci_high": m + 0.01}  # noqa: E731
  m = {k: stat(0.1) for k in ("forward_kl", "reverse_kl", "jsd", "tvd", "entropy_gap", "top1_agreement",
                              "topk_overlap@5", "topk_overlap@10", "student_ece")}
  m.update(g_head=stat(0.05), g_tail=stat(0.15), teacher_ce=stat(2.0), num_tokens=10.0, num_sequences=2.0)
  m.update({k: stat(v) if k not in ("num_tokens", "num_sequences") else v for k, v in changes.items()})
  return {"alignment": {"output": {"metrics": m}}}


@pytest.mark.parametrize("changes,match", [
    ({"g_tail": 0.5}, "2 TV"), ({"jsd": 0.9}, "jsd"), ({"forward_kl": -0.1}, "forward_kl"),
    ({"top1_agreement": 1.5}, "top1_agreement"), ({"num_tokens": 11.0}, "num_tokens"),
    ({"teacher_ce": 2.5}, "teacher_ce differs")])
def test_check_report_rejects_inconsistent_numbers(tmp_path, changes, match):
  path = tmp_path / "r.json"
  path.write_text(json.dumps({"students": {"a": _metrics(), "b": _metrics()}}))
  sweep.check_report(str(path), ["a", "b"])
  path.write_text(json.dumps({"students": {"a": _metrics(), "b": _metrics(**changes)}}))
  with pytest.raises(AssertionError, match=match):
    sweep.check_report(str(path), ["a", "b"])
  bad = _metrics()
  bad["alignment"]["output"]["metrics"]["jsd"]["ci_low"] = 0.2  # the interval misses its mean
  path.write_text(json.dumps({"students": {"a": bad}}))
  with pytest.raises(AssertionError, match="jsd"):
    sweep.check_report(str(path), ["a"])


def test_check_report_checks_paired_differences(tmp_path):
  path = tmp_path / "r.json"
  diff = {"mean": 0.1, "ci_low": 0.05, "ci_high": 0.15}
  report = {"students": {"a": _metrics(), "b": _metrics(jsd=0.2)}, "paired": {"reference": "a", "students": {"b": {
      "jsd": diff}}}}
  path.write_text(json.dumps(report))
  sweep.check_report(str(path), ["a", "b"])
  diff["mean"] = 0.12  # no longer the difference of the two means
  path.write_text(json.dumps(report))
  with pytest.raises(AssertionError, match="paired difference"):
    sweep.check_report(str(path), ["a", "b"])


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(os.path.join(ROOT, "train.py")), reason="train.py (issue 5) not present yet")
def test_cpu_tiny_sweep_produces_consistent_report(tmp_path, monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)  # train.py on this host's one CPU device, not the 8 simulated ones
  assert sweep.main(["--scale", "cpu-tiny", "--out", str(tmp_path), "--methods", ",".join(CI_METHODS)]) == 0
  report = sweep.check_report(str(tmp_path / "report" / "report.json"), ["init", *CI_METHODS])
  for name in ("report.md", "layer_profile.png", "reliability.png", "training_curves.png"):
    assert (tmp_path / "report" / name).stat().st_size > 0, name
  md = (tmp_path / "report" / "report.md").read_text()
  for name in ["init", *CI_METHODS]:
    jsd = report["students"][name]["alignment"]["output"]["metrics"]["jsd"]["mean"]
    assert f"| {name} | " in md and f"{jsd:.4g}" in md
  assert "## Paired differences to `fkl` at the output" in md
  assert set(report["paired"]["students"]) == {"init", *CI_METHODS} - {"fkl"}
  # The lens pairs of the training config are evaluated for every student.
  assert all(any(k.startswith("lens/") for k in s["alignment"]) for s in report["students"].values())
