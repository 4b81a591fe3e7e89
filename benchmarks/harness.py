"""What every benchmark shares: interleaved timing, the environment record, the trainer's own
compiled programs and data wrapped as benches, the VGG's layer shapes and its PyTorch twin."""

from __future__ import annotations

import contextlib
import datetime
import functools
import io
import itertools
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from unittest import mock

import numpy as np

BATCH = 128
NUM_CLASSES = 10


class Bench:
    """A step closure timed in samples of `steps` calls (None: sized by `calibrate`) of `images`
    each: `samples` in img/s, `cpu_ms` this process's CPU time per call."""

    def __init__(self, name: str, step: Callable[[], object], sync: Callable[[object], object],
                 images: int = BATCH, steps: int | None = None) -> None:
        self.name, self.step, self.sync, self.images, self.steps = name, step, sync, images, steps
        self.samples: list[float] = []
        self.cpu_ms: list[float] = []

    def calibrate(self, warmup: int, target_s: float) -> None:
        """Warm up, then (unless given) size `steps` (at most 50) so a sample takes `target_s`."""
        for _ in range(warmup):
            self.sync(self.step())
        if self.steps is None:
            t0 = time.perf_counter()
            self.sync(self.step())
            dt = max(time.perf_counter() - t0, 1e-6)
            self.steps = max(1, min(50, round(target_s / dt)))

    def sample(self) -> None:
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(self.steps):
            out = self.step()
        self.sync(out)
        self.samples.append(self.images * self.steps / (time.perf_counter() - t0))
        self.cpu_ms.append((time.process_time() - c0) * 1e3 / self.steps)

    def rates(self, cpu: bool = False) -> list[float]:
        """Images per second of each sample: wall clock, or (`cpu`) this process's CPU time."""
        return [self.images * 1e3 / c for c in self.cpu_ms] if cpu else self.samples


def measure(benches: Sequence[Bench], rounds: int, warmup: int, sample_s: float) -> None:
    """Calibrate every bench, then sample each once per round in ABBA order: load from other
    processes hits every configuration alike, and the reversal cancels a steady drift."""
    for b in benches:
        b.calibrate(warmup, sample_s)
    for r in range(rounds):
        for b in benches if r % 2 == 0 else benches[::-1]:
            b.sample()


def round_ratios(num: Bench, den: Sequence[Bench], cpu: bool = False) -> list[float]:
    """Per round: `num`'s throughput over the best of `den`'s in the same round; in CPU time
    (`cpu`), other processes barely move it, but it is blind to waiting."""
    return [x / max(d.rates(cpu)[r] for d in den) for r, x in enumerate(num.rates(cpu))]


def start() -> dict[str, Any]:
    """Set the process up (before any JAX computation: the allocator must precede XLA's worker
    threads; the compilation cache), then record date, machine, device, versions, torch peer."""
    import jax
    import jaxlib

    from wdjax.cpu import ops, tune
    from wdjax.training import runlog, runtime

    tuned, cache = ops.tune_cpu_allocator(), runtime.enable_compilation_cache(min_compile_secs=0)
    device, version = torch_device()
    return dict(
        runlog.environment(), jaxlib=jaxlib.__version__, numpy=np.__version__,
        date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        platform=platform.platform(), cpu_model=tune.machine(), conv_tune=tune.enabled(),
        loadavg_start=list(os.getloadavg()), jax_devices=[str(d) for d in jax.devices()],
        default_conv_impl=ops.default_conv_impl(), tune_cpu_allocator=tuned, xla_cache=cache,
        torch=version, torch_device=device)


def make_dataset(n_train: int, n_test: int) -> Any:
    """``$WDJAX_DATA`` (a class-balanced subset) if set, else random images (as fast)."""
    from wdjax import data

    if os.environ.get(data.ENV_DATA, "").strip():
        return data.load(None, train_subset=n_train, test_subset=n_test)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8) for n in (n_train, n_test)]
    labels = [rng.integers(0, NUM_CLASSES, n).astype(np.int32) for n in (n_train, n_test)]
    return data.Dataset(images[0], labels[0], images[1], labels[1],
                        classes=tuple(f"class{c}" for c in range(NUM_CLASSES)),
                        source="random:uint8", checksum="random-seed-0")


@dataclass
class Setup:
    """Device-resident training data and what every trainer step takes besides the state."""

    mesh: Any
    dataset: Any
    args: tuple  # images, labels, batch rows, row masks (the step's data arguments)
    key: Any
    steps_per_epoch: int


def make_setup(dataset: Any) -> Setup:
    """Place the data as `wdjax.train` does (replicated; rows of the epoch split)."""
    import jax

    from wdjax.training import batches, parallel

    mesh = parallel.make_mesh(1)
    rep, rows = parallel.replicated(mesh), parallel.rows_sharding(mesh)
    idx, mask = batches.epoch_batches(0, 0, len(dataset.train_labels), BATCH)
    return Setup(mesh, dataset, (parallel.put(dataset.train_images, rep),
                                 parallel.put(dataset.train_labels, rep),
                                 parallel.put(idx, rows), parallel.put(mask, rows)),
                 parallel.put(np.asarray(jax.random.PRNGKey(0)), rep), len(idx))


def config(width: int, optimizer: str = "SGD", name: str = "bench", **fields: Any) -> Any:
    """The trainer config of every bench (`fields`: e.g. ``conv_impl``, ``precision``), so
    compiled programs are shared between sections. A long stage keeps the lr constant."""
    from wdjax.training.config import Config

    return Config(name=name, optimizer=optimizer, width=width, batch_size=BATCH, stages=1,
                  epochs_per_stage=1000, seed=0, **fields)


def programs(setup: Setup, configs: Sequence[Any]) -> Any:
    """The trainer's compiled programs for `configs` (vmapped over several), on its mesh."""
    from wdjax.training import parallel, steps

    mesh = setup.mesh if len(configs) == 1 else parallel.make_mesh(len(configs))
    return steps.programs(configs, setup.dataset.train_images.shape[1:],
                          setup.dataset.num_classes, len(setup.dataset.train_labels), mesh)


def step_bench(name: str, setup: Setup, configs: Sequence[Any], sequential: bool = False,
               steps: int | None = None, tuned: bool | None = None) -> Bench:
    """The trainer's step for `configs` (one vmapped program, or `sequential`ly each run's own)
    over the epoch's batch rows; `tuned` (not None): traced now, CPU conv plans tuned or not."""
    import jax

    from wdjax.cpu import tune
    from wdjax.training import parallel
    from wdjax.training import steps as st

    box, progs = [], []
    rows = itertools.cycle(range(setup.steps_per_epoch))

    def one() -> Any:
        i = next(rows)
        for r, p in enumerate(progs):
            box[r], metrics = p.step(box[r], *setup.args, 0, i, setup.key)
        return box, metrics

    # The setting is part of the programs' cache key and is read when the step is traced.
    env = {} if tuned is None else {tune.ENV_TUNE: "1" if tuned else "0"}
    with mock.patch.dict(os.environ, env):
        for group in [[c] for c in configs] if sequential else [list(configs)]:
            prog = programs(setup, group)
            states = jax.device_get(st.initial_states(group, prog, st.starts(group, prog)))
            stacked = st.stack(states) if len(group) > 1 else states[0]
            box.append(parallel.put_tree(stacked, parallel.run_sharding(prog.mesh,
                                                                        len(group) > 1)))
            progs.append(prog)
        if tuned is not None:
            jax.block_until_ready(one())
    return Bench(name, one, jax.block_until_ready, BATCH * len(configs), steps)


def train_step_bench(name: str, setup: Setup, cfg: Any, tx: Any = None) -> Bench:
    """`steps.train_step` jitted with donation on one augmented batch, with optimiser `tx`
    (default: the trainer's): two of these differ in their optimiser and nothing else."""
    import jax
    import jax.numpy as jnp

    from wdjax.training import batches, steps

    prog = programs(setup, [cfg])
    tx = tx or steps.optimizer(cfg, prog.params0, prog.layers, prog.schedule)
    step = jax.jit(functools.partial(steps.train_step, model=prog.model, tx=tx), donate_argnums=0)
    images, labels, idx, mask = setup.args
    x = batches.augment(jax.random.PRNGKey(1), images[idx[0]])
    # Host copies: the donated step must not delete the programs' template parameters.
    box = [jax.device_get(steps.TrainState(jnp.zeros([], jnp.int32), prog.params0,
                                           prog.batch_stats0, tx.init(prog.params0)))]

    def one() -> Any:
        box[0], metrics = step(box[0], x, labels[idx[0]], mask[0], setup.key)
        return metrics

    return Bench(name, one, jax.block_until_ready)


def train_seconds(configs: Sequence[Any], out: Path, dataset: Any, epochs: int) -> list[float]:
    """Train `configs` quietly `epochs` more epochs with `wdjax.train` (resuming from `out`);
    the trainer's own seconds of every epoch so far (all but the checkpoint)."""
    from wdjax import storage
    from wdjax.training import train

    with contextlib.redirect_stdout(io.StringIO()):  # its per-epoch line
        train.train(configs, out, dataset=dataset, progress=False, plots=False,
                    stop_after_epochs=epochs)
    return [float(r["seconds"])
            for r in storage.read_jsonl(out / configs[0].name / "metrics.jsonl")]


class Layer(NamedTuple):
    """One conv layer: NHWC input shape, HWIO kernel shape, whether a 2x2 max-pool follows."""

    name: str
    x_shape: tuple[int, int, int, int]
    k_shape: tuple[int, int, int, int]
    pool: bool

    @property
    def shape(self) -> str:
        return f"{self.x_shape[1]}x{self.x_shape[2]} {self.x_shape[3]}->{self.k_shape[3]}"


def vgg_layers(width: int, batch: int = BATCH) -> list[Layer]:
    """The conv and fc layers of ``vgg_conf(width)`` with their input shapes."""
    from wdjax import models

    conf = models.vgg_conf(width)
    layers, size, cin = [], 32, conf[0][1][0]
    for i, (name, (a, _)) in enumerate(conf):
        kind = models.layer_kind(name)
        if kind in ("conv", "fc"):
            k = 3 if kind == "conv" else 1
            pool = i + 1 < len(conf) and models.layer_kind(conf[i + 1][0]) == "pool"
            layers.append(Layer(name, (batch, size, size, cin), (k, k, cin, a), pool))
            cin = a
        elif kind == "pool":
            size //= a
    return layers


def conv_plans(width: int, impl: str | None = None, tuned: bool | None = None) -> list[str]:
    """Per 3x3 layer of the VGG at `width` with `impl` (default: the platform's): the layer, its
    map and channels and `conv_plan`'s method per pass (`tuned` as its `tune`)."""
    from wdjax.cpu import ops, plan

    impl = impl or ops.default_conv_impl()
    if impl != "hybrid":
        return [f"all layers: {impl} for every pass"]
    return [f"{lay.name:<8s} {lay.shape:<16s} "
            f"{plan.conv_plan(lay.x_shape, lay.k_shape, tune=tuned)}"
            for lay in vgg_layers(width) if lay.k_shape[0] == 3]


# ------------------------------------------------------------------------- the PyTorch peer
def torch_device() -> tuple[str | None, str]:
    """The torch device on JAX's device kind ("cpu", "cuda"), or None; and torch's version
    or why there is no peer."""
    import jax

    try:
        import torch
    except Exception as err:  # noqa: BLE001 - any import failure means "no peer"
        return None, f"not importable ({type(err).__name__}: {err})"
    backend = jax.default_backend()
    if backend == "cpu" or (backend == "gpu" and torch.cuda.is_available()):
        return {"cpu": "cpu", "gpu": "cuda"}[backend], torch.__version__
    return None, f"{torch.__version__} does not see the {backend} device"


def torch_bench(width: int, channels_last: bool, threads: int | None = None,
                device: str = "cpu", bf16: bool = False) -> Bench:
    """The SGD step (lr 0.1, weight decay 5e-4 on all, as scheme SGD) of the PyTorch twin of
    ``VGG(vgg_conf(width))``, NCHW or channels_last, fp32 or bf16 autocast; `threads`: torch's
    intra-op threads, set at each step so that configurations with different counts interleave."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for lay in vgg_layers(width):
        k, _, cin, cout = lay.k_shape
        layers += [nn.Conv2d(cin, cout, k, padding=k // 2), nn.BatchNorm2d(cout), nn.ReLU(),
                   *([nn.MaxPool2d(2, 2)] if lay.pool else [])]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = nn.Sequential(*layers, nn.Conv2d(cout, NUM_CLASSES, 1), nn.Flatten()).train()
    net = net.to(device, memory_format=fmt)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((BATCH, 3, 32, 32), dtype=np.float32))
    x = x.to(device).contiguous(memory_format=fmt)
    y = torch.from_numpy(rng.integers(0, NUM_CLASSES, BATCH)).to(device)

    def one() -> Any:
        if threads is not None:
            torch.set_num_threads(threads)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, torch.bfloat16, enabled=bf16):
            loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss

    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    name = (f"torch width={width} {'channels_last' if channels_last else 'NCHW'}"
            f"{' bf16' if bf16 else ''}{'' if threads is None else f' {threads}t'}")
    return Bench(name, one, lambda _: sync())
