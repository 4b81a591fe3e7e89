"""One training run of the original protocol (docs/protocol.md), or several at once.

`train` reads top to bottom: check the group, prepare the run directories and the data,
build the compiled programs (`wdjax.training.steps`), restore or start the states, then per epoch
train, evaluate, record (`wdjax.training.runlog`) and checkpoint, and at the end draw and summarise.

Several configs that differ only in traced hyperparameters (and names) train *together*:
their states are stacked and the steps are ``jax.vmap``-ed over the run axis, sharing each
data batch and augmentation key, so run k computes what config k alone with the same seed
computes (XLA orders the vmapped sums differently, so the numbers agree to rounding).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from wdjax import data, storage
from wdjax.analysis import units
from wdjax.schemes import hparams
from wdjax.training import batches, checkpoint, parallel, runlog, steps
from wdjax.training import tensorboard as tb
from wdjax.training.config import Config, with_seeds
from wdjax.training.runlog import RunLog, prepare_run_dir, same_config
from wdjax.training.steps import Programs, TrainState, lr_schedule, programs

__all__ = ["Config", "Programs", "TrainState", "lr_schedule", "prepare_run_dir", "programs",
           "same_config", "train"]


@dataclasses.dataclass
class Group:
    """The runs trained together, their compiled programs and the data on the device."""

    configs: list[Config]
    prog: Programs
    state: Any
    logs: list[RunLog]
    ckpts: list[checkpoint.Manager]
    arrays: dict[str, jax.Array]
    sizes: tuple[int, int]
    writer: bool
    events: list[tb.EpochWriter] = dataclasses.field(default_factory=list)

    @property
    def cfg(self) -> Config:
        return self.configs[0]

    @property
    def stacked(self) -> bool:
        return len(self.configs) > 1

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.sizes[0] / self.cfg.batch_size)

    def per_run(self, tree: Any, r: int) -> Any:
        return jax.tree.map(lambda x: x[r], tree) if self.stacked else tree


def check_group(configs: Config | Sequence[Config]) -> list[Config]:
    """The configs as a list, validated; ValueError unless they can train together."""
    configs = [configs] if isinstance(configs, Config) else list(configs)
    for c in configs:
        c.validate()
    if len({c.shared_key() for c in configs}) != 1:
        raise ValueError("runs trained together must differ only in name and "
                         f"{', '.join(hparams.TRACED)}")
    if len({c.run_path for c in configs}) != len(configs):
        raise ValueError("runs trained together need distinct names (or seeds)")
    return configs


def _write_configs(group: Group, dataset: data.Dataset) -> None:
    environment = runlog.environment()
    for log in group.logs if group.writer else []:
        log.dir.mkdir(parents=True, exist_ok=True)
        storage.write_json(log.dir / "config.json", dict(
            config=log.config.to_dict(), environment=environment, layers=log.table,
            data=dict(source=dataset.source, checksum=dataset.checksum, train=group.sizes[0],
                      test=group.sizes[1]), steps_per_epoch=group.steps_per_epoch))


def _keys(configs: list[Config]) -> np.ndarray:
    """The augmentation key: one for a group of one seed, else one per run."""
    keys = [np.asarray(jax.random.PRNGKey(c.seed)) for c in configs]
    return np.stack(keys) if per_run_data(configs) else keys[0]


def per_run_data(configs: Sequence[Config]) -> bool:
    """Whether the runs draw their own batches and flips (they have different seeds)."""
    return len({c.seed for c in configs}) > 1


def _device_data(dataset: data.Dataset, configs: list[Config], mesh: parallel.Mesh) -> dict:
    cfg = configs[0]
    rep, rows = parallel.replicated(mesh), parallel.rows_sharding(mesh)
    n_test = len(dataset.test_labels)
    eval_idx, eval_mask = batches.pad_columns(
        *batches.eval_batches(n_test, min(cfg.eval_batch_size, n_test)), mesh.shape["data"])
    return dict(train_x=parallel.put(dataset.train_images, rep),
                train_y=parallel.put(dataset.train_labels, rep),
                test_x=parallel.put(dataset.test_images, rep),
                test_y=parallel.put(dataset.test_labels, rep),
                eval_idx=parallel.put(eval_idx, rows), eval_mask=parallel.put(eval_mask, rows),
                key=parallel.put(_keys(configs), rep))


def start(configs: list[Config], run_dirs: list[Path], dataset: data.Dataset,
          mesh: parallel.Mesh) -> tuple[Group, int]:
    """Build the group's programs and states, resume from checkpoints; return the epoch."""
    n_train = len(dataset.train_labels)
    ckpts = [checkpoint.Manager(d / "checkpoints") for d in run_dirs]
    prog = programs(configs, dataset.train_images.shape[1:], dataset.num_classes, n_train,
                    mesh)
    run_starts = steps.starts(configs, prog, runlog.recorded_factors(run_dirs, ckpts))
    states = steps.initial_states(configs, prog, run_starts)
    logs = [RunLog(c, d, runlog.layer_records(c, st.variables["params"], prog.layers,
                                              st.factors))
            for c, d, st in zip(configs, run_dirs, run_starts, strict=True)]
    writer = jax.process_index() == 0  # one process writes records; all write checkpoints
    start_epoch = runlog.resume(states, logs, ckpts, writer)
    stacked = len(configs) > 1
    # Host copies placed on the mesh (this also gives the donated step fresh buffers).
    state = parallel.put_tree(jax.device_get(steps.stack(states) if stacked else states[0]),
                              parallel.run_sharding(mesh, stacked))
    group = Group(configs, prog, state, logs, ckpts, _device_data(dataset, configs, mesh),
                  (n_train, len(dataset.test_labels)), writer)
    _write_configs(group, dataset)
    return group, start_epoch


def train_epoch(group: Group, epoch: int, bar: tqdm) -> tuple[list[dict], dict | None]:
    """One epoch of steps; returns the per-step metrics and the last step's monitors.

    The monitors are those the epoch's last step computed (`steps.train_step`); ``None``
    when the epoch stopped early (every run diverged).
    """
    cfg, a, mesh = group.cfg, group.arrays, group.prog.mesh
    lr = float(group.prog.schedule(epoch * group.steps_per_epoch))
    orders = [batches.pad_columns(*batches.epoch_batches(c.seed, epoch, group.sizes[0],
                                                         cfg.batch_size), mesh.shape["data"])
              for c in (group.configs if per_run_data(group.configs) else [cfg])]
    idx, mask = (np.stack([o[0] for o in orders]), orders[0][1]) if len(orders) > 1 else orders[0]
    rows = parallel.rows_sharding(mesh)
    batch = dict(idx=parallel.put(idx, parallel.index_sharding(mesh, idx.ndim)),
                 mask=parallel.put(mask, rows))
    window, metrics, mon = [], [], None
    for i in range(group.steps_per_epoch):
        group.state, m = group.prog.step(group.state, a["train_x"], a["train_y"], batch["idx"],
                                         batch["mask"], epoch, i, a["key"])
        tensors = m.pop("tensors")  # left on the device: zeros except on the last step
        if i == group.steps_per_epoch - 1:
            mon = tensors
        window.append(m)
        step = epoch * group.steps_per_epoch + i + 1  # global: log windows span epochs
        if step % cfg.log_every == 0 or i == group.steps_per_epoch - 1:
            fetched = jax.device_get(window)  # the one host sync per window
            metrics += fetched
            runlog.log_steps(group.logs, fetched, step, epoch, lr, group.stacked, group.writer,
                             cfg.log_every)
            bar.update(len(window))
            seen = min((i + 1) * cfg.batch_size, group.sizes[0])
            bar.set_postfix(runlog.postfix(epoch, metrics, seen), refresh=False)
            window = []
            if all(log.diverged for log in group.logs):
                break
    return metrics, mon


def evaluate(group: Group) -> tuple[np.ndarray, np.ndarray]:
    """Test correct counts and summed losses, one per run."""
    a, prog = group.arrays, group.prog
    correct, loss_sum = 0, 0
    for j in range(a["eval_idx"].shape[0]):
        c, s = prog.eval(group.state.params, group.state.batch_stats, a["test_x"], a["test_y"],
                         a["eval_idx"], a["eval_mask"], j)
        correct, loss_sum = correct + c, loss_sum + s
    return np.asarray(correct).reshape(-1), np.asarray(loss_sum).reshape(-1)


def end_epoch(group: Group, epoch: int, metrics: list[dict], mon: dict | None,
              t0: float) -> None:
    """Evaluate, write each run's epoch row (with the last step's monitors), checkpoint."""
    prog = group.prog
    lr = float(prog.schedule(epoch * group.steps_per_epoch))
    correct, loss_sum = evaluate(group)
    mon = jax.device_get(mon) if mon is not None else {}
    run_states = prog.unstack(group.state) if group.stacked else [group.state]
    for r, log in enumerate(group.logs):
        if log.diverged and log.diverged.get("epoch", epoch) < epoch:
            continue
        row = runlog.epoch_row(
            log, epoch, lr, [group.per_run(m, r) for m in metrics],
            (int(correct[r]), float(loss_sum[r])), group.sizes, group.per_run(mon, r),
            run_states[r], prog.layers, time.time() - t0)
        if group.writer:
            storage.append_jsonl(log.dir / "metrics.jsonl", row)
        if group.events:  # the row as metrics.jsonl holds it (string keys, NaN as "nan")
            group.events[r].write(storage.jsonable(row))
        log.last = row
        group.ckpts[r].save(epoch + 1, run_states[r], dict(
            best=log.best, best_epoch=log.best_epoch, diverged=log.diverged, window=log.window))


def _histograms(group: Group, state: TrainState, run_dir: Path) -> str:
    """Histograms of unit outputs over the test set (`units.picture_layers`)."""
    from wdjax.analysis import plots

    outputs = units.unit_outputs(
        group.prog.model, {"params": state.params, "batch_stats": state.batch_stats},
        group.arrays["test_x"], units.picture_layers(group.prog.layers), batches.normalize)
    path = run_dir / "histograms.png"
    plots.activation_histograms(outputs, path)
    return path.name


def open_events(group: Group, start_epoch: int) -> None:
    """One TensorBoard `EpochWriter` per run (written by the writing process only)."""
    if not group.writer:
        return
    for log in group.logs:
        if start_epoch == 0:  # a fresh run: events of an earlier, unrecorded try are stale
            for old in (log.dir / tb.SUBDIR).glob("events.out.tfevents.*[0-9]"):
                old.unlink()
        group.events.append(tb.EpochWriter(log.dir, resume_epoch=start_epoch))


def finish(group: Group, finished: bool, plots: bool) -> list[dict]:
    """Pictures and summary.json (written last: its presence marks a finished run)."""
    for c in group.ckpts:
        c.wait()
    for events in group.events:
        events.close()
    summaries = []
    final_states = group.prog.unstack(group.state) if group.stacked else [group.state]
    for r, log in enumerate(group.logs):
        summary = runlog.summary(log, *group.sizes, group.cfg.epochs)
        if finished and group.writer:
            grouping = runlog.topographic_grouping(log.config, final_states[r].params,
                                                   group.prog.layers)
            if grouping is not None:
                summary["topographic_grouping"] = grouping
            if log.config.histograms:
                summary["histograms"] = _histograms(group, final_states[r], log.dir)
            if plots:
                from wdjax.analysis import plots as plotting

                plotting.run_pictures(log.dir)
            # Last: a process killed before this point leaves a run the same command completes.
            storage.write_json(log.dir / "summary.json", summary)
        summaries.append(summary)
    return summaries


def train(configs: Config | Sequence[Config], out: str | os.PathLike = "runs", *,
          dataset: data.Dataset | None = None, force: bool = False, progress: bool = True,
          stop_after_epochs: int | None = None, plots: bool = True,
          devices: int | None = None, seeds: int = 1,
          tensorboard: bool | None = None) -> list[dict]:
    """Train one run, or several that differ only in traced hyperparameters, together.

    Writes each run's records under ``<out>/<name>/`` and resumes from its latest
    checkpoint when the directory holds an unfinished run with the same config.
    `stop_after_epochs` ends the call early (after that many epochs of this call), leaving
    a resumable run. `devices` limits the mesh to the first N devices (default: all).
    `seeds` > 1 trains each config with seeds ``seed, seed + 1, ...`` together (each seed
    its own initial weights, batch order and flips), recording seed s in
    ``<out>/<name>/seed<s>/``.
    `tensorboard` (default: ``$WDJAX_TENSORBOARD``) also writes each epoch's row as
    TensorBoard events into each run directory's ``tensorboard/`` (`wdjax.training.tensorboard`).

    Returns:
      One summary dict per run (also written to ``summary.json``).
    """
    configs = check_group(with_seeds(check_group(configs), seeds))
    cfg = configs[0]
    mesh = parallel.make_mesh(len(configs), devices)
    out = storage.check_writable(out)
    run_dirs = [prepare_run_dir(out, c, force) for c in configs]
    if dataset is None:
        dataset = data.load(cfg.data, train_subset=cfg.train_subset, test_subset=cfg.test_subset)
    # A timescale (tau_epochs) becomes the weight decay here, where the epoch's size is known.
    steps_per_epoch = math.ceil(len(dataset.train_labels) / cfg.batch_size)
    configs = [c.with_timescale(steps_per_epoch) for c in configs]
    group, start_epoch = start(configs, run_dirs, dataset, mesh)
    if tb.enabled(tensorboard):
        open_events(group, start_epoch)
    end = cfg.epochs if stop_after_epochs is None else min(cfg.epochs,
                                                           start_epoch + stop_after_epochs)
    label = cfg.name if not group.stacked else f"{cfg.name}..{configs[-1].name}"
    show = progress and group.writer
    bar = tqdm(total=cfg.epochs * group.steps_per_epoch,
               initial=start_epoch * group.steps_per_epoch, disable=not show, desc=label,
               unit="step", dynamic_ncols=True, mininterval=1.0)
    if show and (mesh.devices.size > 1 or jax.process_count() > 1):
        bar.write(parallel.describe(mesh))
    for epoch in range(start_epoch, end):
        t0 = time.time()
        metrics, mon = train_epoch(group, epoch, bar)
        end_epoch(group, epoch, metrics, mon, t0)
        if group.writer:
            lr = float(group.prog.schedule(epoch * group.steps_per_epoch))
            bar.write(runlog.epoch_line(label, epoch, cfg.epochs, lr, group.logs))
        if all(log.diverged for log in group.logs):
            break
    bar.close()
    finished = all(log.diverged for log in group.logs) or end == cfg.epochs
    return finish(group, finished, plots)
