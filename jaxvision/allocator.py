"""The memory allocator the ``jaxvision`` command runs under: tcmalloc when the system has it.

Why it matters on CPU. XLA:CPU allocates the intermediate buffers of a compiled step afresh every
time the step runs, and frees them when it returns. glibc's ``malloc`` serves large requests
(any above its 32 MB mmap limit, and on XLA's worker threads any too large for a thread arena's
64 MB heap) with a fresh ``mmap`` and gives them back with ``munmap`` on free, so every step
page-faults its whole working set in from the kernel again, zero-filling each 4 KiB page.
Measured on this project's 2-core machine (benchmarks/README.md, "Memory allocator"): the
EfficientNet-B0 train step at batch 8 took 468,000 page faults and 0.72 s of kernel time per
step, three quarters of the step; YOLOv8n-cls 39,000. glibc's tuning knobs (``mallopt``,
``GLIBC_TUNABLES``: no mmap, no trimming, one arena) cut the faults but not the time. tcmalloc
keeps freed memory for the next request: no page faults after the first steps, and the same
train steps run 1.5x (EfficientNet-B0) and 1.2x (YOLOv8n-cls) faster. Google's own JAX
deployments and apple/axlearn run under tcmalloc for the same reason.

What the command does. An allocator can only be chosen before a process starts (``LD_PRELOAD``),
so on Linux the ``jaxvision`` command (and ``python -m jaxvision.bench``) restarts itself once,
before doing anything, with tcmalloc preloaded, when all of these hold:

* ``JAXVISION_ALLOCATOR`` is unset or ``tcmalloc`` (``system`` - also ``0``, ``off``, ``no``,
  ``false`` - switches this off; a path to a shared library preloads that library instead);
* no tcmalloc or jemalloc is loaded already (e.g. by your own ``LD_PRELOAD``);
* a tcmalloc library is installed: ``libtcmalloc_minimal.so.4`` or ``libtcmalloc.so.4`` (Debian
  and Ubuntu: ``apt install libtcmalloc-minimal4``; Fedora: ``gperftools-libs``; conda:
  ``gperftools``). Without one the command runs on glibc, as before, and ``jaxvision env`` says
  how to install it.

The restart replaces the process (``os.execve``): same interpreter, arguments, working folder and
open files, so nothing is lost; the marker ``JAXVISION_ALLOCATOR_PRELOADED`` (the library it
added) stops it from restarting twice, and lets ``jaxvision bench`` start the PyTorch reference
without it (PyTorch is timed under the allocator its users get by default; set ``LD_PRELOAD``
yourself to give both frameworks the same one).

From Python (notebooks, your own scripts) nothing is restarted: start the interpreter with
``LD_PRELOAD=<path printed by jaxvision env>`` to get the same speed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ENV_SWITCH = "JAXVISION_ALLOCATOR"
ENV_MARKER = "JAXVISION_ALLOCATOR_PRELOADED"
OFF_VALUES = frozenset({"system", "0", "off", "no", "false"})
# Sonames in order of preference: the minimal build has no heap profiler hooks (smaller, faster).
TCMALLOC_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
# Where distributions and conda put them (the dynamic loader's cache is asked first).
LIBRARY_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
    "/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
)
# Libraries whose presence in the process means malloc is already not glibc's.
KNOWN_ALLOCATORS = {"libtcmalloc": "tcmalloc", "libjemalloc": "jemalloc", "libmimalloc": "mimalloc"}


def _ldconfig_paths() -> dict[str, str]:
    """soname -> path from the dynamic loader's cache (``ldconfig -p``); empty if unavailable."""
    for exe in ("/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"):
        try:
            out = subprocess.run([exe, "-p"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        paths: dict[str, str] = {}
        for line in out.splitlines():
            name, _, path = line.strip().partition(" => ")
            soname = name.split(" ", 1)[0]
            if path and soname not in paths:
                paths[soname] = path.strip()
        return paths
    return {}


def find_tcmalloc(dirs: Sequence[str | os.PathLike[str]] | None = None) -> str | None:
    """The path of an installed tcmalloc shared library, or None.

    Looks in the loader's cache, then in the usual library folders (``dirs`` replaces both, for
    tests), then in this Python's own ``lib`` folder (conda's gperftools).
    """
    if dirs is None:
        cache = _ldconfig_paths()
        for name in TCMALLOC_NAMES:
            if name in cache and os.path.isfile(cache[name]):
                return cache[name]
        dirs = [*LIBRARY_DIRS, os.path.join(sys.prefix, "lib")]
    for name in TCMALLOC_NAMES:
        for d in dirs:
            path = Path(d) / name
            if path.is_file():
                return str(path)
    return None


def active(maps: str | None = None) -> str:
    """Which allocator this process runs on: "tcmalloc", "jemalloc", "mimalloc" or "system".

    Read from the shared libraries mapped into the process (``/proc/self/maps``; ``maps`` gives
    its text, for tests); "system" where that file does not exist.
    """
    if maps is None:
        try:
            maps = Path("/proc/self/maps").read_text()
        except OSError:
            return "system"
    for line in maps.splitlines():
        lib = os.path.basename(line.rsplit(" ", 1)[-1])
        for prefix, name in KNOWN_ALLOCATORS.items():
            if lib.startswith(prefix):
                return name
    return "system"


def restart_plan(
    environ: Mapping[str, str],
    orig_argv: Sequence[str],
    *,
    platform: str,
    current: str,
    find=find_tcmalloc,
) -> tuple[str, list[str], dict[str, str]] | None:
    """``(executable, argv, environment)`` to restart this command under tcmalloc, or None.

    None when switched off (``JAXVISION_ALLOCATOR=system``), not on Linux, already restarted
    (``JAXVISION_ALLOCATOR_PRELOADED`` set), another allocator already loaded (``current``), or
    no library found. ``orig_argv`` is the interpreter's own command line (``sys.orig_argv``), so
    ``jaxvision ...``, ``python -m jaxvision ...`` and ``python -m jaxvision.bench ...`` restart
    as themselves.
    """
    switch = environ.get(ENV_SWITCH, "").strip()
    if switch.lower() in OFF_VALUES or platform != "linux" or environ.get(ENV_MARKER):
        return None
    if current != "system" or not orig_argv:
        return None
    if switch and switch.lower() != "tcmalloc":
        library = switch  # an explicit library to preload
        if not os.path.isfile(library):
            print(
                f"jaxvision: {ENV_SWITCH}={switch!r} is neither 'tcmalloc', 'system' nor an "
                "existing file; running on the system allocator",
                file=sys.stderr,
            )
            return None
    else:
        library = find()
        if library is None:
            return None
    env = dict(environ)
    env["LD_PRELOAD"] = ":".join(p for p in (library, environ.get("LD_PRELOAD", "")) if p)
    env[ENV_MARKER] = library
    # gperftools' tcmalloc reports every allocation over 1 GiB on stderr; a large model's train
    # step makes such allocations on purpose.
    env.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 40))
    return sys.executable, [sys.executable, *orig_argv[1:]], env


def restart_with_tcmalloc() -> None:
    """Replace this process by the same command under tcmalloc (see the module docstring); return
    without doing anything when :func:`restart_plan` says no. Call it first thing, before any
    file is written or thread started."""
    plan = restart_plan(
        os.environ,
        getattr(sys, "orig_argv", sys.argv),
        platform=sys.platform,
        current=active(),
    )
    if plan is None:
        return
    executable, argv, env = plan
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(executable, argv, env)
    except OSError as e:  # cannot happen short of a vanished interpreter; run on regardless
        print(f"jaxvision: could not restart under tcmalloc ({e}); continuing", file=sys.stderr)


def without_our_preload(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` minus the library :func:`restart_with_tcmalloc` preloaded (for child processes
    that should run under the allocator they would get by default, e.g. the PyTorch reference)."""
    env = dict(environ)
    added = env.pop(ENV_MARKER, None)
    if added and "LD_PRELOAD" in env:
        rest = [p for p in env["LD_PRELOAD"].split(":") if p and p != added]
        if rest:
            env["LD_PRELOAD"] = ":".join(rest)
        else:
            del env["LD_PRELOAD"]
    return env


def describe() -> dict[str, str | None]:
    """What ``jaxvision env`` prints about the allocator: which one runs, how it got there, and
    the tcmalloc library this machine has (None if none)."""
    current = active()
    marker = os.environ.get(ENV_MARKER)
    if marker:
        how = f"preloaded by the jaxvision command ({marker})"
    elif current != "system":
        how = "preloaded by the caller (LD_PRELOAD)"
    elif os.environ.get(ENV_SWITCH, "").strip().lower() in OFF_VALUES:
        how = f"{ENV_SWITCH} switches tcmalloc off"
    else:
        how = "glibc malloc"
    return {"allocator": current, "how": how, "tcmalloc_library": find_tcmalloc()}


__all__ = [
    "ENV_MARKER",
    "ENV_SWITCH",
    "active",
    "describe",
    "find_tcmalloc",
    "restart_plan",
    "restart_with_tcmalloc",
    "without_our_preload",
]
