"""The report's lens-pair keys read back: which lens pairs a report holds, in layer order.

:func:`jaxlens.eval.alignment.lens_key` writes the key of the lens pair (teacher layer t, student layer s);
:func:`lens_pair` is its inverse. The report (:mod:`jaxlens.eval.report`) and its plots
(:mod:`jaxlens.eval.plots`) both list the pairs through :func:`lens_keys`.
"""

from __future__ import annotations

from jaxlens.eval.alignment import lens_key

_PREFIX = lens_key(0, 0).partition("T")[0] + "T"  # "lens/T"


def lens_pair(key: str) -> tuple[int, int]:
  """``(t, s)`` of a :func:`~jaxlens.eval.alignment.lens_key` (``"lens/T10-S2"`` → ``(10, 2)``)."""
  t, s = key.removeprefix(_PREFIX).split("-S")
  return int(t), int(s)


def lens_keys(report: dict) -> list[str]:
  """The lens-pair keys present in any student of ``report``, ordered by teacher then student layer."""
  keys = {k for student in report["students"].values() for k in student.get("alignment", {})
          if k.startswith(_PREFIX)}
  return sorted(keys, key=lens_pair)
