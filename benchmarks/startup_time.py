"""How long one ``jaxvision`` command spends tracing, lowering and compiling (or loading from the
persistent compilation cache), from ``jax.monitoring``'s events.

    python benchmarks/startup_time.py train yolov8n_cls --data digits --image-size 32 \\
        --epochs 1 --max-steps 2 --no-progress --output-dir /tmp/run

Runs the command in this process (``jaxvision.cli.main``) and prints one JSON line to stderr:
seconds of tracing, lowering and XLA compiling (``compile`` includes loading an executable from
the cache), the number of XLA compilations and of cache hits, and the wall time of the whole
command, imports included. Like the command, it first restarts itself under tcmalloc where the
system has it (``jaxvision.allocator``). Run it twice on a fresh ``JAXVISION_CACHE_DIR``, each
time with a new ``--output-dir`` (a used one is refused), to see a second start-up;
``JAX_LOG_COMPILES=1`` also logs each compilation with its function and time.
"""

from __future__ import annotations

import collections
import json
import sys
import time

EVENTS = {
    "trace": "/jax/core/compile/jaxpr_trace_duration",
    "lower": "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "compile": "/jax/core/compile/backend_compile_duration",
}
CACHE_HITS = "/jax/compilation_cache/cache_hits"


def main() -> int:
    # Under the allocator the jaxvision command itself runs on (it restarts under tcmalloc where
    # installed; JAXVISION_ALLOCATOR=system keeps glibc's malloc).
    from jaxvision.allocator import restart_with_tcmalloc

    restart_with_tcmalloc()
    start = time.perf_counter()
    from jax import monitoring

    seconds: dict[str, float] = collections.defaultdict(float)
    counts: collections.Counter[str] = collections.Counter()

    def on_duration(name: str, secs: float, **_: object) -> None:
        seconds[name] += secs
        counts[name] += 1

    monitoring.register_event_duration_secs_listener(on_duration)
    monitoring.register_event_listener(lambda name, **_: counts.update([name]))

    from jaxvision.cli import main as cli_main

    rc = cli_main(sys.argv[1:])
    report = {k: round(seconds[v], 2) for k, v in EVENTS.items()}
    report["xla_compiles"] = counts[EVENTS["compile"]]
    report["cache_hits"] = counts[CACHE_HITS]
    report["wall"] = round(time.perf_counter() - start, 1)
    print("startup " + json.dumps(report), file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
