"""Every docstring example in the product and the lab runs, and gives what it shows
(the suite has one root, ``tests/``; the examples live beside the code they show)."""

import doctest
import importlib
import pkgutil
import sys
from pathlib import Path

import pytest

import deid_client
import research
import server
import simulations

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

def _modules() -> list[str]:
    names = []
    for package in (deid_client, server, research, simulations):
        names.append(package.__name__)
        names += [m.name for m in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")]
    # the benchmarks are scripts beside their _repo helper, not a package
    names += [p.stem for p in sorted(BENCHMARKS.glob("[a-z]*.py")) if ">>>" in p.read_text()]
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name, monkeypatch):
    monkeypatch.setattr(sys, "path", [str(BENCHMARKS), *sys.path])
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
