"""The core install is the loss library: jax + chex + numpy, nothing else (issue 18).

How: a fresh virtual environment **without** the system site-packages, into which only the installed
distributions that the requirements of ``pyproject.toml`` resolve to (recursively, markers and extras evaluated,
from the installed metadata) are linked; jaxlens itself comes from the source tree on ``PYTHONPATH``. That is the
environment ``pip install jaxlens`` (or ``jaxlens[extra]``) would give, built offline in ~1 s from what the test
environment already has (no index, no downloads, no build), and isolated: anything undeclared fails to import.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tomllib
import venv
from importlib import metadata

import pytest

packaging = pytest.importorskip("packaging")
from packaging.requirements import Requirement  # noqa: E402
from packaging.utils import canonicalize_name  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
HEAVY = ("flax", "optax", "orbax", "datasets", "matplotlib", "rouge_score", "gguf", "safetensors", "tokenizers",
         "yaml", "tqdm", "tensorboardX", "torch", "transformers")


def closure(extras: tuple[str, ...] = ()) -> set[str]:
  """Canonical names of every distribution that jaxlens (with ``extras``) needs, recursively."""
  todo = [(Requirement(r), "") for r in PROJECT["dependencies"]]
  for extra in extras:
    todo += [(Requirement(r), extra) for r in PROJECT["optional-dependencies"][extra]]
  seen: dict[str, set[str]] = {}
  while todo:
    req, extra = todo.pop()
    if req.marker is not None and not req.marker.evaluate({"extra": extra}):
      continue
    name = canonicalize_name(req.name)
    if name == "jaxlens":  # a self-reference such as jaxlens[models]
      todo += [(Requirement(r), e) for e in req.extras for r in PROJECT["optional-dependencies"][e]]
      continue
    new = {""} | set(req.extras)
    if name in seen and new <= seen[name]:
      continue
    seen[name] = seen.get(name, set()) | new
    todo += [(Requirement(r), e) for r in metadata.distribution(name).requires or () for e in new]
  return set(seen)


def make_env(path: pathlib.Path, distributions: set[str]) -> pathlib.Path:
  """A venv (no system site-packages, no pip) whose site-packages links exactly ``distributions``' files."""
  venv.EnvBuilder(system_site_packages=False, with_pip=False, symlinks=True).create(path)
  site = path / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
  for name in distributions:
    dist = metadata.distribution(name)
    tops = {pathlib.PurePath(f).parts[0] for f in dist.files or () if not str(f).startswith("..")}
    for top in tops:
      source = pathlib.Path(dist.locate_file(top))
      if source.exists() and not (site / top).exists():
        (site / top).symlink_to(source)
  return path / "bin" / "python"


def run(python: pathlib.Path, code: str) -> subprocess.CompletedProcess:
  env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "HOME": os.environ.get("HOME", "/")}
  return subprocess.run([str(python), "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_core_requirements_are_the_loss_library_only():
  names = {canonicalize_name(Requirement(r).name) for r in PROJECT["dependencies"]}
  assert names == {"jax", "chex", "numpy"}
  assert not closure() & {canonicalize_name(h) for h in ("flax", "optax", "orbax-checkpoint", "datasets")}


LOSSES = """
import sys
import jax.numpy as jnp
from jaxlens.losses import jsd, reverse_kl
t = jnp.array([[[2.0, 0.0, -1.0]]]); s = jnp.array([[[0.0, 1.0, 0.0]]]); m = jnp.ones((1, 1), bool)
print(float(jsd(t, s, m)), float(reverse_kl(t, s, m)))
for name in {heavy}:
  try:
    __import__(name)
  except ImportError:
    continue
  raise SystemExit(f"{{name}} is importable: the environment is not isolated")
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({heavy}))
assert not loaded, loaded
"""


def test_jaxlens_losses_work_in_a_core_only_environment(tmp_path):
  python = make_env(tmp_path / "core", closure())
  result = run(python, LOSSES.format(heavy=HEAVY))
  assert result.returncode == 0, result.stderr[-2000:]
  values = [float(v) for v in result.stdout.split()]
  assert len(values) == 2 and all(v > 0 for v in values)


ALL = """
import sys
def loaded(prefix):
  return [m for m in sys.modules if m.startswith(prefix)]
import jaxlens.export.cli, jaxlens.export.core
assert not loaded("jaxlens.train") and not loaded("jaxlens.eval"), "export must not import train or eval"
import jaxlens.eval.cli, jaxlens.eval.loading
assert not loaded("jaxlens.train"), "eval must not import train"
import jaxlens.train.cli, jaxlens.train.trainer
"""


def test_every_command_imports_with_the_all_extra_and_export_imports_neither_train_nor_eval(tmp_path):
  python = make_env(tmp_path / "all", closure(("all",)))
  result = run(python, ALL)
  assert result.returncode == 0, result.stderr[-2000:]
