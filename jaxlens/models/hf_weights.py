"""Strict loading of Hugging Face checkpoints (safetensors, optionally sharded) into the NNX models.

Each family has a declarative table ``HF key → (NNX path, layout)``. A layout ``"(h k) d -> d h k"`` says how
the HF tensor's axes group and permute into the NNX parameter's axes; the letters' sizes come from the NNX
parameter shape, so every HF tensor's shape is checked exactly. Notable layouts: torch ``nn.Linear`` weights are
``[out, in]`` (Llama: transposed here), GPT-2 ``Conv1D`` weights are already ``[in, out]`` (not transposed).

The model is built abstractly with ``nnx.eval_shape``, every leaf is filled from the checkpoint, then merged.
Unmapped checkpoint keys (outside an explicit ignore list), unfilled model leaves and shape mismatches raise.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlens.models.base import CausalLM
from jaxlens.models.build import build_model
from jaxlens.models.config import ModelConfig
from jaxlens.models.layers import RematPolicy


class Rule(NamedTuple):
  """One HF tensor → one NNX parameter; ``{i}`` in both names stands for the block index."""

  hf_key: str
  nnx_path: str
  layout: str = ""  # "hf axes -> nnx axes"; "" = same shape


GPT2_RULES = (
    Rule("transformer.wte.weight", "embed"),
    Rule("transformer.wpe.weight", "pos_embed"),
    Rule("transformer.h.{i}.ln_1.weight", "blocks.{i}.attn_norm.scale"),
    Rule("transformer.h.{i}.ln_1.bias", "blocks.{i}.attn_norm.bias"),
    Rule("transformer.h.{i}.attn.c_attn.weight", "blocks.{i}.attn.qkv", "d (s h k) -> d s h k"),  # Conv1D [in, out]
    Rule("transformer.h.{i}.attn.c_attn.bias", "blocks.{i}.attn.qkv_bias", "(s h k) -> s h k"),
    Rule("transformer.h.{i}.attn.c_proj.weight", "blocks.{i}.attn.o", "(h k) d -> h k d"),
    Rule("transformer.h.{i}.attn.c_proj.bias", "blocks.{i}.attn.o_bias"),
    Rule("transformer.h.{i}.ln_2.weight", "blocks.{i}.mlp_norm.scale"),
    Rule("transformer.h.{i}.ln_2.bias", "blocks.{i}.mlp_norm.bias"),
    Rule("transformer.h.{i}.mlp.c_fc.weight", "blocks.{i}.mlp.up"),
    Rule("transformer.h.{i}.mlp.c_fc.bias", "blocks.{i}.mlp.up_bias"),
    Rule("transformer.h.{i}.mlp.c_proj.weight", "blocks.{i}.mlp.down"),
    Rule("transformer.h.{i}.mlp.c_proj.bias", "blocks.{i}.mlp.down_bias"),
    Rule("transformer.ln_f.weight", "norm.scale"),
    Rule("transformer.ln_f.bias", "norm.bias"),
    Rule("lm_head.weight", "lm_head", "v d -> d v"),  # only when untied
)

LLAMA_RULES = (
    Rule("model.embed_tokens.weight", "embed"),
    Rule("model.layers.{i}.input_layernorm.weight", "blocks.{i}.attn_norm.scale"),
    Rule("model.layers.{i}.self_attn.q_proj.weight", "blocks.{i}.attn.q", "(h k) d -> d h k"),
    Rule("model.layers.{i}.self_attn.k_proj.weight", "blocks.{i}.attn.k", "(h k) d -> d h k"),
    Rule("model.layers.{i}.self_attn.v_proj.weight", "blocks.{i}.attn.v", "(h k) d -> d h k"),
    Rule("model.layers.{i}.self_attn.o_proj.weight", "blocks.{i}.attn.o", "d (h k) -> h k d"),
    Rule("model.layers.{i}.self_attn.q_proj.bias", "blocks.{i}.attn.q_bias", "(h k) -> h k"),
    Rule("model.layers.{i}.self_attn.k_proj.bias", "blocks.{i}.attn.k_bias", "(h k) -> h k"),
    Rule("model.layers.{i}.self_attn.v_proj.bias", "blocks.{i}.attn.v_bias", "(h k) -> h k"),
    Rule("model.layers.{i}.self_attn.o_proj.bias", "blocks.{i}.attn.o_bias"),
    Rule("model.layers.{i}.post_attention_layernorm.weight", "blocks.{i}.mlp_norm.scale"),
    Rule("model.layers.{i}.mlp.gate_proj.weight", "blocks.{i}.mlp.gate", "f d -> d f"),
    Rule("model.layers.{i}.mlp.up_proj.weight", "blocks.{i}.mlp.up", "f d -> d f"),
    Rule("model.layers.{i}.mlp.down_proj.weight", "blocks.{i}.mlp.down", "d f -> f d"),
    Rule("model.layers.{i}.mlp.gate_proj.bias", "blocks.{i}.mlp.gate_bias"),
    Rule("model.layers.{i}.mlp.up_proj.bias", "blocks.{i}.mlp.up_bias"),
    Rule("model.layers.{i}.mlp.down_proj.bias", "blocks.{i}.mlp.down_bias"),
    Rule("model.norm.weight", "norm.scale"),
    Rule("lm_head.weight", "lm_head", "v d -> d v"),  # only when untied
)

RULES = {"gpt2": GPT2_RULES, "llama": LLAMA_RULES}

# Checkpoint buffers that carry no parameters: GPT-2's causal-mask buffers, Llama's cached RoPE frequencies.
IGNORED_KEYS = {"gpt2": (r"\.attn\.bias$", r"\.attn\.masked_bias$"), "llama": (r"\.rotary_emb\.inv_freq$",)}


def _parse_layout(layout: str, ndim: int) -> tuple[list[list[str]], str]:
  """``"(h k) d -> d h k"`` → HF axis groups ``[["h", "k"], ["d"]]`` and NNX axes ``"dhk"`` (``""``: identity)."""
  if not layout:
    return [[c] for c in "abcdefgh"[:ndim]], "abcdefgh"[:ndim]
  src_text, dst = (part.strip() for part in layout.split("->"))
  return [list(group.strip("()").replace(" ", "")) for group in re.findall(r"\([^)]*\)|\S", src_text)], dst.replace(" ", "")


def rearrange(value: np.ndarray, layout: str, target_shape: tuple[int, ...], name: str) -> np.ndarray:
  """Reshape and permute an HF tensor into an NNX parameter shape following ``layout`` (``"src -> dst"``).

  Args:
    value: the HF tensor.
    layout: e.g. ``"(h k) d -> d h k"``; ``""`` means the shapes must already be equal.
    target_shape: the NNX parameter's shape, which fixes every letter's size.
    name: the HF key, for error messages.

  Returns:
    ``value`` laid out as ``target_shape``.

  Raises:
    ValueError: if ``value.shape`` is not the shape the layout expects (naming the key and both shapes).
  """
  src, dst = _parse_layout(layout, len(target_shape))
  size = dict(zip(dst, target_shape, strict=True))
  expected = tuple(math.prod(size[c] for c in group) for group in src)
  if tuple(value.shape) != expected:
    raise ValueError(f"shape mismatch for checkpoint tensor {name!r}: got {tuple(value.shape)}, expected "
                     f"{expected} (layout {layout or 'identity'!r} into model shape {tuple(target_shape)})")
  flat = [c for group in src for c in group]
  return np.asarray(value).reshape([size[c] for c in flat]).transpose([flat.index(c) for c in dst])


def to_hf_layout(value: np.ndarray, layout: str) -> np.ndarray:
  """The inverse of :func:`rearrange`: an NNX parameter laid out as its HF tensor.

  Args:
    value: the NNX parameter (its shape fixes every letter's size).
    layout: the rule's ``"hf axes -> nnx axes"`` (``""``: identity).

  Returns:
    ``value`` permuted and reshaped to the HF tensor's shape (``rearrange(to_hf_layout(v, l), l, v.shape, k) == v``).
  """
  src, dst = _parse_layout(layout, value.ndim)
  size = dict(zip(dst, value.shape, strict=True))
  flat = [c for group in src for c in group]
  return np.asarray(value).transpose([dst.index(c) for c in flat]).reshape(
      [math.prod(size[c] for c in group) for group in src])


def _expand_rules(cfg: ModelConfig) -> dict[str, Rule]:
  rules = {}
  for rule in RULES[cfg.family]:
    if rule.hf_key == "lm_head.weight" and cfg.tie_word_embeddings:
      continue
    layers = range(cfg.num_layers) if "{i}" in rule.hf_key else [None]
    for i in layers:
      rules[rule.hf_key.format(i=i)] = Rule(rule.hf_key.format(i=i), rule.nnx_path.format(i=i), rule.layout)
  return rules


def _canonical_key(cfg: ModelConfig, key: str) -> str:
  """Original OpenAI-converted GPT-2 checkpoints name keys without the ``transformer.`` prefix."""
  if cfg.family == "gpt2" and not key.startswith(("transformer.", "lm_head.")):
    return "transformer." + key
  return key


def load_state_dict(cfg: ModelConfig, hf_state: Mapping[str, np.ndarray], *, dtype=jnp.float32,
                    param_dtype=jnp.float32, remat: bool | RematPolicy = False) -> CausalLM:
  """A model of ``cfg`` whose parameters are the HF-named tensors ``hf_state``.

  Args:
    cfg: the architecture (e.g. :meth:`ModelConfig.from_hf_config` of the checkpoint's config).
    hf_state: HF parameter name → array (numpy, or anything ``np.asarray`` accepts), e.g. a
      ``state_dict`` or the tensors of a GGUF file renamed to HF names.
    dtype: compute dtype of the model.
    param_dtype: the parameters are cast to this dtype.
    remat: block rematerialisation (see :func:`build_model`).

  Returns:
    The model (an ``nnx.Module``).

  Raises:
    ValueError: on checkpoint keys that map to no parameter (and are not ignored buffers such as
      ``attn.bias`` or ``rotary_emb.inv_freq``; also ``lm_head.weight`` of a tied model), two keys for one
      parameter, model parameters no tensor fills, or shape mismatches — each naming the keys.
  """
  abstract = nnx.eval_shape(lambda: build_model(cfg, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype,
                                                remat=remat))
  graphdef, state = nnx.split(abstract)
  leaves = {".".join(map(str, path)): var for path, var in nnx.to_flat_state(state)}
  rules = _expand_rules(cfg)
  ignored = IGNORED_KEYS[cfg.family] + ((r"^lm_head\.weight$",) if cfg.tie_word_embeddings else ())
  filled, unmapped = set(), []
  for raw_key, value in hf_state.items():
    key = _canonical_key(cfg, raw_key)
    if key not in rules:
      if not any(re.search(pattern, key) for pattern in ignored):
        unmapped.append(raw_key)
      continue
    rule = rules[key]
    if rule.nnx_path in filled:
      raise ValueError(f"checkpoint tensor {raw_key!r} fills {rule.nnx_path}, which another key already filled")
    var = leaves[rule.nnx_path]
    var.set_value(jnp.asarray(rearrange(np.asarray(value), rule.layout, var.get_value().shape, raw_key), param_dtype))
    filled.add(rule.nnx_path)
  if unmapped:
    raise ValueError(f"{len(unmapped)} checkpoint tensors map to no {cfg.family} parameter: {sorted(unmapped)[:20]}")
  missing = sorted(set(leaves) - filled)
  if missing:
    hf_names = {rule.nnx_path: rule.hf_key for rule in rules.values()}
    raise ValueError(f"{len(missing)} model parameters were not in the checkpoint: "
                     f"{[f'{p} (HF {hf_names.get(p)})' for p in missing[:20]]}")
  return nnx.merge(graphdef, state)


def to_state_dict(model: CausalLM) -> dict[str, np.ndarray]:
  """The model's parameters as Hugging Face tensors: :data:`RULES` read backwards (inverse of :func:`load_state_dict`).

  Every parameter is named by its rule's HF key and laid out with :func:`to_hf_layout`, in its stored dtype;
  a tied model has no ``lm_head.weight`` (as ``save_pretrained`` writes it).

  Args:
    model: a GPT-2 or Llama model.

  Returns:
    HF key → numpy array, in rule order (``load_state_dict(model.config, to_state_dict(model))`` rebuilds
    ``model`` bit for bit).

  Raises:
    ValueError: if a model parameter has no rule (naming it).
  """
  by_path = {rule.nnx_path: rule for rule in _expand_rules(model.config).values()}
  params = {".".join(map(str, path)): var.get_value() for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}
  unmapped = sorted(set(params) - set(by_path))
  if unmapped:
    raise ValueError(f"{len(unmapped)} {model.config.family} parameters have no HF name: {unmapped[:20]}")
  return {rule.hf_key: to_hf_layout(np.asarray(params[path]), rule.layout)
          for path, rule in by_path.items() if path in params}


def read_safetensors(folder: str) -> dict[str, np.ndarray]:
  """Every tensor of ``folder/model.safetensors`` or of the shards listed in ``model.safetensors.index.json``.

  bfloat16 tensors come back as ``ml_dtypes.bfloat16`` numpy arrays.

  Raises:
    FileNotFoundError: if the folder has neither file (listing what it has).
  """
  from safetensors import safe_open
  index = os.path.join(folder, "model.safetensors.index.json")
  if os.path.exists(index):
    with open(index) as f:
      files = sorted(set(json.load(f)["weight_map"].values()))
  elif os.path.exists(os.path.join(folder, "model.safetensors")):
    files = ["model.safetensors"]
  else:
    raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json in {folder!r} "
                            f"(it has {sorted(os.listdir(folder))})")
  tensors = {}
  for name in files:
    with safe_open(os.path.join(folder, name), framework="flax") as f:
      for key in f.keys():
        tensors[key] = np.asarray(f.get_tensor(key))
  return tensors


def from_pretrained(path_or_id: str, *, dtype=jnp.float32, param_dtype=jnp.float32,
                    remat: bool | RematPolicy = False) -> CausalLM:
  """A GPT-2 or Llama model from a Hugging Face folder (``config.json`` + safetensors) or hub id.

  A hub id (anything that is not an existing folder) is fetched with ``huggingface_hub.snapshot_download``
  (config and safetensors only), which needs network access (or a filled local cache).

  Args:
    path_or_id: a local folder or a hub repo id.
    dtype: compute dtype; param_dtype: parameter dtype; remat: see :func:`build_model`.

  Returns:
    The loaded model; its ``config`` is :meth:`ModelConfig.from_hf_config` of ``config.json``.

  Raises:
    ValueError: unsupported architecture, unmapped / missing tensors, shape mismatches (see
      :func:`load_state_dict`).
    FileNotFoundError: if the folder holds no safetensors checkpoint.
  """
  folder = path_or_id
  if not os.path.isdir(folder):
    from huggingface_hub import snapshot_download
    folder = snapshot_download(path_or_id, allow_patterns=["config.json", "*.safetensors", "*.safetensors.index.json"])
  with open(os.path.join(folder, "config.json")) as f:
    cfg = ModelConfig.from_hf_config(json.load(f))
  return load_state_dict(cfg, read_safetensors(folder), dtype=dtype, param_dtype=param_dtype, remat=remat)
