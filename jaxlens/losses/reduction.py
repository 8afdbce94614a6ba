"""Masked reductions of per-token losses: the token mean, the sum, and the ``(sum, count)`` pair.

Every loss in ``jaxlens.losses`` reduces through :func:`reduce_loss`, so all of them share one masking rule: a
token whose mask is 0 contributes exactly 0 and receives an exactly-zero, finite gradient, even if its per-token
value is ``inf`` or ``nan``.
"""

from typing import Literal

import jax.numpy as jnp

from jaxlens.losses._checks import REDUCTIONS
from jaxlens.losses._checks import check_choice
from jaxlens.losses._checks import check_mask

Reduction = Literal["mean", "sum", "none"]


def _masked(per_token: jnp.ndarray, mask: jnp.ndarray | None) -> jnp.ndarray:
  """``per_token · mask``, with masked entries set to exactly 0 (no ``0·inf``)."""
  check_mask(mask, per_token.shape)
  if mask is None:
    return per_token
  mask = jnp.asarray(mask)
  weight = mask.astype(per_token.dtype)
  return jnp.where(mask != 0, per_token * weight, 0.0)


def masked_sum_and_count(
    per_token: jnp.ndarray, mask: jnp.ndarray | None = None
) -> tuple[jnp.ndarray, jnp.ndarray]:
  r"""The masked sum of per-token values and the number (total weight) of valid tokens.

  .. math::

    S = \sum_t m_t d_t, \qquad N = \sum_t m_t

  Summing ``S`` and ``N`` over gradient-accumulation micro-batches or hosts and dividing once,
  ``Σ S / max(Σ N, 1)``, gives exactly the masked token mean over the global batch.

  Args:
    per_token: per-token values ``d``, any shape ``[...]``.
    mask: ``None`` (every token valid) or a bool/float array of ``per_token``'s shape.

  Returns:
    ``(sum, count)``: two scalars in ``per_token``'s dtype.

  Raises:
    ValueError: if the mask shape differs from ``per_token``'s shape.
    TypeError: if the mask is neither bool nor numeric.

  Examples:
    >>> import jax.numpy as jnp
    >>> total, count = masked_sum_and_count(jnp.array([1.0, 2.0, 4.0]), jnp.array([True, False, True]))
    >>> print(f"{float(total):.4f} {float(count):.4f}")
    5.0000 2.0000
  """
  per_token = jnp.asarray(per_token)
  masked = _masked(per_token, mask)
  if mask is None:
    count = jnp.asarray(per_token.size, per_token.dtype)
  else:
    count = jnp.sum(jnp.asarray(mask).astype(per_token.dtype))
  return jnp.sum(masked), count


def reduce_loss(
    per_token: jnp.ndarray, mask: jnp.ndarray | None = None, reduction: Reduction = "mean"
) -> jnp.ndarray:
  r"""Reduces per-token losses with a mask: masked token mean, masked sum, or masked per-token values.

  .. math::

    \text{mean} = \frac{\sum_t m_t d_t}{\max(\sum_t m_t, 1)}, \qquad
    \text{sum} = \sum_t m_t d_t, \qquad \text{none} = (m_t d_t)_t

  The mean divides by the number of valid tokens, never by the number of positions; an all-masked batch gives
  0 with finite, zero gradients.

  Args:
    per_token: per-token values ``d``, any shape ``[...]``.
    mask: ``None`` or a bool/float array of ``per_token``'s shape.
    reduction: ``"mean"``, ``"sum"`` or ``"none"``.

  Returns:
    A scalar for ``"mean"``/``"sum"``; for ``"none"`` an array of ``per_token``'s shape (already multiplied by
    the mask).

  Raises:
    ValueError: on an unknown reduction or a mask of the wrong shape.
    TypeError: if the mask is neither bool nor numeric.

  Examples:
    >>> import jax.numpy as jnp
    >>> print(f"{float(reduce_loss(jnp.array([1.0, 2.0, 4.0]), jnp.array([1.0, 0.0, 1.0]))):.4f}")
    2.5000
  """
  check_choice("reduction", reduction, REDUCTIONS)
  per_token = jnp.asarray(per_token)
  if reduction == "none":
    return _masked(per_token, mask)
  if reduction == "sum":
    return jnp.sum(_masked(per_token, mask))
  total, count = masked_sum_and_count(per_token, mask)
  return total / jnp.maximum(count, 1.0)
