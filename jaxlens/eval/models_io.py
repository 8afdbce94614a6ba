"""The model side of evaluation: teacher-forced forwards, logit-lens rows, and sampled responses.

Only :mod:`jaxlens.models` is used (never :mod:`jaxlens.train`): a forward returns every hidden state (HF
convention, ``[0]`` embeddings … ``[L]`` after the final norm) and the logits; the lens of hidden state h is
``model.logit_lens(h, norm=norm)``, the same projection the training lens loss uses.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlens.eval.generation import SamplingConfig


class Forward(NamedTuple):
  """Logits ``[B, T, V]`` and the tuple of ``L + 1`` hidden states ``[B, T, D]`` of one forward."""

  logits: jax.Array
  hidden_states: tuple[jax.Array, ...]


@nnx.jit
def _forward(model, input_ids, attention_mask, positions):
  out = model(input_ids, attention_mask=attention_mask, positions=positions)
  return out.logits, None if out.hidden_states is None else tuple(out.hidden_states)


def forward_with_hidden(model, batch: dict):
  """Teacher-forced forward of one data ``Batch`` (jitted) → :class:`Forward`.

  Raises:
    ValueError: if the model returned no logits or no hidden states.
  """
  logits, hidden = _forward(model, jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"]),
                            jnp.asarray(batch["positions"]))
  if hidden is None or logits is None:
    raise ValueError("the model must return logits and hidden states for alignment evaluation")
  return Forward(logits, hidden)


@functools.partial(nnx.jit, static_argnames=("norm",))
def _lens(model, h, norm):
  return model.logit_lens(h, norm=norm)


def lens_logits_fn(model, hidden: jax.Array, norm: bool):
  """Row getter ``rows -> [n, V]``: logit-lens logits of the flattened ``[B, T, D]`` ``hidden`` at ``rows``.

  Only the requested rows are projected, so memory is ``n·V`` per block, never ``B·T·V``.
  """
  flat = jnp.reshape(hidden, (-1, hidden.shape[-1]))
  return lambda rows: _lens(model, flat[jnp.asarray(rows)], norm)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """Left-pad token lists to ``[B, max_len]`` ids and a 0/1 mask (generation continues at the right edge).

  Raises:
    ValueError: on an empty prompt list or an empty prompt.
  """
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError("prompts must be a non-empty list of non-empty token lists")
  width = max(len(p) for p in prompts)
  ids = np.full((len(prompts), width), pad_id, np.int32)
  mask = np.zeros((len(prompts), width), np.int32)
  for i, p in enumerate(prompts):
    ids[i, width - len(p):] = p
    mask[i, width - len(p):] = 1
  return ids, mask


def cut_response(tokens: Sequence[int], eos_id: int | None, pad_id: int | None) -> list[int]:
  """The generated tokens up to (excluding) the first EOS, without padding."""
  out = []
  for tok in map(int, tokens):
    if eos_id is not None and tok == eos_id:
      break
    if pad_id is None or tok != pad_id:
      out.append(tok)
  return out


def sample_responses(model, tokenizer, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, *,
                     eos_id: int | None, pad_id: int) -> dict[int, list[str]]:
  """Decode a response to every tokenised prompt, once per sampling seed.

  Uses :func:`jaxlens.models.generate` with the protocol of ``sampling`` (``temperature=0`` for greedy).
  Prompts go in batches of ``sampling.batch_size``, the last one padded by repeating its first prompt so
  every call has one shape; the RNG of batch b under seed s is ``fold_in(PRNGKey(s), b)``.

  Returns:
    seed → ``[N]`` decoded, stripped responses (cut at EOS).
  """
  from jaxlens.models import generate
  runs = {}
  bs = sampling.batch_size
  for seed in sampling.run_seeds():
    texts = []
    for b, start in enumerate(range(0, len(prompts), bs)):
      chunk = list(prompts[start:start + bs])
      n = len(chunk)
      chunk += [chunk[0]] * (bs - n)
      ids, mask = left_pad(chunk, pad_id)
      out = generate(model, jnp.asarray(ids), jnp.asarray(mask), sampling.max_new_tokens,
                     jax.random.fold_in(jax.random.PRNGKey(seed), b),
                     temperature=0.0 if sampling.greedy else sampling.temperature, top_k=sampling.top_k,
                     top_p=sampling.top_p, no_repeat_ngram_size=sampling.no_repeat_ngram_size, eos_id=eos_id,
                     pad_id=pad_id)
      new = np.asarray(out)[:, ids.shape[1]:] if np.asarray(out).shape[1] > sampling.max_new_tokens else np.asarray(out)
      texts += [tokenizer.decode(cut_response(row, eos_id, pad_id)).strip() for row in new[:n]]
    runs[seed] = texts
  return runs
