"""Alignment metrics vs a direct float64 numpy computation; self-alignment; ECE by hand; the accumulator."""

import numpy as np
import pytest

from jaxlens import losses
from jaxlens.eval import alignment as al
from jaxlens.losses import head_set

RNG = np.random.default_rng(0)
N, V = 10, 23
# LM-scale logits (std 3) so heads, tails and top-k sets are non-trivial.
T_LOGITS = (3.0 * RNG.standard_normal((N, V))).astype(np.float32)
S_LOGITS = (3.0 * RNG.standard_normal((N, V))).astype(np.float32)
LABELS = RNG.integers(0, V, N).astype(np.int32)


def _softmax(z, tau):
  z = np.asarray(z, np.float64) / tau
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def _head(p_row, mu, rule):
  # Direct transcription of the AKL rules (headtail.md §1.4), one row at a time.
  order = np.argsort(-p_row, kind="stable")
  ps = p_row[order]
  incl = np.cumsum(ps)
  head_sorted = ((incl <= mu) | (np.arange(len(ps)) == 0)) if rule == "official" else ((incl - ps) < mu)
  head = np.zeros(len(ps), bool)
  head[order[head_sorted]] = True
  return head


def numpy_metrics(t, s, y, tau=1.0, mu=0.5, rule="official", ks=(5, 10), tail_k=10):
  p, q = _softmax(t, tau), _softmax(s, tau)
  m = 0.5 * (p + q)
  ent = lambda a: -np.sum(a * np.log(a), -1)  # noqa: E731
  out = {
      "forward_kl": np.sum(p * np.log(p / q), -1),
      "reverse_kl": np.sum(q * np.log(q / p), -1),
      "jsd": 0.5 * np.sum(p * np.log(p / m), -1) + 0.5 * np.sum(q * np.log(q / m), -1),
      "tvd": 0.5 * np.abs(p - q).sum(-1),
      "top1_agreement": (p.argmax(-1) == q.argmax(-1)).astype(float),
  }
  for k in ks:
    out[f"topk_overlap@{k}"] = np.array([len(set(np.argsort(-a)[:k]) & set(np.argsort(-b)[:k])) / k
                                         for a, b in zip(p, q)])
  heads = np.stack([_head(row, mu, rule) for row in p])
  out["g_head"] = np.sum(np.abs(p - q) * heads, -1)
  out["g_tail"] = np.sum(np.abs(p - q) * ~heads, -1)
  out["head_mass_error"] = np.abs(np.sum(q * heads, -1) - np.sum(p * heads, -1))
  tail = np.ones_like(p, bool)
  for i, row in enumerate(p):
    tail[i, np.argsort(-row)[:tail_k]] = False
  out[f"tail_mass_error@{tail_k}"] = np.abs(np.sum(q * tail, -1) - np.sum(p * tail, -1))
  out["entropy_gap"] = np.abs(ent(q) - ent(p))
  out["student_ce"] = -np.log(q[np.arange(len(y)), y])
  out["teacher_ce"] = -np.log(p[np.arange(len(y)), y])
  out["confidence"] = q.max(-1)
  out["correct"] = (q.argmax(-1) == y).astype(float)
  return out


@pytest.mark.parametrize("rule,tau", [("official", 1.0), ("paper", 2.0)])
def test_token_metrics_match_numpy(rule, tau):
  cfg = al.AlignmentConfig(temperature=tau, head_rule=rule)
  got = al.token_metrics(T_LOGITS, S_LOGITS, LABELS, config=cfg)
  want = numpy_metrics(T_LOGITS, S_LOGITS, LABELS, tau=tau, rule=rule)
  assert set(cfg.metric_names()) | {"confidence", "correct"} == set(got)
  for name, ref in want.items():
    np.testing.assert_allclose(np.asarray(got[name]), ref, rtol=2e-5, atol=2e-6, err_msg=name)
  # g_head + g_tail = ||p - q||_1 = 2 TV.
  np.testing.assert_allclose(np.asarray(got["g_head"] + got["g_tail"]), 2 * want["tvd"], rtol=1e-5)


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_divergences_equal_the_training_losses(tau):
  got = al.token_metrics(T_LOGITS, S_LOGITS, LABELS, config=al.AlignmentConfig(temperature=tau))
  for name in al.DIVERGENCES:
    want = getattr(losses, name)(T_LOGITS, S_LOGITS, temperature=tau, reduction="none")
    np.testing.assert_allclose(np.asarray(got[name]), np.asarray(want), rtol=1e-5, atol=1e-6, err_msg=name)


def test_head_rules_worked_example():
  # headtail.md §1.4: sorted p = [0.4, 0.3, 0.3] -> official head {(1)}, paper head {(1), (2)}.
  p = np.array([[0.3, 0.4, 0.3]], np.float32)
  assert al.head_mask(p, 0.5, "official").tolist() == [[False, True, False]]
  assert al.head_mask(p, 0.5, "paper").tolist() == [[True, True, False]]
  with pytest.raises(ValueError, match="head_rule"):
    al.head_mask(p, 0.5, "nope")


@pytest.mark.parametrize("rule", ["official", "paper"])
@pytest.mark.parametrize("mu", [0.3, 0.5, 0.9])
def test_head_mask_equals_stable_sort_with_ties(rule, mu):
  # Peaked rows (the top-k fast path) and flat rows (the bisection), both also with logits rounded to a
  # coarse grid, which ties many probabilities exactly, also at the head boundary. Both paths must equal the
  # stable-sort prefix (ties in vocabulary order) of the float32 p.
  rng = np.random.default_rng(4)
  shape = (16, 1000)
  z = np.concatenate([6.0 * rng.standard_normal(shape), np.round(6.0 * rng.standard_normal(shape)),
                      0.3 * rng.standard_normal(shape), 0.2 * np.round(2.0 * rng.standard_normal(shape))])
  p = np.asarray(_softmax(z, 1.0), np.float32)
  want = np.stack([_head(row.astype(np.float64), mu, rule) for row in p])
  np.testing.assert_array_equal(np.asarray(head_set.head_mask(p, mu, rule)), want)
  np.testing.assert_array_equal(np.asarray(head_set._bisected_head_mask(p, mu, rule == "official")), want)
  top_mass = np.sort(p, -1)[:, ::-1][:, :head_set.HEAD_CANDIDATES].sum(-1)
  assert (top_mass > 0.9).any() and (top_mass < 0.3).any()  # both paths of head_mask are taken


def test_self_alignment_is_exact():
  m = al.token_metrics(T_LOGITS, T_LOGITS, LABELS, config=al.AlignmentConfig())
  for name in ("forward_kl", "reverse_kl", "jsd", "tvd", "g_head", "g_tail", "head_mass_error",
               "tail_mass_error@10", "entropy_gap"):
    np.testing.assert_array_equal(np.asarray(m[name]), 0.0, err_msg=name)
  for name in ("top1_agreement", "topk_overlap@5", "topk_overlap@10"):
    np.testing.assert_array_equal(np.asarray(m[name]), 1.0, err_msg=name)
  np.testing.assert_array_equal(np.asarray(m["student_ce"]), np.asarray(m["teacher_ce"]))


def _fake_metrics(conf, correct, cfg):
  n = len(conf)
  out = {name: np.zeros(n) for name in cfg.metric_names()}
  out["confidence"], out["correct"] = np.asarray(conf), np.asarray(correct, float)
  return out


def test_ece_hand_example():
  # 10 bins. conf 0.9 x2 (1 right): |0.5-0.9|*2/5 = 0.16; conf 0.6 x2 (both right): |1-0.6|*2/5 = 0.16;
  # conf 0.3 (wrong): 0.3/5 = 0.06; a masked token (weight 0) must not count.  ECE = 0.38.
  cfg = al.AlignmentConfig(num_bins=10)
  acc = al.AlignmentAccumulator(cfg)
  acc.update(_fake_metrics([0.9, 0.9, 0.6, 0.6, 0.3, 0.95], [1, 0, 1, 1, 0, 1], cfg),
             np.array([1, 1, 1, 1, 1, 0.0]), np.array([0, 0, 1, 1, 2, 2]))
  res = acc.summarize(num_bootstrap=200)
  np.testing.assert_allclose(res["student_ece"].mean, 0.38, rtol=1e-12)
  assert res["num_tokens"] == 5 and res["num_sequences"] == 3
  rel = acc.reliability()
  assert rel["counts"][9] == 2 and rel["counts"][6] == 2 and rel["counts"][3] == 1
  np.testing.assert_allclose(rel["accuracy"][9], 0.5)


def test_accumulate_logits_masked_mean_and_ci():
  # Streamed with blocks of 4 over a [3, 5] batch: equals the numpy masked mean; CI brackets the mean.
  b, t = 3, 5
  rng = np.random.default_rng(1)
  tl = (3 * rng.standard_normal((b, t, V))).astype(np.float32)
  sl = (3 * rng.standard_normal((b, t, V))).astype(np.float32)
  labels = rng.integers(0, V, (b, t)).astype(np.int32)
  mask = np.array([[0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 0, 1, 0, 0]], np.float32)
  cfg = al.AlignmentConfig(block_tokens=4)
  acc = al.AlignmentAccumulator(cfg)
  al.accumulate_logits(acc, tl, sl, labels, mask)
  res = acc.summarize(num_bootstrap=300, seed=3)
  want = numpy_metrics(tl.reshape(-1, V), sl.reshape(-1, V), labels.reshape(-1))
  w = mask.reshape(-1)
  for name in cfg.metric_names():
    np.testing.assert_allclose(res[name].mean, np.sum(want[name] * w) / w.sum(), rtol=2e-5, atol=1e-6,
                               err_msg=name)
    assert res[name].ci_low <= res[name].mean + 1e-9 <= res[name].ci_high + 2e-9
  assert res["num_tokens"] == w.sum() and res["num_sequences"] == 3
  # Deterministic: same seed, same interval.
  again = acc.summarize(num_bootstrap=300, seed=3)
  assert again["jsd"] == res["jsd"]


def test_token_blocks_cover_the_scored_positions_once():
  mask = np.array([[0, 1, 1, 0], [0, 0, 0, 0], [1, 0.5, 0, 1]], np.float32)
  labels = np.arange(12, dtype=np.int32).reshape(3, 4)
  blocks = list(al.token_blocks(labels, mask, 3, seq_offset=10))
  assert len(blocks) == 2 and all(len(b.rows) == 3 for b in blocks)
  np.testing.assert_array_equal(np.concatenate([b.rows for b in blocks]), [1, 2, 8, 9, 11, 9])
  np.testing.assert_array_equal(np.concatenate([b.weights for b in blocks]), [1, 1, 1, 0.5, 1, 0])
  np.testing.assert_array_equal(np.concatenate([b.labels for b in blocks]), [1, 2, 8, 9, 11, 9])
  np.testing.assert_array_equal(np.concatenate([b.seq_ids for b in blocks]), [10, 10, 12, 12, 12, 12])
  assert list(al.token_blocks(labels, np.zeros((3, 4)), 3)) == []


def test_paired_difference_matches_the_means_and_is_paired():
  # Two students that differ by a small per-sequence shift on top of large shared per-sequence variation:
  # the paired interval is much narrower than either marginal one, and both bracket the true difference.
  rng = np.random.default_rng(5)
  cfg = al.AlignmentConfig(num_bins=4)
  base = rng.gamma(1.0, 2.0, 40)  # per-sequence level, shared
  accs = {}
  for name, shift in (("ref", 0.0), ("student", 0.05)):
    acc = al.AlignmentAccumulator(cfg)
    for seq, level in enumerate(base):
      metrics = {n: np.full(3, level + shift) for n in cfg.metric_names()}
      metrics["confidence"], metrics["correct"] = np.full(3, 0.5), np.ones(3)
      acc.update(metrics, np.ones(3), np.full(3, seq))
    accs[name] = acc
  diff = al.paired_difference(accs["student"].per_sequence(), accs["ref"].per_sequence(), ["jsd"], seed=1)["jsd"]
  np.testing.assert_allclose(diff.mean, accs["student"].summarize()["jsd"].mean - accs["ref"].summarize()["jsd"].mean)
  np.testing.assert_allclose([diff.mean, diff.ci_low, diff.ci_high], 0.05, rtol=1e-9)  # a constant shift
  marginal = accs["ref"].summarize()["jsd"]
  assert marginal.ci_high - marginal.ci_low > 0.5
  other = al.AlignmentAccumulator(cfg)
  other.update({n: np.zeros(2) for n in (*cfg.metric_names(), "confidence", "correct")}, np.ones(2), np.arange(2))
  with pytest.raises(ValueError, match="same sequences"):
    al.paired_difference(other.per_sequence(), accs["ref"].per_sequence(), ["jsd"])


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match="same shape"):
    al.token_metrics(T_LOGITS, S_LOGITS[:, :5], LABELS)
  with pytest.raises(ValueError, match="labels"):
    al.token_metrics(T_LOGITS, S_LOGITS, LABELS[:3])
  with pytest.raises(ValueError, match="head_rule"):
    al.AlignmentConfig(head_rule="x")
  with pytest.raises(ValueError, match="mu"):
    al.AlignmentConfig(mu=1.5)
  with pytest.raises(ValueError, match="no tokens"):
    al.AlignmentAccumulator().summarize()
