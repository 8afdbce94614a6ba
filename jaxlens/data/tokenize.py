"""Instruction examples → token ids: ``prompt ++ response ++ [EOS]``, truncated to a fixed budget.

Prompt and response are tokenised separately (so the boundary is exact), the EOS id is appended to the
response, and the length limits are applied:

* a prompt longer than ``max_prompt_length`` is dropped (``prompt_overflow="drop"``, MiniLLM's rule) or
  keeps only its last ``max_prompt_length`` tokens (``"truncate"``: the template's tail, which cues the
  response, stays next to it);
* the response (with its EOS) is cut to ``max_length − len(prompt)`` tokens, so a long response loses its
  EOS; at least one response token always remains because ``max_prompt_length < max_length``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

import numpy as np

from jaxlens.data.prompt import format_prompt

PROMPT_OVERFLOW = ("drop", "truncate")
_log = logging.getLogger(__name__)


class TokenizerLike(Protocol):
  """What the data pipeline needs of a tokenizer (e.g. :class:`jaxlens.models.Tokenizer`)."""

  eos_id: int
  pad_id: int

  def encode(self, text: str) -> list[int]: ...


class TokenizedExample(NamedTuple):
  """One tokenised example.

  Attributes:
    input_ids: ``[L]`` int32, prompt tokens then response tokens (then EOS unless truncated).
    prompt_length: number of prompt tokens (≥ 1); positions ``≥ prompt_length`` are the response.
  """

  input_ids: np.ndarray
  prompt_length: int


def tokenize_examples(examples: Sequence[Mapping[str, str]], tokenizer: TokenizerLike, *, max_length: int,
                      max_prompt_length: int | None = None, template: str = "chatml", system: str | None = None,
                      prompt_overflow: str = "drop") -> list[TokenizedExample]:
  """Format, tokenise and truncate instruction examples.

  ``ids = encode(format_prompt(e))[-P:] ++ (encode(e["output"]) ++ [eos])[: max_length − len(prompt)]``
  with ``P = max_prompt_length`` (prompts over P dropped instead when ``prompt_overflow="drop"``).

  Args:
    examples: ``{"instruction", "input", "output"}`` mappings.
    tokenizer: has ``encode(text) -> list[int]`` (adding no special tokens) and ``eos_id``.
    max_length: the most tokens of one sequence (the batch length T), ≥ 2.
    max_prompt_length: the most prompt tokens, in [1, max_length); default ``max_length // 2``.
    template: prompt template name (:data:`jaxlens.data.prompt.TEMPLATES`).
    system: ChatML system turn (see :func:`jaxlens.data.prompt.format_prompt`).
    prompt_overflow: ``"drop"`` or ``"truncate"`` (keep the last ``max_prompt_length`` prompt tokens).

  Returns:
    The tokenised examples, in input order (dropped ones removed; the count is logged at INFO).

  Raises:
    ValueError: empty ``examples``, ``max_length < 2``, ``max_prompt_length`` outside [1, max_length),
      unknown ``prompt_overflow``/template, an empty prompt encoding, or every example dropped.
  """
  if len(examples) == 0:
    raise ValueError("no examples to tokenize")
  if max_length < 2:
    raise ValueError(f"max_length must be >= 2 (one prompt and one response token), got {max_length}")
  max_prompt_length = max_length // 2 if max_prompt_length is None else max_prompt_length
  if not 1 <= max_prompt_length < max_length:
    raise ValueError(f"max_prompt_length must be in [1, max_length={max_length}), got {max_prompt_length}")
  if prompt_overflow not in PROMPT_OVERFLOW:
    raise ValueError(f"prompt_overflow must be one of {PROMPT_OVERFLOW}, got {prompt_overflow!r}")

  tokenized, dropped = [], 0
  for example in examples:
    prompt = tokenizer.encode(format_prompt(example, template, system=system))
    if not prompt:
      raise ValueError(f"the prompt of {dict(example)!r} encodes to no tokens")
    if len(prompt) > max_prompt_length:
      if prompt_overflow == "drop":
        dropped += 1
        continue
      prompt = prompt[-max_prompt_length:]
    response = (tokenizer.encode(example.get("output") or "") + [tokenizer.eos_id])[: max_length - len(prompt)]
    tokenized.append(TokenizedExample(np.asarray(prompt + response, np.int32), len(prompt)))
  if dropped:
    _log.info("dropped %d of %d examples whose prompt exceeds %d tokens", dropped, len(examples), max_prompt_length)
  if not tokenized:
    raise ValueError(f"all {len(examples)} prompts exceed max_prompt_length={max_prompt_length}")
  return tokenized
