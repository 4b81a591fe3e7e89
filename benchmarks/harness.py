"""What every benchmark shares: the environment record, data placed as the trainer places it,
the library's own compiled programs wrapped as benches, and the identical PyTorch model.

Nothing here re-implements a training step or loop: the benches call the programs that
`wdjax.train` calls, with the optimiser and states `wdjax.training.steps` makes for it.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.timing import BATCH, Bench

NUM_CLASSES = 10


def machine() -> dict[str, Any]:
    """Date, machine, device and versions: what a reader needs to trust the numbers."""
    import jax
    import jaxlib

    from wdjax.cpu import ops, tune
    from wdjax.training import runlog

    return dict(
        runlog.environment(), jaxlib=jaxlib.__version__, numpy=np.__version__,
        date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        platform=platform.platform(), cpu_model=tune.machine(), conv_tune=tune.enabled(),
        loadavg_start=list(os.getloadavg()), jax_devices=[str(d) for d in jax.devices()],
        default_conv_impl=ops.default_conv_impl())


def make_dataset(n_train: int, n_test: int) -> Any:
    """``$WDJAX_DATA`` (a class-balanced subset) when set, else random uint8 images (speed
    does not depend on pixel values)."""
    from wdjax import data

    if os.environ.get(data.ENV_DATA, "").strip():
        return data.load(None, train_subset=n_train, test_subset=n_test)
    rng = np.random.default_rng(0)
    return data.Dataset(
        train_images=rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
        train_labels=rng.integers(0, NUM_CLASSES, n_train).astype(np.int32),
        test_images=rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
        test_labels=rng.integers(0, NUM_CLASSES, n_test).astype(np.int32),
        classes=tuple(f"class{c}" for c in range(NUM_CLASSES)),
        source="random:uint8", checksum="random-seed-0")


@dataclass
class Setup:
    """Device-resident training data and what every trainer step takes besides the state."""

    mesh: Any
    dataset: Any
    args: tuple  # images, labels, batch rows, row masks (the step's data arguments)
    key: Any

    @property
    def steps_per_epoch(self) -> int:
        return self.args[2].shape[0]


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
                 parallel.put(np.asarray(jax.random.PRNGKey(0)), rep))


def config(width: int, optimizer: str = "SGD", name: str = "bench", **fields: Any) -> Any:
    """The trainer config of every bench (`fields`: e.g. ``conv_impl``, ``precision``), so
    compiled programs are shared between sections. A long stage keeps the lr constant."""
    from wdjax.training.config import Config

    return Config(name=name, optimizer=optimizer, width=width, batch_size=BATCH, stages=1,
                  epochs_per_stage=1000, seed=0, **fields)


def programs(setup: Setup, configs: Sequence[Any]) -> Any:
    """The trainer's compiled programs for `configs` (vmapped over several), on the mesh
    `wdjax.train` would use."""
    from wdjax.training import parallel, steps

    mesh = setup.mesh if len(configs) == 1 else parallel.make_mesh(len(configs))
    return steps.programs(configs, setup.dataset.train_images.shape[1:],
                          setup.dataset.num_classes, len(setup.dataset.train_labels), mesh)


def trainer_state(prog: Any, configs: Sequence[Any]) -> Any:
    """The runs' first states exactly as `wdjax.train` makes them (`steps.initial_states`),
    placed on `prog`'s mesh: stacked on a run axis when there are several."""
    import jax

    from wdjax.training import parallel, steps

    states = jax.device_get(steps.initial_states(configs, prog, steps.starts(configs, prog)))
    stacked = len(states) > 1
    tree = jax.tree.map(lambda *xs: np.stack(xs), *states) if stacked else states[0]
    return parallel.put_tree(tree, parallel.run_sharding(prog.mesh, stacked))


@contextlib.contextmanager
def conv_tuning(on: bool | None) -> Any:
    """Inside, CPU conv plans are tuned on this machine (True) or taken from the rules
    (False, `wdjax.cpu.plan.RULES`); None leaves ``$WDJAX_CONV_TUNE`` as it is."""
    from wdjax.cpu import tune

    old = os.environ.get(tune.ENV_TUNE)
    if on is not None:
        os.environ[tune.ENV_TUNE] = "1" if on else "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(tune.ENV_TUNE, None)
        else:
            os.environ[tune.ENV_TUNE] = old


def step_bench(name: str, setup: Setup, configs: Sequence[Any], sequential: bool = False,
               steps: int | None = None, tuned: bool | None = None) -> Bench:
    """Calls of the trainer's compiled step for `configs`, cycling through the epoch's batch
    rows: one vmapped program, or (`sequential`) each run's single-run program in turn.
    `tuned` (not None): the programs are traced now, their CPU conv plans tuned or by the
    rules (`conv_tuning`; a plan is chosen when the step is traced)."""
    import jax

    groups = [[c] for c in configs] if sequential else [list(configs)]
    progs = [programs(setup, g) for g in groups]
    box = [trainer_state(p, g) for p, g in zip(progs, groups, strict=True)]
    count = [0]

    def one() -> Any:
        i = count[0] % setup.steps_per_epoch
        count[0] += 1
        for r, p in enumerate(progs):
            box[r], metrics = p.step(box[r], *setup.args, 0, i, setup.key)
        return box, metrics

    if tuned is not None:
        with conv_tuning(tuned):
            jax.block_until_ready(one())
    return Bench(name, one, jax.block_until_ready, BATCH * len(configs), steps)


def train_step_bench(name: str, setup: Setup, cfg: Any, tx: Any = None) -> Bench:
    """`steps.train_step` with optimiser `tx` (default: the trainer's, `steps.optimizer`),
    jitted with buffer donation, on one augmented batch: two of these differ in their
    optimiser and nothing else."""
    import jax
    import jax.numpy as jnp

    from wdjax.training import batches, steps

    prog = programs(setup, [cfg])
    tx = tx or steps.optimizer(cfg, prog.params0, prog.layers, prog.schedule)
    step = jax.jit(functools.partial(steps.train_step, model=prog.model, tx=tx),
                   donate_argnums=0)
    images, labels, idx, mask = setup.args
    x = batches.augment(jax.random.PRNGKey(1), images[idx[0]])
    # Host copies: the donated step must not delete the programs' template parameters.
    box = [jax.device_get(steps.TrainState(jnp.zeros([], jnp.int32), prog.params0,
                                           prog.batch_stats0, tx.init(prog.params0)))]

    def one() -> Any:
        box[0], metrics = step(box[0], x, labels[idx[0]], mask[0], setup.key)
        return metrics

    return Bench(name, one, jax.block_until_ready)


def conv_plans(width: int, impl: str | None = None, tuned: bool | None = None) -> list[str]:
    """The conv plan the VGG at `width` runs with `impl` (default: the platform's), per 3x3
    layer: layer, input map and channels, method per pass; `tuned` as `conv_plan`'s `tune`."""
    from benchmarks.profile import vgg_layers
    from wdjax.cpu import ops, plan

    impl = impl or ops.default_conv_impl()
    if impl != "hybrid":
        return [f"all layers: {impl} for every pass"]
    return [f"{lay.name:<8s} {lay.shape:<16s} "
            f"{plan.conv_plan(lay.x_shape, lay.k_shape, tune=tuned)}"
            for lay in vgg_layers(width) if lay.ksize == 3]


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
    if backend == "cpu":
        return "cpu", torch.__version__
    if backend == "gpu" and torch.cuda.is_available():
        return "cuda", torch.__version__
    return None, f"{torch.__version__} does not see the {backend} device"


def build_torch(width: int) -> Any:
    """The PyTorch twin of ``VGG(vgg_conf(width))``: conv(+bias)/BN/ReLU, max-pools, 1x1s."""
    import torch
    from torch import nn

    from wdjax import models

    torch.manual_seed(0)
    layers: list[nn.Module] = []
    cin = 3
    for name, (a, b) in models.vgg_conf(width, NUM_CLASSES):
        kind = models.layer_kind(name)
        if kind in ("conv", "fc"):
            k = 3 if kind == "conv" else 1
            layers += [nn.Conv2d(cin, a, k, padding=k // 2), nn.BatchNorm2d(a), nn.ReLU()]
            cin = a
        elif kind == "pool":
            layers.append(nn.MaxPool2d(a, b))
        elif kind == "logit":
            layers.append(nn.Conv2d(cin, a, 1))
        elif kind == "flatter":
            layers.append(nn.Flatten())
    return nn.Sequential(*layers).train()


def torch_bench(width: int, channels_last: bool, threads: int | None = None,
                device: str = "cpu", bf16: bool = False) -> Bench:
    """The identical model's SGD step (lr 0.1, weight decay 5e-4 on every parameter, as the
    scheme SGD), NCHW or channels_last, fp32 or bf16 autocast. `threads`: torch's intra-op
    threads, set before each step so that configurations with different counts interleave."""
    import torch
    from torch import nn

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = build_torch(width).to(device, memory_format=fmt)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((BATCH, 3, 32, 32), dtype=np.float32))
    x = x.to(device).contiguous(memory_format=fmt)
    y = torch.from_numpy(rng.integers(0, NUM_CLASSES, BATCH)).to(device)
    loss_fn = nn.CrossEntropyLoss()

    def one() -> Any:
        if threads is not None:
            torch.set_num_threads(threads)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, torch.bfloat16, enabled=bf16):
            loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        return loss

    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    name = (f"torch width={width} {'channels_last' if channels_last else 'NCHW'}"
            f"{' bf16' if bf16 else ''}{'' if threads is None else f' {threads}t'}")
    return Bench(name, one, lambda _: sync())
