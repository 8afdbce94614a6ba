"""KV-cached generation: greedy parity with transformers' generate, EOS handling, sampling filters, n-gram bans."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from hf_tiny import batch, gpt2_config, hf_model, llama_config, save
from jaxlens.models import from_pretrained, generate

NEW = 8


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def pair(request, tmp_path_factory):
  hf = hf_model(llama_config() if request.param == "llama" else gpt2_config(), seed=1)
  return hf, from_pretrained(save(hf, tmp_path_factory.mktemp(request.param)))


def hf_generate(hf, ids, mask, **kwargs) -> np.ndarray:
  """transformers' generate, padded with 0 to ``T + NEW`` columns (it stops early once all rows hit EOS)."""
  with torch.no_grad():
    out = hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=NEW, pad_token_id=0,
                      **kwargs).numpy()
  return np.pad(out, ((0, 0), (0, ids.shape[1] + NEW - out.shape[1])))


def ours(model, ids, mask, seed=0, **kwargs) -> np.ndarray:
  return np.asarray(generate(model, jnp.asarray(ids), jnp.asarray(mask), NEW, jax.random.key(seed), **kwargs))


def test_greedy_matches_transformers_on_a_left_padded_batch(pair):
  hf, model = pair
  ids, mask, _ = batch(5, 3, 6, "left")
  expected = hf_generate(hf, ids, mask, do_sample=False, eos_token_id=None)
  out = ours(model, ids, mask, temperature=0.0)
  assert out.shape == (3, 6 + NEW) and out.dtype == np.int32
  np.testing.assert_array_equal(out, expected)


def test_greedy_stops_at_eos_and_pads_like_transformers(pair):
  hf, model = pair
  ids, mask, _ = batch(5, 3, 6, "left")
  free = ours(model, ids, mask, temperature=0.0)
  eos = int(free[0, 6 + 2])  # the third new token of row 0 becomes EOS
  first = 6 + int(np.flatnonzero(free[0, 6:] == eos)[0])
  expected = hf_generate(hf, ids, mask, do_sample=False, eos_token_id=eos)
  out = ours(model, ids, mask, temperature=0.0, eos_id=eos, pad_id=0)
  np.testing.assert_array_equal(out, expected)
  assert out[0, first] == eos and (out[0, first + 1:] == 0).all() and first + 1 < out.shape[1]


def test_no_repeat_ngram_matches_transformers(pair):
  hf, model = pair
  for seed in range(20):  # a prompt whose free greedy continuation repeats a bigram, so the ban must act
    ids, mask, _ = batch(seed, 3, 6, None)  # the greedy test's shape: no extra compilation
    free = ours(model, ids, mask, temperature=0.0)
    if any(len(set(zip(r[:-1], r[1:], strict=True))) < len(r) - 1 for r in free.tolist()):
      break
  else:
    pytest.fail("no prompt with a repeated bigram found")
  expected = hf_generate(hf, ids, mask, do_sample=False, eos_token_id=None, no_repeat_ngram_size=2)
  out = ours(model, ids, mask, temperature=0.0, no_repeat_ngram_size=2)
  np.testing.assert_array_equal(out, expected)
  assert not np.array_equal(out, free)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
  return from_pretrained(save(hf_model(llama_config(), seed=2), tmp_path_factory.mktemp("llama_sampling")))


def test_sampled_output_has_no_repeated_trigram_on_left_padded_rows(llama):
  model = llama
  ids, mask, _ = batch(7, 3, 6, "left")
  out = ours(model, ids, mask, temperature=0.7, no_repeat_ngram_size=3)
  for row, m in zip(out, np.concatenate([mask, np.ones((3, NEW), np.int64)], 1), strict=True):
    real = row[m.astype(bool)].tolist()
    trigrams = [tuple(real[i:i + 3]) for i in range(len(real) - 2)]
    assert len(trigrams) == len(set(trigrams)), real


def test_top_k_1_and_tiny_top_p_equal_greedy(llama):
  model = llama
  ids, mask, _ = batch(8, 3, 6, "left")
  greedy = ours(model, ids, mask, temperature=0.0)
  np.testing.assert_array_equal(ours(model, ids, mask, seed=3, temperature=1.3, top_k=1), greedy)
  np.testing.assert_array_equal(ours(model, ids, mask, seed=4, temperature=1.0, top_p=1e-6), greedy)


def test_top_k_sampling_is_deterministic_per_key_and_stays_in_the_top_k(llama):
  model = llama
  ids, mask, _ = batch(9, 3, 6, "left")
  settings = dict(temperature=5.0, top_k=3)  # hot, so without the filter the draws would leave the top 3
  a, b = ours(model, ids, mask, seed=11, **settings), ours(model, ids, mask, seed=11, **settings)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(a[:, :6], ids)  # the prompt is returned unchanged
  logits = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)).logits[:, -1])  # [B, V]
  top3 = np.argsort(logits, axis=-1)[:, -3:]
  firsts = np.stack([ours(model, ids, mask, seed=s, **settings)[:, 6] for s in range(12)], 1)  # [B, 12]
  for row in range(3):
    assert set(firsts[row]) <= set(top3[row]) and len(set(firsts[row])) > 1
  assert any(not np.array_equal(a, ours(model, ids, mask, seed=s, **settings)) for s in (12, 13))


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=-1.0), "temperature"), (dict(top_p=0.0), "top_p"), (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(max_new_tokens=100), "max_position_embeddings"),
])
def test_bad_settings_raise(llama, kwargs, match):
  model = llama
  ids, mask, _ = batch(0, 2, 4, "left")
  kwargs = {"max_new_tokens": 2, **kwargs}
  with pytest.raises(ValueError, match=match):
    generate(model, jnp.asarray(ids), jnp.asarray(mask), kwargs.pop("max_new_tokens"), jax.random.key(0), **kwargs)


def test_right_padded_prompts_are_rejected(llama):
  model = llama
  ids, mask, _ = batch(0, 3, 5, "right")
  with pytest.raises(ValueError, match=r"left-padded.*rows \[1, 2\]"):
    generate(model, jnp.asarray(ids), jnp.asarray(mask), 2, jax.random.key(0))
