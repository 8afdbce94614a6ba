"""The comparison sweep: command lines, and the cpu-tiny end-to-end run (train → eval → consistent report)."""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "experiments"))
import sweep  # noqa: E402

# One output-only KD method, one AKL, one lens method: every code path of the sweep, within the CI budget.
CI_METHODS = ["fkl", "akl_paper", "distilllens_akl"]


def test_every_method_shares_the_scale_settings(tmp_path):
  spec = sweep.load_scale("cpu-tiny")
  methods = sweep.load_yaml(os.path.join(ROOT, "experiments", "methods.yaml"))
  assert set(methods) == {"sft", "fkl", "rkl", "jsd", "akl_official", "akl_paper", "distilllens", "distilllens_akl"}
  cmds = sweep.train_commands(spec, methods, str(tmp_path))
  for name, cmd in cmds.items():
    assert cmd[2:2 + len(spec["train"])] == [str(x) for x in spec["train"]], name
    assert cmd[-1] == f"out_dir={tmp_path / name}"
  ev = sweep.eval_command(spec, methods, str(tmp_path))
  assert ev[2].startswith("students=init=baseline,sft=") and ev[-len(spec["eval"]):] == [str(x) for x in spec["eval"]]
  with pytest.raises(ValueError, match="unknown scale"):
    sweep.load_scale("nope")


def test_check_report_rejects_inconsistent_numbers(tmp_path):
  stat = lambda m: {"mean": m, "ci_low": m, "ci_high": m}  # noqa: E731
  metrics = {k: stat(0.1) for k in ("forward_kl", "reverse_kl", "jsd", "tvd", "entropy_gap", "top1_agreement",
                                    "topk_overlap@5", "topk_overlap@10", "student_ece")}
  metrics.update(g_head=stat(0.05), g_tail=stat(0.15), num_tokens=10.0)
  report = {"students": {"a": {"alignment": {"output": {"metrics": metrics}}}}}
  path = tmp_path / "r.json"
  path.write_text(json.dumps(report))
  sweep.check_report(str(path), ["a"])
  metrics["g_tail"] = stat(0.5)
  path.write_text(json.dumps(report))
  with pytest.raises(AssertionError, match="2 TV"):
    sweep.check_report(str(path), ["a"])


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(os.path.join(ROOT, "train.py")), reason="train.py (issue 5) not present yet")
def test_cpu_tiny_sweep_produces_consistent_report(tmp_path):
  assert sweep.main(["--scale", "cpu-tiny", "--out", str(tmp_path), "--methods", ",".join(CI_METHODS)]) == 0
  report = sweep.check_report(str(tmp_path / "report" / "report.json"), ["init", *CI_METHODS])
  for name in ("report.md", "layer_profile.png", "reliability.png", "training_curves.png"):
    assert (tmp_path / "report" / name).stat().st_size > 0, name
  md = (tmp_path / "report" / "report.md").read_text()
  for name in ["init", *CI_METHODS]:
    jsd = report["students"][name]["alignment"]["output"]["metrics"]["jsd"]["mean"]
    assert f"| {name} | " in md and f"{jsd:.4f}" in md
  # The lens pairs of the training config are evaluated for every student.
  assert all(any(k.startswith("lens/") for k in s["alignment"]) for s in report["students"].values())
