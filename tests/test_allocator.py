"""The jaxvision command's restart under tcmalloc (jaxvision.allocator) and ``jaxvision env``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxvision import allocator

GLIBC_MAPS = """\
7f00-7f10 r-xp 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6
7f20-7f30 r-xp 00000000 08:01 2 /usr/lib/x86_64-linux-gnu/libm.so.6
7f40-7f50 rw-p 00000000 00:00 0 [heap]
"""


def test_active_reads_the_mapped_libraries():
    assert allocator.active(GLIBC_MAPS) == "system"
    tc = GLIBC_MAPS + "7f60-7f70 r-xp 0 08:01 3 /usr/lib/libtcmalloc_minimal.so.4.5.10\n"
    assert allocator.active(tc) == "tcmalloc"
    je = GLIBC_MAPS + "7f60-7f70 r-xp 0 08:01 3 /opt/conda/lib/libjemalloc.so.2\n"
    assert allocator.active(je) == "jemalloc"
    # A path that merely contains the name in a folder is not the library.
    assert allocator.active(GLIBC_MAPS + "7f60 r-xp 0 0 0 /libtcmalloc/libc.so.6\n") == "system"


def test_find_tcmalloc_prefers_the_minimal_build(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    assert allocator.find_tcmalloc([a, b]) is None
    (a / "libtcmalloc.so.4").write_bytes(b"")
    assert allocator.find_tcmalloc([a, b]) == str(a / "libtcmalloc.so.4")
    (b / "libtcmalloc_minimal.so.4").write_bytes(b"")
    assert allocator.find_tcmalloc([a, b]) == str(b / "libtcmalloc_minimal.so.4")


def _plan(environ, *, platform="linux", current="system", found="/lib/libtcmalloc_minimal.so.4"):
    return allocator.restart_plan(
        environ,
        ["/usr/bin/python3", "/venv/bin/jaxvision", "train", "vit_ti16"],
        platform=platform,
        current=current,
        find=lambda: found,
    )


def test_restart_plan_preloads_tcmalloc_and_keeps_the_command_line():
    exe, argv, env = _plan({"LD_PRELOAD": "/opt/other.so", "HOME": "/root"})
    assert exe == sys.executable
    assert argv == [sys.executable, "/venv/bin/jaxvision", "train", "vit_ti16"]
    assert env["LD_PRELOAD"] == "/lib/libtcmalloc_minimal.so.4:/opt/other.so"
    assert env[allocator.ENV_MARKER] == "/lib/libtcmalloc_minimal.so.4"
    assert env["HOME"] == "/root"
    _, _, env = _plan({allocator.ENV_SWITCH: "tcmalloc"})
    assert env["LD_PRELOAD"] == "/lib/libtcmalloc_minimal.so.4"


@pytest.mark.parametrize("value", ["system", "0", "off", "OFF", "false", "no"])
def test_restart_plan_switched_off(value):
    assert _plan({allocator.ENV_SWITCH: value}) is None


def test_restart_plan_declines():
    assert _plan({}, platform="darwin") is None  # LD_PRELOAD is Linux's
    assert _plan({allocator.ENV_MARKER: "/lib/x.so"}) is None  # restarted once already
    assert _plan({}, current="jemalloc") is None  # the caller chose an allocator
    assert _plan({}, found=None) is None  # nothing installed: run on glibc


def test_restart_plan_explicit_library(tmp_path, capsys):
    lib = tmp_path / "libmy_malloc.so"
    lib.write_bytes(b"")
    _, _, env = _plan({allocator.ENV_SWITCH: str(lib)})
    assert env["LD_PRELOAD"] == str(lib) and env[allocator.ENV_MARKER] == str(lib)
    assert _plan({allocator.ENV_SWITCH: str(tmp_path / "missing.so")}) is None
    assert "neither 'tcmalloc', 'system' nor an existing file" in capsys.readouterr().err


def test_without_our_preload_removes_only_what_the_restart_added():
    env = {"LD_PRELOAD": "/lib/tc.so:/opt/other.so", allocator.ENV_MARKER: "/lib/tc.so", "A": "1"}
    assert allocator.without_our_preload(env) == {"LD_PRELOAD": "/opt/other.so", "A": "1"}
    env = {"LD_PRELOAD": "/lib/tc.so", allocator.ENV_MARKER: "/lib/tc.so"}
    assert allocator.without_our_preload(env) == {}
    # A preload the caller set (no marker) reaches the child as it is.
    assert allocator.without_our_preload({"LD_PRELOAD": "/lib/tc.so"}) == {
        "LD_PRELOAD": "/lib/tc.so"
    }


def _env_command(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.ENV_MARKER)}
    env.update(extra)
    proc = subprocess.run(
        [sys.executable, "-m", "jaxvision", "env", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mapped_libc() -> str:
    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.rsplit(" ", 1)[-1]
        if os.path.basename(path).startswith("libc.so") or os.path.basename(path).startswith(
            "libc-"
        ):
            return path
    pytest.skip("no libc in /proc/self/maps (not a glibc Linux)")


@pytest.mark.skipif(sys.platform != "linux", reason="LD_PRELOAD and /proc/self/maps are Linux's")
def test_command_restarts_itself_with_the_library_preloaded():
    # Any library serves to check the restart: libc, which the process has loaded anyway.
    libc = _mapped_libc()
    report = _env_command(**{allocator.ENV_SWITCH: libc})
    assert report["allocator_how"] == f"preloaded by the jaxvision command ({libc})"
    assert report["jax"] and report["backend"] == "cpu" and report["devices"]


@pytest.mark.skipif(sys.platform != "linux", reason="LD_PRELOAD and /proc/self/maps are Linux's")
def test_command_switched_to_the_system_allocator():
    report = _env_command(**{allocator.ENV_SWITCH: "system"})
    assert report["allocator"] == "system"
    assert "switches tcmalloc off" in report["allocator_how"]


@pytest.mark.skipif(
    allocator.find_tcmalloc() is None,
    reason="no tcmalloc library on this machine (Debian/Ubuntu: apt install "
    "libtcmalloc-minimal4); the restart itself is tested with libc above",
)
def test_command_runs_under_tcmalloc_when_installed():
    report = _env_command()
    assert report["allocator"] == "tcmalloc"
    assert report["allocator_how"].startswith("preloaded by the jaxvision command")
