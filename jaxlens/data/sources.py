"""Instruction examples ``{"instruction", "input", "output"}`` from local files, the HF hub, or chatterbot-corpus.

* :func:`load_instruction_data` reads a local ``.json``/``.jsonl`` file (or, when online, a hub dataset id)
  with HF ``datasets``, mapping columns by name (dolly's ``context``/``response`` are recognised).
* :func:`chatterbot_examples` reads the registry package ``chatterbot-corpus`` (the embedded default; BSD-3):
  every pair of consecutive turns of every English conversation, de-duplicated: 1,176 pairs.
* :func:`split_examples` is a deterministic train / held-out split by a hash of each example's content and
  a seed, so it depends neither on the order of the examples nor on the rest of the data set.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib
from collections.abc import Mapping, Sequence

FIELDS = ("instruction", "input", "output")
COLUMN_ALIASES = {
  "instruction": ("instruction", "prompt", "question"),
  "input": ("input", "context"),
  "output": ("output", "response", "answer", "completion"),
}
CHATTERBOT = "chatterbot"
_LOCAL_SUFFIXES = (".json", ".jsonl")


def _resolve_columns(available: Sequence[str], columns: Mapping[str, str] | None, source) -> dict[str, str | None]:
  """Our field -> the dataset's column (``None``: no input column)."""
  columns = dict(columns or {})
  unknown = sorted(set(columns) - set(FIELDS))
  if unknown:
    raise ValueError(f"columns maps unknown fields {unknown}; fields are {FIELDS}")
  resolved = {}
  for field in FIELDS:
    if field in columns:
      if columns[field] not in available:
        raise ValueError(f"{source}: column {columns[field]!r} (for {field!r}) not in {sorted(available)}")
      resolved[field] = columns[field]
    else:
      resolved[field] = next((c for c in COLUMN_ALIASES[field] if c in available), None)
      if resolved[field] is None and field != "input":
        raise ValueError(f"{source}: no column for {field!r} among {sorted(available)}; "
                         f"pass columns={{{field!r}: ...}}")
  return resolved


def load_instruction_data(source: str | os.PathLike, *, split: str = "train", columns: Mapping[str, str] | None = None,
                          cache_dir: str | os.PathLike | None = None) -> list[dict[str, str]]:
  """Instruction examples from ``"chatterbot"``, a local JSON/JSONL file, or a hub dataset id.

  Args:
    source: ``"chatterbot"`` (:func:`chatterbot_examples`), a path to a ``.json``/``.jsonl`` file (records
      of strings), or a hub dataset id such as ``"databricks/databricks-dolly-15k"`` (needs network; not
      used offline or in tests).
    split: the hub split (local files have one split, ``"train"``).
    columns: our field -> the dataset's column, e.g. ``{"input": "context", "output": "response"}``; a field
      not given is looked up among :data:`COLUMN_ALIASES` (``input`` may be absent: empty).
    cache_dir: where ``datasets`` caches its Arrow files (default: its own).

  Returns:
    A list of ``{"instruction", "input", "output"}`` dicts of str, in file order (a null input → ``""``).

  Raises:
    FileNotFoundError: a path-like ``source`` with a JSON suffix that does not exist.
    ValueError: unknown column mapping, a missing column, or an empty data set.
    TypeError: a value that is not a string (row and column named).
  """
  if str(source) == CHATTERBOT:
    return chatterbot_examples()
  import datasets  # lazy: heavy, and only needed here

  path = pathlib.Path(source)
  if path.suffix in _LOCAL_SUFFIXES:
    if not path.is_file():
      raise FileNotFoundError(f"instruction data file not found: {path}")
    if not path.read_text(encoding="utf-8").strip():  # datasets would raise a bare StopIteration
      raise ValueError(f"{path}: the data set is empty")
    data = datasets.load_dataset("json", data_files=str(path), split="train",
                                 cache_dir=None if cache_dir is None else str(cache_dir))
  else:
    data = datasets.load_dataset(str(source), split=split, cache_dir=None if cache_dir is None else str(cache_dir))
  if len(data) == 0:
    raise ValueError(f"{source}: the data set is empty")
  resolved = _resolve_columns(data.column_names, columns, source)
  examples = []
  for row_index, row in enumerate(data):
    example = {}
    for field, column in resolved.items():
      value = "" if column is None or row[column] is None else row[column]
      if not isinstance(value, str):
        raise TypeError(f"{source}: row {row_index} column {column!r} is {type(value).__name__}, expected str")
      example[field] = value
    examples.append(example)
  return examples


def chatterbot_corpus_dir(language: str = "english") -> pathlib.Path:
  """The YAML folder of the installed ``chatterbot-corpus`` package, located without importing it.

  Raises:
    FileNotFoundError: if the package (or the language folder) is not installed.
  """
  spec = importlib.util.find_spec("chatterbot_corpus")
  hint = "install it with:  pip install --no-deps -r requirements-assets.txt"
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f"the package 'chatterbot_corpus' is not installed; {hint}")
  folder = pathlib.Path(spec.submodule_search_locations[0]) / "data" / language
  if not folder.is_dir():
    raise FileNotFoundError(f"{folder} does not exist (language {language!r}); {hint}")
  return folder


def chatterbot_examples(language: str = "english") -> list[dict[str, str]]:
  """Unique (prompt, response) pairs of chatterbot-corpus: consecutive turns of every conversation.

  Files are read in sorted order; pairs keep their first occurrence's order (deterministic). English:
  21 files, 2,025 conversations, 1,176 unique pairs. One entry of ``trivia.yml`` is a bare string instead
  of a list of turns and is skipped (iterating it would yield 81 one-character "pairs"; counting those
  gives the 1,257 sometimes quoted).

  Args:
    language: a folder of ``chatterbot_corpus/data``.

  Returns:
    ``{"instruction": turn_i, "input": "", "output": turn_{i+1}}`` dicts.

  Raises:
    FileNotFoundError: if the package is not installed.
  """
  import yaml

  pairs = {}
  for file in sorted(chatterbot_corpus_dir(language).glob("*.yml")):
    for conversation in yaml.safe_load(file.read_text(encoding="utf-8")).get("conversations", []):
      if not isinstance(conversation, list):  # one malformed entry of trivia.yml is a bare string
        continue
      turns = [str(turn).strip() for turn in conversation]  # YAML may parse a turn as a number
      for prompt, response in zip(turns, turns[1:]):
        pairs.setdefault((prompt, response), None)
  return [{"instruction": p, "input": "", "output": r} for p, r in pairs]


def _unit_hash(example: Mapping[str, str], seed: int) -> float:
  """A uniform number in [0, 1) from sha256(seed, instruction, input, output)."""
  text = "\x1f".join([str(seed)] + [example.get(field) or "" for field in FIELDS])
  return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2.0**64


def split_examples(examples: Sequence[Mapping[str, str]], *, held_out_fraction: float = 0.1,
                   seed: int = 0) -> tuple[list, list]:
  """Deterministic train / held-out split by content hash.

  Example e is held out iff ``u(seed, e) < held_out_fraction`` with ``u`` = the first 8 bytes of
  sha256(seed, instruction, input, output) / 2⁶⁴. Independent of order; identical examples land on the same side.

  Args:
    examples: instruction examples.
    held_out_fraction: expected held-out share, in (0, 1).
    seed: changes the split.

  Returns:
    ``(train, held_out)`` lists, each in the input order.

  Raises:
    ValueError: if ``held_out_fraction`` is not in (0, 1) or ``examples`` is empty.
  """
  if not 0.0 < held_out_fraction < 1.0:
    raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}")
  if len(examples) == 0:
    raise ValueError("cannot split an empty list of examples")
  train, held_out = [], []
  for example in examples:
    (held_out if _unit_hash(example, seed) < held_out_fraction else train).append(example)
  return train, held_out
