"""Report JSON / Markdown / plots from a small synthetic evaluation."""

import json
import os

import numpy as np

from jaxlens.eval import alignment as al
from jaxlens.eval import keys
from jaxlens.eval import report as rp


def _block(seed, cfg):
  rng = np.random.default_rng(seed)
  acc = al.AlignmentAccumulator(cfg)
  t = (2 * rng.standard_normal((2, 4, 11))).astype(np.float32)
  s = (2 * rng.standard_normal((2, 4, 11))).astype(np.float32)
  al.accumulate_logits(acc, t, s, rng.integers(0, 11, (2, 4)), np.ones((2, 4)))
  return acc.report(num_bootstrap=50)


def test_write_report(tmp_path):
  cfg = al.AlignmentConfig(block_tokens=8)
  report = {"config": {"seed": 0}, "students": {
      name: {"alignment": {"output": _block(i, cfg), keys.lens_key(2, 1): _block(i + 5, cfg),
                           keys.lens_key(10, 2): _block(i + 9, cfg)},
             "generation": {"rougeL": {"mean": 20.0 + i, "std": 1.0, "per_seed": {10: 19.0 + i, 20: 21.0 + i}}}}
      for i, name in enumerate(["fkl", "distilllens"])}}
  report["paired"] = {"reference": "fkl", "students": {"distilllens": {
      m: {"mean": -0.25, "ci_low": -0.5, "ci_high": -0.125} for m in rp.PAIRED_METRICS}}}
  log = tmp_path / "train.jsonl"
  log.write_text("\n".join(json.dumps({"step": s, "loss/ce": 3.0 - 0.1 * s, "loss/output": 1.0 / (s + 1),
                                       "loss/lens": 0.0}) for s in range(5)))
  paths = rp.write_report(report, tmp_path / "out", training_logs={"fkl": str(log)})
  assert set(paths) == {"json", "markdown", "layer_profile", "reliability", "training_curves"}
  for p in paths.values():
    assert os.path.getsize(p) > 0
  back = json.loads(open(paths["json"]).read())
  assert back["students"]["fkl"]["alignment"]["output"]["metrics"]["jsd"] == \
      report["students"]["fkl"]["alignment"]["output"]["metrics"]["jsd"]
  md = open(paths["markdown"]).read()
  jsd = report["students"]["distilllens"]["alignment"]["output"]["metrics"]["jsd"]
  assert f"{jsd['mean']:.4g} ± {(jsd['ci_high'] - jsd['ci_low']) / 2:.2g}" in md and "| distilllens |" in md and "T2-S1 | T10-S2" in md
  assert "21.00 ± 1.00" in md
  assert "## Paired differences to `fkl` at the output" in md and "| distilllens | -0.25 [-0.5, -0.125] |" in md
  assert keys.lens_keys(report) == ["lens/T2-S1", "lens/T10-S2"]
  lines = rp.print_lines(report)
  assert any(line.startswith("fkl/output/jsd ") for line in lines)
  assert "fkl/generation/rougeL 20.0000 (std 1.0000)" in lines
