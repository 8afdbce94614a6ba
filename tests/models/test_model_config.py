"""ModelConfig: HF config.json translation, presets, validation."""

import dataclasses

import pytest

from hf_tiny import gpt2_config, llama_config
from jaxlens.models import ModelConfig


def test_from_hf_llama_reads_gqa_head_dim_and_llama3_rope():
  hf = llama_config(head_dim=32, tie_word_embeddings=True, rope_parameters={
      "rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}).to_dict()
  cfg = ModelConfig.from_hf_config(hf)
  assert (cfg.family, cfg.vocab_size, cfg.hidden_size, cfg.num_layers) == ("llama", 301, 64, 3)
  assert (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size) == (4, 2, 32, 96)
  assert (cfg.rope_type, cfg.rope_theta, cfg.rope_factor, cfg.rope_original_max_position_embeddings) == (
      "llama3", 500000.0, 32.0, 8192)
  assert cfg.tie_word_embeddings and cfg.activation == "silu" and cfg.norm_eps == 1e-5


def test_from_hf_llama_v4_style_rope_theta_key():
  hf = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 8,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 32,
        "rope_theta": 100000.0, "rope_scaling": None}
  cfg = ModelConfig.from_hf_config(hf)
  assert (cfg.rope_theta, cfg.rope_type, cfg.num_kv_heads, cfg.head_dim) == (100000.0, "default", 2, 4)


def test_from_hf_gpt2_defaults_inner_size_and_ties():
  cfg = ModelConfig.from_hf_config(gpt2_config().to_dict())
  assert (cfg.family, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size) == ("gpt2", 4, 16, 256)
  assert cfg.tie_word_embeddings and cfg.attention_bias and cfg.mlp_bias and cfg.activation == "gelu_new"


@pytest.mark.parametrize("hf, match", [
    ({"model_type": "bert", "architectures": ["BertModel"]}, "bert.*BertModel"),
    ({**llama_config().to_dict(), "architectures": ["LlamaForSequenceClassification"]},
     "LlamaForSequenceClassification"),
    ({**gpt2_config().to_dict(), "scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
])
def test_unsupported_configs_are_named(hf, match):
  with pytest.raises(ValueError, match=match):
    ModelConfig.from_hf_config(hf)


@pytest.mark.parametrize("change, match", [
    (dict(family="bert"), "family"), (dict(activation="swiglu"), "activation"), (dict(num_kv_heads=4), "multiple"),
    (dict(rope_type="yarn"), "rope_type"), (dict(num_layers=0), "num_layers"),
])
def test_invalid_fields_raise(change, match):
  with pytest.raises(ValueError, match=match):
    dataclasses.replace(ModelConfig.smollm2_135m(), **change)


def test_gpt2_needs_full_heads():
  with pytest.raises(ValueError, match="gpt2 needs"):
    dataclasses.replace(ModelConfig.gpt2_small(), num_kv_heads=4)


def test_presets():
  smol = ModelConfig.smollm2_135m()
  assert (smol.num_layers, smol.num_heads, smol.num_kv_heads, smol.head_dim, smol.vocab_size) == (30, 9, 3, 64, 49152)
  assert ModelConfig.gpt2_small().num_heads * ModelConfig.gpt2_small().head_dim == 768
