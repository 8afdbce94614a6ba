"""Per-sequence alignment sums of one student, the unit of a multi-seed experiment, and the teacher's lens profile.

:func:`score_student` scores one student against its teacher on fixed held-out batches, like
:func:`jaxlens.eval.teacher_forced.evaluate_alignment`, but keeps only what a multi-seed aggregate needs (small
enough to commit): for the output and every lens pair, per held-out sequence, Σ_t m_t d_t of each metric in
:data:`OUTPUT_METRICS` / :data:`LENS_METRICS` and Σ_t m_t; and the output metrics again within each tercile of
the teacher's next-token entropy H(p_t) (low-entropy tokens: a peaked teacher, the head is one or two tokens;
high: a flat teacher, much of the mass in the tail), so the head/tail mechanism can be tested, not only its
average. Per-token metrics are :func:`jaxlens.eval.alignment.token_metrics`.

:func:`teacher_lens_profile` is the teacher's own logit lens at every hidden state: CE of the lens distribution
against the actual next token and its entropy, raw (``h W_U``) and normed (``norm(h) W_U``) — which lens layers
could carry any signal to a student at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxlens.eval.alignment import AlignmentAccumulator, AlignmentConfig, token_blocks, token_metrics
from jaxlens.eval.hierarchical import tercile_edges, tercile_of
from jaxlens.eval.keys import OUTPUT_KEY, lens_key
from jaxlens.eval.teacher_forced import hidden_states, lens_rows

#: Output metrics kept per sequence (names of :func:`jaxlens.eval.alignment.token_metrics`).
OUTPUT_METRICS = ("forward_kl", "reverse_kl", "jsd", "tvd", "top1_agreement", "g_head", "g_tail", "head_mass_error",
                  "entropy_gap", "student_ce")
#: Lens-pair metrics kept per sequence.
LENS_METRICS = ("forward_kl", "reverse_kl", "jsd", "tvd", "top1_agreement", "student_ce")
#: Report key of the output metrics within teacher-entropy tercile k.
TERCILE_KEY = "output/entropy_tercile_{}"


@jax.jit
def _entropy(logits: jax.Array) -> jax.Array:
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.sum(jnp.where(log_p > -jnp.inf, jnp.exp(log_p) * log_p, 0.0), axis=-1)


@jax.jit
def _ce(logits: jax.Array, labels: jax.Array) -> jax.Array:
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(log_p, labels[:, None], axis=-1)[:, 0]


def teacher_entropy_edges(teacher, batches: Sequence[Mapping[str, np.ndarray]],
                          block_tokens: int) -> tuple[float, float]:
  """The teacher-entropy tercile edges over every scored token of ``batches`` (output distribution)."""
  values, weights = [], []
  for batch in batches:
    final = hidden_states(teacher, batch)[-1]
    for block in token_blocks(batch["labels"], batch["loss_mask"], block_tokens):
      values.append(np.asarray(_entropy(lens_rows(teacher, final, jnp.asarray(block.rows), False))))
      weights.append(block.weights)
  return tercile_edges(np.concatenate(values), np.concatenate(weights))


def _compact(per_sequence: dict, names: Sequence[str]) -> dict:
  """``AlignmentAccumulator.per_sequence()`` restricted to ``names``, rounded to 7 significant digits."""
  return {"seq_ids": per_sequence["seq_ids"], "tokens": per_sequence["tokens"],
          "sums": {n: [float(f"{v:.7g}") for v in per_sequence["sums"][n]] for n in names}}


def score_student(teacher, student, batches: Sequence[Mapping[str, np.ndarray]], *,
                  layer_pairs: Sequence[tuple[int, int]], lens_norm: bool, edges: tuple[float, float],
                  config: AlignmentConfig = AlignmentConfig()) -> dict[str, dict]:
  """Per-sequence metric sums of ``student`` against ``teacher`` (see the module docstring).

  Args:
    teacher, student: models of one vocabulary (``jaxlens.models`` contract).
    batches: fixed held-out data ``Batch`` dicts.
    layer_pairs: ``(teacher hidden state, student hidden state)`` lens pairs.
    lens_norm: apply each model's final norm before its unembedding at the lens pairs.
    edges: :func:`teacher_entropy_edges` of the same teacher and batches.
    config: :class:`AlignmentConfig`.

  Returns:
    key → ``{"seq_ids", "tokens", "sums": {metric: [S]}}`` for ``"output"``, ``"lens/T{j}-S{i}"`` and
    ``"output/entropy_tercile_{k}"`` (k = 0 low … 2 high entropy; a sequence's tokens outside the tercile
    count 0).
  """
  keys = [OUTPUT_KEY, *(lens_key(j, i) for j, i in layer_pairs), *(TERCILE_KEY.format(k) for k in range(3))]
  accs = {key: AlignmentAccumulator(config) for key in keys}
  offset = 0
  for batch in batches:
    t_hidden, s_hidden = hidden_states(teacher, batch), hidden_states(student, batch)
    for block in token_blocks(batch["labels"], batch["loss_mask"], config.block_tokens, offset):
      rows, labels = jnp.asarray(block.rows), jnp.asarray(block.labels)
      t_rows = lens_rows(teacher, t_hidden[-1], rows, False)
      metrics = token_metrics(t_rows, lens_rows(student, s_hidden[-1], rows, False), labels, config=config)
      accs[OUTPUT_KEY].update(metrics, block.weights, block.seq_ids)
      tercile = tercile_of(np.asarray(_entropy(t_rows)), edges)
      for k in range(3):
        accs[TERCILE_KEY.format(k)].update(metrics, block.weights * (tercile == k), block.seq_ids)
      for j, i in layer_pairs:
        metrics = token_metrics(lens_rows(teacher, t_hidden[j], rows, lens_norm),
                                lens_rows(student, s_hidden[i], rows, lens_norm), labels, config=config)
        accs[lens_key(j, i)].update(metrics, block.weights, block.seq_ids)
    offset += np.shape(batch["loss_mask"])[0]
  return {key: _compact(acc.per_sequence(), OUTPUT_METRICS if key.startswith(OUTPUT_KEY) else LENS_METRICS)
          for key, acc in accs.items()}


def teacher_lens_profile(teacher, batches: Sequence[Mapping[str, np.ndarray]], *, block_tokens: int = 256,
                         max_blocks: int | None = None) -> dict[str, list[float]]:
  """Token means of the teacher's own lens CE −log p_k(y) and entropy H(p_k) at every hidden state k.

  p_k = softmax(h_k W_U) (``raw``) or softmax(norm(h_k) W_U) (``normed``); k = 0 (embeddings) … L (the output,
  where both equal the model's own distribution).

  Args:
    teacher: the model.
    batches: held-out data ``Batch`` dicts.
    block_tokens: tokens per projected block.
    max_blocks: stop after this many blocks (``None``: every scored token), e.g. to bound the cost: each block
      projects 2·(L + 1) hidden states onto the vocabulary.

  Returns:
    ``{"layers": [0 … L], "ce_raw", "entropy_raw", "ce_normed", "entropy_normed": [L + 1], "tokens": N}``.
  """
  depth = teacher.config.num_layers + 1
  totals = {key: np.zeros(depth) for key in ("ce_raw", "entropy_raw", "ce_normed", "entropy_normed")}
  count, blocks = 0.0, 0
  for batch in batches:
    hidden = hidden_states(teacher, batch)
    for block in token_blocks(batch["labels"], batch["loss_mask"], block_tokens):
      if max_blocks is not None and blocks >= max_blocks:
        break
      blocks += 1
      rows, labels = jnp.asarray(block.rows), jnp.asarray(block.labels)
      count += float(block.weights.sum())
      for k in range(depth):
        for kind, norm in (("raw", False), ("normed", k < depth - 1)):  # the last state is already normed
          logits = lens_rows(teacher, hidden[k], rows, norm)
          totals[f"ce_{kind}"][k] += float(np.dot(block.weights, np.asarray(_ce(logits, labels))))
          totals[f"entropy_{kind}"][k] += float(np.dot(block.weights, np.asarray(_entropy(logits))))
  return {"layers": list(range(depth)), **{k: (v / max(count, 1.0)).tolist() for k, v in totals.items()},
          "tokens": count}
