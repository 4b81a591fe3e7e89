"""What every benchmark shares: the environment record, data placed as the trainer places it,
and the library's own compiled programs (`steps.programs`) wrapped as benches.

Nothing here re-implements a training step or loop: the benches call the programs that
`wdjax.train` calls.
"""

from __future__ import annotations

import datetime
import functools
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.timing import BATCH, Bench

IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10


def machine() -> dict[str, Any]:
    """Date, machine, device and versions: what a reader needs to trust the numbers."""
    import jax
    import jaxlib

    from wdjax.cpu import ops
    from wdjax.training import runlog

    env = dict(runlog.environment())
    env.update(
        date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        platform=platform.platform(), machine=platform.machine(),
        processor=platform.processor() or "?", cpu_count=os.cpu_count(),
        cpu_affinity=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        cpu_model=_cpu_model(), jaxlib=jaxlib.__version__, numpy=np.__version__,
        loadavg_start=list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        jax_devices=[str(d) for d in jax.devices()], default_conv_impl=ops.default_conv_impl(),
    )
    return env


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


@dataclass
class Setup:
    """Device-resident training data and what every trainer step takes besides the state."""

    mesh: Any
    dataset: Any
    images: Any
    labels: Any
    idx: Any
    mask: Any
    key: Any

    @property
    def n_train(self) -> int:
        return len(self.dataset.train_labels)

    @property
    def steps_per_epoch(self) -> int:
        return self.idx.shape[0]


def make_dataset(n_train: int, n_test: int) -> Any:
    """``$WDJAX_DATA`` (a class-balanced subset) when set, else random uint8 images."""
    from wdjax import data

    if os.environ.get(data.ENV_DATA, "").strip():
        return data.load(None, train_subset=n_train, test_subset=n_test)
    rng = np.random.default_rng(0)
    return data.Dataset(
        train_images=rng.integers(0, 256, (n_train, *IMAGE_SHAPE), dtype=np.uint8),
        train_labels=rng.integers(0, NUM_CLASSES, n_train).astype(np.int32),
        test_images=rng.integers(0, 256, (n_test, *IMAGE_SHAPE), dtype=np.uint8),
        test_labels=rng.integers(0, NUM_CLASSES, n_test).astype(np.int32),
        classes=tuple(f"class{c}" for c in range(NUM_CLASSES)),
        source="random:uint8", checksum="random-seed-0",
    )


def make_setup(dataset: Any) -> Setup:
    """Place the data as `wdjax.train` does (replicated; rows of the epoch split)."""
    import jax

    from wdjax.training import batches, parallel

    mesh = parallel.make_mesh(1)
    rep = parallel.replicated(mesh)
    rows = parallel.rows_sharding(mesh)
    idx, mask = batches.epoch_batches(0, 0, len(dataset.train_labels), BATCH)
    return Setup(mesh, dataset, parallel.put(dataset.train_images, rep),
                 parallel.put(dataset.train_labels, rep), parallel.put(idx, rows),
                 parallel.put(mask, rows), parallel.put(np.asarray(jax.random.PRNGKey(0)), rep))


def config(base: int, optimizer: str = "SGD", name: str = "bench",
           conv_impl: str | None = None) -> Any:
    """One trainer config for every section, so compiled programs are shared between them."""
    from wdjax.training.config import Config

    # A long stage keeps the benchmark run from finishing (and the lr constant).
    return Config(name=name, optimizer=optimizer, base=base, batch_size=BATCH,
                        stages=1, epochs_per_stage=1000, seed=0, conv_impl=conv_impl)


def programs(setup: Setup, cfg: Any, k_runs: int = 1) -> Any:
    """The trainer's compiled programs for `cfg`, on the mesh `wdjax.train` would use."""
    from wdjax.training import parallel
    from wdjax.training.steps import programs as library_programs

    mesh = setup.mesh if k_runs == 1 else parallel.make_mesh(k_runs)
    return library_programs([cfg] * k_runs, setup.dataset.train_images.shape[1:],
                            setup.dataset.num_classes, setup.n_train, mesh)


def scheme_tx(prog: Any, cfg: Any, **hparams: float) -> Any:
    """`cfg`'s optimizer exactly as `wdjax.train` builds it for a run."""
    from wdjax import schemes

    return schemes.build(cfg.optimizer, params=prog.params0, layers=prog.layers,
                         lr=prog.schedule, separate_decay=cfg.separate_decay,
                         **{**cfg.hparams(), **hparams})


def initial_states(prog: Any, cfg: Any, hparams: Sequence[dict[str, float]],
                   tx: Any = None) -> list[Any]:
    """Host-side initial TrainStates, one per run (as `wdjax.train` makes them)."""
    import jax
    import jax.numpy as jnp

    from wdjax.training.steps import TrainState

    out = []
    for hp in hparams:
        t = tx or scheme_tx(prog, cfg, **hp)
        out.append(jax.device_get(TrainState(jnp.zeros([], jnp.int32), prog.params0,
                                             prog.batch_stats0, t.init(prog.params0))))
    return out


def place(states: Sequence[Any], mesh: Any) -> Any:
    """One state on the mesh, or several stacked on a leading run axis (a vmapped sweep)."""
    import jax

    from wdjax.training import parallel

    stacked = len(states) > 1
    tree = jax.tree.map(lambda *xs: np.stack(xs), *states) if stacked else states[0]
    return parallel.put_tree(tree, parallel.run_sharding(mesh, stacked))


def step_bench(name: str, step: Callable, states: Sequence[Any], setup: Setup,
               images_per_call: int = BATCH) -> Bench:
    """Calls of the trainer's compiled `step` cycling through the epoch's batch rows.

    Several states are stepped one after another in each call (sequential runs).
    """
    import jax

    box = list(states)
    count = [0]

    def one() -> Any:
        i = count[0] % setup.steps_per_epoch
        count[0] += 1
        for r, s in enumerate(box):
            box[r], metrics = step(s, setup.images, setup.labels, setup.idx, setup.mask, 0, i,
                                   setup.key)
        return box, metrics

    return Bench(name, one, jax.block_until_ready, images=images_per_call * len(box))


def train_step_bench(name: str, prog: Any, tx: Any, state: Any, setup: Setup) -> Bench:
    """The library's `train_step` with optimizer `tx`, jitted with buffer donation, on one
    augmented batch: two of these differ in their optimizer and nothing else."""
    import jax

    from wdjax.training import batches
    from wdjax.training.steps import train_step

    step = jax.jit(functools.partial(train_step, model=prog.model, tx=tx), donate_argnums=0)
    x = batches.augment(jax.random.PRNGKey(1), setup.images[setup.idx[0]])
    y, mask = setup.labels[setup.idx[0]], setup.mask[0]
    box = [state]

    def one() -> Any:
        box[0], metrics = step(box[0], x, y, mask, setup.key)
        return metrics

    return Bench(name, one, jax.block_until_ready)
