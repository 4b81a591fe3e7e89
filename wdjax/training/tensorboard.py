"""TensorBoard events from run records (tensorboardX: ``pip install 'wdjax[tb]'``): each epoch's
``metrics.jsonl`` row as scalars (`EpochWriter`, `export_run`), a family's HParams table
(`write_family_hparams`). On with ``--tensorboard`` or ``WDJAX_TENSORBOARD=1``."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from wdjax import storage

ENV_TENSORBOARD = "WDJAX_TENSORBOARD"
SUBDIR = "tensorboard"
_HPARAMS_SUFFIX = ".hparams"  # marks the event file write_family_hparams replaces

# metrics.jsonl field: tag, the per-epoch numbers of a run.
EPOCH_FIELDS = {"train_loss": "loss/train", "test_loss": "loss/test",
                "train_accuracy": "accuracy/train", "test_accuracy": "accuracy/test",
                "lr": "lr", "seconds": "time/epoch_seconds"}
# The HParams table's metric columns: the last value of each of these tags in a run.
METRIC_TAGS = ("accuracy/test", "accuracy/best_test", "accuracy/train", "loss/test",
               "loss/train")


def enabled(flag: bool | None = None) -> bool:
    """Whether to write TensorBoard events: `flag` if given, else ``$WDJAX_TENSORBOARD``
    (``1``/``true``/``yes``/``on``)."""
    if flag is not None:
        return bool(flag)
    return os.environ.get(ENV_TENSORBOARD, "").strip().lower() in ("1", "true", "yes", "on")


def require() -> None:
    """ValueError (one line) unless tensorboardX is installed (checked without importing)."""
    if importlib.util.find_spec("tensorboardX") is None:
        raise ValueError("TensorBoard events need tensorboardX: pip install 'wdjax[tb]'")


def _number(value: Any) -> float | None:
    """A record value as a float (records store NaN/inf as strings); None if not a number."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def epoch_scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of one ``metrics.jsonl`` row by tag: the `EPOCH_FIELDS`,
    ``accuracy/best_test``, ``angular_update/<layer>/<kind>``, ``tensor_<quantity>/<name>``
    and ``dead_units_<threshold>/<layer>|all`` (dead counts); non-numbers are left out."""
    values = {tag: row.get(field) for field, tag in EPOCH_FIELDS.items()}
    best, total = _number(row.get("best_test_correct")), _number(row.get("test_total"))
    if best is not None and best >= 0 and total:
        values["accuracy/best_test"] = best / total
    for layer, angular in (row.get("angular_update") or {}).items():
        values.update({f"angular_update/{layer}/{kind}": v for kind, v in angular.items()})
    for name, quantities in (row.get("tensors") or {}).items():
        values.update({f"tensor_{quantity}/{name}": v for quantity, v in quantities.items()})
    for threshold, layers in (row.get("dead_units") or {}).items():
        values.update({f"dead_units_{threshold}/{layer}": dead
                       for layer, (dead, _total) in layers.items()})
        values[f"dead_units_{threshold}/all"] = sum(dead for dead, _ in layers.values())
    numbers = {tag: _number(value) for tag, value in values.items()}
    return {tag: number for tag, number in numbers.items() if number is not None}


def _proto(module: str) -> Any:
    try:
        return importlib.import_module(f"tensorboardX.{module}")
    except ImportError as e:
        raise ImportError("TensorBoard events need tensorboardX: pip install 'wdjax[tb]'") from e


def _event(**fields: Any) -> Any:
    return _proto("proto.event_pb2").Event(wall_time=time.time(), **fields)


def _events_file(logdir: Path, suffix: str) -> Any:
    """A synchronous event-file writer (what is written is on disk after its flush)."""
    logdir.mkdir(parents=True, exist_ok=True)
    return _proto("event_file_writer").EventsWriter(str(logdir / "events"), suffix)


class EpochWriter(contextlib.AbstractContextManager):
    """Appends each epoch's `epoch_scalars` to ``<run_dir>/tensorboard/``, flushed at once. A run
    from epoch 0 replaces earlier event files (not the HParams file); a resumed run starts a
    session at the next step (hiding later epochs a killed process wrote)."""

    def __init__(self, run_dir: str | os.PathLike, *, resume_epoch: int = 0) -> None:
        self.logdir = Path(run_dir) / SUBDIR
        if resume_epoch == 0:
            for old in self.logdir.glob("events.out.tfevents.*[0-9]"):  # not the HParams file
                old.unlink()
        # Event files are named by the second: a nanosecond suffix keeps writers in order.
        self._file = _events_file(self.logdir, f".{time.time_ns():020d}")
        if resume_epoch > 0:
            session_log = _proto("proto.event_pb2").SessionLog
            self._file.write_event(_event(step=resume_epoch + 1,
                                          session_log=session_log(status=session_log.START)))
            self._file.flush()

    def write(self, row: Mapping[str, Any]) -> None:
        """Add the scalars of one epoch record (step = its epoch) and flush them to disk."""
        summary = _proto("proto.summary_pb2").Summary
        values = [summary.Value(tag=tag, simple_value=value)
                  for tag, value in epoch_scalars(row).items()]
        self._file.write_event(_event(step=int(row["epoch"]), summary=summary(value=values)))
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __exit__(self, *exc: object) -> None:
        self.close()


def hparams_columns(configs: Sequence[Mapping[str, Any]]) -> list[dict[str, bool | float | str]]:
    """Each run's HParams values: the config fields that differ between runs, plus optimizer;
    a column is all booleans, all numbers, or else all strings (``None`` -> ``"None"``)."""
    keys = [k for k in configs[0] if k != "name" and (
        k == "optimizer" or len({repr(c.get(k)) for c in configs}) > 1)]
    columns: list[dict[str, bool | float | str]] = [{} for _ in configs]
    for key in keys:
        values = [c.get(key) for c in configs]
        cast = (bool if all(isinstance(v, bool) for v in values)
                else float if all(_number(v) is not None for v in values) else str)
        for column, value in zip(columns, values, strict=True):
            column[key] = cast(value)
    return columns


def _replace_hparams_file(logdir: Path, summaries: Iterable[Any]) -> None:
    # Rewritten: a second session would hide this one's values (TensorBoard keeps the first).
    for old in logdir.glob(f"events.out.tfevents.*{_HPARAMS_SUFFIX}"):
        old.unlink()
    with contextlib.closing(_events_file(logdir, _HPARAMS_SUFFIX)) as events:
        for summary in summaries:
            events.write_event(_event(summary=summary))


def write_family_hparams(family_dir: str | os.PathLike, run_names: Sequence[str]) -> list[Path]:
    """HParams summaries from each run's ``config.json``: its session (ended once finished)
    in its ``tensorboard/``, the experiment in the family's; return the runs written."""
    family_dir = Path(family_dir)
    run_dirs = [family_dir / n for n in run_names if (family_dir / n / "config.json").exists()]
    if not run_dirs:
        return []
    configs = [storage.read_json(d / "config.json")["config"] for d in run_dirs]
    columns = hparams_columns(configs)
    metrics = dict.fromkeys(METRIC_TAGS, 0.0)
    hparams = _proto("summary").hparams  # (experiment, session start, session end) summaries
    for run_dir, values in zip(run_dirs, columns, strict=True):
        _, start, end = hparams(values, metrics)
        finished = storage.run_state(run_dir) == "finished"
        _replace_hparams_file(run_dir / SUBDIR, [start, end] if finished else [start])
    _replace_hparams_file(family_dir / SUBDIR, [hparams(columns[0], metrics)[0]])
    return run_dirs


def export_run(run_dir: str | os.PathLike) -> Path:
    """Rewrite ``<run_dir>/tensorboard/`` epoch events from ``metrics.jsonl``; return it."""
    with EpochWriter(run_dir) as writer:
        for row in storage.read_jsonl(Path(run_dir) / "metrics.jsonl"):
            writer.write(row)
    return writer.logdir

