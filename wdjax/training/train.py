"""Training runs of the original protocol (docs/protocol.md): configs that differ only in traced
hyperparameters train together, states stacked and steps ``jax.vmap``-ed, so run k computes
what config k alone computes (to rounding)."""

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
from wdjax.training.steps import Programs, TrainState, lr_schedule, per_run_data, programs

__all__ = ["Config", "Programs", "TrainState", "lr_schedule", "prepare_run_dir", "programs",
           "same_config", "train"]


@dataclasses.dataclass
class Group:
    """The runs trained together, their compiled programs, state, records and device data."""

    configs: list[Config]
    prog: Programs
    state: Any
    logs: list[RunLog]
    ckpts: list[checkpoint.Manager]
    events: list[tb.EpochWriter]
    arrays: dict[str, jax.Array]
    sizes: tuple[int, int]
    writer: bool  # this process writes the records (all write checkpoints)

    @property
    def stacked(self) -> bool:
        return len(self.configs) > 1

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.sizes[0] / self.configs[0].batch_size)

    def lr(self, epoch: int) -> float:
        return float(self.prog.schedule(epoch * self.steps_per_epoch))

    def per_run(self, tree: Any, r: int) -> Any:
        return jax.tree.map(lambda x: x[r], tree) if self.stacked else tree

    def run_states(self) -> list:
        return self.prog.unstack(self.state) if self.stacked else [self.state]


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


def _keys(configs: list[Config]) -> np.ndarray:
    """The augmentation key: one for a group of one seed, else one per run."""
    keys = [np.asarray(jax.random.PRNGKey(c.seed)) for c in configs]
    return np.stack(keys) if per_run_data(configs) else keys[0]


def _device_data(dataset: data.Dataset, configs: list[Config], mesh: parallel.Mesh) -> dict:
    n_test = len(dataset.test_labels)
    eval_idx, eval_mask = batches.pad_columns(*batches.eval_batches(
        n_test, min(configs[0].eval_batch_size, n_test)), mesh.shape["data"])
    rep, rows = parallel.replicated(mesh), parallel.rows_sharding(mesh)
    host = dict(train_x=dataset.train_images, train_y=dataset.train_labels,
                test_x=dataset.test_images, test_y=dataset.test_labels, key=_keys(configs))
    return dict(**{k: parallel.put(v, rep) for k, v in host.items()},
                eval_idx=parallel.put(eval_idx, rows), eval_mask=parallel.put(eval_mask, rows))


def start(configs: list[Config], run_dirs: list[Path], dataset: data.Dataset,
          mesh: parallel.Mesh, events: bool = False) -> tuple[Group, int]:
    """Build the group's programs and states, resume from checkpoints, write each run's
    config.json (and open its TensorBoard events); return the group and its epoch."""
    sizes = len(dataset.train_labels), len(dataset.test_labels)
    ckpts = [checkpoint.Manager(d / "checkpoints") for d in run_dirs]
    prog = programs(configs, dataset.train_images.shape[1:], dataset.num_classes, sizes[0], mesh)
    run_starts = steps.starts(configs, prog, list(map(runlog.recorded_factors, run_dirs, ckpts)))
    states = steps.initial_states(configs, prog, run_starts)
    logs = [RunLog(c, d, runlog.layer_records(c, st.variables["params"], prog.layers, st.factors))
            for c, d, st in zip(configs, run_dirs, run_starts, strict=True)]
    writer = jax.process_index() == 0
    epoch = runlog.resume(states, logs, ckpts, writer)
    stacked = len(configs) > 1
    # Host copies placed on the mesh (this also gives the donated step fresh buffers).
    state = parallel.put_tree(jax.device_get(steps.stack(states) if stacked else states[0]),
                              parallel.run_sharding(mesh, stacked))
    group = Group(configs, prog, state, logs, ckpts, [], _device_data(dataset, configs, mesh),
                  sizes, writer)
    environment = runlog.environment()
    for log in logs if writer else []:
        log.dir.mkdir(parents=True, exist_ok=True)
        storage.write_json(log.dir / "config.json", dict(
            config=log.config.to_dict(), environment=environment, layers=log.table,
            data=dict(source=dataset.source, checksum=dataset.checksum, train=sizes[0],
                      test=sizes[1]), steps_per_epoch=group.steps_per_epoch))
        if events:
            group.events.append(tb.EpochWriter(log.dir, resume_epoch=epoch))
    return group, epoch


def train_epoch(group: Group, epoch: int, bar: tqdm) -> tuple[list[dict], dict | None]:
    """One epoch of steps: the per-step metrics and the monitors of the last step
    (`steps.train_step`; None when every run diverged before it)."""
    cfg, a, mesh = group.configs[0], group.arrays, group.prog.mesh
    orders = [batches.pad_columns(*batches.epoch_batches(c.seed, epoch, group.sizes[0],
                                                         cfg.batch_size), mesh.shape["data"])
              for c in (group.configs if per_run_data(group.configs) else [cfg])]
    idx, mask = (np.stack([o[0] for o in orders]), orders[0][1]) if len(orders) > 1 else orders[0]
    idx = parallel.put(idx, parallel.rows_sharding(mesh, idx.ndim))
    mask = parallel.put(mask, parallel.rows_sharding(mesh))
    window, metrics = [], []
    for i in range(group.steps_per_epoch):
        group.state, m = group.prog.step(group.state, a["train_x"], a["train_y"], idx, mask,
                                         epoch, i, a["key"])
        mon = m.pop("tensors")  # left on the device: zeros except on the last step
        window.append(m)
        step = epoch * group.steps_per_epoch + i + 1  # global: log windows span epochs
        if step % cfg.log_every == 0 or i == group.steps_per_epoch - 1:
            fetched = jax.device_get(window)  # the one host sync per window
            metrics += fetched
            runlog.log_steps(group.logs, fetched, step, epoch, group.lr(epoch), group.stacked,
                             group.writer, cfg.log_every)
            bar.update(len(window))
            window = []
            # The progress bar shows the first run's mean loss and accuracy so far.
            loss = np.mean([np.ravel(x["loss"])[0] for x in metrics])
            acc = sum(np.ravel(x["correct"])[0] for x in metrics) / min(
                (i + 1) * cfg.batch_size, group.sizes[0])
            bar.set_postfix(dict(epoch=epoch + 1, loss=f"{loss:.3f}", acc=f"{acc:.1%}"),
                            refresh=False)
            if all(log.diverged for log in group.logs):
                break
    return metrics, mon if i == group.steps_per_epoch - 1 else None


def evaluate(group: Group) -> tuple[np.ndarray, np.ndarray]:
    """Test correct counts and summed losses, one per run."""
    a, prog = group.arrays, group.prog
    correct, loss_sum = 0, 0
    for j in range(a["eval_idx"].shape[0]):
        c, s = prog.eval(group.state.params, group.state.batch_stats, a["test_x"], a["test_y"],
                         a["eval_idx"], a["eval_mask"], j)
        correct, loss_sum = correct + c, loss_sum + s
    return np.ravel(correct), np.ravel(loss_sum)


def end_epoch(group: Group, epoch: int, metrics: list[dict], mon: dict | None,
              t0: float) -> None:
    """Evaluate, write each run's epoch row (with the last step's monitors), checkpoint."""
    correct, loss_sum = evaluate(group)
    mon = jax.device_get(mon) if mon is not None else {}
    run_states = group.run_states()
    for r, log in enumerate(group.logs):
        if log.diverged and log.diverged.get("epoch", epoch) < epoch:
            continue
        row = runlog.epoch_row(
            log, epoch, group.lr(epoch), [group.per_run(m, r) for m in metrics],
            (int(correct[r]), float(loss_sum[r])), group.sizes, group.per_run(mon, r),
            run_states[r], group.prog.layers, time.time() - t0)
        if group.writer:
            storage.append_jsonl(log.dir / "metrics.jsonl", row)
        if group.events:  # the row as metrics.jsonl holds it (string keys, NaN as "nan")
            group.events[r].write(storage.jsonable(row))
        log.last = row
        group.ckpts[r].save(epoch + 1, run_states[r], dict(
            best=log.best, best_epoch=log.best_epoch, diverged=log.diverged, window=log.window))


def finish(group: Group, finished: bool, plots: bool) -> list[dict]:
    """Pictures and summary.json (written last: its presence marks a finished run)."""
    for c in group.ckpts:
        c.wait()
    for events in group.events:
        events.close()
    summaries = []
    for log, state in zip(group.logs, group.run_states(), strict=True):
        summary = runlog.summary(log, *group.sizes, log.config.epochs)
        if finished and group.writer:
            from wdjax.analysis import plots as plotting  # matplotlib: only to draw

            grouping = runlog.topographic_grouping(log.config, state.params, group.prog.layers)
            if grouping is not None:
                summary["topographic_grouping"] = grouping
            if log.config.histograms:  # unit outputs over the test set
                plotting.activation_histograms(units.unit_outputs(
                    group.prog.model, {"params": state.params, "batch_stats": state.batch_stats},
                    group.arrays["test_x"], units.picture_layers(group.prog.layers),
                    batches.normalize), log.dir / "histograms.png")
                summary["histograms"] = "histograms.png"
            if plots:
                plotting.run_pictures(log.dir)
            # Last: a process killed before this point leaves a run the same command completes.
            storage.write_json(log.dir / "summary.json", summary)
        summaries.append(summary)
    return summaries


def train(configs: Config | Sequence[Config], out: str | os.PathLike = "runs", *,
          dataset: data.Dataset | None = None, force: bool = False, progress: bool = True,
          stop_after_epochs: int | None = None, plots: bool = True, devices: int | None = None,
          seeds: int = 1, tensorboard: bool | None = None) -> list[dict]:
    """Train one run, or several differing only in traced hyperparameters, together, into
    ``<out>/<name>/`` (resuming an unfinished one); return each run's summary.json dict.
    `stop_after_epochs`: leave the run resumable after that many; `devices`: the first N;
    `seeds` > 1: seeds ``seed, seed + 1, ...`` in ``<name>/seed<s>/``; `tensorboard` (default
    ``$WDJAX_TENSORBOARD``): also events in each run's ``tensorboard/``."""
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
    group, start_epoch = start(configs, run_dirs, dataset, mesh, tb.enabled(tensorboard))
    end = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, start_epoch +
                                                           stop_after_epochs)
    label = cfg.name if not group.stacked else f"{cfg.name}..{configs[-1].name}"
    show = progress and group.writer
    bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch,
               disable=not show, desc=label, unit="step", dynamic_ncols=True, mininterval=1.0)
    if show and (mesh.devices.size > 1 or jax.process_count() > 1):
        bar.write(parallel.describe(mesh))
    for epoch in range(start_epoch, end):
        t0 = time.time()
        metrics, mon = train_epoch(group, epoch, bar)
        end_epoch(group, epoch, metrics, mon, t0)
        if group.writer:
            bar.write(runlog.epoch_line(epoch, cfg.epochs, group.lr(epoch), group.logs))
        if all(log.diverged for log in group.logs):
            break
    bar.close()
    finished = all(log.diverged for log in group.logs) or end == cfg.epochs
    return finish(group, finished, plots)
