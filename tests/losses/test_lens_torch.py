"""Parity with DistillLens's PyTorch lens term (``finetune.py::get_distil_loss`` + ``losses.py::get_jsd``).

The torch side (float64) stacks the lens logits of all pairs, takes float32-style softmaxes, JSD with
``log(m + 1e-8)`` and one shared denominator N_pairs · N_tok — the intended mask order, see distilllens.md §1.5.
jaxlens' tiled kernel must give the same value and the same gradients for the student's hidden states and
unembedding (float32, several tiles, V not a multiple of 128).
"""

import jax
import jax.numpy as jnp
import numpy as np
import torch

from jaxlens.losses import TileConfig
from jaxlens.losses import lens_loss


def distilllens_lens_term(teacher_hidden, student_hidden, teacher_lm_head, student_lm_head, mask):
  """``get_jsd(T_lens, S_lens, inf_mask, lens_mask, beta=0.5)`` on stacked ``[P·N, V]`` lens logits."""
  t_logits = (teacher_hidden @ teacher_lm_head.T).reshape(-1, teacher_lm_head.shape[0])
  s_logits = (student_hidden @ student_lm_head.T).reshape(-1, student_lm_head.shape[0])
  lens_mask = mask.repeat(teacher_hidden.shape[0])
  p, q = torch.softmax(t_logits, -1), torch.softmax(s_logits, -1)
  lp, lq = torch.log_softmax(t_logits, -1), torch.log_softmax(s_logits, -1)
  lm = torch.log(0.5 * p + 0.5 * q + 1e-8)
  a = (p * (lp - lm)).sum(-1)
  b = (q * (lq - lm)).sum(-1)
  return 0.5 * (a * lens_mask).sum() / lens_mask.sum() + 0.5 * (b * lens_mask).sum() / lens_mask.sum()


def test_tiled_lens_loss_matches_distilllens_torch():
  rng = np.random.default_rng(11)
  pairs, tokens, teacher_dim, student_dim, vocab = 4, 61, 24, 16, 333
  teacher_hidden = rng.normal(size=(pairs, tokens, teacher_dim))
  student_hidden = rng.normal(size=(pairs, tokens, student_dim))
  teacher_unembed = rng.normal(size=(teacher_dim, vocab)) * 0.5
  student_unembed = rng.normal(size=(student_dim, vocab)) * 0.6
  mask = (rng.random(tokens) > 0.25).astype(np.float64)

  t_sh = torch.tensor(student_hidden, requires_grad=True)
  t_sw = torch.tensor(student_unembed.T.copy(), requires_grad=True)  # lm_head.weight is [V, D]
  expected = distilllens_lens_term(torch.tensor(teacher_hidden), t_sh, torch.tensor(teacher_unembed.T.copy()), t_sw,
                                   torch.tensor(mask))
  expected.backward()

  as32 = lambda x: jnp.asarray(x, jnp.float32)
  loss = lambda sh, sw, th, tw, m: lens_loss(th, sh, tw, sw, m, divergence="jsd",
                                             divergence_kwargs={"beta": 0.5, "mixture_eps": 1e-8},
                                             tile=TileConfig(block_tokens=16))
  value, (d_hidden, d_unembed) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(
      as32(student_hidden), as32(student_unembed), as32(teacher_hidden), as32(teacher_unembed), as32(mask))

  np.testing.assert_allclose(float(value), expected.item(), rtol=1e-5)
  for actual, wanted in ((d_hidden, t_sh.grad.numpy()), (d_unembed, t_sw.grad.numpy().T)):
    scale = np.max(np.abs(wanted))
    np.testing.assert_allclose(np.asarray(actual), wanted, rtol=1e-5, atol=1e-5 * scale)
