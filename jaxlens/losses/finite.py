"""An opt-in error for non-finite values: :func:`check_finite`, jit-friendly (a ``jax.debug.callback``).

The losses themselves never raise on values: a NaN or ``±inf`` reaching an unmasked token makes the loss NaN (see
``docs/losses.md``), which is cheap and composes with ``optax.apply_if_finite``-style guards. Users who prefer an
error at the first bad step wrap the loss (or any array) in :func:`check_finite`.
"""

import jax
import jax.numpy as jnp
import numpy as np


def _raise_if_any(count: np.ndarray, name: str) -> None:
  bad = int(np.sum(count))
  if bad:
    raise FloatingPointError(f"{name} has {bad} non-finite value(s) (NaN or ±inf) at unmasked positions")


def check_finite(x: jax.Array, name: str = "loss", mask: jax.Array | None = None) -> jax.Array:
  r"""Returns ``x`` unchanged, and raises ``FloatingPointError`` when it is computed if it holds NaN or ±inf.

  .. math::

    \text{raise iff } \sum_{t} [m_t \ne 0] \cdot [\exists\, v: x_{t,v} \notin \mathbb{R}] > 0

  Works eagerly and under ``jit``, ``grad``, ``vmap`` and ``shard_map``: the count of bad tokens is computed on the
  device and a ``jax.debug.callback`` raises on the host. Under ``jit`` the error surfaces as a
  ``JaxRuntimeError`` whose message ends with this function's (``"<name> has N non-finite value(s) ..."``), when
  the result is computed (asynchronous dispatch: at the next blocking read). The identity has identity gradient.
  Checking logits directly also flags the ``-inf`` of a padded vocabulary; check the loss instead, which is NaN
  exactly when an unmasked token's logits are NaN, hold ``+inf``, or are all ``-inf``.

  Args:
    x: any array, e.g. a loss or per-token losses ``[...]`` or logits ``[..., V]``.
    name: what ``x`` is, for the error message.
    mask: ``None`` (check everything) or a per-token mask whose shape is a prefix of ``x.shape``; entries of
      masked tokens (mask == 0) are ignored.

  Returns:
    ``x``.

  Raises:
    ValueError: if ``mask``'s shape is not a prefix of ``x``'s.
    FloatingPointError: (when computed; wrapped in ``JaxRuntimeError`` under ``jit``) if an unmasked entry is
      not finite.

  Examples:
    >>> import jax.numpy as jnp
    >>> float(check_finite(jnp.float32(0.25), "kd loss"))
    0.25
  """
  x = jnp.asarray(x)
  bad = ~jnp.isfinite(x) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.zeros(x.shape, bool)
  if mask is not None:
    mask = jnp.asarray(mask)
    if tuple(x.shape[:mask.ndim]) != tuple(mask.shape):
      raise ValueError(f"mask shape {tuple(mask.shape)} must be a prefix of the checked shape {tuple(x.shape)}")
    bad = jnp.any(bad.reshape(mask.shape + (-1,)), axis=-1) & (mask != 0)
  jax.debug.callback(lambda count: _raise_if_any(count, name), jnp.sum(bad))
  return x
