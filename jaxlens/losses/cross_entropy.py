"""Task cross-entropy of the student against the next-token labels (the supervised term of the objective)."""

import jax.numpy as jnp

from jaxlens.losses._checks import check_labels
from jaxlens.losses._checks import check_logits
from jaxlens.losses._checks import check_mask
from jaxlens.losses._pairwise import compute_dtype
from jaxlens.losses._pairwise import select_valid
from jaxlens.losses._vocab import log_softmax
from jaxlens.losses._vocab import vocab_ids
from jaxlens.losses._vocab import vocab_sum
from jaxlens.losses.reduction import Reduction
from jaxlens.losses.reduction import reduce_loss


def cross_entropy(
    student_logits: jnp.ndarray,
    labels: jnp.ndarray,
    mask: jnp.ndarray | None = None,
    *,
    reduction: Reduction = "mean",
    vocab_axis_name: str | None = None,
) -> jnp.ndarray:
  r"""Next-token cross-entropy −log q(y) of the student, masked and reduced.

  With q = softmax(z_S) (no temperature), per token:

  .. math::

    \mathrm{CE}(y, q) = -\log q_y = \operatorname{logsumexp}(z_S) - z_{S,y}

  Computed in float32 (float64 for float64 inputs). Labels at masked positions may hold any integer (e.g. −100):
  an id outside the vocabulary selects nothing and the mask removes the token. Masked tokens' logits are replaced
  by zeros before the log-softmax, so they contribute exactly 0 with exactly zero gradient whatever they hold; a
  NaN or ``+inf`` logit (or a row of only ``-inf``) of an unmasked token gives NaN.

  Args:
    student_logits: ``[..., V]`` student logits (any float dtype).
    labels: ``[...]`` integer token ids (global ids when the vocabulary is sharded).
    mask: ``None`` or bool/float ``[...]``; masked tokens contribute 0.
    reduction: ``"mean"`` (Σ m·d / max(Σ m, 1)), ``"sum"`` or ``"none"``.
    vocab_axis_name: mesh axis sharding ``V`` inside ``jax.shard_map`` (shard i holds ids
      ``[i·V_local, (i+1)·V_local)``), or ``None``.

  Returns:
    A float32 (float64 for float64 inputs) scalar, or ``[...]`` for ``reduction="none"``.

  Raises:
    TypeError: non-floating logits, non-integer labels, or a non-numeric mask.
    ValueError: labels or mask not of shape ``student_logits.shape[:-1]``, or an unknown reduction.

  Examples:
    >>> import jax.numpy as jnp
    >>> print(f"{float(cross_entropy(jnp.array([[2.0, 1.0, 0.0]]), jnp.array([0]))):.4f}")
    0.4076
  """
  student_logits = jnp.asarray(student_logits)
  labels = jnp.asarray(labels)
  check_logits("student_logits", student_logits)
  check_labels(labels, student_logits.shape[:-1])
  check_mask(mask, labels.shape)
  log_q = log_softmax(select_valid(student_logits.astype(compute_dtype(student_logits)), mask), vocab_axis_name)
  is_label = vocab_ids(log_q.shape[-1], vocab_axis_name) == labels[..., None]
  nll = -vocab_sum(jnp.where(is_label, log_q, 0.0), vocab_axis_name)
  return reduce_loss(nll, mask, reduction)
