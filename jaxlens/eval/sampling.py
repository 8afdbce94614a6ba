"""Sampled responses to tokenised prompts, one run per sampling seed, with :func:`jaxlens.models.generate`."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxlens.eval.generation import SamplingConfig
from jaxlens.models import generate


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Left-pad token lists to ``[B, width]`` ids and a 0/1 mask (generation continues at the right edge).

  Args:
    prompts: ``B`` non-empty token lists.
    pad_id: the padding token.
    width: padded length; default the longest prompt.

  Returns:
    ``(ids, mask)``, both int32 ``[B, width]``.

  Raises:
    ValueError: on an empty prompt list, an empty prompt, or a prompt longer than ``width``.
  """
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError("prompts must be a non-empty list of non-empty token lists")
  longest = max(len(p) for p in prompts)
  width = longest if width is None else width
  if longest > width:
    raise ValueError(f"a prompt has {longest} tokens, more than width={width}")
  ids = np.full((len(prompts), width), pad_id, np.int32)
  mask = np.zeros((len(prompts), width), np.int32)
  for i, p in enumerate(prompts):
    ids[i, width - len(p):] = p
    mask[i, width - len(p):] = 1
  return ids, mask


def cut_response(tokens: Sequence[int], eos_id: int | None) -> list[int]:
  """The generated tokens before the first ``eos_id`` (all of them if there is none)."""
  tokens = [int(t) for t in tokens]
  return tokens[:tokens.index(eos_id)] if eos_id is not None and eos_id in tokens else tokens


def sample_responses(model, tokenizer, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, *,
                     eos_id: int | None, pad_id: int) -> dict[int, list[str]]:
  """Decode a response to every tokenised prompt, once per sampling seed.

  Every call of :func:`jaxlens.models.generate` has one shape: all prompts are left-padded to the longest
  one and the last batch is filled up with copies of its first prompt (their outputs are dropped). The RNG
  of batch b under seed s is ``fold_in(PRNGKey(s), b)``; ``sampling.greedy`` decodes with temperature 0.

  Args:
    model: the model to sample from.
    tokenizer: has ``decode(list[int]) -> str``.
    prompts: ``[N]`` token lists (the training prompt template, no response).
    sampling: :class:`SamplingConfig`.
    eos_id: responses are cut at the first ``eos_id``.
    pad_id: the padding token.

  Returns:
    seed → ``[N]`` decoded, stripped responses.
  """
  bs = sampling.batch_size
  width = max(len(p) for p in prompts)
  runs = {}
  for seed in sampling.run_seeds():
    texts = []
    for b, start in enumerate(range(0, len(prompts), bs)):
      chunk = list(prompts[start:start + bs])
      n = len(chunk)
      ids, mask = left_pad(chunk + [chunk[0]] * (bs - n), pad_id, width)
      out = generate(model, jnp.asarray(ids), jnp.asarray(mask), sampling.max_new_tokens,
                     jax.random.fold_in(jax.random.PRNGKey(seed), b),
                     temperature=0.0 if sampling.greedy else sampling.temperature, top_k=sampling.top_k,
                     top_p=sampling.top_p, no_repeat_ngram_size=sampling.no_repeat_ngram_size, eos_id=eos_id,
                     pad_id=pad_id)
      new = np.asarray(out)[:n, width:]
      texts += [tokenizer.decode(cut_response(row, eos_id)).strip() for row in new]
    runs[seed] = texts
  return runs
