"""Shared test setup: offline, loopback only, deterministic."""

from __future__ import annotations

import os

import numpy as np
import pytest

# No hub may be reached from a test, whatever library asks (the socket guard in
# pyproject's addopts is the hard stop; these make libraries fail fast instead).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def secret() -> bytes:
    return b"test-site-secret-0123456789abcdef"
