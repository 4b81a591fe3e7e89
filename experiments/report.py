"""A sweep's results: the notebook-style lines, statistics over seeds, table, CSV, pictures.

Each run of a family lives in ``<family_dir>/<run>/`` (one seed, or ``seed<k>/`` per seed;
`wdjax.storage.seed_dirs`). Per run, the final and best test accuracy are summarised over
its finished seeds (mean, std, 95% t interval, min, max) and the final test accuracy is
tested against the family's reference run (Welch's t-test, Holm-corrected across the
family; `wdjax.analysis.seeds.compare`).

The reference is ``--baseline RUN`` when given, else the run the notebook based the family
on (`registry.Family.baseline`, which may belong to another family: its records are read
from ``<family_dir>/../<its family>/<run>/``), else the run with the best mean. A reference
without finished records at the sweep's protocol falls back to the best mean, and the table
says so.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from experiments import registry, scales
from wdjax import storage
from wdjax.analysis import seeds, stats

FAMILY_OF_RUN: dict[str, registry.Family] = {
    run.name: fam for fam in registry.FAMILIES.values() for run in fam.runs}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One table row's run: the registry run, its records, and whether it is the reference."""

    run: registry.Run
    group: seeds.SeedGroup
    label: str
    reference: bool = False


def run_dir(run: registry.Run, family_dir: Path) -> Path:
    """Where `run` keeps its records, beside `family_dir` when it belongs to another family."""
    return Path(family_dir).parent / FAMILY_OF_RUN[run.name].name / run.name


def _label(run: registry.Run, family: registry.Family) -> str:
    if run.name in family.run_names:
        return run.label
    if family.varies in run.hparams:  # dxp4 in gxp's table: last2_mult 1
        return f"{run.hparams[family.varies]:g}"
    return run.optimizer


def check_baseline(name: str | None, runs: Sequence[registry.Run] = (),
                   family_dir: Path | None = None) -> registry.Run | None:
    """The registry run called `name` (None for None); a one-line ValueError otherwise.

    With `family_dir`, the run must also be among `runs` (to be trained now) or have
    finished seeds on disk already.
    """
    if name is None:
        return None
    if name not in FAMILY_OF_RUN:
        raise ValueError(f"unknown --baseline run {name!r}: give a run name of the registry "
                         "(e.g. dxp4, ixp2)")
    run = registry.all_runs()[name]
    if family_dir is not None and run not in runs:
        where = run_dir(run, family_dir)
        if not seeds.load(where).n:
            raise ValueError(f"--baseline {name} has no finished run in {where}: sweep it "
                             "first, or add it to --runs")
    return run


def _protocol_matches(group: seeds.SeedGroup, scale: str) -> bool:
    protocol = scales.SCALES[scale]
    return all(all(c.get("config", {}).get(k) == v for k, v in protocol.items())
               for c in group.configs())


def _entries(family: registry.Family, runs: Sequence[registry.Run], family_dir: Path,
             scale: str, baseline: str | None) -> tuple[list[Entry], str]:
    """The rows' runs (a reference from another family first) and why that reference."""
    entries = [Entry(r, seeds.load(run_dir(r, family_dir)), r.label) for r in runs]
    wanted = baseline or family.baseline
    why = "--baseline" if baseline else "the notebook's base for this family"
    if wanted is not None:
        ref_run = check_baseline(wanted)
        names = [e.run.name for e in entries]
        group = (entries[names.index(wanted)].group if wanted in names
                 else seeds.load(run_dir(ref_run, family_dir)))
        if group.n and _protocol_matches(group, scale):
            if wanted in names:
                i = names.index(wanted)
                entries[i] = dataclasses.replace(entries[i], reference=True)
            else:
                entries.insert(0, Entry(ref_run, group, _label(ref_run, family), True))
            return entries, f"{wanted} ({why})"
        lost = f"{wanted} ({why}) has no finished records at {scale} scale in {group.run_dir}"
    else:
        lost = f"the notebook names no base run for {family.name}"
    best = seeds.best_mean([e.group for e in entries])
    if best is None:
        return entries, f"none ({lost}; no finished run)"
    entries[best] = dataclasses.replace(entries[best], reference=True)
    return entries, f"{entries[best].run.name}, the best mean ({lost})"


def _single_or_mean(values: Sequence) -> float | int | None:
    kept = [v for v in values if v is not None]
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else float(np.mean(kept))


def _notebook_fields(run: registry.Run, group: seeds.SeedGroup, scale: str) -> dict:
    """The notebook's numbers and ours at the epoch it took them (full scale only)."""
    rep = run.reported
    at = None
    compared = scale == "full" and rep.epoch is not None and rep.test_accuracy is not None
    if compared and group.n:
        seeds = group.accuracy_at(rep.epoch)
        at = float(np.mean(seeds)) if seeds else None
    return dict(notebook_accuracy=rep.test_accuracy, notebook_train_correct=rep.train_correct,
                notebook_epoch=rep.epoch, notebook_note=rep.note,
                compared_at_epoch=rep.epoch if compared else None, accuracy_at_epoch=at,
                difference=None if at is None else at - rep.test_accuracy)


def summary_rows(family: registry.Family, runs: Sequence[registry.Run], family_dir: Path,
                 scale: str, baseline: str | None = None) -> tuple[list[dict], str]:
    """One row per run (the reference from another family first) and the reference's why."""
    entries, why = _entries(family, runs, Path(family_dir), scale, baseline)
    ref = next((i for i, e in enumerate(entries) if e.reference), None)
    tests = seeds.compare([e.group for e in entries], ref)
    rows = []
    for e, test in zip(entries, tests, strict=True):
        g = e.group
        dead = [sum(d.values()) for d in g.dead_units() if d]
        dead_1e5 = [sum(d.values()) for d in g.dead_units("1e-05") if d]
        rows.append(dict(
            run=e.run.name, family=FAMILY_OF_RUN[e.run.name].name, value=e.label,
            optimizer=e.run.optimizer, **test, seeds_unfinished=len(g.unfinished),
            train_correct=_single_or_mean(g.values("final_train_correct")),
            train_total=_single_or_mean(g.values("train_total")),
            best_epoch=_single_or_mean(g.values("best_epoch")),
            dead_1e9=_single_or_mean(dead), dead_1e5=_single_or_mean(dead_1e5),
            topographic_grouping=grouping_text(g),
            diverged=any(g.values("diverged")),
            diverged_seeds=sum(bool(d) for d in g.values("diverged")), finished=g.n > 0,
            **_notebook_fields(e.run, g, scale)))
    return rows, why


def grouping_text(group: seeds.SeedGroup) -> str | None:
    """``fc6 rho -0.41 p 0.010; ...``: per layer the mean over seeds of Spearman's rho
    between cell distance and mean |W|, and of its permutation p-value (None: unrecorded)."""
    parts = [f"{layer} rho {np.mean([e['spearman'] for e in entries]):+.2f} "
             f"p {np.mean([e['p_value'] for e in entries]):.3f}"
             + (f" (n={len(entries)})" if len(entries) > 1 else "")
             for layer, entries in group.topographic_grouping().items()]
    return "; ".join(parts) or None


def _fmt(x, spec=".4f") -> str:
    """A table cell: blank for None, `spec` for a float (a mean over seeds), else str."""
    return "" if x is None else format(x, spec) if isinstance(x, float) else str(x)


def notebook_line(r: dict) -> str:
    """``- dxp4: 0.00016 -> 0.9131 (50000)`` for one seed, as the notebook writes them;
    ``- dxp4: 0.00016 -> 0.4727 ± 0.0041 (n=5)`` (± the standard error) for several."""
    head = f"- {r['run']}: {r['value']} -> "
    if not r["finished"]:
        return head + "(not finished)"
    if r["n"] == 1:
        line = head + f"{_fmt(r['test_accuracy'])} ({r['train_correct']})"
        line += " diverged" if r["diverged"] else ""
    else:
        line = head + f"{_fmt(r['test_accuracy'])} ± {_fmt(r['test_accuracy_sem'])} (n={r['n']})"
        line += f" ({r['diverged_seeds']} diverged)" if r["diverged"] else ""
    if r["seeds_unfinished"]:
        line += f" ({r['seeds_unfinished']} seed(s) not finished)"
    return line


def notebook_lines(rows: list[dict]) -> list[str]:
    """The notebook-style line of every row."""
    return [notebook_line(r) for r in rows]


def verdict(rows: list[dict], alpha: float = stats.ALPHA) -> str:
    """One line: the reference and the runs that differ from it significantly."""
    ref = next((r["run"] for r in rows if r["reference"]), None)
    if ref is None:
        return "no reference run: nothing finished"
    if all(r["p_value"] is None for r in rows):
        return f"reference {ref}; significance needs at least 2 finished seeds per run"
    diff = [r["run"] for r in rows if r["significant"]]
    return (f"reference {ref}; different at {alpha:g} (Welch, Holm-corrected): "
            f"{', '.join(diff) if diff else 'none'}")


def _interval(r: dict, name: str) -> str:
    low, high = r[f"{name}_low"], r[f"{name}_high"]
    return "" if low is None else f"[{low:.4f}, {high:.4f}]"


def _stats_table(family: registry.Family, rows: list[dict], why: str) -> list[str]:
    ref = next((r["run"] for r in rows if r["reference"]), "-")
    tested = sum(r["p_value"] is not None for r in rows)
    out = ["## Test accuracy over seeds", "",
           f"Reference: {why}. p: Welch's t-test of the final test accuracy against {ref}; "
           f"Holm p: Holm-corrected over the family's {tested} comparison(s); "
           f"* marks a difference significant at {stats.ALPHA:g}. Intervals are 95% t "
           "intervals of the mean (none with one seed).", "",
           f"| run | {family.varies} | n | final test | std | 95% interval | min | max | "
           f"best test | std | 95% interval | min | max | p vs {ref} | Holm p | |",
           "|---" * 16 + "|"]
    for r in rows:
        cells = [r["run"] + (" (reference)" if r["reference"] else ""), r["value"],
                 _fmt(r["n"])]
        for q in ("test_accuracy", "best_test_accuracy"):
            cells += [_fmt(r[q]), _fmt(r[f"{q}_std"]), _interval(r, q), _fmt(r[f"{q}_min"]),
                      _fmt(r[f"{q}_max"])]
        cells += [_fmt(r["p_value"], ".3g"), _fmt(r["holm_p"], ".3g"),
                  "*" if r["significant"] else ""]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _ratio(part, total) -> str:
    return "" if part is None else f"{_fmt(part, '.1f')}/{_fmt(total, '.0f')}"


def _notebook_table(family: registry.Family, rows: list[dict], scale: str) -> list[str]:
    where = ("" if scale == "full" else f" This {scale}-scale preview is not the notebook's "
             "protocol, so no difference is given.")
    out = ["## Training and the notebook", "",
           "The notebook's number is compared with our mean test accuracy at the epoch the "
           "notebook took it (\"compared at epoch\"; \"unknown\": no difference)." + where, "",
           f"| run | {family.varies} | n | train correct | best epoch | dead (1e-9) "
           "| dead (1e-5) | diverged | notebook | compared at epoch | ours at that epoch "
           "| difference | note |",
           "|---" * 13 + "|"]
    for r in rows:
        diverged = "" if not r["diverged"] else "yes" if r["n"] == 1 else \
            f"{r['diverged_seeds']}/{r['n']}"
        epoch = "unknown" if r["notebook_epoch"] is None else str(r["notebook_epoch"])
        epoch = epoch if r["notebook_accuracy"] is not None else ""
        out.append(
            f"| {r['run']} | {r['value']} | {_fmt(r['n'])} | "
            f"{_ratio(r['train_correct'], r['train_total'])} | "
            f"{_fmt(r['best_epoch'], '.1f')} | {_fmt(r['dead_1e9'], '.1f')} | "
            f"{_fmt(r['dead_1e5'], '.1f')} | {diverged} | "
            f"{_fmt(r['notebook_accuracy'])} | {epoch} | "
            f"{_fmt(r['accuracy_at_epoch'])} | {_fmt(r['difference'], '+.4f')} | "
            f"{r['notebook_note'] or ''} |")
    return out


def markdown(family: registry.Family, rows: list[dict], scale: str, protocol: dict,
             why: str) -> str:
    """summary.md: the notebook lines, the statistics table and the notebook table."""
    head = [f"# {family.name}: {family.description}", "",
            f"optimizer {family.optimizer}, varies {family.varies}; scale {scale} "
            f"({', '.join(f'{k}={v}' for k, v in protocol.items())})", "",
            *notebook_lines(rows), "", verdict(rows), ""]
    grouping = [f"| {r['run']} | {r['topographic_grouping']} |" for r in rows
                if r["topographic_grouping"]]
    if grouping:  # topographic schemes: is |W| lower between distant grid cells?
        grouping = ["", "## Topographic grouping", "",
                    "Spearman's rho between grid-cell distance and mean |W| of the final "
                    "kernels (negative: grouping), permutation p-value (100 permutations).",
                    "", "| run | grouping |", "|---|---|", *grouping]
    return "\n".join([*head, *_stats_table(family, rows, why), "",
                      *_notebook_table(family, rows, scale), *grouping]) + "\n"


def csv_text(rows: list[dict]) -> str:
    """summary.csv: every row field."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_results(family: registry.Family, runs: Sequence[registry.Run], family_dir: Path,
                  scale: str, baseline: str | None = None) -> list[dict]:
    """Write summary.md, summary.csv and the pictures into `family_dir`; return the rows."""
    from experiments import report_plots

    family_dir = Path(family_dir)
    rows, why = summary_rows(family, runs, family_dir, scale, baseline)
    storage.atomic_write(family_dir / "summary.md",
                         markdown(family, rows, scale, scales.SCALES[scale], why))
    storage.atomic_write(family_dir / "summary.csv", csv_text(rows))
    ref = next((r for r in rows if r["reference"]), None)
    ref_group = (seeds.load(run_dir(registry.all_runs()[ref["run"]], family_dir))
                 if ref else None)
    report_plots.sweep_pictures(family, runs, family_dir, same_protocol=scale == "full",
                                reference=ref_group)
    return rows


def dry_run_lines(family: registry.Family, runs: Sequence[registry.Run], scale: str,
                  baseline: str | None = None) -> list[str]:
    """For --dry-run: the reference run, and the epoch at which each notebook number is
    compared with ours."""
    out = [f"reference run: {baseline or family.baseline or 'the best mean'}",
           "notebook numbers, compared with our test accuracy at the epoch they were taken"
           + ("" if scale == "full" else " (at full scale only)") + ":"]
    for run in runs:
        rep = run.reported
        if rep.test_accuracy is None:
            out.append(f"  {run.name}: no notebook number")
            continue
        note = f" ({rep.note})" if rep.note else ""
        when = (f"compared at epoch {rep.epoch}" if rep.epoch is not None
                else "epoch unknown, not compared")
        out.append(f"  {run.name}: notebook {rep.test_accuracy:.4f}{note}: {when}")
    return out
