"""Float64 PyTorch references of every jaxlens.losses formula, written from the definitions (test helper).

Each ``*_per_token(t, s, ...)`` takes float64 teacher/student logits ``[..., V]`` and returns per-token values
``[...]``; :func:`reduce` applies the masked reductions. The AKL references port the official code
(``wutaiqiang/LLM_KD_AKL`` ``AKL.py::get_ratio``/``get_kl``, see /work/shared/research/headtail.md §1.4) and the
paper's head rule. Also: an ``x64`` fixture and the tolerance table shared by the loss tests.
"""

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F

# Tolerances keyed by the input dtype, against the float64 torch references (rtol, atol).
# bfloat16: the reference gets the same bf16-rounded logits, so values test the float32 computation; gradients
# come back in bfloat16 (8-bit mantissa), hence the looser gradient tolerance.
TOLERANCES = {
    "float64": {"value": (1e-10, 1e-13), "grad": (1e-10, 1e-13)},
    "float32": {"value": (1e-5, 1e-6), "grad": (1e-5, 1e-6)},
    "bfloat16": {"value": (1e-5, 1e-6), "grad": (2e-2, 2e-4)},
}


@pytest.fixture
def x64():
  """Enables float64 in JAX for one test and restores the previous setting."""
  previous = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", previous)


def _log_probs(t, s, temperature):
  return F.log_softmax(t / temperature, -1), F.log_softmax(s / temperature, -1)


def _kl(log_a, log_b):
  return (log_a.exp() * (log_a - log_b)).sum(-1)


def forward_kl_per_token(t, s, temperature=1.0):
  lp, lq = _log_probs(t, s, temperature)
  return _kl(lp, lq)


def reverse_kl_per_token(t, s, temperature=1.0):
  lp, lq = _log_probs(t, s, temperature)
  return _kl(lq, lp)


def jsd_per_token(t, s, temperature=1.0, beta=0.5, mixture_eps=0.0):
  lp, lq = _log_probs(t, s, temperature)
  log_m = torch.log(beta * lp.exp() + (1 - beta) * lq.exp() + mixture_eps)
  return beta * _kl(lp, log_m) + (1 - beta) * _kl(lq, log_m)


def skew_kl_per_token(t, s, temperature=1.0, alpha=0.1):
  lp, lq = _log_probs(t, s, temperature)
  return _kl(lp, torch.log(alpha * lp.exp() + (1 - alpha) * lq.exp()))


def skew_reverse_kl_per_token(t, s, temperature=1.0, alpha=0.1):
  lp, lq = _log_probs(t, s, temperature)
  return _kl(lq, torch.log((1 - alpha) * lp.exp() + alpha * lq.exp()))


def tvd_per_token(t, s, temperature=1.0):
  lp, lq = _log_probs(t, s, temperature)
  return 0.5 * (lp.exp() - lq.exp()).abs().sum(-1)


def akl_ratio(t, s, temperature=1.0, mu=0.5, head_rule="official", eps=0.0):
  """Port of the official ``get_ratio`` (sort descending, gaps in sorted order, detached student)."""
  p = F.softmax(t / temperature, -1)
  q = F.softmax(s / temperature, -1).detach()
  p_sorted, order = torch.sort(p, dim=-1, descending=True)
  gap = (p_sorted - torch.gather(q, -1, order)).abs()
  cumulative = torch.cumsum(p_sorted, -1)
  if head_rule == "official":
    tail = cumulative > mu
    tail[..., 0] = False
  else:  # paper: the smallest prefix with cumulative mass >= mu is the head
    tail = cumulative - p_sorted >= mu
  head_gap = (gap * ~tail).sum(-1)
  tail_gap = (gap * tail).sum(-1)
  return head_gap / (head_gap + tail_gap + eps), tail_gap / (head_gap + tail_gap + eps)


def adaptive_kl_per_token(t, s, temperature=1.0, mu=0.5, head_rule="official", eps=1e-12, swap_weights=False):
  w_head, w_tail = akl_ratio(t, s, temperature, mu, head_rule, eps)
  if swap_weights:  # AKL-r: the tail gap weighs forward KL, the head gap reverse KL
    w_head, w_tail = w_tail, w_head
  return w_head * forward_kl_per_token(t, s, temperature) + w_tail * reverse_kl_per_token(t, s, temperature)


def kl_mixture_per_token(t, s, temperature=1.0, weight=0.5):
  return weight * forward_kl_per_token(t, s, temperature) + (1 - weight) * reverse_kl_per_token(t, s, temperature)


def tad_per_token(t, s, temperature=1.0, k=10, beta=2.0, mask=None):
  """TAD from its definition: sorted teacher top-K, (K+1)-bucket KL, renormalised tail KL, sequence-mean α."""
  lp, lq = _log_probs(t, s, temperature)
  top = torch.zeros_like(lp, dtype=torch.bool).scatter(-1, torch.topk(lp, k, -1).indices, True)
  p, q = lp.exp(), lq.exp()
  tail_p = (p * ~top).sum(-1)
  tail_q = (q * ~top).sum(-1)
  d1 = (torch.where(top, p * (lp - lq), 0.0)).sum(-1) + tail_p * torch.log(tail_p / tail_q)
  p_tilde, q_tilde = p / tail_p[..., None], q / tail_q[..., None]
  d2 = torch.where(top, 0.0, p_tilde * torch.log(p_tilde / q_tilde)).sum(-1)
  valid = torch.ones_like(tail_p) if mask is None else (mask != 0).to(tail_p.dtype)
  mean_tail = (valid * tail_p).sum(-1, keepdim=True) / valid.sum(-1, keepdim=True).clamp_min(1)
  return d1 + beta / mean_tail * tail_p * d2


def cross_entropy_per_token(s, labels):
  return F.cross_entropy(s.reshape(-1, s.shape[-1]), labels.reshape(-1), reduction="none").reshape(labels.shape)


def reduce(per_token, mask, reduction):
  if mask is None:
    mask = torch.ones_like(per_token)
  masked = per_token * mask.to(per_token.dtype)
  if reduction == "none":
    return masked
  if reduction == "sum":
    return masked.sum()
  return masked.sum() / mask.to(per_token.dtype).sum().clamp_min(1)


def value_and_grad(loss_fn, teacher, student, mask=None, reduction="mean", scale=1.0, **kwargs):
  """Float64 torch value (numpy) and gradient wrt the student logits of ``reduce(loss_fn(t, s))·scale``."""
  t = torch.tensor(np.asarray(teacher, np.float64))
  s = torch.tensor(np.asarray(student, np.float64), requires_grad=True)
  m = None if mask is None else torch.tensor(np.asarray(mask))
  value = reduce(loss_fn(t, s, **kwargs), m, reduction) * scale
  (grad,) = torch.autograd.grad(value.sum(), s)
  return value.detach().numpy(), grad.numpy()
