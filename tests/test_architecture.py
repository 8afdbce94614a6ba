"""The dependency rules of docs/architecture.md, read from the source: every ``import`` of every module (also the
ones inside functions) of each part of jaxlens, parsed with ``ast``."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "jaxlens"
PARTS = ("losses", "models", "data", "parallel", "run", "train", "eval", "export")

#: part -> the parts of jaxlens it must never import (the arrows of docs/architecture.md point the other way).
FORBIDDEN = {
    "losses": set(PARTS) - {"losses"},  # imports nothing of jaxlens: other projects import it alone
    "models": {"losses", "run", "train", "eval"},  # knows no objective, loop or metric
    "data": {"run", "train", "eval"},
    "parallel": {"models", "losses", "run", "train", "eval"},  # knows no model
    "run": {"parallel", "train", "eval"},  # the run-folder contract: losses, models, data only
    "eval": {"train", "export"},  # evaluation never imports training
    "export": {"train", "eval"},  # a run folder's student as HF / GGUF files
}


def imported_parts(path: pathlib.Path) -> list[tuple[int, str, str]]:
  """``(line, part, statement)`` of every import of ``jaxlens.<part>`` in ``path`` (``from jaxlens import x``
  counts as ``jaxlens.x``; relative imports stay inside their part)."""
  out = []
  for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names = ([f"{node.module}.{alias.name}" for alias in node.names] if node.module == "jaxlens"
               else [node.module])
    else:
      continue
    for name in names:
      parts = name.split(".")
      if parts[0] == "jaxlens" and len(parts) > 1 and parts[1] in PARTS:
        out.append((node.lineno, parts[1], ast.unparse(node)))
  return sorted(out)


def violations(part: str) -> list[str]:
  return [f"jaxlens/{path.relative_to(PACKAGE)}:{line}: {statement}"
          for path in sorted((PACKAGE / part).rglob("*.py"))
          for line, target, statement in imported_parts(path) if target in FORBIDDEN[part]]


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_dependencies_point_one_way(part):
  assert (PACKAGE / part).is_dir()
  assert violations(part) == [], f"jaxlens/{part} must not import {sorted(FORBIDDEN[part])}"


def test_the_check_sees_every_kind_of_import(tmp_path):
  """The parser catches top-level, ``from jaxlens import x`` and in-function imports (a test that can fail)."""
  source = tmp_path / "m.py"
  source.write_text("import jaxlens.train.trainer\nfrom jaxlens import eval as e, models\n"
                    "def f():\n  from jaxlens.losses.kl import forward_kl\n  import numpy\n")
  assert [(line, part) for line, part, _ in imported_parts(source)] == [(1, "train"), (2, "eval"), (2, "models"),
                                                                        (4, "losses")]
