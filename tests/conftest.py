"""Shared fixtures: a tiny registered CNN for fast engine/CLI tests, and digits data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "helpers"))

import tiny_model  # noqa: E402

# Hypothesis: no deadline (JAX compiles on first call) and few examples, to keep CI fast.
from hypothesis import settings  # noqa: E402

settings.register_profile("jaxvision", deadline=None, max_examples=15, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "jaxvision"))


@pytest.fixture(scope="session")
def tiny():
    """Registers ``tiny_test_cnn`` (BatchNorm, dropout, drop path) for the session."""
    tiny_model.register()
    yield tiny_model.NAME
    tiny_model.unregister()
