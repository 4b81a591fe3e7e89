"""Meshes and shardings: state split over a ``runs`` axis (the vmapped runs), batches over a
``data`` axis, whose all-reduces keep a run's numbers independent of the device count."""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """`jax.distributed.initialize` (auto-detecting the cluster when no argument is given);
    call first on every host. Only process 0 writes records; all write checkpoints."""
    kw = dict(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
    jax.distributed.initialize(**{k: v for k, v in kw.items() if v is not None})


def make_mesh(k_runs: int = 1, devices: int | None = None) -> Mesh:
    """A ``runs x data`` mesh over the first `devices` devices (default: all); ``runs`` gets
    the largest share dividing the number of runs (8 devices, 2 runs: 2 x 4)."""
    available = jax.devices()
    n = len(available) if devices is None else devices
    if not 1 <= n <= len(available):
        raise ValueError(f"devices must be between 1 and {len(available)}, got {n}")
    runs = math.gcd(k_runs, n)
    return Mesh(np.array(available[:n]).reshape(runs, n // runs), ("runs", "data"))


def describe(mesh: Mesh) -> str:
    d = mesh.devices.flat[0]
    return (f"mesh runs={mesh.shape['runs']} x data={mesh.shape['data']} over "
            f"{mesh.devices.size} {d.platform} device(s), {jax.process_count()} process(es)")


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def run_sharding(mesh: Mesh, stacked: bool) -> NamedSharding:
    """Per-run state: split along its leading run axis when runs are stacked."""
    return NamedSharding(mesh, P("runs") if stacked else P())


def rows_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Split over `data` along the last of `ndim` axes: a batch (1), an epoch's (steps, batch)
    index and mask matrices (2), or per-run index matrices (3: each run reads its own)."""
    return NamedSharding(mesh, P(*(None,) * (ndim - 1), "data"))


def put(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a host array every process holds in full (multi-host safe)."""
    array = np.asarray(array)
    # A fresh copy per shard: on CPU, JAX may alias host memory, and a donated buffer shared
    # with another shard (or the caller's array) would be overwritten in place by the step.
    return jax.make_array_from_callback(array.shape, sharding,
                                        lambda index: np.array(array[index], copy=True))


def put_tree(tree: Any, sharding: NamedSharding) -> Any:
    return jax.tree.map(lambda x: put(x, sharding), tree)
