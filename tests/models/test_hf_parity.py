"""Parity of the NNX GPT-2 / Llama models with transformers' PyTorch models: logits and every hidden state."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from hf_tiny import batch, gpt2_config, hf_model, llama_config, save, torch_forward
from jaxlens.models import from_pretrained

CASES = {
    "llama_gqa_untied": lambda: llama_config(),
    "llama_tied_bias_mqa_llama3rope": lambda: llama_config(
        tie_word_embeddings=True, attention_bias=True, mlp_bias=True, num_key_value_heads=1,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    "gpt2_tied_gelu_new": lambda: gpt2_config(),
    "gpt2_untied_gelu": lambda: gpt2_config(tie_word_embeddings=False, activation_function="gelu", n_inner=80),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(request, tmp_path_factory):
  """(HF torch model, NNX model loaded from its save_pretrained folder, the folder)."""
  hf = hf_model(CASES[request.param]())
  folder = save(hf, tmp_path_factory.mktemp(request.param))
  return hf, from_pretrained(folder), folder


@pytest.mark.parametrize("padding", [None, "left", "right"])
def test_logits_and_every_hidden_state_match_transformers(pair, padding):
  hf, model, _ = pair
  ids, mask, pos = batch(0, 3, 9, padding)
  ref_logits, ref_hidden = torch_forward(hf, ids, mask, pos)
  out = model(jnp.asarray(ids), jnp.asarray(mask))  # default positions = cumsum(mask) - 1
  real = mask.astype(bool)  # HF leaves padded query rows unspecified
  assert len(out.hidden_states) == model.config.num_layers + 1 == len(ref_hidden)
  for i, (h, ref) in enumerate(zip(out.hidden_states, ref_hidden, strict=True)):
    np.testing.assert_allclose(np.asarray(h)[real], ref[real], atol=1e-4, rtol=1e-4, err_msg=f"hidden_states[{i}]")
  np.testing.assert_allclose(np.asarray(out.logits)[real], ref_logits[real], atol=1e-4, rtol=1e-4)


def test_bf16_compute_with_fp32_params_stays_close(pair):
  """bf16 activations (fp32 params, fp32 norms/softmax): logits within 3% of the logits' range of fp32 HF."""
  hf, _, folder = pair
  ids, mask, pos = batch(1, 2, 9, "left")
  ref_logits, _ = torch_forward(hf, ids, mask, pos)
  model_bf16 = from_pretrained(folder, dtype=jnp.bfloat16, param_dtype=jnp.float32)
  assert model_bf16.embed[...].dtype == jnp.float32
  out = model_bf16(jnp.asarray(ids), jnp.asarray(mask))
  assert out.logits.dtype == jnp.bfloat16 and all(h.dtype == jnp.bfloat16 for h in out.hidden_states)
  real = mask.astype(bool)
  scale = np.abs(ref_logits[real]).max()
  np.testing.assert_allclose(np.asarray(out.logits, np.float32)[real], ref_logits[real], atol=0.03 * scale)


def test_logit_lens_reproduces_logits_and_applies_the_final_norm(pair):
  hf, model, _ = pair
  ids, mask, pos = batch(2, 2, 7, None)
  out = model(jnp.asarray(ids), jnp.asarray(mask))
  np.testing.assert_allclose(model.logit_lens(out.hidden_states[-1], norm=False), out.logits, atol=1e-6)
  # the normed lens of a pre-norm state = HF's lm_head(final_norm(h)), computed in torch
  h1 = out.hidden_states[1]
  base = hf.model if hasattr(hf, "model") else hf.transformer
  final_norm = base.norm if hasattr(base, "norm") else base.ln_f
  with torch.no_grad():
    ref = hf.lm_head(final_norm(torch.tensor(np.asarray(h1)))).numpy()
  np.testing.assert_allclose(model.logit_lens(h1, norm=True), ref, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(model.logit_lens(h1.reshape(-1, h1.shape[-1]), norm=True), ref.reshape(-1, ref.shape[-1]),
                             atol=1e-4, rtol=1e-4)
  assert model.unembedding().shape == (model.config.hidden_size, model.config.vocab_size)


def test_sharded_safetensors_checkpoint_loads(tmp_path):
  hf = hf_model(llama_config())
  folder = save(hf, tmp_path, max_shard_size="40KB")
  shards = sorted(p.name for p in tmp_path.glob("*.safetensors"))
  assert len(shards) > 2 and (tmp_path / "model.safetensors.index.json").exists(), shards
  ids, mask, pos = batch(3, 2, 5, "left")
  ref_logits, _ = torch_forward(hf, ids, mask, pos)
  out = from_pretrained(folder)(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(pos))
  real = mask.astype(bool)
  np.testing.assert_allclose(np.asarray(out.logits)[real], ref_logits[real], atol=1e-4, rtol=1e-4)


def test_bf16_checkpoint_loads_into_fp32_params(tmp_path):
  hf = hf_model(llama_config()).to(torch.bfloat16)
  model = from_pretrained(save(hf, tmp_path))
  assert model.embed[...].dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(model.embed[...]), hf.model.embed_tokens.weight.detach().float().numpy())
