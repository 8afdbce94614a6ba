"""Test helper: write tiny llama GGUF files (float32 tensors, byte-level vocabulary) the way llama.cpp does.

Used by test_gguf.py and test_tokenizer.py; not a test module itself.
"""

from __future__ import annotations

import pathlib

import gguf
import numpy as np
from tokenizers.pre_tokenizers import ByteLevel

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["1 2", "a b"]  # "12" exists only so the digit pre-tokenizer visibly changes the ids


def tiny_vocab() -> tuple[list[str], list[int]]:
  """3 control tokens, the 256 byte-level symbols, then the merged tokens: (tokens, token_types)."""
  tokens = SPECIALS + sorted(ByteLevel.alphabet()) + [m.replace(" ", "") for m in MERGES]
  types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))
  return tokens, types


def permute_rotary_rows(w: np.ndarray, num_heads: int) -> np.ndarray:
  """llama.cpp's ``convert_hf_to_gguf.py`` permutation of q/k rows (HF → GGUF)."""
  return w.reshape(num_heads, 2, w.shape[0] // num_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_to_gguf_name(name: str) -> str:
  table = {
    "model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
  }
  if name in table:
    return table[name]
  layer = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
  }
  _, _, index, rest = name.split(".", 3)
  return f"blk.{index}.{layer[rest.removesuffix('.weight')]}.weight"


def write_tiny_gguf(path: pathlib.Path, hf_config: dict, hf_state: dict[str, np.ndarray], *,
                    architecture: str = "llama", tokenizer_model: str = "gpt2", pre: str = "smollm",
                    drop: tuple[str, ...] = (), extra: dict[str, np.ndarray] | None = None) -> pathlib.Path:
  """Write ``hf_state`` (HF names, float32) as a GGUF with llama.cpp's names, permutation and metadata."""
  writer = gguf.GGUFWriter(str(path), architecture)
  writer.add_block_count(hf_config["num_hidden_layers"])
  writer.add_context_length(hf_config["max_position_embeddings"])
  writer.add_embedding_length(hf_config["hidden_size"])
  writer.add_feed_forward_length(hf_config["intermediate_size"])
  writer.add_head_count(hf_config["num_attention_heads"])
  writer.add_head_count_kv(hf_config["num_key_value_heads"])
  writer.add_rope_freq_base(hf_config["rope_theta"])
  writer.add_layer_norm_rms_eps(hf_config["rms_norm_eps"])
  writer.add_vocab_size(hf_config["vocab_size"])
  tokens, types = tiny_vocab()
  writer.add_tokenizer_model(tokenizer_model)
  writer.add_tokenizer_pre(pre)
  writer.add_token_list(tokens)
  writer.add_token_types(types)
  writer.add_token_merges(MERGES)
  writer.add_bos_token_id(1)
  writer.add_eos_token_id(2)
  writer.add_pad_token_id(2)
  writer.add_add_bos_token(False)
  for name, w in hf_state.items():
    gguf_name = hf_to_gguf_name(name)
    if gguf_name in drop:
      continue
    w = np.asarray(w, np.float32)
    if name.endswith("q_proj.weight"):
      w = permute_rotary_rows(w, hf_config["num_attention_heads"])
    elif name.endswith("k_proj.weight"):
      w = permute_rotary_rows(w, hf_config["num_key_value_heads"])
    writer.add_tensor(gguf_name, np.ascontiguousarray(w))
  for gguf_name, w in (extra or {}).items():
    writer.add_tensor(gguf_name, w)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return path


def tiny_checkpoint(seed: int = 0) -> tuple[dict, dict[str, np.ndarray]]:
  """A random one-layer llama (hf_config, tied HF state) over :func:`tiny_vocab`, numpy only."""
  rng = np.random.default_rng(seed)
  d, f, heads, kv, head_dim, v = 16, 32, 2, 1, 8, len(tiny_vocab()[0])
  config = dict(num_hidden_layers=1, max_position_embeddings=32, hidden_size=d, intermediate_size=f,
                num_attention_heads=heads, num_key_value_heads=kv, rope_theta=10000.0, rms_norm_eps=1e-6, vocab_size=v)
  shapes = {
    "model.embed_tokens.weight": (v, d), "model.norm.weight": (d,),
    "model.layers.0.input_layernorm.weight": (d,), "model.layers.0.post_attention_layernorm.weight": (d,),
    "model.layers.0.self_attn.q_proj.weight": (heads * head_dim, d),
    "model.layers.0.self_attn.k_proj.weight": (kv * head_dim, d),
    "model.layers.0.self_attn.v_proj.weight": (kv * head_dim, d),
    "model.layers.0.self_attn.o_proj.weight": (d, heads * head_dim),
    "model.layers.0.mlp.gate_proj.weight": (f, d), "model.layers.0.mlp.up_proj.weight": (f, d),
    "model.layers.0.mlp.down_proj.weight": (d, f),
  }
  return config, {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}

