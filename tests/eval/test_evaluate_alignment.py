"""evaluate_alignment over a model pair: self-alignment exactly zero at every lens pair; lens = own unembedding.

A tiny NNX test double implements the models contract (``model(ids, attention_mask=, positions=)`` →
logits + HF-convention hidden states, ``logit_lens(h, norm=)``), so this runs without the real models.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlens.eval import alignment as al
from test_alignment import numpy_metrics

V, D = 19, 8


@dataclasses.dataclass
class Out:
  logits: jax.Array
  hidden_states: tuple


class Tiny(nnx.Module):
  def __init__(self, layers, seed):
    k = jax.random.split(jax.random.PRNGKey(seed), layers + 2)
    self.embed = nnx.Param(jax.random.normal(k[0], (V, D)))
    self.blocks = nnx.List([nnx.Param(jax.random.normal(k[i + 1], (D, D)) / 3) for i in range(layers)])
    self.head = nnx.Param(2 * jax.random.normal(k[-1], (D, V)))

  def final_norm(self, h):
    return h / jnp.sqrt(jnp.mean(h * h, -1, keepdims=True) + 1e-6)

  def unembedding(self):
    return self.head[...]

  def logit_lens(self, h, norm=False):
    return (self.final_norm(h) if norm else h) @ self.unembedding()

  def __call__(self, ids, attention_mask=None, positions=None):
    h = self.embed[...][ids]
    hs = [h]
    for w in self.blocks:
      h = h + jnp.tanh(h @ w[...])
      hs.append(h)
    hs[-1] = self.final_norm(h)
    return Out(hs[-1] @ self.unembedding(), tuple(hs))


def _batch(seed):
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, V, (3, 6)).astype(np.int32)
  mask = np.ones((3, 6), np.int32)
  loss_mask = np.array([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 0], [0, 0, 0, 1, 1, 0]], np.float32)
  return {"input_ids": ids, "attention_mask": mask, "positions": np.cumsum(mask, 1) - 1,
          "labels": np.roll(ids, -1, 1), "loss_mask": loss_mask}


def test_self_alignment_zero_at_every_pair():
  model = Tiny(4, 0)
  res = al.evaluate_alignment(model, model, [_batch(0), _batch(1)], layer_pairs=[(1, 1), (3, 3)], norm=True,
                              config=al.AlignmentConfig(block_tokens=8), num_bootstrap=50)
  assert list(res) == ["output", "lens/T1-S1", "lens/T3-S3"]
  for key, block in res.items():
    m = block["metrics"]
    for name in ("forward_kl", "reverse_kl", "tvd", "g_head", "g_tail", "entropy_gap"):
      assert m[name] == {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0}, (key, name)
    assert abs(m["jsd"]["mean"]) < 1e-7
    for name in ("top1_agreement", "topk_overlap@5", "topk_overlap@10"):
      assert m[name]["mean"] == 1.0, (key, name)
    assert m["num_tokens"] == 18 and m["num_sequences"] == 6


def test_lens_pairs_use_each_models_own_unembedding():
  teacher, student = Tiny(4, 0), Tiny(2, 1)
  batch = _batch(2)
  res = al.evaluate_alignment(teacher, student, [batch], layer_pairs=[(2, 1)], norm=False,
                              config=al.AlignmentConfig(block_tokens=4), num_bootstrap=20)
  t_out, s_out = teacher(batch["input_ids"]), student(batch["input_ids"])
  w = batch["loss_mask"].reshape(-1)
  labels = batch["labels"].reshape(-1)
  for key, tl, sl in (("output", t_out.logits, s_out.logits),
                      ("lens/T2-S1", t_out.hidden_states[2] @ teacher.head[...],
                       s_out.hidden_states[1] @ student.head[...])):
    want = numpy_metrics(np.asarray(tl).reshape(-1, V), np.asarray(sl).reshape(-1, V), labels)
    for name in ("forward_kl", "jsd", "top1_agreement", "g_tail", "student_ce"):
      np.testing.assert_allclose(res[key]["metrics"][name]["mean"], np.sum(want[name] * w) / w.sum(),
                                 rtol=1e-5, atol=1e-6, err_msg=f"{key}/{name}")
