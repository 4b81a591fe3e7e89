"""What a sweep family is: its runs, their resolved hyperparameters and the notebook's numbers.

`make_family` builds a `Family` from a compact table (defaults < family-fixed values < per-run
values); `experiments.notebook_families` and `experiments.beyond_families` hold the tables
and `experiments.registry` the lookup. The hyperparameter defaults come from
`wdjax.schemes.hparams.TABLE`, the original command line's.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from wdjax.schemes import hparams
from wdjax.training.config import Config

NOTEBOOK_LR = 0.1
"""The original script's learning rate; the notebook never relied on a scheme default."""

HPARAM_DEFAULTS: Mapping[str, float | None] = types.MappingProxyType(
    {**hparams.defaults(), "lr": NOTEBOOK_LR})
"""The original command line's defaults (docs/protocol.md#defaults), from the hyperparameter
table."""

CONFIG_FIELDS: frozenset[str] = frozenset(
    f.name for f in dataclasses.fields(Config)) - set(hparams.NAMES) - {"name", "optimizer"}
"""Run-level settings other than hyperparameters a family may fix or vary (``base``, ...)."""

LOG_SCALE_MIN_RATIO = 8.0
"""``Family.log_scale`` holds when max/min of the varied values is at least this (~0.9 decade)."""


NOTEBOOK_EPOCHS = 200
"""Epochs of the notebook's protocol: 10 stages of 20 epochs
(docs/protocol.md#schedule-and-base-optimiser)."""


@dataclasses.dataclass(frozen=True)
class Reported:
    """What the notebook reports for one run (None where it gives nothing).

    ``epoch`` is when ``test_accuracy`` was taken (None: unknown).
    """

    test_accuracy: float | None
    train_correct: int | None
    best_test_correct: int | None
    note: str | None = None
    epoch: int | None = NOTEBOOK_EPOCHS


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of a family: its scheme, fully resolved hyperparameters and reported results.

    ``varies`` names the family's varied hyperparameter, run setting (``"base"``) or
    ``"optimizer"``; ``settings`` holds the run-level `Config` fields the family sets
    (model, width, decay timescale, ...); ``position`` is the run's 1-based place in its
    family.
    """

    name: str
    optimizer: str
    hparams: Mapping[str, float | None] = dataclasses.field(hash=False)  # None: unset
    reported: Reported
    varies: str
    position: int = 1
    settings: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({}), hash=False)

    @property
    def value(self) -> float:
        """The varied value; for ``varies == "optimizer"`` the run's position (1-based)."""
        if self.varies == "optimizer":
            return float(self.position)
        if self.varies in self.settings:
            return float(self.settings[self.varies])
        return float(self.hparams[self.varies])

    @property
    def label(self) -> str:
        """The varied value as text: the optimizer name, or the number in short form."""
        if self.varies == "optimizer":
            return self.optimizer
        return f"{self.value:g}"


@dataclasses.dataclass(frozen=True)
class Family:
    """One sweep of the notebook: a scheme, a varied hyperparameter and its runs."""

    name: str
    optimizer: str
    varies: str
    description: str
    runs: tuple[Run, ...]
    baseline: str | None = None
    lines_by: str | None = None  # a run setting (e.g. "base"): one accuracy line per value

    @property
    def log_scale(self) -> bool:
        """Whether the varied values span about a decade or more (for plot axes)."""
        if self.varies == "optimizer":
            return False
        values = [run.value for run in self.runs]
        if min(values) <= 0.0:
            return False
        return max(values) / min(values) >= LOG_SCALE_MIN_RATIO

    @property
    def run_names(self) -> tuple[str, ...]:
        """The family's run names, in order."""
        return tuple(run.name for run in self.runs)


class Stopped(typing.NamedTuple):
    """A run the notebook stopped early: its remark, and the epoch of its number (or None)."""

    note: str
    epoch: int | None


# A table row: (name, varied value, test accuracy, train correct, best test correct, stop).
Row = tuple[str, "float | str", "float | None", "int | None", "int | None", "Stopped | None"]


def _check_keys(family: str, keys: set[str], varies: str) -> None:
    allowed = set(HPARAM_DEFAULTS) | CONFIG_FIELDS
    unknown = keys - allowed
    if varies != "optimizer":
        unknown |= {varies} - allowed
    if unknown:
        raise ValueError(f"family {family!r}: unknown hyperparameters or settings "
                         f"{sorted(unknown)}; allowed: {', '.join(sorted(allowed))}")


def make_family(
    name: str,
    optimizer: str,
    varies: str,
    description: str,
    rows: Sequence[Row],
    fixed: Mapping[str, Any] | None = None,
    per_run: Mapping[str, Mapping[str, Any]] | None = None,
    baseline: str | None = None,
    lines_by: str | None = None,
) -> Family:
    """Build a family from its table: defaults < family-fixed values < per-run values.

    Keys of `fixed` and `per_run` (and `varies`) are hyperparameters (`HPARAM_DEFAULTS`) or
    run settings (`CONFIG_FIELDS`); the former are stored as floats in ``Run.hparams``.
    """
    fixed = dict(fixed or {})
    per_run = dict(per_run or {})
    _check_keys(name, set(fixed) | {k for v in per_run.values() for k in v}, varies)
    runs = []
    for position, (run_name, value, acc, train, best, stop) in enumerate(rows, 1):
        values = {**fixed, **per_run.pop(run_name, {})}
        run_optimizer = optimizer
        if varies == "optimizer":
            run_optimizer = str(value)
        else:
            values[varies] = value
        hp = {**HPARAM_DEFAULTS, **{k: v for k, v in values.items() if k in HPARAM_DEFAULTS}}
        settings = {k: v for k, v in values.items() if k not in HPARAM_DEFAULTS}
        runs.append(Run(
            name=run_name, optimizer=run_optimizer,
            hparams=types.MappingProxyType({k: None if v is None else float(v)
                                            for k, v in hp.items()}),
            reported=Reported(acc, train, best, *(stop or (None, NOTEBOOK_EPOCHS))),
            varies=varies, position=position, settings=types.MappingProxyType(settings)))
    if per_run:
        raise ValueError(f"family {name!r}: overrides for unknown runs {sorted(per_run)}")
    if lines_by is not None and lines_by not in CONFIG_FIELDS:
        raise ValueError(f"family {name!r}: lines_by must be a run setting, one of "
                         f"{', '.join(sorted(CONFIG_FIELDS))}, got {lines_by!r}")
    return Family(name, optimizer, varies, description, tuple(runs), baseline, lines_by)
