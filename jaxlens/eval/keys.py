"""The report's keys: :data:`OUTPUT_KEY` for the output and :func:`lens_key` for each lens pair, and back.

:func:`lens_key` writes the key of the lens pair (teacher layer t, student layer s); :func:`lens_pair` is its
inverse. Scoring (:mod:`jaxlens.eval.teacher_forced`, :mod:`jaxlens.eval.units`) writes the keys; the report
(:mod:`jaxlens.eval.report`) and its plots (:mod:`jaxlens.eval.plots`) list the pairs through :func:`lens_keys`.
"""

from __future__ import annotations

#: Report key of the output (final-layer logits) alignment.
OUTPUT_KEY = "output"

_PREFIX = "lens/T"


def lens_key(teacher_layer: int, student_layer: int) -> str:
  """Report key of the lens pair (teacher hidden state ``teacher_layer``, student ``student_layer``)."""
  return f"{_PREFIX}{teacher_layer}-S{student_layer}"


def lens_pair(key: str) -> tuple[int, int]:
  """``(t, s)`` of a :func:`lens_key` (``"lens/T10-S2"`` → ``(10, 2)``)."""
  t, s = key.removeprefix(_PREFIX).split("-S")
  return int(t), int(s)


def lens_keys(report: dict) -> list[str]:
  """The lens-pair keys present in any student of ``report``, ordered by teacher then student layer."""
  keys = {k for student in report["students"].values() for k in student.get("alignment", {})
          if k.startswith(_PREFIX)}
  return sorted(keys, key=lens_pair)
