"""Prompt templates: an instruction example ``{"instruction", "input", "output"}`` → the prompt text.

* ``"alpaca"``: the Dolly/Alpaca template of MiniLLM and DistillLens (with and without an input).
* ``"chatml"``: one ChatML user turn opening an assistant turn, the format SmolLM2-Instruct was tuned on:
  ``<|im_start|>user\\n{instruction}[\\n\\n{input}]<|im_end|>\\n<|im_start|>assistant\\n``, optionally
  preceded by a system turn. The response that follows is closed by the EOS token ``<|im_end|>``.

The response text (``output``) is never part of the prompt; :mod:`jaxlens.data.tokenize` appends it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

ALPACA_PROMPT = (
  "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
  "### Instruction:\n{instruction}\n\n### Response:\n"
)
ALPACA_PROMPT_WITH_INPUT = (
  "Below is an instruction that describes a task, paired with an input that provides further context. "
  "Write a response that appropriately completes the request.\n\n"
  "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
CHATML_SYSTEM = "<|im_start|>system\n{system}<|im_end|>\n"
CHATML_PROMPT = "<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
TEMPLATES = ("alpaca", "chatml")


def format_prompt(example: Mapping[str, str], template: str = "chatml", *, system: str | None = None) -> str:
  """The prompt text of one instruction example.

  Args:
    example: a mapping with ``"instruction"`` (non-empty str) and optionally ``"input"`` (str; empty or
      missing means no input). Other keys (``"output"``) are ignored.
    template: one of :data:`TEMPLATES`.
    system: ChatML only: the text of a system turn put first (``None``: no system turn).

  Returns:
    The prompt, ending where the response starts.

  Raises:
    ValueError: for an unknown template, an empty instruction, or ``system`` with the alpaca template.
    TypeError: if instruction/input are not strings.
  """
  if template not in TEMPLATES:
    raise ValueError(f"unknown prompt template {template!r}; choose one of {TEMPLATES}")
  instruction, context = example.get("instruction"), example.get("input") or ""
  if not isinstance(instruction, str) or not isinstance(context, str):
    raise TypeError(f"instruction and input must be str, got {type(instruction).__name__}, {type(context).__name__}")
  if not instruction.strip():
    raise ValueError(f"empty instruction in example {dict(example)!r}")
  if template == "alpaca":
    if system is not None:
      raise ValueError("the alpaca template has no system turn; pass system=None")
    if context:
      return ALPACA_PROMPT_WITH_INPUT.format(instruction=instruction, input=context)
    return ALPACA_PROMPT.format(instruction=instruction)
  user = f"{instruction}\n\n{context}" if context else instruction
  prefix = "" if system is None else CHATML_SYSTEM.format(system=system)
  return prefix + CHATML_PROMPT.format(user=user)


def chat_template(template: str) -> str:
  """The Jinja chat template (``tokenizer_config.json``'s ``chat_template``) that renders ``template``'s prompts.

  For a conversation ``[{"role": "user", "content": c}]`` with ``add_generation_prompt=True``,
  ``apply_chat_template`` gives exactly ``format_prompt({"instruction": c}, template)`` (ChatML: also with a
  leading system turn). Assistant turns end with the EOS token the student learned (``<|im_end|>`` for ChatML,
  ``eos_token`` for alpaca); the alpaca template has no system turn and raises on one.

  Raises:
    ValueError: for an unknown template.
  """
  if template not in TEMPLATES:
    raise ValueError(f"unknown prompt template {template!r}; choose one of {TEMPLATES}")
  if template == "chatml":
    opening, closing = CHATML_SYSTEM.split("system\n{system}")  # "<|im_start|>", "<|im_end|>\n"
    assistant = CHATML_PROMPT.split("{user}")[1].removeprefix(closing)  # "<|im_start|>assistant\n"
    return ("{%- for message in messages %}{{ " + json.dumps(opening) + " + message['role'] + '\\n' + "
            "message['content'] + " + json.dumps(closing) + " }}{%- endfor %}"
            "{%- if add_generation_prompt %}{{ " + json.dumps(assistant) + " }}{%- endif %}")
  before, after = ALPACA_PROMPT.split("{instruction}")
  return ("{%- for message in messages %}{%- if message['role'] == 'user' %}{{ " + json.dumps(before)
          + " + message['content'] + " + json.dumps(after) + " }}{%- elif message['role'] == 'assistant' %}"
          "{{ message['content'] + eos_token }}{%- else %}{{ raise_exception('the alpaca template has only user "
          "and assistant turns') }}{%- endif %}{%- endfor %}")
