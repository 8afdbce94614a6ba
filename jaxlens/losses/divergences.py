"""Divergences by name, for configs and the lens loss: ``DIVERGENCES`` and :func:`get_divergence`."""

from collections.abc import Callable

from jaxlens.losses.adaptive_kl import adaptive_kl
from jaxlens.losses.jsd import jsd
from jaxlens.losses.kl import forward_kl
from jaxlens.losses.kl import reverse_kl
from jaxlens.losses.mixture import mix
from jaxlens.losses.skew import skew_kl
from jaxlens.losses.skew import skew_reverse_kl
from jaxlens.losses.tad import tad
from jaxlens.losses.tvd import tvd

DIVERGENCES: dict[str, Callable[..., object]] = {
    "adaptive_kl": adaptive_kl,
    "forward_kl": forward_kl,
    "jsd": jsd,
    "mix": mix,
    "reverse_kl": reverse_kl,
    "skew_kl": skew_kl,
    "skew_reverse_kl": skew_reverse_kl,
    "tad": tad,
    "tvd": tvd,
}


def get_divergence(name: str) -> Callable[..., object]:
  """Returns the teacher-first divergence called ``name`` (a key of ``DIVERGENCES``).

  Args:
    name: one of ``adaptive_kl``, ``forward_kl``, ``jsd``, ``mix``, ``reverse_kl``, ``skew_kl``,
      ``skew_reverse_kl``, ``tad``, ``tvd``.

  Returns:
    The function ``f(teacher_logits, student_logits, mask=None, **kwargs)``.

  Raises:
    ValueError: for an unknown name; the message lists the known ones.

  Examples:
    >>> get_divergence("jsd").__name__
    'jsd'
  """
  try:
    return DIVERGENCES[name]
  except (KeyError, TypeError):
    raise ValueError(f"unknown divergence {name!r}; known: {', '.join(sorted(DIVERGENCES))}") from None
