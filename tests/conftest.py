"""Shared fixtures: a tiny registered CNN for fast engine/CLI tests, and digits data.

The suite runs with JAX's persistent compilation cache on (:mod:`jaxvision.compilation_cache`), in
``.pytest_cache/d/jaxvision-xla`` unless ``JAXVISION_CACHE_DIR`` names another folder: pytest-xdist
workers and the ``jaxvision`` commands the tests start inherit the folder, so a function compiled
by one of them is loaded, not compiled again, by the others (and by the next run).
``JAXVISION_COMPILATION_CACHE=0`` runs the suite with cold compiles; ``pytest --cache-clear``
empties the folder.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "helpers"))

import tiny_model  # noqa: E402

# Hypothesis: no deadline (JAX compiles on first call) and few examples, to keep CI fast.
from hypothesis import settings  # noqa: E402

from jaxvision import compilation_cache  # noqa: E402

settings.register_profile("jaxvision", deadline=None, max_examples=15, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "jaxvision"))


def pytest_configure(config):
    # The controller picks the folder; xdist workers (and subprocesses) inherit it through the
    # environment, as the workers are started after this hook.
    if not hasattr(config, "workerinput") and not os.environ.get(compilation_cache.ENV_DIR):
        cache = getattr(config, "cache", None)
        folder = cache.mkdir("jaxvision-xla") if cache is not None else None
        os.environ[compilation_cache.ENV_DIR] = str(
            folder or tempfile.mkdtemp(prefix="jaxvision-xla-")
        )
    compilation_cache.enable()


@pytest.fixture(scope="session")
def tiny():
    """Registers ``tiny_test_cnn`` (BatchNorm, dropout, drop path) for the session."""
    tiny_model.register()
    yield tiny_model.NAME
    tiny_model.unregister()
