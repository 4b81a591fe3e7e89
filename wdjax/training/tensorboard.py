"""TensorBoard event files from run records (``pip install 'wdjax[tb]'``: tensorboardX).

Everything here maps the records a run already writes to events, so TensorBoard shows what
``metrics.jsonl`` holds and a run can be exported at any time:

* :func:`epoch_scalars` -- one ``metrics.jsonl`` row -> ``{tag: value}`` (pure);
* :func:`epoch_event` -- the same as one TensorBoard ``Event`` (pure);
* :class:`EpochWriter` -- appends those events to ``<run_dir>/tensorboard/`` epoch by
  epoch; a resumed run hides the events of epochs it trains again;
* :func:`hparams_columns` / :func:`write_family_hparams` -- the HParams plugin's summaries
  for a family: every run's hyperparameters, and its final metrics as the metric columns;
* :func:`export_run` -- rewrite a run's events from its records (e.g. a run trained before
  TensorBoard was turned on).

Turned on by ``--tensorboard`` or ``WDJAX_TENSORBOARD=1`` (:func:`enabled`). View with
``tensorboard --logdir <out>/<family>``.
"""

from __future__ import annotations

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

# (metrics.jsonl field, tag): the per-epoch numbers of a run.
EPOCH_FIELDS = (
    ("train_loss", "loss/train"),
    ("test_loss", "loss/test"),
    ("train_accuracy", "accuracy/train"),
    ("test_accuracy", "accuracy/test"),
    ("lr", "lr"),
    ("seconds", "time/epoch_seconds"),
)
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
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def epoch_scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of one epoch record (a ``metrics.jsonl`` row), by TensorBoard tag.

    Tags: the :data:`EPOCH_FIELDS`; ``accuracy/best_test``; per layer
    ``angular_update/<layer>/measured|predicted``; per tensor ``tensor_<quantity>/<name>``
    (param, grad, momentum, decay, grad_on_decay and update norms); per dead-unit threshold
    ``dead_units_<threshold>/<layer>`` and ``dead_units_<threshold>/all`` (dead counts).
    Fields a row lacks, and values that are not numbers (a ``None`` prediction), are left out.
    """
    out: dict[str, float] = {}

    def put(tag: str, value: Any) -> None:
        number = _number(value)
        if number is not None:
            out[tag] = number

    for field, tag in EPOCH_FIELDS:
        put(tag, row.get(field))
    best, total = _number(row.get("best_test_correct")), _number(row.get("test_total"))
    if best is not None and best >= 0 and total:
        put("accuracy/best_test", best / total)
    for layer, angular in (row.get("angular_update") or {}).items():
        for kind, value in angular.items():
            put(f"angular_update/{layer}/{kind}", value)
    for name, quantities in (row.get("tensors") or {}).items():
        for quantity, value in quantities.items():
            put(f"tensor_{quantity}/{name}", value)
    for threshold, layers in (row.get("dead_units") or {}).items():
        for layer, (dead, _total) in layers.items():
            put(f"dead_units_{threshold}/{layer}", dead)
        put(f"dead_units_{threshold}/all", sum(dead for dead, _ in layers.values()))
    return out


def _proto(module: str) -> Any:
    try:
        return importlib.import_module(f"tensorboardX.{module}")
    except ImportError as e:
        raise ImportError("TensorBoard events need tensorboardX: pip install 'wdjax[tb]'") from e


def epoch_event(row: Mapping[str, Any], wall_time: float | None = None) -> Any:
    """One TensorBoard ``Event`` holding :func:`epoch_scalars` of `row`, step = its epoch."""
    Summary = _proto("proto.summary_pb2").Summary
    values = [Summary.Value(tag=tag, simple_value=value)
              for tag, value in epoch_scalars(row).items()]
    return _proto("proto.event_pb2").Event(
        wall_time=time.time() if wall_time is None else wall_time, step=int(row["epoch"]),
        summary=Summary(value=values))


def _events_file(logdir: Path, suffix: str) -> Any:
    """A synchronous event-file writer (what is written is on disk after its flush)."""
    logdir.mkdir(parents=True, exist_ok=True)
    return _proto("event_file_writer").EventsWriter(str(logdir / "events"), suffix)


class EpochWriter:
    """Appends each epoch's :func:`epoch_event` to ``<run_dir>/tensorboard/``, step = epoch.

    Written synchronously and flushed per epoch, so TensorBoard sees an epoch as soon as it
    ends. ``resume_epoch``: the epoch a resumed run restarts after. Events a killed process
    wrote for later epochs are then hidden (a session start at the next step: TensorBoard
    drops what an earlier file holds from that step on), so each epoch shows once.
    """

    def __init__(self, run_dir: str | os.PathLike, *, resume_epoch: int = 0) -> None:
        self.logdir = Path(run_dir) / SUBDIR
        # Event files are named by the second; the nanosecond suffix keeps two writers
        # of one second apart and in order.
        self._file = _events_file(self.logdir, f".{time.time_ns():020d}")
        if resume_epoch > 0:
            event_pb2 = _proto("proto.event_pb2")
            start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
            self._file.write_event(event_pb2.Event(wall_time=time.time(),
                                                   step=resume_epoch + 1, session_log=start))
            self._file.flush()

    def write(self, row: Mapping[str, Any]) -> None:
        """Add the scalars of one epoch record and flush them to disk."""
        self._file.write_event(epoch_event(row))
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> EpochWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- HParams ---------------------------------------------------------------------------


def hparams_columns(configs: Sequence[Mapping[str, Any]]) -> list[dict[str, bool | float | str]]:
    """Each run's HParams values: the config fields that differ between runs, plus optimizer.

    A column keeps one type over all runs: numbers if every value is a number, booleans if
    every value is a boolean, else every value as a string (``None`` -> ``"None"``), so the
    table sorts and filters a column as one kind of value.
    """
    keys = [k for k in configs[0] if k != "name" and (
        k == "optimizer" or len({repr(c.get(k)) for c in configs}) > 1)]
    columns: list[dict[str, bool | float | str]] = [{} for _ in configs]
    for key in keys:
        values = [c.get(key) for c in configs]
        if all(isinstance(v, bool) for v in values):
            cast = bool
        elif all(_number(v) is not None for v in values):
            cast = float
        else:
            cast = str
        for column, value in zip(columns, values, strict=True):
            column[key] = cast(value)
    return columns


def _hparams_summaries(values: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """(experiment, session start, session end) summaries of the HParams plugin."""
    from tensorboardX.summary import hparams

    return hparams(dict(values), dict.fromkeys(METRIC_TAGS, 0.0))


def _replace_hparams_file(logdir: Path, summaries: Iterable[Any]) -> None:
    # One HParams file per directory, rewritten: a second collect must not add a second
    # session (TensorBoard would keep the first one's values).
    for old in logdir.glob(f"events.out.tfevents.*{_HPARAMS_SUFFIX}"):
        old.unlink()
    events = _events_file(logdir, _HPARAMS_SUFFIX)
    try:
        for summary in summaries:
            events.write_event(_proto("proto.event_pb2").Event(wall_time=time.time(),
                                                               summary=summary))
    finally:
        events.close()


def write_family_hparams(family_dir: str | os.PathLike, run_names: Sequence[str]) -> list[Path]:
    """HParams summaries for a family, from each run's ``config.json``.

    Each run's ``tensorboard/`` gets its session (hyperparameters; ended when the run has
    ``summary.json``); the family's own ``tensorboard/`` gets the experiment (the columns and
    the :data:`METRIC_TAGS`). Runs without a config yet are left out. Returns the run dirs.
    """
    family_dir = Path(family_dir)
    run_dirs = [family_dir / n for n in run_names if (family_dir / n / "config.json").exists()]
    if not run_dirs:
        return []
    configs = [storage.read_json(d / "config.json")["config"] for d in run_dirs]
    columns = hparams_columns(configs)
    for run_dir, values in zip(run_dirs, columns, strict=True):
        _, start, end = _hparams_summaries(values)
        finished = storage.run_state(run_dir) == "finished"
        _replace_hparams_file(run_dir / SUBDIR, [start, end] if finished else [start])
    experiment, _, _ = _hparams_summaries(columns[0])
    _replace_hparams_file(family_dir / SUBDIR, [experiment])
    return run_dirs


def export_run(run_dir: str | os.PathLike) -> Path:
    """Rewrite ``<run_dir>/tensorboard/`` epoch events from ``metrics.jsonl``; return it."""
    run_dir = Path(run_dir)
    logdir = run_dir / SUBDIR
    for old in logdir.glob("events.out.tfevents.*"):
        if not old.name.endswith(_HPARAMS_SUFFIX):
            old.unlink()
    with EpochWriter(run_dir) as writer:
        for row in storage.read_jsonl(run_dir / "metrics.jsonl"):
            writer.write(row)
    return logdir

