"""One training run of the original protocol (REFERENCE sections 1, 3, 9), or several at once.

Read top to bottom: `Config` -> `lr_schedule` -> the jitted `train_step` / `eval_step` /
`monitor_step` -> `train`, the loop (epochs, logging, checkpoints, records, pictures).

`train` takes a list of configs. One config is one run. Several configs that differ only
in numeric hyperparameters (and names) train *together*: their states are stacked and the
step is ``jax.vmap``-ed over the run axis, sharing each data batch and augmentation key, so
run k computes what training config k alone with the same seed computes (one compiled
program for a whole sweep; XLA orders the vmapped sums differently, so the numbers agree
to float rounding, see the README).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from tqdm.auto import tqdm

from wdjax import analysis, batches, checkpoint, data, parallel, records, schemes
from wdjax.models import VGG, init_variables, vgg_conf, weight_layers

PyTree = Any

NUMERIC_HPARAMS = ("momentum", "weight_decay", "L1_decay", "last1_mult", "last2_mult",
                   "topo_base", "norm_ema")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a run. Defaults are the original command line's."""

    name: str = "run"
    optimizer: str = "SGD"
    lr: float | None = None  # None: 0.1 (Adam: 0.001)
    momentum: float = 0.0
    weight_decay: float = 5e-4
    L1_decay: float = 5e-6
    last1_mult: float = 1.0
    last2_mult: float = 1.0
    topo_base: float = 2.0
    norm_ema: float = 0.98
    separate_decay: bool = False
    base: int = 32
    batch_size: int = 128
    stages: int = 10
    epochs_per_stage: int = 20
    data: str | None = None  # None: $WDJAX_DATA, else tfds:cifar10
    train_subset: int | None = None
    test_subset: int | None = None
    seed: int = 0
    log_every: int = 50
    eval_batch_size: int = 1000
    conv_impl: str | None = None
    histograms: bool = False

    @property
    def epochs(self) -> int:
        return self.stages * self.epochs_per_stage

    @property
    def base_lr(self) -> float:
        return schemes.default_lr(self.optimizer) if self.lr is None else self.lr

    def hparams(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in NUMERIC_HPARAMS}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})

    def validate(self) -> Config:
        """ValueError (one line) naming the first bad field and what is allowed."""
        records.check_name(self.name)
        schemes.canonical_name(self.optimizer)
        schemes.validate_hyperparams(lr=self.base_lr, **self.hparams())
        for key in ("base", "batch_size", "stages", "epochs_per_stage", "log_every",
                    "eval_batch_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        for key in ("train_subset", "test_subset"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{key} must be a positive integer or unset, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.separate_decay and schemes.canonical_name(self.optimizer) != "Adam":
            raise ValueError("separate_decay applies to optimizer Adam only")
        return self

    def shared_key(self) -> tuple:
        """What runs trained together must share (all but name and numeric hyperparams)."""
        skip = {"name", *NUMERIC_HPARAMS}
        return tuple((k, v) for k, v in self.to_dict().items() if k not in skip)


def lr_schedule(lr: float, steps_per_epoch: int, epochs_per_stage: int) -> optax.Schedule:
    """``lr * 0.5 ** stage``: halved after every `epochs_per_stage` epochs (REFERENCE s. 3)."""
    stage_steps = steps_per_epoch * epochs_per_stage
    return lambda count: lr * 0.5 ** (count // stage_steps)


class TrainState(struct.PyTreeNode):
    step: jax.Array
    params: PyTree
    batch_stats: PyTree
    opt_state: PyTree


# ------------------------------------------------------------------------------ the steps
def train_step(state: TrainState, x: jax.Array, y: jax.Array, mask: jax.Array,
               key: jax.Array, *, model: VGG,
               tx: optax.GradientTransformation) -> tuple[TrainState, dict]:
    """One SGD step on the (augmented, normalised) batch `x`; padded rows have mask 0."""
    count = mask.sum()

    def loss_fn(params):
        logits, new_vars = model.apply(
            {"params": params, "batch_stats": state.batch_stats}, x, train=True, mask=mask,
            mutable=["batch_stats"], rngs={"dropout": key},
        )
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return (ce * mask).sum() / count, (logits, new_vars["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(
        loss=loss,
        correct=((logits.argmax(-1) == y) * mask).sum(),
        sq_param=analysis.sq_norms(state.params),
        sq_update=analysis.sq_norms(updates),
    )
    return TrainState(state.step + 1, params, batch_stats, opt_state), metrics


def eval_step(params: PyTree, batch_stats: PyTree, x: jax.Array, y: jax.Array,
              mask: jax.Array, *, model: VGG) -> tuple[jax.Array, jax.Array]:
    """Correct count and summed loss on the normalised batch `x`, in evaluation mode."""
    logits = model.apply({"params": params, "batch_stats": batch_stats}, x, train=False)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return ((logits.argmax(-1) == y) * mask).sum(), (ce * mask).sum()


def monitor_step(state: TrainState, x: jax.Array, y: jax.Array, mask: jax.Array, *,
                 model: VGG, tx: optax.GradientTransformation, spec_fn: Callable) -> dict:
    """Per-tensor monitors on one batch, without changing the state (REFERENCE section 9)."""

    def loss_fn(params):
        logits, _ = model.apply({"params": params, "batch_stats": state.batch_stats}, x,
                                train=True, mask=mask, mutable=["batch_stats"])
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return (ce * mask).sum() / mask.sum()

    grads = jax.grad(loss_fn)(state.params)
    updates, _ = tx.update(grads, state.opt_state, state.params)
    return analysis.tensor_monitors(state.params, grads, updates, state.opt_state,
                                    spec_fn(state.opt_state))


# ------------------------------------------------------------------------------ helpers
def _stack(trees: Sequence[PyTree]) -> PyTree:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _unstack(tree: PyTree, k: int) -> list[PyTree]:
    return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(k)]


def environment() -> dict[str, str]:
    """Versions and device, stored in every run record so numbers can be traced."""
    from wdjax import __version__

    dev = jax.devices()[0]
    return dict(wdjax=__version__, jax=jax.__version__, flax=flax.__version__,
                optax=optax.__version__, python=platform.python_version(),
                backend=jax.default_backend(), device_kind=dev.device_kind,
                device_count=str(jax.device_count()), host=platform.node())


def _layer_table(config: Config, params0: PyTree, conf: list,
                 factors: dict[str, float]) -> dict[str, dict]:
    """Per-layer kernel decay coefficient and kind at the start (for records and plots)."""
    spec = schemes.decay_spec(config.optimizer, params=params0, conf=conf, factors=factors,
                              weight_decay=config.weight_decay, L1_decay=config.L1_decay,
                              last1_mult=config.last1_mult, last2_mult=config.last2_mult,
                              topo_base=config.topo_base)
    return {layer: dict(factor=factors.get(layer, 1.0),
                        coefficient=float(spec.coefficients[layer]["conv"]["kernel"]),
                        kind=spec.kinds[layer]["conv"]["kernel"],
                        topographic=spec.multipliers is not None
                        and spec.multipliers[layer]["conv"]["kernel"] is not None)
            for layer in weight_layers(conf)}


@dataclasses.dataclass
class RunLog:
    """Host-side bookkeeping of one run in a (possibly vmapped) group."""

    config: Config
    dir: Path
    table: dict
    best: int = -1
    best_epoch: int = 0
    diverged: dict | None = None
    last: dict | None = None


def same_config(run_dir: Path, config: Config) -> bool:
    """Whether `run_dir` holds a run recorded with exactly `config`."""
    try:
        old = records.read_json(run_dir / "config.json")["config"]
    except (OSError, ValueError, KeyError):
        return False
    return old == records.jsonable(config.to_dict())


def prepare_run_dir(out: Path, config: Config, force: bool) -> Path:
    """The run's directory: new, or resumable with the same config; else RunError.

    A finished run (summary.json present) or a different config is refused unless `force`,
    which moves the old directory aside to ``<name>.replaced-<time>`` instead of deleting it.
    """
    run_dir = out / config.name
    state = records.run_state(run_dir)
    if state == "new":
        return run_dir
    same = same_config(run_dir, config)
    if not force:
        if state == "finished":
            raise records.RunError(f"run {config.name!r} already has results in {run_dir}; "
                                   "use --force-name to replace it")
        if not same:
            raise records.RunError(f"run {config.name!r} exists in {run_dir} with a different "
                                   "config; use --force-name to replace it or another --name")
        return run_dir
    if state == "finished" or not same:
        run_dir.rename(run_dir.with_name(f"{config.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"))
    return run_dir


class Programs(NamedTuple):
    """The model and the compiled steps shared by every run with the same `shared_key`."""

    model: VGG
    conf: list
    params0: PyTree
    batch_stats0: PyTree
    schedule: optax.Schedule
    factors: dict[str, float]
    step: Callable
    eval: Callable
    monitor: Callable
    unstack: Callable
    mesh: parallel.Mesh


@functools.lru_cache(maxsize=4)
def _programs(shared: tuple, k_runs: int, image_shape: tuple, num_classes: int,
              n_train: int, mesh: parallel.Mesh) -> Programs:
    cfg = Config(**dict(shared))
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    schedule = lr_schedule(cfg.base_lr, steps_per_epoch, cfg.epochs_per_stage)
    conf = vgg_conf(cfg.base, num_classes, image_shape[-1])
    model = VGG(conf, conv_impl=cfg.conv_impl)
    variables = init_variables(model, jax.random.PRNGKey(cfg.seed), image_shape)
    params0 = variables["params"]
    # The coefficients are measured on these initial params, re-created from the seed on
    # resume, so a resumed run uses exactly the numbers it started with.
    tx = schemes.build(cfg.optimizer, params=params0, conf=conf, lr=schedule,
                       separate_decay=cfg.separate_decay)
    factors = schemes.layer_factors(cfg.optimizer, params0, conf)

    def spec_fn(opt_state):
        return schemes.spec_from_state(cfg.optimizer, opt_state, params0, conf, factors)

    # Runs stacked on a leading axis share every batch: vmap over the state alone.
    def vm(f, n_run_args, n_shared):
        axes = (0,) * n_run_args + (None,) * n_shared
        return jax.vmap(f, in_axes=axes) if k_runs > 1 else f
    rep = parallel.replicated(mesh)
    runs = parallel.run_sharding(mesh, k_runs > 1)
    split = parallel.batch_sharding(mesh)

    def batch(images, labels, idx, mask, i):
        """Row i of the epoch's index matrix, gathered on device and split over `data`."""
        x = jax.lax.with_sharding_constraint(images[idx[i]], split)
        return x, labels[idx[i]], jax.lax.with_sharding_constraint(mask[i], split)

    def step(state, images, labels, idx, mask, epoch, i, key):
        x, y, m = batch(images, labels, idx, mask, i)
        # The flip depends on the seed, epoch and step only: resumed runs, vmapped runs and
        # sequential runs all see the same batches.
        key = jax.random.fold_in(jax.random.fold_in(key, epoch), i)
        x = batches.augment(jax.random.fold_in(key, 0), x)
        return vm(lambda s, *a: train_step(s, *a, model=model, tx=tx), 1, 4)(
            state, x, y, m, jax.random.fold_in(key, 1))

    def evaluate(params, batch_stats, images, labels, idx, mask, i):
        x, y, m = batch(images, labels, idx, mask, i)
        return vm(lambda p, b, *a: eval_step(p, b, *a, model=model), 2, 3)(
            params, batch_stats, batches.normalize(x), y, m)

    def monitor(state, images, labels, idx, mask, i):
        x, y, m = batch(images, labels, idx, mask, i)
        return vm(lambda s, *a: monitor_step(s, *a, model=model, tx=tx, spec_fn=spec_fn), 1, 3)(
            state, batches.normalize(x), y, m)

    return Programs(
        model, conf, params0, variables["batch_stats"], schedule, factors,
        step=jax.jit(step, out_shardings=(runs, rep), donate_argnums=0),
        eval=jax.jit(evaluate, out_shardings=rep),
        monitor=jax.jit(monitor, out_shardings=rep),
        unstack=jax.jit(lambda s: _unstack(s, k_runs), out_shardings=rep),
        mesh=mesh,
    )


def programs(cfg: Config, k_runs: int, image_shape: tuple, num_classes: int,
             n_train: int, mesh: parallel.Mesh) -> Programs:
    """Compiled steps for `cfg`'s group, reused by later runs that share them (sweeps)."""
    return _programs(cfg.shared_key(), k_runs, tuple(image_shape), num_classes, n_train, mesh)


# ------------------------------------------------------------------------------ the loop
def train(configs: Config | Sequence[Config], out: str | os.PathLike = "runs", *,
          dataset: data.Dataset | None = None, force: bool = False, progress: bool = True,
          stop_after_epochs: int | None = None, plots: bool = True,
          devices: int | None = None) -> list[dict]:
    """Train one run, or several that differ only in numeric hyperparameters, together.

    Writes each run's records under ``<out>/<name>/`` and resumes from its latest
    checkpoint when the directory holds an unfinished run with the same config.
    `stop_after_epochs` ends the call early (after that many epochs of this call), leaving
    a resumable run; used by tests and by callers with a time budget. `devices` limits the
    mesh to the first N devices (default: all; see `wdjax.parallel.make_mesh`).

    Returns:
      One summary dict per run (also written to ``summary.json``).
    """
    configs = [configs] if isinstance(configs, Config) else list(configs)
    for c in configs:
        c.validate()
    if len({c.shared_key() for c in configs}) != 1:
        raise ValueError("runs trained together must differ only in name and "
                         f"{', '.join(NUMERIC_HPARAMS)}")
    if len({c.name for c in configs}) != len(configs):
        raise ValueError("runs trained together need distinct names")
    cfg, k_runs = configs[0], len(configs)
    stacked = k_runs > 1
    mesh = parallel.make_mesh(k_runs, devices)
    parallel.check_batch(cfg.batch_size, mesh)
    writer = jax.process_index() == 0  # one process writes records; all write checkpoints
    out = records.check_writable(out)
    run_dirs = [prepare_run_dir(out, c, force) for c in configs]

    if dataset is None:
        dataset = data.load(cfg.data, train_subset=cfg.train_subset,
                            test_subset=cfg.test_subset)
    n_train, n_test = len(dataset.train_labels), len(dataset.test_labels)
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    prog = programs(cfg, k_runs, dataset.train_images.shape[1:], dataset.num_classes, n_train,
                    mesh)
    params0 = prog.params0
    # Each run's state carries its own hyperparameters; they share the compiled update.
    txs = [schemes.build(c.optimizer, params=params0, conf=prog.conf, lr=prog.schedule,
                         separate_decay=c.separate_decay, **c.hparams()) for c in configs]
    states = [TrainState(jnp.zeros([], jnp.int32), params0, prog.batch_stats0, t.init(params0))
              for t in txs]
    logs = [RunLog(c, d, _layer_table(c, params0, prog.conf, prog.factors))
            for c, d in zip(configs, run_dirs, strict=True)]
    ckpts = [checkpoint.Manager(d / "checkpoints") for d in run_dirs]
    start_epoch = _resume(states, logs, ckpts, writer)
    # Host copies placed on the mesh (this also gives the donated step fresh buffers).
    state = parallel.put_tree(jax.device_get(_stack(states) if stacked else states[0]),
                              parallel.run_sharding(mesh, stacked))
    env = environment()
    for log in logs if writer else []:
        log.dir.mkdir(parents=True, exist_ok=True)
        records.write_json(log.dir / "config.json", dict(
            config=log.config.to_dict(), environment=env, layers=log.table,
            data=dict(source=dataset.source, checksum=dataset.checksum, train=n_train,
                      test=n_test), steps_per_epoch=steps_per_epoch))
    schedule, model = prog.schedule, prog.model
    rep = parallel.replicated(mesh)
    rows_split = parallel.rows_sharding(mesh)
    train_x, train_y = parallel.put(dataset.train_images, rep), parallel.put(
        dataset.train_labels, rep)
    test_x, test_y = parallel.put(dataset.test_images, rep), parallel.put(
        dataset.test_labels, rep)
    eval_idx, eval_mask = batches.eval_batches(n_test, min(cfg.eval_batch_size, n_test))
    eval_idx, eval_mask = parallel.put(eval_idx, rows_split), parallel.put(eval_mask, rows_split)
    key = parallel.put(np.asarray(jax.random.PRNGKey(cfg.seed)), rep)
    leaf_names = [analysis.leaf_name(p) for p, _ in jax.tree_util.tree_leaves_with_path(params0)]
    kernel_ix = {name.split("/")[0]: i for i, name in enumerate(leaf_names)
                 if name.endswith("conv/kernel")}

    label = cfg.name if not stacked else f"{configs[0].name}..{configs[-1].name}"
    bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch,
               disable=not (progress and writer), desc=label, unit="step",
               dynamic_ncols=True, mininterval=1.0)
    if progress and writer and (mesh.devices.size > 1 or jax.process_count() > 1):
        bar.write(parallel.describe(mesh))
    end_epoch = cfg.epochs if stop_after_epochs is None else min(
        cfg.epochs, start_epoch + stop_after_epochs)
    for epoch in range(start_epoch, end_epoch):
        t0 = time.time()
        lr = float(schedule(epoch * steps_per_epoch))
        idx, mask = batches.epoch_batches(cfg.seed, epoch, n_train, cfg.batch_size)
        idx, mask = parallel.put(idx, rows_split), parallel.put(mask, rows_split)
        window, epoch_metrics = [], []
        for i in range(steps_per_epoch):
            state, m = prog.step(state, train_x, train_y, idx, mask, epoch, i, key)
            window.append(m)
            if len(window) == cfg.log_every or i == steps_per_epoch - 1:
                fetched = jax.device_get(window)  # the one host sync per window
                epoch_metrics += fetched
                _log_steps(logs, fetched, epoch * steps_per_epoch + i + 1, epoch, lr, stacked,
                           writer)
                bar.update(len(window))
                seen = min((i + 1) * cfg.batch_size, n_train)
                bar.set_postfix(_postfix(epoch, epoch_metrics, seen), refresh=False)
                window = []
                if all(log.diverged for log in logs):
                    break
        # ---- epoch end: evaluation, monitors, dead units, records, checkpoint
        correct, loss_sum = 0, 0
        for j in range(eval_idx.shape[0]):
            c, s = prog.eval(state.params, state.batch_stats, test_x, test_y, eval_idx,
                             eval_mask, j)
            correct, loss_sum = correct + c, loss_sum + s
        correct, loss_sum = np.asarray(correct).reshape(-1), np.asarray(loss_sum).reshape(-1)
        mon = jax.device_get(prog.monitor(state, train_x, train_y, idx, mask,
                                          steps_per_epoch - 1))
        run_states = prog.unstack(state) if stacked else [state]
        for r, log in enumerate(logs):
            if log.diverged and log.diverged.get("epoch", epoch) < epoch:
                continue
            pick = (lambda x, r=r: x[r]) if stacked else (lambda x: x)
            rows = [jax.tree.map(pick, m) for m in epoch_metrics]
            row = _epoch_row(log, epoch, lr, rows, int(correct[r]), float(loss_sum[r]), n_train,
                             n_test, jax.tree.map(pick, mon), run_states[r].params,
                             kernel_ix, time.time() - t0)
            if writer:
                records.append_jsonl(log.dir / "metrics.jsonl", row)
            log.last = row
            ckpts[r].save(epoch + 1, run_states[r], dict(best=log.best,
                                                         best_epoch=log.best_epoch,
                                                         diverged=log.diverged))
        if writer:
            bar.write(_epoch_line(label, epoch, cfg.epochs, lr, logs))
        if all(log.diverged for log in logs):
            break
    bar.close()
    for c in ckpts:
        c.wait()
    finished = all(log.diverged for log in logs) or end_epoch == cfg.epochs
    summaries = []
    final_states = prog.unstack(state) if stacked else [state]
    for r, log in enumerate(logs):
        summary = _summary(log, n_train, n_test, cfg.epochs)
        if finished and writer:
            if log.config.histograms:
                summary["histograms"] = _histograms(model, final_states[r], test_x, log.dir)
            if plots:
                from wdjax import plots as plotting

                plotting.run_pictures(log.dir)
            # Last: summary.json marks the run finished, so a process killed before this
            # point leaves a run that the same command completes.
            records.write_json(log.dir / "summary.json", summary)
        summaries.append(summary)
    return summaries


def _resume(states: list[TrainState], logs: list[RunLog], ckpts: list[checkpoint.Manager],
            writer: bool = True) -> int:
    """Restore every run of the group from its newest common checkpoint; return the epoch."""
    latest = [c.latest_epoch() for c in ckpts]
    if any(e is None for e in latest):
        for log, c in zip(logs, ckpts, strict=True):  # a fresh start: old partials are stale
            if writer:
                c.reset()
                for f in ("metrics.jsonl", "steps.jsonl"):
                    (log.dir / f).unlink(missing_ok=True)
        return 0
    epoch = min(latest)
    restored_all = [c.restore(epoch, s) for c, s in zip(ckpts, states, strict=True)]
    fallback = min(extra["epoch"] for _, extra in restored_all)
    if fallback < epoch:  # a damaged newest checkpoint: the whole group steps back
        epoch = fallback
        restored_all = [c.restore(epoch, s) for c, s in zip(ckpts, states, strict=True)]
    for r, log in enumerate(logs):
        restored, extra = restored_all[r]
        states[r] = restored
        log.best, log.best_epoch = extra["best"], extra["best_epoch"]
        log.diverged = extra.get("diverged")
        # Records written after this checkpoint (by a killed process) are replayed anew.
        rows = [row for row in records.read_jsonl(log.dir / "metrics.jsonl")
                if row["epoch"] <= epoch]
        if writer:
            records.rewrite_jsonl(log.dir / "metrics.jsonl", rows)
        log.last = rows[-1] if rows else None
        steps = [row for row in records.read_jsonl(log.dir / "steps.jsonl")
                 if row["step"] <= int(restored.step)]
        if writer:
            records.rewrite_jsonl(log.dir / "steps.jsonl", steps)
    return epoch


def _log_steps(logs, fetched, step, epoch, lr, stacked, writer) -> None:
    """One steps.jsonl line per run per window; detect divergence (first non-finite step)."""
    for r, log in enumerate(logs):
        if log.diverged:
            continue
        pick = (lambda x, r=r: x[r]) if stacked else (lambda x: x)
        losses = np.array([pick(m["loss"]) for m in fetched], np.float64)
        sq_u = np.array([pick(m["sq_update"]).sum() for m in fetched])
        sq_p = np.array([pick(m["sq_param"]).sum() for m in fetched])
        if writer:
            records.append_jsonl(log.dir / "steps.jsonl", dict(
                step=step, epoch=epoch + 1, lr=lr, loss=float(losses.mean()),
                update_norm=float(np.sqrt(sq_u[-1])), param_norm=float(np.sqrt(sq_p[-1]))))
        bad = ~np.isfinite(losses)
        if bad.any():
            first = step - len(fetched) + int(np.argmax(bad)) + 1
            log.diverged = dict(step=first, epoch=epoch + 1, loss=str(losses[bad][0]))


def _postfix(epoch, rows, seen) -> dict:
    """Progress-bar fields: epoch, mean loss and training accuracy so far (first run)."""
    loss = np.mean([np.asarray(m["loss"]).reshape(-1)[0] for m in rows])
    acc = sum(np.asarray(m["correct"]).reshape(-1)[0] for m in rows) / max(seen, 1)
    return dict(epoch=epoch + 1, loss=f"{loss:.3f}", acc=f"{acc:.1%}")


def _epoch_row(log: RunLog, epoch, lr, rows, test_correct, test_loss, n_train, n_test, mon,
               params, kernel_ix, seconds) -> dict:
    train_correct = int(sum(int(m["correct"]) for m in rows))
    losses = np.array([float(m["loss"]) for m in rows])
    if test_correct > log.best and not log.diverged:
        log.best, log.best_epoch = test_correct, epoch + 1
    c = log.config
    angular = {}
    for layer, info in log.table.items():
        i = kernel_ix[layer]
        ratios = [math.sqrt(m["sq_update"][i] / m["sq_param"][i]) for m in rows
                  if m["sq_param"][i] > 0]
        predicted = None
        if (info["kind"] == "l2" and layer != "logit" and not c.optimizer.startswith("LSSGD")
                and c.optimizer != "Adam"):
            predicted = analysis.equilibrium_angular_update(lr, info["coefficient"], c.momentum)
        angular[layer] = dict(measured=float(np.mean(ratios)) if ratios else 0.0,
                              predicted=predicted)
    dead = {str(t): analysis.model_utilization(params, t) for t in analysis.DEAD_THRESHOLDS}
    return dict(
        epoch=epoch + 1, lr=lr, seconds=round(seconds, 3),
        train_loss=float(losses.mean()) if len(losses) else float("nan"),
        train_correct=train_correct, train_total=n_train, train_accuracy=train_correct / n_train,
        test_correct=test_correct, test_total=n_test, test_accuracy=test_correct / n_test,
        test_loss=test_loss / n_test, best_test_correct=log.best, best_epoch=log.best_epoch,
        diverged=log.diverged, dead_units=dead, angular_update=angular,
        tensors={name: {k: float(v) for k, v in d.items()} for name, d in mon.items()},
    )


def _epoch_line(label, epoch, epochs, lr, logs) -> str:
    parts = []
    for log in logs:
        row = log.last or {}
        if log.diverged:
            parts.append(f"{log.config.name}: diverged at step {log.diverged['step']}")
        elif row.get("epoch") == epoch + 1:
            parts.append(f"{log.config.name}: loss {row['train_loss']:.3f} "
                         f"train {row['train_accuracy']:.2%} test {row['test_accuracy']:.2%} "
                         f"(best {log.best / row['test_total']:.2%} @{log.best_epoch})")
    return f"epoch {epoch + 1}/{epochs} lr {lr:g} | " + " | ".join(parts)


def _summary(log: RunLog, n_train, n_test, epochs) -> dict:
    row = log.last or {}
    return dict(
        name=log.config.name, optimizer=log.config.optimizer,
        hparams=log.config.hparams(), epochs_done=row.get("epoch", 0), epochs=epochs,
        final_test_accuracy=row.get("test_accuracy"), final_test_correct=row.get("test_correct"),
        final_train_correct=row.get("train_correct"), train_total=n_train, test_total=n_test,
        best_test_correct=log.best if log.best >= 0 else None,
        best_test_accuracy=log.best / n_test if log.best >= 0 else None,
        best_epoch=log.best_epoch, diverged=log.diverged,
        dead_units=row.get("dead_units"),
        notebook_line=(f"- {log.config.name}: {row.get('test_accuracy', float('nan')):.4f} "
                       f"({row.get('train_correct')})") if row else None,
    )


HISTOGRAM_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1", "fc6", "logit")


def _histograms(model: VGG, state: TrainState, test_x: jax.Array, run_dir: Path) -> str:
    """Histograms of unit outputs over the test set for the original's picture layers."""
    @jax.jit
    def capture(x):
        _, inter = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                               batches.normalize(x), train=False,
                               capture_intermediates=lambda mdl, _: mdl.name in HISTOGRAM_LAYERS)
        return {k: v["__call__"][0] for k, v in inter["intermediates"].items()}

    outs: dict[str, list] = {}
    for i in range(0, len(test_x), 1000):
        for k, v in jax.device_get(capture(test_x[i:i + 1000])).items():
            outs.setdefault(k, []).append(np.asarray(v).reshape(-1))
    from wdjax import plots as plotting

    path = run_dir / "histograms.png"
    plotting.activation_histograms({k: np.concatenate(v) for k, v in outs.items()}, path)
    return path.name
