"""A run's records across its seeds (one run directory, or one ``seed<k>/`` per seed), and
`compare`: summaries over seeds and Holm-corrected Welch t-tests against a reference run."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wdjax import storage
from wdjax.analysis import stats

DEAD_THRESHOLD = "1e-09"  # the notebook's `get_model_utilization(threshold=1e-9)`


@dataclasses.dataclass(frozen=True)
class SeedGroup:
    """The seeds of one run: the finished ones' directories and summaries, and the rest."""

    run_dir: Path
    finished: tuple[Path, ...]
    unfinished: tuple[Path, ...]
    summaries: tuple[dict, ...]

    @property
    def n(self) -> int:
        """The number of finished seeds."""
        return len(self.finished)

    def values(self, key: str) -> list:
        """`key` of every finished seed's summary.json (None where a seed lacks it)."""
        return [s.get(key) for s in self.summaries]

    def metrics(self) -> list[list[dict]]:
        """Each finished seed's metrics.jsonl rows (one per epoch)."""
        return [storage.read_jsonl(d / "metrics.jsonl") for d in self.finished]

    def configs(self) -> list[dict]:
        """Each finished seed's config.json."""
        return [storage.read_json(d / "config.json") for d in self.finished]

    def accuracy_at(self, epoch: int) -> list[float] | None:
        """Each finished seed's test accuracy after `epoch` (1-based); None when there is no
        finished seed or a seed has no record of that epoch."""
        found = [[r["test_accuracy"] for r in rows if r.get("epoch") == epoch]
                 for rows in self.metrics()]
        return [float(m[-1]) for m in found] if found and all(found) else None

    def topographic_grouping(self) -> dict[str, list[dict]]:
        """Per layer: the seeds' recorded `units.topographic_grouping` entries ({}: none)."""
        out: dict[str, list[dict]] = {}
        for s in self.summaries:
            for layer, entry in (s.get("topographic_grouping") or {}).items():
                out.setdefault(layer, []).append(entry)
        return out

    def dead_units(self, threshold: str = DEAD_THRESHOLD) -> list[dict[str, int]]:
        """Per finished seed: dead input units per layer at `threshold` (recorded: ``"1e-20"``,
        ``"1e-09"``, ``"1e-05"``); {} where unrecorded."""
        return [{layer: int(dead) for layer, (dead, _) in
                 ((s.get("dead_units") or {}).get(threshold) or {}).items()}
                for s in self.summaries]


def load(run_dir: str | os.PathLike) -> SeedGroup:
    """The seeds of the run in `run_dir`; a seed is finished when its summary.json exists."""
    dirs = storage.seed_dirs(Path(run_dir))
    done = tuple(d for d in dirs if (d / "summary.json").exists())
    return SeedGroup(Path(run_dir), done, tuple(d for d in dirs if d not in done),
                     tuple(storage.read_json(d / "summary.json") for d in done))


def load_finished(run_dir: str | os.PathLike) -> SeedGroup:
    """`load`, with a one-line RunError unless every seed of the run has finished."""
    path = Path(run_dir)
    if not path.is_dir():
        what = "not a directory" if path.exists() else "no such directory"
        raise storage.RunError(f"{run_dir}: {what}")
    group = load(path)
    if not group.finished and not group.unfinished:
        files = ", ".join(storage.RECORD_FILES)
        raise storage.RunError(f"{run_dir}: not a run directory (no {files} and no seed<k>/ "
                               "subdirectories)")
    if group.unfinished:
        which = ", ".join(d.name if d != path else "the run" for d in group.unfinished)
        raise storage.RunError(f"{run_dir}: not finished ({which}: no summary.json)")
    return group


def _summary_fields(name: str, values: Sequence[Any]) -> dict[str, float | int | None]:
    """`name` (the mean), ``name_std``, ``name_sem``, ``name_low``, ... of `values`."""
    kept = [float(v) for v in values if v is not None]
    s = stats.summarize(kept) if kept else None
    return {name if k == "mean" else f"{name}_{k}": getattr(s, k, None)
            for k in ("mean", "std", "sem", "low", "high", "min", "max")}


def compare(groups: Sequence[SeedGroup], reference: int | None,
            alpha: float = stats.ALPHA) -> list[dict]:
    """Per group: n, `stats.Summary` fields of final (``test_accuracy``, ``test_accuracy_std``,
    ...) and best test accuracy, and Welch's ``p_value`` of final accuracy against
    ``groups[reference]`` with its Holm-adjusted ``holm_p`` and ``significant``."""
    if reference is not None and not 0 <= reference < len(groups):
        raise ValueError(f"reference index {reference} is out of range for {len(groups)} runs")
    finals = [[v for v in g.values("final_test_accuracy") if v is not None] for g in groups]
    ref_final = finals[reference] if reference is not None else []
    rows = []
    for i, (g, final) in enumerate(zip(groups, finals, strict=True)):
        p = stats.welch_p(final, ref_final) if i != reference and ref_final and final else None
        rows.append(dict(n=g.n, **_summary_fields("test_accuracy", final),
                         **_summary_fields("best_test_accuracy", g.values("best_test_accuracy")),
                         reference=i == reference, p_value=p))
    for row, adjusted in zip(rows, stats.holm([r["p_value"] for r in rows]), strict=True):
        row["holm_p"] = adjusted
        row["significant"] = stats.significant(adjusted, alpha)
    return rows


def best_mean(groups: Sequence[SeedGroup]) -> int | None:
    """Index of the group with the highest mean final test accuracy (None if none finished)."""
    means = [np.mean([v for v in g.values("final_test_accuracy") if v is not None] or [np.nan])
             for g in groups]
    return None if all(np.isnan(m) for m in means) else int(np.nanargmax(means))
