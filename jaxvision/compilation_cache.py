"""JAX's persistent compilation cache, switched on for the ``jaxvision`` command and the tests.

XLA compiles every jitted function the first time a process calls it: a few seconds for a small
model's train step, half a minute for EfficientNet-B0's. JAX can keep the compiled executables
on disk and load them in the next process instead of compiling again (the cache key covers the
computation, the jax/jaxlib version, the backend and the CPU it compiled for, ``XLA_FLAGS`` and
the compile options, so a changed model, flag or machine compiles afresh).

:func:`enable` points JAX at a per-user folder:

1. ``$JAXVISION_CACHE_DIR`` if set;
2. else ``$XDG_CACHE_HOME/jaxvision/xla`` (when ``XDG_CACHE_HOME`` is an absolute path);
3. else ``~/.cache/jaxvision/xla``.

Every executable is written, however fast it compiled (JAX's own default only keeps those that
took over a second, which leaves the dozens of small jitted helpers of a training run compiling
at every start). The folder is not size-capped: JAX's least-recently-used eviction
(``jax_compilation_cache_max_size``) rescans the whole folder under a file lock at every write,
0.3 s with the test suite's 2,600 entries, which would cost more than the cache saves. Delete the
folder at any time to reclaim the space (a ``jaxvision train`` start writes a few MB). Processes
sharing the folder (pytest-xdist workers) may at worst read an entry another is still writing:
JAX then warns and compiles the function itself.

Switching it off: ``JAXVISION_COMPILATION_CACHE=0`` (also ``false``, ``no``, ``off``) or the
command's global ``--no-compilation-cache`` option. A folder that cannot be written is reported
once (a :class:`CompilationCacheWarning`) and the command runs on without the cache.

A cache folder JAX was already given (``JAX_COMPILATION_CACHE_DIR``, ``jax.config.update``) is
left as it is. The folder must be set before the process's first compilation: JAX opens its
cache once, on the first compile, and keeps it for the life of the process.

The compiled code is trusted: never point the cache at a folder that other users can write to
(anyone who can write there can make your process run their code). The default folder is
created readable by its owner only.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

from jaxvision.errors import JaxvisionWarning

ENV_DIR = "JAXVISION_CACHE_DIR"
ENV_SWITCH = "JAXVISION_COMPILATION_CACHE"
OFF_VALUES = frozenset({"0", "false", "no", "off"})
# Cached executables of small jitted helpers load faster than they compile, so cache them all.
MIN_COMPILE_TIME_S = 0.0

_warned = False


class CompilationCacheWarning(JaxvisionWarning):
    """The persistent compilation cache could not be used; compilation goes on without it."""


def default_dir() -> Path:
    """The cache folder :func:`enable` uses when given none (see the module docstring)."""
    explicit = os.environ.get(ENV_DIR)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "jaxvision" / "xla"


def disabled_by_env() -> bool:
    """True when ``$JAXVISION_COMPILATION_CACHE`` says off (0, false, no, off)."""
    return os.environ.get(ENV_SWITCH, "").strip().lower() in OFF_VALUES


def _writable(path: Path) -> str | None:
    """None if ``path`` is (made) a folder this process can write a file in, else the reason."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
    except OSError as e:
        return f"{type(e).__name__}: {e.strerror or e}"
    return None


def _warn_once(message: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(message, CompilationCacheWarning, stacklevel=3)


def enable(path: str | os.PathLike[str] | None = None) -> Path | None:
    """Switch on JAX's persistent compilation cache; returns its folder, or None when off.

    ``path`` defaults to :func:`default_dir`. Nothing is changed (and None returned) when
    ``$JAXVISION_COMPILATION_CACHE`` is off; a folder JAX already has is kept (and returned)
    unless ``path`` names another. An unwritable folder warns once and leaves the cache off.
    Call it before the first compilation of the process (JAX opens the cache once).
    """
    import jax

    if disabled_by_env():
        disable()
        return None
    configured = jax.config.jax_compilation_cache_dir
    if path is None and configured and jax.config.jax_enable_compilation_cache:
        return Path(configured)
    folder = Path(path).expanduser() if path is not None else default_dir()
    problem = _writable(folder)
    if problem is not None:
        _warn_once(
            f"jaxvision: the compilation cache is off: cannot write to {folder} ({problem}); "
            f"set {ENV_DIR} to a writable folder, or {ENV_SWITCH}=0 to silence this"
        )
        return None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_S)
    # -1: no minimum entry size, and JAX may not raise it behind our back.
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    jax.config.update("jax_compilation_cache_max_size", -1)  # no eviction (module docstring)
    return folder


def disable() -> None:
    """Switch JAX's persistent compilation cache off for this process (before its first compile:
    JAX decides once per process whether it uses the cache)."""
    import jax

    jax.config.update("jax_enable_compilation_cache", False)


def active_dir() -> Path | None:
    """The folder JAX caches compiled executables in for this process, or None when it does not."""
    import jax

    configured = jax.config.jax_compilation_cache_dir
    if configured and jax.config.jax_enable_compilation_cache:
        return Path(configured)
    return None


__all__ = [
    "CompilationCacheWarning",
    "ENV_DIR",
    "ENV_SWITCH",
    "active_dir",
    "default_dir",
    "disable",
    "disabled_by_env",
    "enable",
]
