"""The persistent compilation cache: written, reused by the next process, switched off, harmless
when its folder cannot be written. Every process here is a fresh one (JAX opens its cache once
per process); cache use is read from JAX's monitoring events, never from timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxvision import compilation_cache

HELPERS = Path(__file__).parent / "helpers"
HITS = "/jax/compilation_cache/cache_hits"
WRITES = "/jax/compilation_cache/cache_misses"  # recorded when an entry is written

# Switches the cache on as a mode says, compiles one function, reports what the cache did.
CHILD = r"""
import json, sys, warnings
import jax
import jax.numpy as jnp

events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
from jaxvision import compilation_cache

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    if sys.argv[1] == "enable":
        compilation_cache.enable()
        compilation_cache.enable()  # a second call (e.g. a second command) changes nothing
    else:  # "cli": the jaxvision command's start-up with these arguments
        from jaxvision.cli import build_parser, start_compilation_cache

        start_compilation_cache(build_parser().parse_args(sys.argv[2:]))
f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum() * 3.0)
value = float(f(jnp.arange(16.0).reshape(4, 4) / 16))
folder = compilation_cache.active_dir()
print(json.dumps({
    "folder": str(folder) if folder else None,
    "value": value,
    "hits": events.count("/jax/compilation_cache/cache_hits"),
    "writes": events.count("/jax/compilation_cache/cache_misses"),
    "warnings": [str(w.message) for w in caught
                 if w.category is compilation_cache.CompilationCacheWarning],
}))
"""


# The child's function at its input, in float64 without JAX.
_X = np.arange(16.0).reshape(4, 4) / 16
EXPECTED = float(np.tanh(_X @ _X.T).sum() * 3.0)


def _env(cache_dir: Path | str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != compilation_cache.ENV_SWITCH}
    env[compilation_cache.ENV_DIR] = str(cache_dir)
    env.update(extra)
    return env


def _child(cache_dir: Path | str, *args: str, **extra: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        env=_env(cache_dir, **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*-cache")) if folder.is_dir() else []


def test_a_second_process_loads_what_the_first_compiled(tmp_path):
    cache = tmp_path / "xla"
    first = _child(cache, "enable")
    assert first["folder"] == str(cache) and first["warnings"] == []
    assert first["hits"] == 0 and first["writes"] >= 1
    written = _entries(cache)
    assert any(name.startswith("jit__lambda-") for name in written), written

    second = _child(cache, "enable")
    assert second["hits"] >= 1 and second["writes"] == 0
    assert second["value"] == first["value"] == pytest.approx(EXPECTED, rel=1e-5)
    assert _entries(cache) == written


@pytest.mark.parametrize("value", ["0", "off"])
def test_the_environment_variable_switches_it_off(tmp_path, value):
    cache = tmp_path / "xla"
    out = _child(cache, "enable", **{compilation_cache.ENV_SWITCH: value})
    assert out["folder"] is None and out["hits"] == out["writes"] == 0
    assert _entries(cache) == []


@pytest.mark.parametrize(
    ("argv", "cached"),
    [
        (["train", "m"], True),
        (["--no-compilation-cache", "train", "m"], False),
        (["train", "m", "--no-compilation-cache"], False),
        (["bench", "m"], False),  # bench measures cold compiles by default
        (["bench", "m", "--compilation-cache"], True),
    ],
)
def test_the_command_line_turns_it_on_for_commands_that_compile(tmp_path, argv, cached):
    cache = tmp_path / "xla"
    out = _child(cache, "cli", *argv)
    assert (out["folder"] == str(cache)) is cached
    assert bool(_entries(cache)) is cached and (out["writes"] >= 1) is cached


@pytest.mark.parametrize("how", [["enable"], ["cli", "train", "m"]])
def test_an_unwritable_folder_warns_once_and_compiles_anyway(tmp_path, how):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = _child(blocker / "xla", *how)
    assert out["folder"] is None and out["hits"] == out["writes"] == 0
    assert len(out["warnings"]) == 1 and str(blocker / "xla") in out["warnings"][0]
    assert out["value"] == pytest.approx(EXPECTED)


def test_jaxvision_train_uses_the_cache(tmp_path):
    """The real command, end to end: the cache is on by default. It runs in the suite's shared
    folder with test_cli's arguments, so in a full run one of the two compiles the step and the
    other loads it; JAX logs either the write or the hit (JAX_LOG_COMPILES, explained misses)."""
    folder = compilation_cache.active_dir() or tmp_path / "xla"
    run = subprocess.run(
        [sys.executable, str(HELPERS / "tiny_model.py"), "train", "tiny_test_cnn", "--data",
         "digits", "--image-size", "16", "--batch-size", "128", "--epochs", "1", "--no-progress",
         "--max-steps", "2", "--output-dir", str(tmp_path / "run")],
        env=_env(folder, JAX_LOG_COMPILES="1", JAX_EXPLAIN_CACHE_MISSES="1"),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    used = (
        "Persistent compilation cache hit for 'jit_train_step'",
        "Writing jit_train_step to persistent compilation cache",
    )
    assert any(line in run.stderr for line in used), run.stderr[-3000:]
    assert any(name.startswith("jit_train_step-") for name in _entries(folder))


def test_default_folder(monkeypatch, tmp_path):
    monkeypatch.delenv(compilation_cache.ENV_DIR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compilation_cache.default_dir() == tmp_path / "jaxvision" / "xla"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # not absolute: ignored
    assert compilation_cache.default_dir() == Path.home() / ".cache" / "jaxvision" / "xla"
    monkeypatch.setenv(compilation_cache.ENV_DIR, str(tmp_path / "mine"))
    assert compilation_cache.default_dir() == tmp_path / "mine"


def test_the_suite_runs_with_a_cache_its_processes_share():
    """conftest.py switches the cache on in a folder that workers and subprocesses inherit."""
    if compilation_cache.disabled_by_env():
        pytest.skip(f"{compilation_cache.ENV_SWITCH} switches the cache off for this run")
    folder = compilation_cache.active_dir()
    assert folder is not None and folder == Path(os.environ[compilation_cache.ENV_DIR])
