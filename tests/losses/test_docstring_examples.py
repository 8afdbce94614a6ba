"""The ``Examples`` in every ``jaxlens.losses`` docstring run and print what they promise."""

import doctest
import importlib
import pkgutil

import pytest

import jaxlens.losses

MODULES = sorted(m.name for m in pkgutil.iter_modules(jaxlens.losses.__path__, "jaxlens.losses."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
  result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
  assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples failed in {name}"


def test_the_public_losses_have_examples():
  finder = doctest.DocTestFinder()
  examples = sum(len(t.examples) for n in MODULES for t in finder.find(importlib.import_module(n)))
  assert examples >= 10, examples
