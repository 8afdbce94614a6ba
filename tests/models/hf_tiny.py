"""Test helper: tiny random Hugging Face GPT-2 / Llama models saved to disk, padded batches, torch forwards.

Not a test module itself. The vocabulary (301) is deliberately odd-sized.
"""

from __future__ import annotations

import numpy as np
import torch
import transformers

VOCAB = 301


def llama_config(**overrides) -> transformers.LlamaConfig:
  """3 layers, hidden 64, 4 heads over 2 KV heads (GQA), head_dim 16, FFN 96, untied."""
  kw = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=96, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False,
            bos_token_id=1, eos_token_id=2, pad_token_id=0)
  kw.update(overrides)
  return transformers.LlamaConfig(**kw)


def gpt2_config(**overrides) -> transformers.GPT2Config:
  """3 layers, hidden 64, 4 heads, gelu_new, 64 positions, tied."""
  kw = dict(vocab_size=VOCAB, n_embd=64, n_layer=3, n_head=4, n_positions=64, activation_function="gelu_new",
            bos_token_id=1, eos_token_id=2, pad_token_id=0)
  kw.update(overrides)
  return transformers.GPT2Config(**kw)


def hf_model(config, seed: int = 0) -> transformers.PreTrainedModel:
  """A randomly initialised causal LM for ``config``, in eval mode; norms get random weights too."""
  torch.manual_seed(seed)
  cls = transformers.LlamaForCausalLM if isinstance(config, transformers.LlamaConfig) else transformers.GPT2LMHeadModel
  model = cls(config).eval()
  with torch.no_grad():  # non-trivial norm scales/biases so that a mis-mapped norm cannot pass
    for name, p in model.named_parameters():
      if "norm" in name or "ln_" in name:
        p.add_(0.1 * torch.randn_like(p))
  return model


def save(model, path, **kwargs) -> str:
  """``save_pretrained`` into ``path`` (safetensors) and return it as a string."""
  model.save_pretrained(path, **kwargs)
  return str(path)


def batch(seed: int, b: int, t: int, padding: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Random ids ``[B, T]``, a mask with 1–3 padding tokens per row after the first (``padding`` = "left" /
  "right" / None), and positions ``max(cumsum(mask) − 1, 0)``."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, VOCAB, (b, t))
  mask = np.ones((b, t), np.int64)
  for row in range(1, b):
    n = 1 + (row - 1) % 3
    if padding == "left":
      mask[row, :n] = 0
    elif padding == "right":
      mask[row, t - n:] = 0
  ids = np.where(mask == 1, ids, 0)
  return ids, mask, np.maximum(np.cumsum(mask, -1) - 1, 0)


def torch_forward(model, ids, mask, positions) -> tuple[np.ndarray, list[np.ndarray]]:
  """HF logits ``[B, T, V]`` and the ``L + 1`` hidden states, float32 numpy."""
  with torch.no_grad():
    out = model(torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=torch.tensor(positions),
                output_hidden_states=True)
  return out.logits.float().numpy(), [h.float().numpy() for h in out.hidden_states]
