"""Static input checks shared by every loss: dtypes, shapes and hyper-parameter ranges.

Only static properties (dtype, shape, Python-number arguments) are checked, so every check also works under
``jax.jit``. A hyper-parameter passed as a traced array is not range-checked.
"""

import numbers
from collections.abc import Collection
from typing import Any

import jax.numpy as jnp

REDUCTIONS = ("mean", "sum", "none")


def check_floating(name: str, x: Any) -> None:
  """Raises ``TypeError`` unless ``x`` has a floating-point dtype."""
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"{name} must be floating-point logits, got dtype {x.dtype}")


def check_logits(name: str, logits: Any) -> None:
  """Raises unless ``logits`` is a floating-point array with a vocabulary axis."""
  check_floating(name, logits)
  if logits.ndim < 1:
    raise ValueError(f"{name} needs a vocabulary axis, got shape {tuple(logits.shape)}")


def check_logits_pair(teacher_logits: Any, student_logits: Any) -> None:
  """Raises unless teacher and student logits are floating-point arrays of the same shape."""
  check_logits("teacher_logits", teacher_logits)
  check_logits("student_logits", student_logits)
  if teacher_logits.shape != student_logits.shape:
    raise ValueError(
        f"teacher_logits shape {tuple(teacher_logits.shape)} and student_logits shape "
        f"{tuple(student_logits.shape)} must match (same tokens, same vocabulary)"
    )


def check_mask(mask: Any, per_token_shape: tuple[int, ...]) -> None:
  """Raises unless ``mask`` is None or a bool/numeric array of the per-token shape (logits without V)."""
  if mask is None:
    return
  if not (jnp.issubdtype(mask.dtype, jnp.bool_) or jnp.issubdtype(mask.dtype, jnp.number)):
    raise TypeError(f"mask must be bool or numeric, got dtype {mask.dtype}")
  if tuple(mask.shape) != tuple(per_token_shape):
    raise ValueError(
        f"mask shape {tuple(mask.shape)} must equal the per-token shape {tuple(per_token_shape)} "
        "(the logits' shape without the vocabulary axis)"
    )


def check_labels(labels: Any, per_token_shape: tuple[int, ...]) -> None:
  """Raises unless ``labels`` is an integer array of the per-token shape."""
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(f"labels must be integer token ids, got dtype {labels.dtype}")
  if tuple(labels.shape) != tuple(per_token_shape):
    raise ValueError(
        f"labels shape {tuple(labels.shape)} must equal the logits' shape without the vocabulary axis "
        f"{tuple(per_token_shape)}"
    )


def check_choice(name: str, value: Any, choices: Collection[Any]) -> None:
  """Raises ``ValueError`` unless ``value`` is one of ``choices``."""
  if value not in choices:
    raise ValueError(f"{name} must be one of {sorted(choices, key=str)}, got {value!r}")


def _is_number(value: Any) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_positive(name: str, value: Any) -> None:
  """Raises ``ValueError`` unless ``value`` (when a Python number) is finite and > 0."""
  if _is_number(value) and not (0 < value < float("inf")):
    raise ValueError(f"{name} must be finite and > 0, got {value!r}")


def check_non_negative(name: str, value: Any) -> None:
  """Raises ``ValueError`` unless ``value`` (when a Python number) is finite and >= 0."""
  if _is_number(value) and not (0 <= value < float("inf")):
    raise ValueError(f"{name} must be finite and >= 0, got {value!r}")


def check_unit_interval(name: str, value: Any) -> float:
  """Returns ``value`` as a float; raises unless it is a Python number in [0, 1].

  Mixture weights select code paths at trace time (an endpoint drops a term), so they must be static.
  """
  if not _is_number(value):
    raise TypeError(f"{name} must be a Python number in [0, 1], got {type(value).__name__}")
  if not 0.0 <= value <= 1.0:
    raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
  return float(value)


def check_positive_int(name: str, value: Any) -> None:
  """Raises ``ValueError`` unless ``value`` is a Python int >= 1."""
  if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
    raise ValueError(f"{name} must be an int >= 1, got {value!r}")
