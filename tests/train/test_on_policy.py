"""On-policy distillation: sampled rows equal ``jaxlens.models.generate`` in the data layout, the layout and the
loss / student gradients equal TRL's ``GKDTrainer`` on the same tiny random HF models, the coins follow λ."""

from __future__ import annotations

import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))
from hf_tiny import VOCAB, hf_model, llama_config, save  # noqa: E402

from jaxlens import data as jdata  # noqa: E402
from jaxlens import losses  # noqa: E402
from jaxlens.models import from_pretrained, generate  # noqa: E402
from jaxlens.run.config import LossConfig  # noqa: E402
from jaxlens.train import on_policy  # noqa: E402
from jaxlens.train.objective import Objective  # noqa: E402
from jaxlens.train.step import ModelParts, batch_sums  # noqa: E402

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
SEQ, WIDTH, NEW = 16, 6, 8
PROMPTS = [3, 5, 4, 6, 2, 5]  # prompt lengths; the last row of the batch is all padding


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  hf_teacher, hf_student = hf_model(llama_config(), seed=1), hf_model(llama_config(num_hidden_layers=2), seed=2)
  folder = tmp_path_factory.mktemp("hf")
  return (hf_teacher, hf_student, from_pretrained(save(hf_teacher, folder / "teacher")),
          from_pretrained(save(hf_student, folder / "student")))


def data_batch() -> dict:
  """Right-padded rows of the data pipeline: random prompts and dataset responses, one padding row."""
  rng = np.random.default_rng(0)
  rows = [(jdata.TokenizedExample(rng.integers(3, VOCAB, p + 4).astype(np.int32), p),) for p in PROMPTS]
  return {k: jnp.asarray(v) for k, v in jdata.collate(rows, seq_len=SEQ, pad_id=0, batch_size=len(PROMPTS) + 1).items()}


def reference_rows(student, batch, rng_data, sampling) -> tuple[np.ndarray, dict]:
  """``generate`` on independently left-padded prompts, then the data pipeline's ``collate`` of prompt + response."""
  ids = np.asarray(batch["input_ids"])
  prompts = [ids[b, :p] for b, p in enumerate(PROMPTS)] + [ids[-1, :1]]
  left = np.zeros((len(prompts), WIDTH), np.int32)
  mask = np.zeros_like(left)
  for b, p in enumerate(prompts):
    left[b, WIDTH - len(p):], mask[b, WIDTH - len(p):] = p, 1
  _, key = on_policy.sampling_keys(rng_data)
  out = np.asarray(generate(student, jnp.asarray(left), jnp.asarray(mask), NEW, key, temperature=sampling.temperature,
                            eos_id=sampling.eos_ids or None, pad_id=0))
  rows = []
  for b, p in enumerate(prompts):
    new = list(out[b, WIDTH:])
    cut = new.index(sampling.eos_ids[0]) + 1 if sampling.eos_ids and sampling.eos_ids[0] in new else NEW
    rows.append((jdata.TokenizedExample(np.concatenate([p, new[:cut]]).astype(np.int32), len(p)),))
  return out, jdata.collate(rows, seq_len=SEQ, pad_id=0)


@pytest.fixture(scope="module")
def sampled(models):
  """λ = 1: every row (but the padding row) student-sampled; EOS = a token row 0 emits third, so rows end early."""
  student = models[3]
  batch, rng_data = data_batch(), jax.random.key_data(jax.random.PRNGKey(7))
  free = on_policy.Sampling(1.0, NEW, WIDTH)
  out, _ = reference_rows(student, batch, rng_data, free)
  sampling = on_policy.Sampling(1.0, NEW, WIDTH, eos_ids=(int(out[0, WIDTH + 2]),))
  mixed, stats = jax.jit(lambda b, r: on_policy.mix_batch(student, b, r, sampling))(batch, rng_data)
  return batch, rng_data, sampling, {k: np.asarray(v) for k, v in mixed.items()}, stats


def test_sampled_rows_equal_generate_in_the_data_layout(models, sampled):
  batch, rng_data, sampling, mixed, stats = sampled
  out, expected = reference_rows(models[3], batch, rng_data, sampling)
  lengths = expected["attention_mask"].sum(-1) - np.array(PROMPTS + [1])
  assert lengths[0] == 3 and (lengths[:-1] >= 1).all() and (lengths <= NEW).all()  # row 0 stops at its EOS
  chosen = np.arange(len(PROMPTS) + 1) < len(PROMPTS)
  for key in jdata.BATCH_KEYS:
    np.testing.assert_array_equal(mixed[key][chosen], expected[key][chosen], err_msg=key)
    np.testing.assert_array_equal(mixed[key][~chosen], np.asarray(batch[key])[~chosen], err_msg=key)  # padding row
  assert float(stats["sampled_rows"]) == len(PROMPTS)
  assert float(stats["generated_tokens"]) == lengths[:-1].sum() == mixed["loss_mask"].sum()


def test_coins_follow_lambda_and_keep_the_other_rows(models):
  batch, rng_data = data_batch(), jax.random.key_data(jax.random.PRNGKey(3))
  sampling = on_policy.Sampling(0.5, NEW, WIDTH)
  mixed, stats = on_policy.mix_batch(models[3], batch, rng_data, sampling)
  coins = np.asarray(jax.random.bernoulli(on_policy.sampling_keys(rng_data)[0], 0.5, (len(PROMPTS) + 1,)))
  chosen = coins & (np.arange(len(PROMPTS) + 1) < len(PROMPTS))
  assert 0 < chosen.sum() < len(PROMPTS)  # this seed mixes both kinds of rows
  _, expected = reference_rows(models[3], batch, rng_data, sampling)
  for key in jdata.BATCH_KEYS:
    want = np.where(chosen[:, None], expected[key], np.asarray(batch[key]))
    np.testing.assert_array_equal(np.asarray(mixed[key]), want, err_msg=key)
  assert float(stats["sampled_rows"]) == chosen.sum()
  with pytest.raises(ValueError, match="exceeds the row length 16"):
    on_policy.sample_rows(models[3], batch, rng_data, on_policy.Sampling(1.0, 11, WIDTH))


def test_layout_equals_trl_generate_on_policy_outputs(models, sampled):
  gkd = pytest.importorskip("trl.experimental.gkd.gkd_trainer", reason="trl with the GKD trainer is needed")
  batch, rng_data, sampling, mixed, _ = sampled
  out, _ = reference_rows(models[3], batch, rng_data, sampling)
  ids = np.asarray(batch["input_ids"])
  prompts = np.zeros((len(PROMPTS), WIDTH), np.int64)
  prompt_mask = np.zeros_like(prompts)
  for b, p in enumerate(PROMPTS):
    prompts[b, WIDTH - p:], prompt_mask[b, WIDTH - p:] = ids[b, :p], 1
  stub = types.SimpleNamespace(generate=lambda **kw: types.SimpleNamespace(sequences=torch.tensor(out[:-1], dtype=torch.long)))
  trl_ids, trl_mask, trl_labels = gkd.GKDTrainer.generate_on_policy_outputs(
      stub, {"prompts": torch.tensor(prompts), "prompt_attention_mask": torch.tensor(prompt_mask)},
      types.SimpleNamespace(eos_token_id=list(sampling.eos_ids)))
  trl_ids, trl_mask, trl_labels = trl_ids.numpy(), trl_mask.numpy(), trl_labels.numpy()
  for b in range(len(PROMPTS)):
    real = mixed["attention_mask"][b] == 1
    np.testing.assert_array_equal(mixed["input_ids"][b][real], trl_ids[b][trl_mask[b] == 1])
    # TRL's loss positions: t predicts labels[t + 1] != -100 (the completion, EOS included).
    trl_targets = trl_labels[b, 1:][trl_labels[b, 1:] != -100]
    np.testing.assert_array_equal(mixed["labels"][b][mixed["loss_mask"][b] == 1], trl_targets)


def test_loss_and_student_gradients_equal_trl_gkd(models, sampled):
  gkd = pytest.importorskip("trl.experimental.gkd.gkd_trainer", reason="trl with the GKD trainer is needed")
  hf_teacher, hf_student, teacher, student = models
  _, _, _, mixed, _ = sampled
  # TRL: compute_loss on the same sequences (right-padded, so HF's default positions are the data pipeline's);
  # unshifted labels = the response tokens, -100 elsewhere.
  targets = np.full(mixed["input_ids"].shape, -100, np.int64)
  targets[:, 1:] = np.where(mixed["loss_mask"][:, :-1] == 1, mixed["input_ids"][:, 1:], -100)
  trainer = types.SimpleNamespace(teacher_model=hf_teacher, beta=0.5,
                                  generalized_jsd_loss=gkd.GKDTrainer.generalized_jsd_loss)
  hf_student.zero_grad()
  inputs = {"input_ids": torch.tensor(mixed["input_ids"], dtype=torch.long),
            "attention_mask": torch.tensor(mixed["attention_mask"], dtype=torch.long), "labels": torch.tensor(targets)}
  trl_loss = gkd.GKDTrainer.compute_loss(trainer, hf_student, inputs)
  trl_loss.backward()
  hf_grads = {n: p.grad.numpy() for n, p in hf_student.named_parameters()}

  cfg = LossConfig(alpha=1.0, output_divergence="jsd", beta=0.5, lens_weight=0.0, block_tokens=32)
  objective = Objective(cfg, losses.uniform_layer_map(3, 2, 1))
  s_parts, t_parts = ModelParts.of(student), ModelParts.of(teacher)
  params = {"student": nnx.to_pure_dict(s_parts.template)}
  batch = {k: jnp.asarray(v) for k, v in mixed.items()}

  def loss(p):
    total, sums = batch_sums(objective, s_parts, t_parts, p, nnx.to_pure_dict(t_parts.template), batch)
    return total / sums["count"]
  value, grads = jax.jit(jax.value_and_grad(loss))(params)
  g = grads["student"]
  np.testing.assert_allclose(float(value), trl_loss.item(), rtol=2e-5)
  pairs = [(g["lm_head"], hf_grads["lm_head.weight"].T), (g["embed"], hf_grads["model.embed_tokens.weight"]),
           (g["norm"]["scale"], hf_grads["model.norm.weight"]),
           (g["blocks"][0]["mlp"]["down"], hf_grads["model.layers.0.mlp.down_proj.weight"].T),
           (g["blocks"][1]["attn"]["q"], hf_grads["model.layers.1.self_attn.q_proj.weight"].T.reshape(64, 4, 16))]
  for ours, theirs in pairs:
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-3, atol=1e-3 * np.abs(theirs).max())
