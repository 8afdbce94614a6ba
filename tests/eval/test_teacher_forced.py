"""evaluate_alignment on real (tiny, random) jaxlens models: self-alignment is exact, every key matches numpy."""

import numpy as np
import pytest
from flax import nnx

from jaxlens.eval import alignment as al
from jaxlens.eval import keys
from jaxlens.eval.teacher_forced import evaluate_alignment
from jaxlens.models import ModelConfig, build_model
from test_alignment import numpy_metrics

V = 29


def _model(layers, seed, vocab=V):
  # initializer_range 0.5: LM-scale logits, so heads, tails and top-k sets are non-trivial.
  cfg = ModelConfig(family="llama", vocab_size=vocab, hidden_size=16, num_layers=layers, num_heads=2, num_kv_heads=1,
                    head_dim=8, intermediate_size=32, max_position_embeddings=32, norm_eps=1e-5, activation="silu",
                    initializer_range=0.5)
  return build_model(cfg, rngs=nnx.Rngs(seed))


def _batch(seed):
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, V, (3, 7)).astype(np.int32)
  attention = np.array([[1] * 7, [1] * 7, [1] * 5 + [0] * 2], np.int32)  # last row right-padded
  loss_mask = np.array([[0, 0, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1, 0], [0, 0, 0, 1, 0, 0, 0]], np.float32)
  return {"input_ids": ids, "attention_mask": attention, "positions": np.maximum(np.cumsum(attention, 1) - 1, 0),
          "labels": np.roll(ids, -1, 1), "loss_mask": loss_mask}


def test_self_alignment_is_exact_at_every_pair():
  model = _model(3, 0)
  res = evaluate_alignment(model, {"self": model}, [_batch(0), _batch(1)], layer_pairs={"self": [(1, 1), (2, 2)]},
                           norm=True, config=al.AlignmentConfig(block_tokens=8), num_bootstrap=50)
  assert list(res["self"]) == ["output", "lens/T1-S1", "lens/T2-S2"]
  for key, block in res["self"].items():
    m = block["metrics"]
    for name in ("forward_kl", "reverse_kl", "jsd", "tvd", "g_head", "g_tail", "head_mass_error",
                 "tail_mass_error@10", "entropy_gap"):
      assert m[name] == {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0}, (key, name)
    for name in ("top1_agreement", "topk_overlap@5", "topk_overlap@10"):
      assert m[name] == {"mean": 1.0, "ci_low": 1.0, "ci_high": 1.0}, (key, name)
    assert m["student_ce"] == m["teacher_ce"]
    assert m["num_tokens"] == 20 and m["num_sequences"] == 6


@pytest.mark.parametrize("norm", [False, True])
def test_every_key_matches_numpy_on_the_models_own_projections(norm):
  teacher, shallow, deep = _model(4, 0), _model(2, 1), _model(3, 2)
  batches = [_batch(2), _batch(3)]
  pairs = {"shallow": [(2, 1), (4, 2)], "deep": [(2, 1), (3, 3)]}  # (2, ·) shares one teacher projection
  res = evaluate_alignment(teacher, {"shallow": shallow, "deep": deep}, batches, layer_pairs=pairs, norm=norm,
                           config=al.AlignmentConfig(block_tokens=5), num_bootstrap=20)
  w = np.concatenate([b["loss_mask"].reshape(-1) for b in batches])
  labels = np.concatenate([b["labels"].reshape(-1) for b in batches])

  def lens(model, index):  # [N, V] over both batches, straight from the model: logits, or h_index @ W
    rows = []
    for b in batches:
      out = model(b["input_ids"], attention_mask=b["attention_mask"], positions=b["positions"])
      rows.append(np.asarray(out.logits if index is None else model.logit_lens(out.hidden_states[index], norm=norm)))
    return np.concatenate(rows).reshape(-1, V)

  for name, student in (("shallow", shallow), ("deep", deep)):
    for key, t_index, s_index in [("output", None, None)] + [(keys.lens_key(t, s), t, s) for t, s in pairs[name]]:
      want = numpy_metrics(lens(teacher, t_index), lens(student, s_index), labels)
      for metric in ("forward_kl", "jsd", "tvd", "top1_agreement", "g_head", "g_tail", "student_ce", "teacher_ce"):
        np.testing.assert_allclose(res[name][key]["metrics"][metric]["mean"], np.sum(want[metric] * w) / w.sum(),
                                   rtol=2e-5, atol=1e-6, err_msg=f"{name}/{key}/{metric}")


def test_bad_students_raise():
  teacher, student = _model(3, 0), _model(2, 1)
  with pytest.raises(ValueError, match="out of range"):
    evaluate_alignment(teacher, {"s": student}, [_batch(0)], layer_pairs={"s": [(4, 1)]})
  with pytest.raises(ValueError, match="must equal the students"):
    evaluate_alignment(teacher, {"s": student}, [_batch(0)], layer_pairs={"t": []})
  with pytest.raises(ValueError, match="vocabulary 31 != the teacher's 29"):
    evaluate_alignment(teacher, {"s": _model(2, 1, vocab=31)}, [_batch(0)], layer_pairs={"s": []})
