"""The pipeline every teacher–student divergence shares.

checks → stop-gradient on the teacher → float32 (or wider) cast → masked tokens' rows replaced by zeros → division by
the temperature → log-softmax over the (possibly sharded) vocabulary → a per-token divergence on log-probabilities
(:mod:`jaxlens.losses.per_token`) → optional τ² → masked reduction.
"""

from collections.abc import Callable

import jax.numpy as jnp
from jax import lax

from jaxlens.losses._checks import REDUCTIONS
from jaxlens.losses._checks import check_choice
from jaxlens.losses._checks import check_logits_pair
from jaxlens.losses._checks import check_mask
from jaxlens.losses._checks import check_positive
from jaxlens.losses._vocab import log_softmax
from jaxlens.losses.reduction import reduce_loss

PerTokenDivergence = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]


def compute_dtype(*arrays: jnp.ndarray) -> jnp.dtype:
  """float32, or float64 when an input is float64 (bf16/f16 inputs are computed in float32)."""
  return jnp.result_type(jnp.float32, *(a.dtype for a in arrays))


def select_valid(logits: jnp.ndarray, mask: jnp.ndarray | None) -> jnp.ndarray:
  """``logits [..., V]`` with the rows of masked tokens (mask == 0) replaced by zeros, before any arithmetic.

  A select, not a product: whatever a masked row holds (NaN, ±inf), nothing of it reaches the value or the
  backward pass — its cotangent is exactly zero and the zeros' own arithmetic is finite.
  """
  if mask is None:
    return logits
  return jnp.where(jnp.asarray(mask)[..., None] != 0, logits, jnp.zeros((), logits.dtype))


def teacher_student_log_probs(
    teacher_logits: jnp.ndarray,
    student_logits: jnp.ndarray,
    mask: jnp.ndarray | None,
    *,
    temperature: float,
    vocab_axis_name: str | None,
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Checks, then ``(log p, log q)`` = log-softmax of z_T/τ (stop-gradient) and z_S/τ over the vocabulary.

  Masked tokens' rows are zeros (:func:`select_valid`), so their log-probabilities are uniform and finite.
  """
  teacher_logits = jnp.asarray(teacher_logits)
  student_logits = jnp.asarray(student_logits)
  check_logits_pair(teacher_logits, student_logits)
  check_mask(mask, student_logits.shape[:-1])
  check_positive("temperature", temperature)
  dtype = compute_dtype(teacher_logits, student_logits)
  teacher = select_valid(lax.stop_gradient(teacher_logits).astype(dtype), mask) / temperature
  student = select_valid(student_logits.astype(dtype), mask) / temperature
  return log_softmax(teacher, vocab_axis_name), log_softmax(student, vocab_axis_name)


def teacher_student_divergence(
    per_token_divergence: PerTokenDivergence,
    teacher_logits: jnp.ndarray,
    student_logits: jnp.ndarray,
    mask: jnp.ndarray | None,
    *,
    temperature: float,
    reduction: str,
    scale_by_temperature_squared: bool,
    vocab_axis_name: str | None,
) -> jnp.ndarray:
  """Runs ``per_token_divergence(log_p, log_q)`` on p = softmax(z_T/τ), q = softmax(z_S/τ) and reduces it.

  ``log_p`` carries no gradient (the teacher is frozen). ``per_token_divergence`` maps ``[..., V]`` log-probs
  (``V`` local when ``vocab_axis_name`` is set) to ``[...]`` per-token values (one of :mod:`jaxlens.losses.per_token`).
  Masked tokens contribute exactly 0 and get exactly zero gradient whatever their logits hold; a NaN or ``+inf``
  logit, or a row of only ``-inf``, of an unmasked token makes the result NaN.
  """
  check_choice("reduction", reduction, REDUCTIONS)
  log_p, log_q = teacher_student_log_probs(teacher_logits, student_logits, mask, temperature=temperature,
                                           vocab_axis_name=vocab_axis_name)
  per_token = per_token_divergence(log_p, log_q)
  if scale_by_temperature_squared:
    per_token = per_token * jnp.square(jnp.asarray(temperature, per_token.dtype))
  return reduce_loss(per_token, mask, reduction)
