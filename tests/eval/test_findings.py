"""docs/findings.md is rendered from its template and the committed result files: no number in it is retyped,
and no comparison with fewer than three training seeds is stated."""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "experiments"))
import findings  # noqa: E402


def _stat(mean, low, high, seeds=3):
  return {"mean": mean, "ci_low": low, "ci_high": high, "seeds": seeds}


def _results(tmp_path, fkl_seeds=(0, 1, 2)):
  report = {"seeds": {"fkl": list(fkl_seeds), "akl": [0, 1, 2], "rkl": [0]},
            "units_present": ["init", "fkl-seed0"], "units_missing": ["rkl-seed1"],
            "output": {"fkl": {"student_ce": _stat(6.3271, 6.13, 6.506)}},
            "paired": {"fkl": {"akl": {"output": {"reverse_kl": _stat(-0.5949, -0.7132, -0.4482),
                                                  "tvd": _stat(-0.00004, -0.0007, 0.0006)},
                                       "lens": {"lens/T4-S2": {"jsd": _stat(0.01, 0.005, 0.016)}},
                                       "terciles": {"output/entropy_tercile_2": {"g_tail": _stat(-0.034, -0.039,
                                                                                                 -0.029)}}},
                               "rkl": {"output": {"tvd": _stat(0.1, 0.0, 0.2, seeds=1)}}}},
            "training": {"akl": {"akl_head_weight": [0.31955, 0.32239, 0.33329],
                                 "seconds": [{"train": 120.0, "eval": 60.0}, {"train": 240.0, "eval": 60.0}]},
                         "init": {"seconds": [{"train": 1.0, "eval": 999.0}]}},
            "entropy_edges": [0.617, 2.3518],
            "teacher_lens": {"profile": {"layers": [0, 1, 2, 3], "ce_raw": [11.0, 29.4, 58.3, 3.77],
                                         "entropy_raw": [8.0, 1.44, 0.65, 2.95],
                                         "ce_normed": [11.0, 18.0, 19.6, 3.77],
                                         "entropy_normed": [8.0, 1.29, 1.44, 2.95]}}}
  (tmp_path / "report.json").write_text(json.dumps(report))
  (tmp_path / "inits.json").write_text(json.dumps(
      {"ln_V": 10.8027, "teacher": {"ce": 2.79, "ci": [2.6, 3.0]},
       "candidates": {"every3": {"blocks": [0, 3, 6], "ce": 14.49, "ci": [14.06, 14.98]}}}))
  return findings.Renderer(str(tmp_path))


def test_the_committed_findings_are_what_the_template_renders():
  assert findings.main(["--check"]) == 0, "docs/findings.md is stale: run python experiments/findings.py"


def test_fields_render_the_report_numbers(tmp_path):
  r = _results(tmp_path)
  text = findings.render("CE {{out fkl student_ce .2}}; RKL {{diff akl fkl reverse_kl}}; TV {{ diff akl fkl tvd }};"
                         " {{lensdiff akl fkl T4-S2 jsd}} {{tercdiff akl fkl 2 g_tail}} w {{weights akl}};"
                         " {{arms stated}} / {{arms unstated}}; {{units present}} of {{units planned}};"
                         " {{edges}}; {{lensrange ce_raw .0}}; {{teacher_out ce}}; ln V {{lnV}}\n", r)
  body = text.split("\n", 1)[1]
  assert body == ("CE 6.33 [6.13, 6.51]; RKL −0.595 [−0.713, −0.448]; TV 0.000 [−0.001, 0.001];"
                  " +0.010 [0.005, 0.016] −0.034 [−0.039, −0.029] w 0.320, 0.322 and 0.333;"
                  " `fkl`, `akl` / `rkl`; 2 of 3; 0.62 and 2.35; 29–58; 3.77; ln V 10.8\n")
  assert r.field("pairedtable fkl akl reverse_kl,T4-S2/jsd,t2/g_tail .2").splitlines() == [
      "| arm − `fkl` | reverse_kl | T4-S2/jsd | t2/g_tail |", "|---|---:|---:|---:|",
      "| `akl` | −0.59 [−0.71, −0.45] | +0.01 [0.01, 0.02] | −0.03 [−0.04, −0.03] |"]
  with pytest.raises(findings.FindingsError, match=r"rkl − fkl, tvd: 'rkl' has 1 training seed"):
    r.field("pairedtable fkl akl,rkl tvd")
  assert r.field("sweeptime") == ("2 trained units took 6 min of training and 2 min of evaluation (median 5.0 min "
                                  "per unit, 3.0–5.0)")
  table = r.field("inits")
  assert "| every3 | 3 | 14.49 [14.06, 14.98] |" in table and "| the teacher | all | 2.79 [2.60, 3.00] |" in table
  assert r.field("teacher_lens 1,2").splitlines()[2] == "| CE, raw `h_k W_U` | 29.4 | 58.3 |"


def test_a_comparison_without_three_seeds_is_refused(tmp_path):
  with pytest.raises(findings.FindingsError, match=r"line 2: .*'rkl' has 1 training seed\(s\); a stated "
                                                    r"comparison needs 3"):
    findings.render("fine {{out fkl student_ce}}\n{{diff rkl fkl tvd}}\n", _results(tmp_path))
  with pytest.raises(findings.FindingsError, match=r"'fkl' has 2 training seed"):
    findings.render("{{diff akl fkl tvd}}", _results(tmp_path, fkl_seeds=(0, 1)))


def test_unknown_fields_and_missing_numbers_are_errors(tmp_path):
  r = _results(tmp_path)
  with pytest.raises(findings.FindingsError, match=r"line 1: \{\{mean fkl\}\}: unknown field"):
    findings.render("{{mean fkl}}", r)
  with pytest.raises(findings.FindingsError, match=r"no such number"):
    findings.render("{{diff akl fkl jsd}}", r)
  with pytest.raises(findings.FindingsError, match=r"hidden states \[3\]"):
    findings.render("{{teacher_lens 1,3}}", r)
