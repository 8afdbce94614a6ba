"""Smoke test of the step benchmark: ``bench/step.py --device cpu --profile`` at tiny shapes, then the report table."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_step_bench_runs_on_cpu_and_reports(tmp_path):
  out = tmp_path / "steps.jsonl"
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
  env.pop("XLA_FLAGS", None)  # one CPU device, as a user's run
  command = [sys.executable, str(ROOT / "bench" / "step.py"), "--device", "cpu", "--pair", "tiny", "--seq-len", "16",
             "--batch", "2", "--warmup", "1", "--repeats", "1", "--variant", "jaxlens", "--profile", "--out", str(out)]
  proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  records = [json.loads(line) for line in out.read_text().splitlines()]
  kinds = [r["kind"] for r in records]
  assert kinds == ["peak", "setup", "step", "profile"], records
  step, profile = records[2], records[3]
  assert "error" not in step, step
  assert step["batch"] == 2 and step["tokens"] == 32 and step["tokens_per_s"] > 0 and step["step_ms"] > 0
  assert 0 < step["mfu"] and step["compiled_gib"] > 0 and step["loss"] > 0
  assert records[0]["tflops"] > 0
  # The traced step's op time: categories add up to the busy total, the matmuls of the models show up as such.
  assert profile["batch"] == 2 and profile["busy_ms_per_step"] > 0 and profile["ops"]
  assert sum(c["ms_per_step"] for c in profile["categories"]) == pytest.approx(profile["busy_ms_per_step"])
  assert sum(c["share"] for c in profile["categories"]) == pytest.approx(1.0)

  report = subprocess.run([sys.executable, str(ROOT / "bench" / "step_report.py"), str(out)], capture_output=True,
                          text=True, check=True).stdout
  assert "| 2 | jaxlens |" in report and "### tiny" in report
  assert "Profile of jaxlens at batch 2" in report and "| category | ms / step | share |" in report


def test_compare_reports_medians_of_interleaved_runs_and_their_ratio():
  sys.path.insert(0, str(ROOT / "bench"))
  from step_report import compare

  def run(step_ms, loss=1.0):
    return {"kind": "step", "pair": "p", "variant": "jaxlens", "batch": 4, "step_ms": step_ms,
            "cpu_ms": 2 * step_ms, "compiled_gib": 1.0, "loss": loss}

  table = compare([run(100), run(300), run(110)], [run(121), run(125), run(900)], ("new", "old"))
  row = table.splitlines()[2].split(" | ")
  assert row[3:10] == ["3 / 3", "110", "125", "1.136", "220", "250", "1.136"], row
  assert row[-1] == "yes |"
  assert compare([run(100)], [run(100, loss=2.0)]).splitlines()[2].endswith("| no |")
