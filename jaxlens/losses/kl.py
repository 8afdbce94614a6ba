"""Forward and reverse Kullback–Leibler divergences between teacher and student next-token distributions.

Arguments are teacher-first, unlike optax's prediction-first order: every divergence here reads as
D(teacher ‖ student) or its reverse, and teacher-first keeps that readable.
"""

import functools

import jax.numpy as jnp

from jaxlens.losses import per_token
from jaxlens.losses._pairwise import teacher_student_divergence
from jaxlens.losses.reduction import Reduction


def forward_kl(
    teacher_logits: jnp.ndarray,
    student_logits: jnp.ndarray,
    mask: jnp.ndarray | None = None,
    *,
    temperature: float = 1.0,
    reduction: Reduction = "mean",
    scale_by_temperature_squared: bool = False,
    vocab_axis_name: str | None = None,
) -> jnp.ndarray:
  r"""Forward KL, KL(p_T ‖ p_S): the teacher-weighted ("mean-seeking") divergence of classic KD.

  With p = softmax(z_T / τ) (teacher) and q = softmax(z_S / τ) (student), per token:

  .. math::

    \mathrm{FKL}(p, q) = \sum_{v} p_v \left(\log p_v - \log q_v\right),
    \qquad \frac{\partial\,\mathrm{FKL}}{\partial z_S} = \frac{1}{\tau}(q - p)

  multiplied by τ² when ``scale_by_temperature_squared`` (off by default). Gradients are stopped into
  ``teacher_logits``. Softmaxes and sums run in float32 (float64 for float64 inputs); ``-inf`` logits (padded
  vocabulary) count as exact zeros of the distribution, with 0·log 0 = 0.

  Args:
    teacher_logits: ``[..., V]`` teacher logits (any float dtype); no gradient flows into them.
    student_logits: ``[..., V]`` student logits, same shape.
    mask: ``None`` or bool/float ``[...]`` (the logits' shape without ``V``); masked tokens contribute 0.
    temperature: τ > 0, divides both sides' logits.
    reduction: ``"mean"`` (Σ m·d / max(Σ m, 1)), ``"sum"`` or ``"none"`` (per-token values times the mask).
    scale_by_temperature_squared: multiply by τ² (Hinton et al.'s gradient-scale correction).
    vocab_axis_name: name of the mesh axis that shards ``V`` when called inside ``jax.shard_map``; every
      vocabulary reduction is then combined across that axis. ``None``: the last axis is the whole vocabulary.

  Returns:
    A float32 (float64 for float64 inputs) scalar, or ``[...]`` for ``reduction="none"``.

  Raises:
    TypeError: non-floating logits or a non-numeric mask.
    ValueError: mismatched logits shapes, a mask of the wrong shape, an unknown reduction, or τ ≤ 0.

  Examples:
    >>> import jax.numpy as jnp
    >>> print(f"{float(forward_kl(jnp.array([3.0, 1.0, 0.0]), jnp.array([1.0, 2.0, 0.5]))):.4f}")
    0.8469

  References:
    Hinton, Vinyals and Dean, `Distilling the Knowledge in a Neural Network
    <https://arxiv.org/abs/1503.02531>`_, 2015.
  """
  return teacher_student_divergence(
      functools.partial(per_token.forward_kl, vocab_axis_name=vocab_axis_name),
      teacher_logits,
      student_logits,
      mask,
      temperature=temperature,
      reduction=reduction,
      scale_by_temperature_squared=scale_by_temperature_squared,
      vocab_axis_name=vocab_axis_name,
  )


def reverse_kl(
    teacher_logits: jnp.ndarray,
    student_logits: jnp.ndarray,
    mask: jnp.ndarray | None = None,
    *,
    temperature: float = 1.0,
    reduction: Reduction = "mean",
    scale_by_temperature_squared: bool = False,
    vocab_axis_name: str | None = None,
) -> jnp.ndarray:
  r"""Reverse KL, KL(p_S ‖ p_T): the student-weighted ("mode-seeking") divergence of MiniLLM and DistillLens.

  With p = softmax(z_T / τ) (teacher) and q = softmax(z_S / τ) (student), per token:

  .. math::

    \mathrm{RKL}(p, q) = \sum_{v} q_v \left(\log q_v - \log p_v\right),
    \qquad \frac{\partial\,\mathrm{RKL}}{\partial z_{S,k}}
      = \frac{q_k}{\tau}\Big[\log\frac{q_k}{p_k} - \mathrm{RKL}(p, q)\Big]

  multiplied by τ² when ``scale_by_temperature_squared`` (off by default). Gradient flows through both
  occurrences of q; it is stopped into ``teacher_logits``. Float32 accumulation, ``-inf`` logits handled
  exactly (a student ``-inf`` entry contributes 0; a teacher ``-inf`` entry where q > 0 makes the value ``inf``,
  as the definition says).

  Args:
    teacher_logits: ``[..., V]`` teacher logits (any float dtype); no gradient flows into them.
    student_logits: ``[..., V]`` student logits, same shape.
    mask: ``None`` or bool/float ``[...]``; masked tokens contribute 0.
    temperature: τ > 0, divides both sides' logits.
    reduction: ``"mean"`` (Σ m·d / max(Σ m, 1)), ``"sum"`` or ``"none"``.
    scale_by_temperature_squared: multiply by τ².
    vocab_axis_name: mesh axis sharding ``V`` inside ``jax.shard_map``, or ``None``.

  Returns:
    A float32 (float64 for float64 inputs) scalar, or ``[...]`` for ``reduction="none"``.

  Raises:
    TypeError: non-floating logits or a non-numeric mask.
    ValueError: mismatched logits shapes, a mask of the wrong shape, an unknown reduction, or τ ≤ 0.

  Examples:
    >>> import jax.numpy as jnp
    >>> print(f"{float(reverse_kl(jnp.array([3.0, 1.0, 0.0]), jnp.array([1.0, 2.0, 0.5]))):.4f}")
    0.9417

  References:
    Gu, Dong, Wei and Huang, `MiniLLM: Knowledge Distillation of Large Language Models
    <https://arxiv.org/abs/2306.08543>`_, 2024.
  """
  return teacher_student_divergence(
      functools.partial(per_token.reverse_kl, vocab_axis_name=vocab_axis_name),
      teacher_logits,
      student_logits,
      mask,
      temperature=temperature,
      reduction=reduction,
      scale_by_temperature_squared=scale_by_temperature_squared,
      vocab_axis_name=vocab_axis_name,
  )
