"""The sweep families of the research notebook, as plain data.

Each family is one notebook section: a named optimizer (docs/schemes.md#named-schemes), one
varied hyperparameter, the values fixed for the whole section, and per run the notebook's
reported results. Optimizers and hyperparameters follow docs/sweeps.md#notebook-families;
reported numbers are transcribed from the research notebook (see docs/protocol.md).

Transcription conventions:

* ``Reported.test_accuracy`` is a fraction. The notebook writes either ``0.9131`` or a
  count out of 10 000 such as ``9108``; the latter is stored as ``0.9108``.
* ``Reported.train_correct`` is the parenthesised count out of 50 000, when given.
* ``Reported.best_test_correct`` is the "maxed at" / "hit" count out of 10 000, when given.
* ``Reported.note`` holds a non-numeric remark on the result ("pre-terminated",
  "aborted at epoch 7"); for aborted runs the accuracy is the one at the abort.
* ``Reported.epoch`` is the epoch after which the notebook's number was taken:
  ``NOTEBOOK_EPOCHS`` (the end) for finished runs, 7 for the runs "aborted at epoch 7",
  None (unknown) for the "pre-terminated" exp1.
* ``Family.baseline`` is the run the notebook based the family on (its section heading
  says "dxp4-based", "based on ixp2", "exp6-based"), or None where it names none. It is
  the reference of the family's significance tests; it may belong to another family.
* Runs are listed in numbering order (``gxp1..gxp5``), not in the notebook's row order.
"""

from __future__ import annotations

import math
import types
from collections.abc import Mapping, Sequence

from experiments.beyond_families import BEYOND_FAMILIES
from experiments.families import (
    HPARAM_DEFAULTS,
    LOG_SCALE_MIN_RATIO,
    NOTEBOOK_EPOCHS,
    Family,
    Reported,
    Run,
)
from experiments.notebook_families import NOTEBOOK_FAMILIES

__all__ = [
    "FAMILIES",
    "HPARAM_DEFAULTS",
    "LOG_SCALE_MIN_RATIO",
    "NOTEBOOK_EPOCHS",
    "Family",
    "Reported",
    "Run",
    "all_runs",
    "get_family",
    "select_runs",
]

FAMILIES: Mapping[str, Family] = types.MappingProxyType(
    {fam.name: fam for fam in (*NOTEBOOK_FAMILIES, *BEYOND_FAMILIES)})
"""All families by name: the notebook's in its order (docs/sweeps.md#notebook-families), then the
new ones."""


def _check_unique_run_names() -> None:
    seen: dict[str, str] = {}
    for fam in FAMILIES.values():
        for run in fam.runs:
            if run.name in seen:
                raise ValueError(f"run {run.name!r} in both {seen[run.name]!r} and {fam.name!r}")
            seen[run.name] = fam.name
            if any(v is not None and not math.isfinite(v) for v in run.hparams.values()):
                raise ValueError(f"run {run.name!r} has a non-finite hyperparameter")
    for fam in FAMILIES.values():
        if fam.baseline is not None and fam.baseline not in seen:
            raise ValueError(f"family {fam.name!r}: baseline {fam.baseline!r} is not a run")


_check_unique_run_names()


def get_family(name: str) -> Family:
    """Return the family called ``name``; ValueError listing the valid names otherwise."""
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        valid = ", ".join(FAMILIES)
        raise ValueError(f"unknown family {name!r}; valid: {valid}") from None


def select_runs(family: Family, names: Sequence[str] | None) -> tuple[Run, ...]:
    """Return ``family``'s runs named in ``names`` (all when None), in family order.

    A single string counts as one name. Unknown or repeated names raise ValueError.
    """
    if names is None:
        return family.runs
    if isinstance(names, str):
        names = [names]
    valid = family.run_names
    seen: set[str] = set()
    for name in names:
        if name not in valid:
            raise ValueError(
                f"unknown run {name!r} in family {family.name!r}; valid: {', '.join(valid)}"
            )
        if name in seen:
            raise ValueError(f"duplicate run {name!r} in selection for family {family.name!r}")
        seen.add(name)
    return tuple(run for run in family.runs if run.name in seen)


def all_runs() -> dict[str, Run]:
    """Map every run name to its Run, across all families, in family order."""
    return {run.name: run for fam in FAMILIES.values() for run in fam.runs}
