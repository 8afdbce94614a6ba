"""Unit scoring and the teacher's lens profile agree with evaluate_alignment on tiny random models."""

import numpy as np
import pytest

from jaxlens.eval import alignment as al
from jaxlens.eval import units
from jaxlens.eval.teacher_forced import evaluate_alignment
from test_teacher_forced import _batch, _model


def test_unit_sums_match_evaluate_alignment_and_terciles_partition_the_tokens():
  teacher, student = _model(4, 0), _model(2, 1)
  batches, pairs, config = [_batch(2), _batch(3)], [(2, 1), (3, 2)], al.AlignmentConfig(block_tokens=5)
  edges = units.teacher_entropy_edges(teacher, batches, 5)
  got = units.score_student(teacher, student, batches, layer_pairs=pairs, lens_norm=True, edges=edges, config=config)
  assert list(got) == ["output", "lens/T2-S1", "lens/T3-S2", *(units.TERCILE_KEY.format(k) for k in range(3))]
  want = evaluate_alignment(teacher, {"s": student}, batches, layer_pairs={"s": pairs}, norm=True, config=config,
                            num_bootstrap=10)["s"]
  ref = want["output"]["per_sequence"]
  assert got["output"]["seq_ids"] == ref["seq_ids"] and got["output"]["tokens"] == ref["tokens"]
  for name in units.OUTPUT_METRICS:
    np.testing.assert_allclose(got["output"]["sums"][name], ref["sums"][name], rtol=1e-6, atol=1e-9)
    terciles = sum(np.asarray(got[units.TERCILE_KEY.format(k)]["sums"][name]) for k in range(3))
    np.testing.assert_allclose(terciles, ref["sums"][name], rtol=1e-5, atol=1e-6)
  counts = [sum(got[units.TERCILE_KEY.format(k)]["tokens"]) for k in range(3)]
  assert sum(counts) == sum(ref["tokens"]) and min(counts) >= 1
  for key in ("lens/T2-S1", "lens/T3-S2"):
    for name in units.LENS_METRICS:
      mean = sum(got[key]["sums"][name]) / sum(got[key]["tokens"])
      assert mean == pytest.approx(want[key]["metrics"][name]["mean"], rel=1e-5, abs=1e-7), (key, name)


def test_teacher_lens_profile_ends_at_the_model_itself():
  teacher, batches = _model(3, 0), [_batch(2)]
  profile = units.teacher_lens_profile(teacher, batches, block_tokens=4)
  assert profile["layers"] == [0, 1, 2, 3] and profile["tokens"] == batches[0]["loss_mask"].sum()
  out = evaluate_alignment(teacher, {"t": teacher}, batches, layer_pairs={"t": []}, num_bootstrap=10)["t"]
  assert profile["ce_raw"][-1] == pytest.approx(out["output"]["metrics"]["teacher_ce"]["mean"], rel=1e-5)
  assert profile["ce_normed"][-1] == profile["ce_raw"][-1]  # the last state is already normed
  assert profile["entropy_raw"][0] != profile["entropy_normed"][0]
  one = units.teacher_lens_profile(teacher, batches, block_tokens=4, max_blocks=1)
  assert one["tokens"] == 4
