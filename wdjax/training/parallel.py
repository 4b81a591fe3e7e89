"""Devices, meshes and shardings: data parallel and run-parallel training with jax.sharding.

A mesh has two axes: ``runs`` (the vmapped run axis of a sweep) and ``data`` (the batch).
Parameters and optimiser state are replicated over ``data`` and split over ``runs``; each
batch is split over ``data``. BatchNorm statistics and the loss are means over the global
batch, which XLA computes with all-reduces, so a run's numbers do not depend on the device
count beyond float rounding. The same code runs on one device, many local devices, or many
hosts after `initialize_distributed`.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """`jax.distributed.initialize`, auto-detecting the cluster when no argument is given.

    Call before any other JAX work on every host. Only process 0 writes records; all
    processes take part in computation and in (Orbax) checkpointing.
    """
    kwargs = {k: v for k, v in dict(coordinator_address=coordinator,
                                    num_processes=num_processes,
                                    process_id=process_id).items() if v is not None}
    jax.distributed.initialize(**kwargs)


def make_mesh(k_runs: int = 1, devices: int | None = None) -> Mesh:
    """A ``runs x data`` mesh over the first `devices` devices (default: all of them).

    The ``runs`` axis gets the largest share of devices that divides the number of runs;
    the rest go to ``data``. 8 devices and 8 runs: 8 x 1; 8 devices and 2 runs: 2 x 4.
    """
    available = jax.devices()
    n = len(available) if devices is None else devices
    if not 1 <= n <= len(available):
        raise ValueError(f"devices must be between 1 and {len(available)}, got {n}")
    runs = math.gcd(k_runs, n)
    grid = np.array(available[:n]).reshape(runs, n // runs)
    return Mesh(grid, ("runs", "data"))


def describe(mesh: Mesh) -> str:
    d = mesh.devices.flat[0]
    return (f"mesh runs={mesh.shape['runs']} x data={mesh.shape['data']} over "
            f"{mesh.devices.size} {d.platform} device(s), {jax.process_count()} process(es)")


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def run_sharding(mesh: Mesh, stacked: bool) -> NamedSharding:
    """Per-run state: split along its leading run axis when runs are stacked."""
    return NamedSharding(mesh, P("runs") if stacked else P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def rows_sharding(mesh: Mesh) -> NamedSharding:
    """An epoch's (steps, batch) index and mask matrices: each row split over `data`."""
    return NamedSharding(mesh, P(None, "data"))


def index_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Batch index matrices: (steps, batch) split over `data`; a leading run axis is kept
    whole (each run's order is read by its own vmapped step)."""
    return NamedSharding(mesh, P(*(None,) * (ndim - 1), "data"))


def put(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a host array every process holds in full (multi-host safe)."""
    array = np.asarray(array)
    # A fresh copy per shard: on CPU, JAX may alias host memory zero-copy, and a donated
    # buffer that shares memory with another shard (or with the caller's array) would be
    # overwritten in place by the step.
    return jax.make_array_from_callback(array.shape, sharding,
                                        lambda index: np.array(array[index], copy=True))


def put_tree(tree: Any, sharding: NamedSharding) -> Any:
    return jax.tree.map(lambda x: put(np.asarray(x), sharding), tree)
