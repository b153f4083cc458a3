"""Devices and hosts through JAX's own engine: a Mesh with a "data" axis and NamedShardings.

One device and many run the same jitted ``train_step``: the batch is sharded along "data", the
state replicated (or FSDP-sharded), and XLA's SPMD partitioner inserts the all-reduces. Several
hosts join with :func:`initialize` (``jax.distributed``) and each reads its own slice of every
global batch (:func:`process_shard`).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxvision.errors import ConfigError

DATA_AXIS = "data"
FSDP_MIN_SIZE = 2**16  # parameters smaller than this stay replicated (biases, norms, small convs)


def initialize() -> None:
    """Join a multi-host run from the standard environment variables.

    ``JAX_COORDINATOR_ADDRESS`` (host:port of process 0), ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID``; on managed clusters (SLURM, TPU pods, Kubernetes JobSets) JAX detects
    them itself and the variables may be omitted.
    """
    kwargs: dict[str, Any] = {}
    if "JAX_COORDINATOR_ADDRESS" in os.environ:
        kwargs["coordinator_address"] = os.environ["JAX_COORDINATOR_ADDRESS"]
    if "JAX_NUM_PROCESSES" in os.environ:
        kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
    if "JAX_PROCESS_ID" in os.environ:
        kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
    jax.distributed.initialize(**kwargs)


def make_mesh(devices: list[Any] | None = None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise ConfigError(
            f"batch size {batch_size} is not divisible by the {n} devices of the mesh; "
            f"use a multiple of {n}"
        )


def process_shard() -> tuple[int, int]:
    """(this process's index, number of processes): which slice of a global batch to read."""
    return jax.process_index(), jax.process_count()


def is_main_process() -> bool:
    return jax.process_index() == 0


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assemble this process's slice of a batch into global arrays sharded along "data"."""
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def _fsdp_spec(shape: tuple[int, ...], n: int) -> P:
    """Shard the largest axis divisible by the device count; small arrays stay replicated."""
    if n == 1 or int(np.prod(shape, dtype=np.int64)) < FSDP_MIN_SIZE:
        return P()
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % n == 0:
            spec = [None] * len(shape)
            spec[axis] = DATA_AXIS
            return P(*spec)
    return P()


def to_host(tree: Any) -> Any:
    """``tree``'s global arrays as whole numpy arrays on every process (an all-gather when the
    arrays span several hosts): what a host-side evaluator reads."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def count_sharded(tree: Any) -> tuple[int, int]:
    """(arrays split over more than one device, all arrays) of a placed pytree."""
    leaves = [x for x in jax.tree.leaves(tree) if isinstance(x, jax.Array)]
    return sum(not x.sharding.is_fully_replicated for x in leaves), len(leaves)


def state_shardings(state: Any, mesh: Mesh, *, fsdp: bool = False) -> Any:
    n = mesh.devices.size

    def spec(x: Any) -> NamedSharding:
        shape = tuple(getattr(x, "shape", ()))
        return NamedSharding(mesh, _fsdp_spec(shape, n) if fsdp else P())

    return jax.tree.map(spec, state)


def place_state(state: Any, mesh: Mesh, *, fsdp: bool = False) -> Any:
    """Put the train state on the mesh: replicated, or with ``fsdp`` large parameters and their
    optimizer moments split along "data" (ZeRO-3 / FSDP style; XLA gathers them for compute)."""
    return jax.device_put(state, state_shardings(state, mesh, fsdp=fsdp))
