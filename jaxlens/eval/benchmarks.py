"""External instruction-following sets (Dolly, Self-Instruct, Vicuna, S-NI, UnNI, …) as JSONL files.

One JSON object per line, in the MiniLLM / Alpaca convention::

  {"instruction": "Name three primary colours.", "input": "", "output": "Red, yellow and blue."}
  {"instruction": "...", "input": "...", "output": ["one reference", "another"], "prompt": "optional full prompt"}

``instruction`` (str) and ``output`` (a str or a non-empty list of str: every reference) are required; ``input``
(str, default empty) and ``prompt`` (str: the file's own prompt text, used with ``prompt_from=file``) are
optional; other keys are ignored. Blank lines are skipped. Every malformed line is found before any model is
loaded and reported as ``file:line: what``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from jaxlens.data import format_prompt

PROMPT_SOURCES = ("template", "file")


class BenchmarkExample(NamedTuple):
  """One instruction with its references.

  Attributes:
    instruction: the task.
    input: its context ("" if none).
    references: every reference response (at least one).
    prompt: the file's own prompt text, or None.
    line: the 1-based line of the file it came from.
  """

  instruction: str
  input: str
  references: list[str]
  prompt: str | None
  line: int


class BenchmarkError(ValueError):
  """A benchmark file that cannot be used; the message starts with ``file:line:``."""


def _example(record, where: str, line: int) -> BenchmarkExample:
  if not isinstance(record, dict):
    raise BenchmarkError(f"{where}: expected a JSON object, got {type(record).__name__}")
  for key, kinds in (("instruction", (str,)), ("input", (str, type(None))), ("prompt", (str, type(None)))):
    if key == "instruction" and key not in record:
      raise BenchmarkError(f"{where}: missing 'instruction' (keys: {sorted(record)})")
    if not isinstance(record.get(key), kinds):
      raise BenchmarkError(f"{where}: {key!r} must be a string, got {type(record[key]).__name__}")
  if not record["instruction"].strip() and not record.get("prompt"):
    raise BenchmarkError(f"{where}: empty 'instruction' and no 'prompt'")
  output = record.get("output")
  references = [output] if isinstance(output, str) else output
  if not isinstance(references, list) or not references or not all(isinstance(r, str) for r in references):
    raise BenchmarkError(f"{where}: 'output' must be a string or a non-empty list of strings, got {output!r:.80}")
  return BenchmarkExample(record["instruction"], record.get("input") or "", references, record.get("prompt"), line)


def read_benchmark(path: str | os.PathLike, *, need_prompt: bool = False) -> list[BenchmarkExample]:
  """Every example of one JSONL benchmark file, in file order.

  Args:
    path: the ``.jsonl`` file.
    need_prompt: every example must carry a ``prompt`` field (``prompt_from=file``).

  Returns:
    the examples (at least one).

  Raises:
    BenchmarkError: ``file:line: what`` for the first malformed line (with the number of other malformed lines),
      or an empty or missing file.
  """
  if not os.path.isfile(path):
    raise BenchmarkError(f"{path}: benchmark file not found")
  examples, errors = [], []
  with open(path, encoding="utf-8") as f:
    for number, text in enumerate(f, start=1):
      if not text.strip():
        continue
      where = f"{path}:{number}"
      try:
        example = _example(json.loads(text), where, number)
        if need_prompt and example.prompt is None:
          raise BenchmarkError(f"{where}: no 'prompt' field (prompt_from=file needs one on every line)")
        examples.append(example)
      except json.JSONDecodeError as e:
        errors.append(f"{where}: not valid JSON ({e.msg} at column {e.colno})")
      except BenchmarkError as e:
        errors.append(str(e))
  if errors:
    more = f" (and {len(errors) - 1} more malformed lines)" if len(errors) > 1 else ""
    raise BenchmarkError(errors[0] + more)
  if not examples:
    raise BenchmarkError(f"{path}:1: the benchmark file has no examples")
  return examples


def read_benchmarks(paths: Mapping[str, str], *, prompt_from: str = "template") -> dict[str, list[BenchmarkExample]]:
  """:func:`read_benchmark` of every ``name → path`` (all files are checked before any model work)."""
  if prompt_from not in PROMPT_SOURCES:
    raise ValueError(f"prompt_from={prompt_from!r} is not one of {list(PROMPT_SOURCES)}")
  return {name: read_benchmark(path, need_prompt=prompt_from == "file") for name, path in paths.items()}


def prompt_texts(examples: Sequence[BenchmarkExample], template: str, prompt_from: str = "template") -> list[str]:
  """The prompt of every example: the run's ``template`` applied to instruction and input, or the file's own."""
  if prompt_from == "file":
    return [e.prompt for e in examples]
  return [format_prompt({"instruction": e.instruction, "input": e.input}, template) for e in examples]
