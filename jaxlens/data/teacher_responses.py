"""Teacher-generated responses (SeqKD): a JSONL file of the teacher's answers to the training prompts.

One record per line::

  {"instruction": str, "input": str, "output": <the teacher's response>, "finished": bool,
   "sampling": {"teacher": ..., "temperature": ..., "top_p": ..., "max_new_tokens": ..., "template": ..., "seed": ...}}

``finished`` is false when the response hit ``max_new_tokens`` before an EOS. A run on several hosts writes one
shard per process (:func:`shard_path`); :func:`read_teacher_responses` reads the file or all its shards. Prompts
are matched by ``(instruction, input)``.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Mapping, Sequence

PromptKey = tuple[str, str]


def prompt_key(example: Mapping[str, str]) -> PromptKey:
  """``(instruction, input)`` of an example or record (a missing input is ``""``)."""
  return example["instruction"], example.get("input") or ""


def shard_path(path: str, process_index: int, process_count: int) -> str:
  """The file process i of P writes: ``path`` itself for one process, else ``path.<i>-of-<P>``."""
  return path if process_count == 1 else f"{path}.{process_index:05d}-of-{process_count:05d}"


def response_files(path: str) -> list[str]:
  """``path`` if it exists, else its shards ``path.*-of-*`` (sorted); empty when there is neither."""
  return [path] if os.path.isfile(path) else sorted(glob.glob(glob.escape(path) + ".*-of-*"))


def read_records(path: str) -> list[dict]:
  """The complete records of one JSONL file; a torn last line (an interrupted write) is ignored.

  Raises:
    ValueError: a malformed line before the last, or a record without instruction/output strings (line named).
  """
  with open(path, encoding="utf-8") as f:
    lines = f.read().split("\n")
  records = []
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      if number == len(lines):  # the last line, without its newline: torn by a kill
        break
      raise ValueError(f"{path}:{number}: not a JSON record") from None
    if not isinstance(record.get("instruction"), str) or not isinstance(record.get("output"), str):
      raise ValueError(f"{path}:{number}: a teacher response needs string 'instruction' and 'output'")
    records.append(record)
  return records


def read_teacher_responses(path: str) -> dict[PromptKey, dict]:
  """Every record of ``path`` (or its shards) by prompt key (a later duplicate wins).

  Raises:
    FileNotFoundError: neither the file nor a shard exists.
    ValueError: a malformed record.
  """
  files = response_files(path)
  if not files:
    raise FileNotFoundError(f"teacher responses not found: {path} (nor shards {path}.*-of-*); write them with "
                            "python -m jaxlens.train.teacher_responses PRESET ... out=PATH")
  return {prompt_key(r): r for f in files for r in read_records(f)}


def with_teacher_responses(examples: Sequence[Mapping[str, str]], responses: Mapping[PromptKey, Mapping]
                           ) -> list[dict[str, str]]:
  """``examples`` with each output replaced by the teacher's response to the same prompt.

  Raises:
    ValueError: if the prompts differ: an example without a response, or a response to a prompt not among the
      examples (counts and the first offender named).
  """
  keys = [prompt_key(e) for e in examples]
  missing = [k for k in keys if k not in responses]
  extra = sorted(set(responses) - set(keys))
  if missing or extra:
    parts = []
    if missing:
      parts.append(f"{len(missing)} of {len(keys)} training prompts have no teacher response (first: "
                   f"{missing[0][0][:60]!r})")
    if extra:
      parts.append(f"{len(extra)} responses answer prompts not in the training data (first: {extra[0][0][:60]!r})")
    raise ValueError("teacher responses do not match the training prompts: " + "; ".join(parts)
                     + " (were they written for another data.source / split?)")
  return [{**e, "output": responses[k]["output"]} for e, k in zip(examples, keys)]
