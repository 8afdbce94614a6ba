"""AdamW with the reference weight-decay mask, warm-up + cosine/linear schedules, global-norm clipping.

The reference (DistillLens / MiniLLM ``utils.get_optimizer_params``) decays every parameter except those whose
name contains ``bias`` and, for GPT-2, the LayerNorm weights (``ln_1``, ``ln_2``, ``ln_f``). Llama has no biases
and its RMSNorm weights *are* decayed. The schedule without warm-up is PyTorch's
``CosineAnnealingLR(T_max=steps, eta_min=lr_min)``.
"""

from __future__ import annotations

import jax
import optax

from jaxlens.run.config import OptimConfig


def learning_rate_schedule(cfg: OptimConfig, steps: int) -> optax.Schedule:
  """The learning rate at optimizer step t (t = 0 for the first update).

  .. math::

     \\eta_t = \\eta \\cdot t / W \\quad (t < W), \\qquad
     \\eta_t = \\eta_{min} + (\\eta - \\eta_{min}) \\cdot \\tfrac12 (1 + \\cos(\\pi (t - W) / (S - W)))
     \\quad \\text{(cosine)}

  with W = ``warmup_steps`` and S = ``steps``; ``linear`` decays linearly from η to η_min over S − W steps;
  ``constant`` keeps η after warm-up.

  Raises:
    ValueError: if ``warmup_steps >= steps`` (nothing left to decay over) for a decaying schedule.
  """
  warmup = cfg.warmup_steps
  if cfg.schedule != "constant" and warmup >= steps:
    raise ValueError(f"optim.warmup_steps={warmup} must be < steps={steps} for the {cfg.schedule} schedule")
  decay_steps = max(steps - warmup, 1)
  if cfg.schedule == "cosine":
    decay = optax.cosine_decay_schedule(cfg.lr, decay_steps, alpha=cfg.lr_min / cfg.lr)
  elif cfg.schedule == "linear":
    decay = optax.linear_schedule(cfg.lr, cfg.lr_min, decay_steps)
  else:
    decay = optax.constant_schedule(cfg.lr)
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup), decay], [warmup])


def _path_names(path) -> list[str]:
  names = []
  for entry in path:
    name = getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", entry)))
    names.append(str(name))
  return names


def is_decayed(names: list[str], family: str, rule: str) -> bool:
  """Whether the parameter at path ``names`` gets weight decay under ``rule``.

  ``reference``: not biases; for GPT-2 also not LayerNorm scales/offsets (path components containing
  ``ln`` or ``norm``); for Llama everything else (RMSNorm weights included). ``all`` / ``none``: as named.
  """
  if rule == "all":
    return True
  if rule == "none":
    return False
  lowered = [n.lower() for n in names]
  if any("bias" in n for n in lowered):
    return False
  if family == "gpt2" and any(n.startswith("ln") or "norm" in n for n in lowered):
    return False
  return True


def decay_mask(params, family: str, rule: str):
  """A pytree of bools shaped like ``params``: True where weight decay applies (see :func:`is_decayed`)."""
  return jax.tree_util.tree_map_with_path(lambda path, _: is_decayed(_path_names(path), family, rule), params)


def make_optimizer(cfg: OptimConfig, steps: int, family: str) -> optax.GradientTransformation:
  """``clip_by_global_norm(clip_norm)`` then AdamW(schedule, b1, b2, eps, weight_decay, reference mask).

  AdamW update (decoupled decay, applied only where the mask is True):
  ``θ ← θ − η_t (m̂ / (√v̂ + ε) + wd·θ)``.

  Args:
    cfg: the ``optim`` group.
    steps: total optimizer steps (the schedule's horizon).
    family: the student's family (``llama`` | ``gpt2``), which selects the reference decay mask.
  """
  adamw = optax.adamw(learning_rate_schedule(cfg, steps), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                      weight_decay=cfg.weight_decay, mask=lambda p: decay_mask(p, family, cfg.decay_rule))
  if cfg.clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), adamw)
  return adamw

