"""The host-side record of a run: its directory, resume replay, per-epoch rows and summary
(through `wdjax.storage`: a run killed at any point leaves what the same command completes)."""

from __future__ import annotations

import dataclasses
import math
import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax
import jax
import numpy as np
import optax

from wdjax import schemes, storage
from wdjax.analysis import units
from wdjax.decay.trees import lookup, path_keys
from wdjax.layers import LayerTable
from wdjax.schemes import hparams
from wdjax.training import checkpoint
from wdjax.training.config import Config

PyTree = Any


def environment() -> dict[str, str]:
    """Versions and device, stored in every run record so numbers can be traced."""
    from wdjax import __version__

    dev = jax.devices()[0]
    return dict(wdjax=__version__, jax=jax.__version__, flax=flax.__version__,
                optax=optax.__version__, python=platform.python_version(),
                backend=jax.default_backend(), device_kind=dev.device_kind,
                device_count=str(jax.device_count()), host=platform.node())


def layer_records(config: Config, params0: PyTree, layers: LayerTable,
                  factors: Mapping[str, float]) -> dict[str, dict]:
    """Per layer at the start: kernel decay coefficient, kind, factor, the table's facts."""
    spec = schemes.decay_spec(config.optimizer, params=params0, layers=layers,
                              factors=factors, **config.hparams())
    return {layer.name: dict(
        factor=factors.get(layer.name, 1.0),
        coefficient=float(lookup(spec.coefficients, layer.kernel)),
        kind=lookup(spec.kinds, layer.kernel),
        topographic=lookup(spec.multipliers, layer.kernel) is not None,
        depth=layer.depth, fan_in=layer.fan_in, normalized=layer.normalized) for layer in layers}


def recorded_factors(run_dir: Path, ckpt: checkpoint.Manager) -> dict[str, float] | None:
    """The per-layer decay factors the run's config.json recorded; None when there is no
    checkpoint to resume from."""
    path = run_dir / "config.json"
    if ckpt.latest_epoch() is None or not path.exists():
        return None
    table = storage.read_json(path).get("layers")
    return {name: float(info["factor"]) for name, info in table.items()} if table else None


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
    # The open steps.jsonl window: [loss, sum ||lr*d||^2, sum ||p||^2] per step (checkpointed).
    window: list = dataclasses.field(default_factory=list)


def same_config(run_dir: Path, config: Config) -> bool:
    """Whether `run_dir` holds a run recorded with exactly `config`."""
    try:
        old = storage.read_json(run_dir / "config.json")["config"]
    except (OSError, ValueError, KeyError):
        return False
    new = storage.jsonable(config.to_dict())
    old = {**storage.jsonable(Config().to_dict()), **old}  # fields added since: defaults
    for h in hparams.TABLE:  # a row in another unit (tau_epochs) fixes the one it sets
        if h.sets and new.get(h.name) is not None:
            old.pop(h.sets, None)
            new.pop(h.sets, None)
    return old == new


def is_finished(out: Path, config: Config) -> bool:
    """Whether `config`'s run under `out` has results recorded with exactly this config."""
    run_dir = out / config.run_path
    return storage.run_state(run_dir) == "finished" and same_config(run_dir, config)


def prepare_run_dir(out: Path, config: Config, force: bool) -> Path:
    """The run's directory: new, or resumable with the same config; else RunError unless
    `force`, which moves a finished or different run aside to ``<name>.replaced-<time>``."""
    run_dir = out / config.run_path
    state = storage.run_state(run_dir)
    if state == "new" or (state == "partial" and same_config(run_dir, config)):
        return run_dir
    if force:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir.rename(run_dir.with_name(f"{run_dir.name}.replaced-{stamp}"))
    elif state == "finished":
        raise storage.RunError(f"run {config.name!r} already has results in {run_dir}; "
                               "use --force-name to replace it")
    else:
        raise storage.RunError(f"run {config.name!r} exists in {run_dir} with a different "
                               "config; use --force-name to replace it or another --name")
    return run_dir


def move_into_seed_dir(run_dir: Path) -> Path | None:
    """Move a one-seed run's records into ``run_dir/seed<s>/`` (so added seeds keep it);
    return that directory, or None if nothing moved."""
    if not (run_dir / "config.json").is_file():
        return None
    record = storage.read_json(run_dir / "config.json")
    record["config"]["seed_dir"] = True
    target = run_dir / f"seed{record['config']['seed']}"
    hidden = run_dir.with_name(f".{run_dir.name}.to-seed-dir")
    run_dir.rename(hidden)  # the records move as one directory, never file by file
    run_dir.mkdir()
    hidden.rename(target)
    storage.write_json(target / "config.json", record)
    return target


def resume(states: list, logs: list[RunLog], ckpts: list[checkpoint.Manager],
           writer: bool = True) -> int:
    """Restore every run of the group from its newest common checkpoint; return the epoch."""
    latest = [c.latest_epoch() for c in ckpts]
    if any(e is None for e in latest):
        for log, c in zip(logs, ckpts, strict=True) if writer else []:
            c.reset()  # a fresh start: old partial records are stale
            (log.dir / "metrics.jsonl").unlink(missing_ok=True)
            (log.dir / "steps.jsonl").unlink(missing_ok=True)
        return 0
    restored_all = [c.restore(min(latest), s) for c, s in zip(ckpts, states, strict=True)]
    epoch = min(extra["epoch"] for _, extra in restored_all)
    if any(extra["epoch"] > epoch for _, extra in restored_all):  # one fell back: all step back
        restored_all = [c.restore(epoch, s) for c, s in zip(ckpts, states, strict=True)]
    for r, (log, (restored, extra)) in enumerate(zip(logs, restored_all, strict=True)):
        states[r] = restored
        log.best, log.best_epoch = extra["best"], extra["best_epoch"]
        log.diverged, log.window = extra.get("diverged"), extra.get("window", [])
        # Drop records a killed process wrote after the restored checkpoint.
        rows = [row for row in storage.read_jsonl(log.dir / "metrics.jsonl")
                if row["epoch"] <= epoch]
        steps = [row for row in storage.read_jsonl(log.dir / "steps.jsonl")
                 if row["step"] <= int(restored.step)]
        if writer:
            storage.rewrite_jsonl(log.dir / "metrics.jsonl", rows)
            storage.rewrite_jsonl(log.dir / "steps.jsonl", steps)
        log.last = rows[-1] if rows else None
    return epoch


def log_steps(logs: list[RunLog], fetched: list[dict], step: int, epoch: int, lr: float,
              stacked: bool, writer: bool, log_every: int) -> None:
    """Add steps up to global `step` to each run's window and detect divergence; each
    `log_every` global steps a steps.jsonl line closes the window (`fetched` never spans its
    end) with the mean loss and its last step's norms (docs/protocol.md#what-is-measured)."""
    for r, log in enumerate(logs):
        if log.diverged:
            continue
        pick = (lambda x, r=r: x[r]) if stacked else (lambda x: x)
        losses = np.array([pick(m["loss"]) for m in fetched], np.float64)
        log.window += [[float(loss), float(pick(m["sq_update"]).sum()),
                        float(pick(m["sq_param"]).sum())]
                       for loss, m in zip(losses, fetched, strict=True)]
        bad = ~np.isfinite(losses)
        if bad.any():
            first = step - len(fetched) + int(np.argmax(bad)) + 1
            log.diverged = dict(step=first, epoch=epoch + 1, loss=str(losses[bad][0]))
        if step % log_every == 0 and log.window and writer:
            loss, sq_u, sq_p = np.array(log.window, np.float64).T
            storage.append_jsonl(log.dir / "steps.jsonl", dict(
                step=step, epoch=epoch + 1, lr=lr, loss=float(loss.mean()),
                update_norm=float(np.sqrt(sq_u[-1])), param_norm=float(np.sqrt(sq_p[-1]))))
        if step % log_every == 0 or log.diverged:
            log.window = []


def _angular(rows: list[dict], state: Any, layers: LayerTable) -> dict:
    """Per layer: the epoch's mean ||dW||/||W|| and, at its last step, the prediction
    ``sqrt(2 lr wd / (1 + m))`` (Adam: times ``(1 - b1) / (1 + b1)``) and the equilibrium
    monitor's EMA, ratio, norm and first step within 10% (None: no prediction / not yet)."""
    paths = [path_keys(p) for p, _ in jax.tree_util.tree_leaves_with_path(state.params)]
    fields = {"ema": "angular_update_ema", "ratio": "equilibrium_ratio",
              "equilibrium_norm": "equilibrium_norm", "arrived_step": "equilibrium_step"}
    trees = {k: optax.tree.get(state.opt_state, f) for k, f in fields.items()}
    angular = {}
    for layer in layers:
        i = paths.index(layer.kernel)  # the kernel's position in `sq_norms`
        mon = {k: float(np.asarray(lookup(t, layer.kernel))) for k, t in trees.items()}
        mon = {k: v if math.isfinite(v) else None for k, v in mon.items()}  # NaN: none
        step = mon["arrived_step"]
        mon["arrived_step"] = int(step) if step is not None and step >= 0 else None
        ratios = [math.sqrt(m["sq_update"][i] / m["sq_param"][i]) for m in rows
                  if m["sq_param"][i] > 0]
        predicted = (mon["ema"] / mon["ratio"]) if mon["ratio"] else None
        angular[layer.name] = dict(measured=float(np.mean(ratios)) if ratios else 0.0,
                                   predicted=predicted, **mon)
    return angular


def epoch_row(log: RunLog, epoch: int, lr: float, rows: list[dict], test: tuple[int, float],
              sizes: tuple[int, int], mon: dict, state: Any, layers: LayerTable,
              seconds: float) -> dict:
    """The metrics.jsonl row of one run for one epoch (docs/protocol.md#what-is-measured)."""
    (test_correct, test_loss), (n_train, n_test) = test, sizes
    train_correct = int(sum(int(m["correct"]) for m in rows))
    losses = np.array([float(m["loss"]) for m in rows])
    if test_correct > log.best and not log.diverged:
        log.best, log.best_epoch = test_correct, epoch + 1
    dead = {str(t): units.model_utilization(state.params, layers, t)
            for t in units.DEAD_THRESHOLDS}
    return dict(
        epoch=epoch + 1, lr=lr, seconds=round(seconds, 3),
        train_loss=float(losses.mean()) if len(losses) else float("nan"),
        train_correct=train_correct, train_total=n_train, train_accuracy=train_correct / n_train,
        test_correct=test_correct, test_total=n_test, test_accuracy=test_correct / n_test,
        test_loss=test_loss / n_test, best_test_correct=log.best, best_epoch=log.best_epoch,
        diverged=log.diverged, dead_units=dead, angular_update=_angular(rows, state, layers),
        tensors={name: {k: float(v) for k, v in d.items()} for name, d in mon.items()})


def epoch_line(epoch: int, epochs: int, lr: float, logs: list[RunLog]) -> str:
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


def topographic_grouping(config: Config, params: PyTree,
                         layers: LayerTable) -> dict[str, dict] | None:
    """``{layer: {spearman, p_value, cell_map}}`` (`units.topographic_grouping`) of the final
    kernels of every layer any topographic scheme multiplies (an unmultiplied one is a control);
    None unless this scheme is topographic."""
    if not schemes.get(config.optimizer).topographic:
        return None
    positions = sorted({i for s in schemes.SCHEMES for i in s.topographic})
    out = {}
    for layer in layers.from_end(positions):
        g = units.topographic_grouping(np.asarray(lookup(params, layer.kernel)))
        cells = [[None if np.isnan(v) else float(v) for v in row] for row in g.cell_map]
        out[layer.name] = dict(spearman=g.spearman, p_value=g.p_value, cell_map=cells)
    return out


def summary(log: RunLog, n_train: int, n_test: int, epochs: int) -> dict:
    row, best = log.last or {}, log.best if log.best >= 0 else None
    return dict(
        name=log.config.name, optimizer=log.config.optimizer, hparams=log.config.hparams(),
        epochs_done=row.get("epoch", 0), epochs=epochs,
        final_test_accuracy=row.get("test_accuracy"), final_test_correct=row.get("test_correct"),
        final_train_correct=row.get("train_correct"),
        train_total=n_train, test_total=n_test, best_test_correct=best,
        best_test_accuracy=best / n_test if best is not None else None,
        best_epoch=log.best_epoch, diverged=log.diverged, dead_units=row.get("dead_units"),
        notebook_line=(f"- {log.config.name}: {row.get('test_accuracy', float('nan')):.4f} "
                       f"({row.get('train_correct')})") if row else None)
