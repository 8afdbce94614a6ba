"""Sampled responses: padding, EOS cuts, one generate shape for every batch, seeds, greedy = argmax decoding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlens.eval import sampling
from jaxlens.eval.generation import SamplingConfig
from jaxlens.models import ModelConfig, build_model, generate

V, EOS, PAD = 23, 1, 0


class Chars:
  """Token t decodes to the letter chr(ord('a') + t) (test tokenizer)."""

  def decode(self, tokens):
    return "".join(chr(ord("a") + t) for t in tokens)


def _model():
  cfg = ModelConfig(family="llama", vocab_size=V, hidden_size=16, num_layers=2, num_heads=2, num_kv_heads=1,
                    head_dim=8, intermediate_size=32, max_position_embeddings=32, norm_eps=1e-5, activation="silu",
                    initializer_range=0.5)
  return build_model(cfg, rngs=nnx.Rngs(0))


def test_left_pad_and_cut_response():
  ids, mask = sampling.left_pad([[5, 6, 7], [8]], PAD, width=4)
  np.testing.assert_array_equal(ids, [[0, 5, 6, 7], [0, 0, 0, 8]])
  np.testing.assert_array_equal(mask, [[0, 1, 1, 1], [0, 0, 0, 1]])
  with pytest.raises(ValueError, match="more than width"):
    sampling.left_pad([[1, 2, 3]], PAD, width=2)
  with pytest.raises(ValueError, match="non-empty"):
    sampling.left_pad([[]], PAD)
  assert sampling.cut_response([4, 5, EOS, 6], EOS) == [4, 5]
  assert sampling.cut_response([4, 5], EOS) == [4, 5] and sampling.cut_response([4, EOS], None) == [4, EOS]


def test_sample_responses_match_direct_generate():
  model = _model()
  prompts = [[3, 4, 5], [6], [7, 8], [9, 10, 11, 12], [13, 14]]  # 5 prompts, batch 2: the last batch is filled up
  greedy = sampling.sample_responses(model, Chars(), prompts, SamplingConfig(greedy=True, max_new_tokens=5,
                                                                             batch_size=2), eos_id=EOS, pad_id=PAD)
  assert list(greedy) == [10]
  for start in (0, 4):  # the first batch and the filled-up last one
    ids, mask = sampling.left_pad((prompts[start:start + 2] * 2)[:2], PAD, width=4)
    out = np.asarray(generate(model, jnp.asarray(ids), jnp.asarray(mask), 5, jax.random.PRNGKey(0), temperature=0.0,
                              eos_id=EOS, pad_id=PAD))
    want = [Chars().decode(sampling.cut_response(row[4:], EOS)) for row in out]
    assert greedy[10][start:start + 2] == want[:len(prompts[start:start + 2])]
  cfg = SamplingConfig(seeds=(10, 20), max_new_tokens=5, batch_size=2)
  runs = sampling.sample_responses(model, Chars(), prompts, cfg, eos_id=EOS, pad_id=PAD)
  assert list(runs) == [10, 20] and all(len(r) == len(prompts) for r in runs.values())
  assert runs != {10: runs[20], 20: runs[20]}  # different seeds sample differently
  assert sampling.sample_responses(model, Chars(), prompts, cfg, eos_id=EOS, pad_id=PAD) == runs  # deterministic
