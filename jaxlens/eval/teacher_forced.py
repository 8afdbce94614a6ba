"""Teacher-forced alignment of several students to one teacher, at the output and every logit-lens pair.

Only :mod:`jaxlens.models` contracts are used (never :mod:`jaxlens.train`): a forward returns the ``L + 1``
hidden states (HF convention: ``[0]`` embeddings … ``[L]`` after the final norm), and the logit lens of
hidden state h is ``model.logit_lens(h, norm=norm)`` — each model through its own unembedding, the projection
the training lens loss uses. The output logits are ``model.logit_lens(h_L, norm=False)`` (h_L is already
normed), so only the scored rows are ever projected: memory is ``block_tokens · V`` per model, never
``B · T · V``. Each batch runs the teacher once, and each teacher projection of a block is shared by every
student that pairs with that layer.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlens.eval.alignment import AlignmentAccumulator, AlignmentConfig, accumulate_block, token_blocks
from jaxlens.eval.keys import OUTPUT_KEY, lens_key


@nnx.jit
def _hidden_states(model, input_ids, attention_mask, positions):
  return tuple(model(input_ids, attention_mask=attention_mask, positions=positions, return_logits=False)
               .hidden_states)


def hidden_states(model, batch: Mapping[str, np.ndarray]) -> tuple[jax.Array, ...]:
  """The ``L + 1`` hidden states ``[B, T, D]`` of a teacher-forced forward of one data ``Batch`` (jitted)."""
  return _hidden_states(model, jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"]),
                        jnp.asarray(batch["positions"]))


@functools.partial(nnx.jit, static_argnames=("norm",))
def lens_rows(model, hidden: jax.Array, rows: jax.Array, norm: bool) -> jax.Array:
  """``model.logit_lens`` of the rows ``rows`` (``[n]`` flat b·T + t indices) of ``hidden [B, T, D]`` → ``[n, V]``."""
  flat = jnp.reshape(hidden, (-1, hidden.shape[-1]))
  return model.logit_lens(flat[rows], norm=norm)


def _check_pairs(name, pairs, teacher_depth, student_depth):
  for t, s in pairs:
    if not (0 <= t < teacher_depth and 0 <= s < student_depth):
      raise ValueError(f"{name}: lens pair (teacher {t}, student {s}) is out of range for {teacher_depth} teacher "
                       f"and {student_depth} student hidden states")


def evaluate_alignment(teacher, students: Mapping[str, nnx.Module], batches: Iterable[Mapping[str, np.ndarray]],
                       *, layer_pairs: Mapping[str, Sequence[tuple[int, int]]], norm: bool = False,
                       config: AlignmentConfig = AlignmentConfig(), num_bootstrap: int = 1000,
                       seed: int = 0) -> dict[str, dict[str, dict]]:
  """Teacher-forced alignment of every student to ``teacher`` at the output and at each lens pair.

  For pair (t, s) the teacher's lens logits are ``teacher.logit_lens(h^T_t, norm=norm)`` and the student's
  ``student.logit_lens(h^S_s, norm=norm)``; the output compares the two models' logits. Per-token metrics
  and their bootstrap CIs are those of :mod:`jaxlens.eval.alignment`; sequence ids run across batches.

  Args:
    teacher: the teacher model (``model(ids, attention_mask=, positions=, return_logits=False)`` →
      ``ModelOutput`` with hidden states; ``logit_lens(h, norm=)``; ``config.num_layers`` / ``vocab_size``).
    students: name → student model with the teacher's vocabulary.
    batches: data ``Batch`` dicts (``input_ids``, ``attention_mask``, ``positions``, ``labels``, ``loss_mask``,
      all ``[B, T]``).
    layer_pairs: name → ``(teacher_layer, student_layer)`` hidden-state indices (HF convention) of that student.
    norm: apply each model's final norm before its unembedding at the lens pairs (DistillLens: False).
    config: :class:`AlignmentConfig`.
    num_bootstrap: bootstrap resamples for the CIs.
    seed: bootstrap seed.

  Returns:
    name → key → ``{"metrics": {metric: {mean, ci_low, ci_high} | float}, "reliability": {...}}`` with keys
    ``"output"`` (which also holds ``"per_sequence"`` sums for paired comparisons) then ``"lens/T{t}-S{s}"`` in
    the order of ``layer_pairs[name]``.

  Raises:
    ValueError: if a student has no layer-pair entry, a layer index is out of range, the vocabularies
      differ, or the batches hold no scored token.
  """
  if set(layer_pairs) != set(students):
    raise ValueError(f"layer_pairs names {sorted(layer_pairs)} must equal the students {sorted(students)}")
  t_depth = teacher.config.num_layers + 1
  # teacher projection (hidden state, norm) -> the (student, key, student hidden state, norm) sharing it
  plan: dict[tuple[int, bool], list[tuple[str, str, int, bool]]] = {}
  for name, student in students.items():
    if student.config.vocab_size != teacher.config.vocab_size:
      raise ValueError(f"{name}: vocabulary {student.config.vocab_size} != the teacher's {teacher.config.vocab_size}")
    s_depth = student.config.num_layers + 1
    _check_pairs(name, layer_pairs[name], t_depth, s_depth)
    plan.setdefault((t_depth - 1, False), []).append((name, OUTPUT_KEY, s_depth - 1, False))
    for t, s in layer_pairs[name]:
      plan.setdefault((t, norm), []).append((name, lens_key(t, s), s, norm))
  accs = {name: {OUTPUT_KEY: AlignmentAccumulator(config), **{lens_key(t, s): AlignmentAccumulator(config)
                                                              for t, s in layer_pairs[name]}}
          for name in students}
  offset = 0
  for batch in batches:
    t_hidden = hidden_states(teacher, batch)
    s_hidden = {name: hidden_states(model, batch) for name, model in students.items()}
    for block in token_blocks(batch["labels"], batch["loss_mask"], config.block_tokens, offset):
      rows = jnp.asarray(block.rows)
      for (t, t_norm), targets in plan.items():
        t_rows = lens_rows(teacher, t_hidden[t], rows, t_norm)
        for name, key, s, s_norm in targets:
          accumulate_block(accs[name][key], block, t_rows, lens_rows(students[name], s_hidden[name][s], rows, s_norm))
    offset += np.shape(batch["loss_mask"])[0]
  return {name: {key: acc.report(num_bootstrap=num_bootstrap, seed=seed, per_sequence=key == OUTPUT_KEY)
                 for key, acc in keyed.items()}
          for name, keyed in accs.items()}
