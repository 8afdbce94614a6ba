"""Strict checkpoint loading: every unexpected, missing or mis-shaped tensor is named in the error."""

import dataclasses
import json

import numpy as np
import pytest

from hf_tiny import gpt2_config, hf_model, llama_config, save
from jaxlens.models import ModelConfig, from_pretrained, load_state_dict


@pytest.fixture(scope="module")
def llama_state():
  hf = hf_model(llama_config(num_hidden_layers=2))
  cfg = ModelConfig.from_hf_config(hf.config.to_dict())
  return cfg, {k: v.detach().numpy() for k, v in hf.state_dict().items()}


def test_clean_state_dict_loads_and_ignores_rotary_buffers(llama_state):
  cfg, state = llama_state
  model = load_state_dict(cfg, {**state, "model.layers.0.self_attn.rotary_emb.inv_freq": np.ones(8, np.float32)})
  np.testing.assert_array_equal(model.blocks[1].mlp.down[...], state["model.layers.1.mlp.down_proj.weight"].T)


def test_unmapped_key_is_named(llama_state):
  cfg, state = llama_state
  with pytest.raises(ValueError, match=r"map to no llama parameter.*model\.layers\.0\.self_attn\.extra\.weight"):
    load_state_dict(cfg, {**state, "model.layers.0.self_attn.extra.weight": np.zeros((2, 2), np.float32)})


def test_layer_beyond_config_is_unmapped(llama_state):
  cfg, state = llama_state
  with pytest.raises(ValueError, match=r"model\.layers\.2\.mlp\.up_proj\.weight"):
    load_state_dict(cfg, {**state, "model.layers.2.mlp.up_proj.weight": state["model.layers.1.mlp.up_proj.weight"]})


def test_missing_tensor_is_named(llama_state):
  cfg, state = llama_state
  state = {k: v for k, v in state.items() if k != "model.layers.1.mlp.up_proj.weight"}
  with pytest.raises(ValueError, match=r"not in the checkpoint.*blocks\.1\.mlp\.up \(HF model\.layers\.1\.mlp\.up"):
    load_state_dict(cfg, state)


def test_shape_mismatch_is_named(llama_state):
  cfg, state = llama_state
  key = "model.layers.0.mlp.gate_proj.weight"
  with pytest.raises(ValueError, match=rf"shape mismatch.*{key}.*\(64, 96\).*\(96, 64\)"):
    load_state_dict(cfg, {**state, key: state[key].T})


def test_untied_lm_head_required_but_tied_lm_head_ignored(llama_state):
  cfg, state = llama_state
  without_head = {k: v for k, v in state.items() if k != "lm_head.weight"}
  with pytest.raises(ValueError, match=r"lm_head"):
    load_state_dict(cfg, without_head)
  tied = load_state_dict(dataclasses.replace(cfg, tie_word_embeddings=True), state)
  np.testing.assert_array_equal(np.asarray(tied.unembedding()), state["model.embed_tokens.weight"].T)


def test_gpt2_keys_without_transformer_prefix_and_mask_buffers_load():
  hf = hf_model(gpt2_config(n_layer=1))
  state = {k.removeprefix("transformer."): v.detach().numpy() for k, v in hf.state_dict().items()}
  state["h.0.attn.bias"] = np.tril(np.ones((1, 1, 64, 64), np.float32))
  state["h.0.attn.masked_bias"] = np.asarray(-1e4, np.float32)
  model = load_state_dict(ModelConfig.from_hf_config(hf.config.to_dict()), state)
  np.testing.assert_array_equal(np.asarray(model.blocks[0].attn.qkv[...]).reshape(64, 192),
                                state["h.0.attn.c_attn.weight"])


def test_two_keys_for_one_parameter_raise():
  hf = hf_model(gpt2_config(n_layer=1))
  state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
  state["wte.weight"] = state["transformer.wte.weight"]
  with pytest.raises(ValueError, match=r"'wte.weight' fills embed, which another key already filled"):
    load_state_dict(ModelConfig.from_hf_config(hf.config.to_dict()), state)


def test_unsupported_architecture_folder(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "mistral", "architectures": ["MistralForCausalLM"]}))
  with pytest.raises(ValueError, match="mistral"):
    from_pretrained(str(tmp_path))


def test_folder_without_safetensors(tmp_path):
  folder = save(hf_model(llama_config(num_hidden_layers=1)), tmp_path)
  (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
  with pytest.raises(FileNotFoundError, match="pytorch_model.bin"):
    from_pretrained(folder)
