"""Instruction examples ``{"instruction", "input", "output"}`` from local files, the HF hub, or chatterbot-corpus.

* :func:`load_instruction_data` reads a local ``.json``/``.jsonl`` file (its own strict parser: every problem
  is named with the file and line) or, when online, a hub dataset id with HF ``datasets``, mapping columns by
  name (dolly's ``context``/``response`` are recognised).
* :func:`chatterbot_examples` reads the registry package ``chatterbot-corpus`` (the embedded default; BSD-3):
  every pair of consecutive turns of every English conversation, de-duplicated: 1,176 pairs.
* :func:`wordnet_examples` builds define / use-in-a-sentence / synonym tasks from WordNet 3.0 (Debian
  ``wordnet-base``), with WordNet's own glosses, examples and synsets as the references.
* :func:`split_examples` is a deterministic train / held-out split by a hash and a seed, so it depends neither on
  the order of the examples nor on the rest of the data set. ``by="prompt"`` (the default) keeps every example
  that shares a prompt or a response with another on the same side (no prompt or response crosses the split);
  ``by="example"`` hashes each example alone.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
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
WORDNET = "wordnet"
WORDNET_DIR = pathlib.Path("/usr/share/wordnet")
SPLIT_UNITS = ("prompt", "example")
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


def read_records(path: pathlib.Path) -> list[tuple[str, dict]]:
  """The records of a local ``.jsonl`` (one JSON object per line; blank lines skipped) or ``.json`` file (a
  list of objects, or JSON lines), each with where it stands (``file:line`` or ``file: record i``).

  Raises:
    ValueError: an empty file, malformed JSON (file, line and column), a record that is not an object, or a
      ``.json`` file holding a single object.
  """
  try:
    text = path.read_text(encoding="utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
  if not text.strip():  # datasets would raise a bare StopIteration
    raise ValueError(f"{path}: the file is empty")
  if path.suffix == ".json":
    try:
      whole = json.loads(text)
    except json.JSONDecodeError as e:
      if e.msg != "Extra data":  # "Extra data": a .json file of JSON lines, read below
        raise ValueError(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
    else:
      if isinstance(whole, dict):
        raise ValueError(f"{path}: holds one JSON object (keys {sorted(whole)[:6]}); expected a list of records "
                         "or one record per line")
      if not isinstance(whole, list):
        raise ValueError(f"{path}: holds a JSON {type(whole).__name__}; expected a list of records")
      records = [(f"{path}: record {i}", r) for i, r in enumerate(whole)]
      for where, record in records:
        if not isinstance(record, dict):
          raise ValueError(f"{where} is a {type(record).__name__}, expected an object")
      return records
  records = []
  for number, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}:{number}: malformed JSON line ({e.msg} at column {e.colno})") from None
    if not isinstance(record, dict):
      raise ValueError(f"{path}:{number}: a JSON {type(record).__name__}, expected an object")
    records.append((f"{path}:{number}", record))
  return records


def _rows_of(records: Sequence[tuple[str, dict]], resolved: Mapping[str, str | None]) -> list[dict[str, str]]:
  """``{"instruction", "input", "output"}`` str dicts of ``(where, record)`` pairs (a missing or null value → "")."""
  examples = []
  for where, row in records:
    example = {}
    for field, column in resolved.items():
      value = "" if column is None or row.get(column) is None else row[column]
      if not isinstance(value, str):
        raise TypeError(f"{where}: column {column!r} is {type(value).__name__}, expected str")
      example[field] = value
    examples.append(example)
  return examples


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
    ValueError: an existing file of another type, a malformed file (:func:`read_records`: file and line named),
      unknown column mapping, a missing column, or an empty data set.
    TypeError: a value that is not a string (file and line, or row, and column named).
  """
  if str(source) == CHATTERBOT:
    return chatterbot_examples()
  if str(source) == WORDNET:
    return wordnet_examples()
  path = pathlib.Path(source)
  if path.suffix in _LOCAL_SUFFIXES:
    if not path.is_file():
      raise FileNotFoundError(f"instruction data file not found: {path}")
    records = read_records(path)
    available = list(dict.fromkeys(k for _, record in records for k in record))
    if not records:
      raise ValueError(f"{path}: the data set is empty")
    return _rows_of(records, _resolve_columns(available, columns, path))
  if path.exists():
    raise ValueError(f"{path}: unsupported file type {path.suffix or '(no extension)'!r}; expected "
                     f"{' or '.join(_LOCAL_SUFFIXES)}")
  import datasets  # lazy: heavy, and only needed for the hub

  data = datasets.load_dataset(str(source), split=split, cache_dir=None if cache_dir is None else str(cache_dir))
  if len(data) == 0:
    raise ValueError(f"{source}: the data set is empty")
  resolved = _resolve_columns(data.column_names, columns, source)
  return _rows_of([(f"{source}: row {i}", row) for i, row in enumerate(data)], resolved)


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


def _text_hash(parts: Sequence[str]) -> float:
  """A uniform number in [0, 1) from the first 8 bytes of sha256 of the parts joined by U+001F."""
  text = "\x1f".join(parts)
  return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2.0**64


def _unit_hash(example: Mapping[str, str], seed: int) -> float:
  """A uniform number in [0, 1) from sha256(seed, instruction, input, output)."""
  return _text_hash([str(seed)] + [example.get(field) or "" for field in FIELDS])


def normalise_text(text: str) -> str:
  """Case-folded, whitespace-collapsed text: the identity of a prompt or response for de-duplication."""
  return " ".join(text.casefold().split())


def prompt_groups(examples: Sequence[Mapping[str, str]]) -> list[int]:
  """Group id of every example: examples sharing a prompt (instruction + input) or a response, directly or
  through others, form one group (connected components; texts compared after :func:`normalise_text`).

  Returns:
    ``[len(examples)]`` group ids; a group's id is the index of its first example.
  """
  parent = list(range(len(examples)))

  def find(i):
    while parent[i] != i:
      parent[i] = parent[parent[i]]
      i = parent[i]
    return i

  first_with: dict[tuple[str, str], int] = {}
  for i, example in enumerate(examples):
    prompt = normalise_text(f"{example.get('instruction') or ''}\x1f{example.get('input') or ''}")
    for key in (("prompt", prompt), ("response", normalise_text(example.get("output") or ""))):
      j = first_with.setdefault(key, i)
      a, b = find(i), find(j)
      if a != b:
        parent[max(a, b)] = min(a, b)
  return [find(i) for i in range(len(examples))]


def split_examples(examples: Sequence[Mapping[str, str]], *, held_out_fraction: float = 0.1,
                   seed: int = 0, by: str = "prompt") -> tuple[list, list]:
  """Deterministic train / held-out split by hash.

  ``by="example"``: example e is held out iff ``u(seed, e) < held_out_fraction`` with ``u`` = the first 8 bytes
  of sha256(seed, instruction, input, output) / 2⁶⁴. Identical examples land on the same side, but an example
  that shares only its prompt (or only its response) with another may land on the other side.

  ``by="prompt"``: the examples are grouped by :func:`prompt_groups` (shared prompt or response, transitively:
  for chatterbot's consecutive turns, a whole conversation) and a group is held out iff
  ``u(seed, key) < held_out_fraction`` with key = the smallest normalised prompt of the group, so no prompt and
  no response occurs on both sides. The held-out share is then only approximately ``held_out_fraction``.

  Both are independent of the examples' order.

  Args:
    examples: instruction examples.
    held_out_fraction: expected held-out share, in (0, 1).
    seed: changes the split.
    by: ``"prompt"`` or ``"example"`` (see above).

  Returns:
    ``(train, held_out)`` lists, each in the input order.

  Raises:
    ValueError: if ``held_out_fraction`` is not in (0, 1), ``by`` is unknown or ``examples`` is empty.
  """
  if not 0.0 < held_out_fraction < 1.0:
    raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}")
  if by not in SPLIT_UNITS:
    raise ValueError(f"by must be one of {SPLIT_UNITS}, got {by!r}")
  if len(examples) == 0:
    raise ValueError("cannot split an empty list of examples")
  if by == "example":
    held = [_unit_hash(example, seed) < held_out_fraction for example in examples]
  else:
    groups = prompt_groups(examples)
    keys: dict[int, str] = {}
    for example, group in zip(examples, groups):
      prompt = normalise_text(f"{example.get('instruction') or ''}\x1f{example.get('input') or ''}")
      keys[group] = min(keys.get(group, prompt), prompt)
    side = {group: _text_hash([str(seed), key]) < held_out_fraction for group, key in keys.items()}
    held = [side[group] for group in groups]
  train = [e for e, h in zip(examples, held) if not h]
  held_out = [e for e, h in zip(examples, held) if h]
  return train, held_out


_WORDNET_POS = {"noun": "noun", "verb": "verb", "adj": "adjective", "adv": "adverb"}


def wordnet_synsets(folder: str | os.PathLike = WORDNET_DIR) -> list[dict]:
  """Synsets of WordNet's ``data.{noun,verb,adj,adv}`` files: ``{"pos", "lemmas", "definition", "examples"}``.

  Each data line is ``offset lex_filenum ss_type w_cnt word lex_id … | gloss``; the gloss is the definition
  followed by ``; "example"`` usage examples. Lemmas keep WordNet's spelling with ``_`` as a space (adjective
  markers such as ``(a)`` removed).

  Raises:
    FileNotFoundError: if the files are absent (install Debian's ``wordnet-base``: ``apt-get install
      wordnet-base``).
  """
  folder = pathlib.Path(folder)
  out = []
  for pos in _WORDNET_POS:
    path = folder / f"data.{pos}"
    if not path.is_file():
      raise FileNotFoundError(f"{path} not found: install WordNet 3.0 with  apt-get install wordnet-base")
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
      if not line or line.startswith(" "):  # the license header lines start with two spaces
        continue
      head, _, gloss = line.partition(" | ")
      fields = head.split()
      count = int(fields[3], 16)
      lemmas = [fields[4 + 2 * i].split("(")[0].replace("_", " ") for i in range(count)]
      parts = [g.strip() for g in gloss.split(";")]
      definition = parts[0]
      examples = [g.strip('"') for g in parts[1:] if g.startswith('"') and g.endswith('"') and len(g) > 2]
      out.append({"pos": _WORDNET_POS[pos], "lemmas": list(dict.fromkeys(lemmas)), "definition": definition,
                  "examples": examples})
  return out


def wordnet_examples(folder: str | os.PathLike = WORDNET_DIR) -> list[dict[str, str]]:
  """Instruction tasks from WordNet 3.0, answered with WordNet's own text, de-duplicated:

  * define: ``Define the {pos} "{lemma}".`` → the synset's gloss definition (every lemma of every synset);
  * use: ``Use the {pos} "{lemma}" in a sentence.`` → each usage example that contains the lemma;
  * synonym: ``Give a synonym of the {pos} "{lemma}".`` → the synset's other lemmas, comma-separated.

  A polysemous word has one example per sense under the same prompt; :func:`split_examples` keeps them on one
  side. Sizes with WordNet 3.0 are in docs/data.md.

  Raises:
    FileNotFoundError: if WordNet is not installed (see :func:`wordnet_synsets`).
  """
  seen, out = set(), []

  def add(instruction, output):
    if output and (instruction, output) not in seen:
      seen.add((instruction, output))
      out.append({"instruction": instruction, "input": "", "output": output})

  for synset in wordnet_synsets(folder):
    pos, lemmas = synset["pos"], synset["lemmas"]
    for lemma in lemmas:
      add(f'Define the {pos} "{lemma}".', synset["definition"])
      for example in synset["examples"]:
        if lemma.casefold() in example.casefold():
          add(f'Use the {pos} "{lemma}" in a sentence.', example)
      others = [other for other in lemmas if other != lemma]
      if others:
        add(f'Give a synonym of the {pos} "{lemma}".', ", ".join(others))
  return out
