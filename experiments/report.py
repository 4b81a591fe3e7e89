"""A family's results: notebook-style lines, statistics over seeds, summary.md, summary.csv
and the pictures (docs/sweeps.md#report-files). The reference is ``--baseline``, else the
notebook's base run (maybe of another family), else the best mean.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.ticker
import numpy as np
from matplotlib.axes import Axes

from experiments import compare, registry, scales
from wdjax import storage
from wdjax.analysis import plots, seeds, stats

NO_DEAD_UNITS = "no dead units (threshold 1e-9)"


def run_dir(run: registry.Run, family_dir: Path) -> Path:
    """Where `run` keeps its records, beside `family_dir` when it belongs to another family."""
    return Path(family_dir).parent / registry.FAMILY_OF[run.name].name / run.name


def _label(run: registry.Run, family: registry.Family) -> str:
    if run.name in family.run_names:
        return run.label
    if family.varies in run.hparams:  # dxp4 in gxp's table: last2_mult 1
        return f"{run.hparams[family.varies]:g}"
    return run.optimizer


def check_baseline(name: str | None, runs: Sequence[registry.Run] = (),
                   family_dir: Path | None = None) -> registry.Run | None:
    """The registry run `name` (None: None); with `family_dir`, in `runs` or finished on disk."""
    if name is None:
        return None
    if name not in registry.FAMILY_OF:
        raise ValueError(f"unknown --baseline run {name!r}: give a run name of the registry "
                         "(e.g. dxp4, ixp2)")
    run = registry.all_runs()[name]
    where = run_dir(run, family_dir) if family_dir is not None else None
    if where is not None and run not in runs and not seeds.load(where).n:
        raise ValueError(f"--baseline {name} has no finished run in {where}: sweep it "
                         "first, or add it to --runs")
    return run


def _protocol_matches(group: seeds.SeedGroup, scale: str) -> bool:
    return all(c.get("config", {}).get(k) == v for c in group.configs()
               for k, v in scales.SCALES[scale].items())


def _entries(family: registry.Family, runs: Sequence[registry.Run], family_dir: Path,
             scale: str, baseline: str | None) -> tuple[list[tuple], int | None, str]:
    """The rows' (run, records, label), another family's reference first; its index and why."""
    entries = [(r, seeds.load(run_dir(r, family_dir)), r.label) for r in runs]
    wanted = baseline or family.baseline
    why = "--baseline" if baseline else "the notebook's base for this family"
    lost = f"the notebook names no base run for {family.name}"
    if wanted is not None:
        ref, inside = check_baseline(wanted), wanted in [r.name for r in runs]
        if not inside:
            entries.insert(0, (ref, seeds.load(run_dir(ref, family_dir)), _label(ref, family)))
        i = [r.name for r, _, _ in entries].index(wanted)
        if entries[i][1].n and _protocol_matches(entries[i][1], scale):
            return entries, i, f"{wanted} ({why})"
        lost = (f"{wanted} ({why}) has no finished records at {scale} scale in "
                f"{entries[i][1].run_dir}")
        entries = entries if inside else entries[1:]
    best = seeds.best_mean([g for _, g, _ in entries])
    if best is None:
        return entries, None, f"none ({lost}; no finished run)"
    return entries, best, f"{entries[best][0].name}, the best mean ({lost})"


def _single_or_mean(values: Sequence) -> float | int | None:
    kept = [v for v in values if v is not None]
    return None if not kept else kept[0] if len(kept) == 1 else float(np.mean(kept))


def used_value(group: seeds.SeedGroup, varies: str) -> float | None:
    """The value of `varies` a miniature scale mapped the notebook's to (None: unmapped)."""
    for c in group.configs():
        config = c.get("config", {})
        if varies in dict(config.get("source_hparams") or ()):
            return float(config[varies])
    return None


def _notebook_fields(run: registry.Run, group: seeds.SeedGroup, scale: str) -> dict:
    """The notebook's numbers and ours at the epoch it took them (full scale only)."""
    rep = run.reported
    compared = scale == "full" and rep.epoch is not None and rep.test_accuracy is not None
    at = group.accuracy_at(rep.epoch) if compared and group.n else None
    at = float(np.mean(at)) if at else None
    return dict(notebook_accuracy=rep.test_accuracy, notebook_train_correct=rep.train_correct,
                notebook_epoch=rep.epoch, notebook_note=rep.note,
                compared_at_epoch=rep.epoch if compared else None, accuracy_at_epoch=at,
                difference=None if at is None else at - rep.test_accuracy)


def summary_rows(family: registry.Family, runs: Sequence[registry.Run], family_dir: Path,
                 scale: str, baseline: str | None = None) -> tuple[list[dict], str]:
    """One row per run (the reference from another family first) and the reference's why."""
    entries, ref, why = _entries(family, runs, Path(family_dir), scale, baseline)
    rows = []
    for (run, g, label), test in zip(entries, seeds.compare([g for _, g, _ in entries], ref),
                                     strict=True):
        dead = {f"dead_{k}": _single_or_mean([sum(d.values()) for d in g.dead_units(t) if d])
                for k, t in (("1e9", "1e-09"), ("1e5", "1e-05"))}
        rows.append(dict(
            run=run.name, family=registry.FAMILY_OF[run.name].name, value=label,
            used_value=used_value(g, family.varies), optimizer=run.optimizer, **test,
            seeds_unfinished=len(g.unfinished),
            train_correct=_single_or_mean(g.values("final_train_correct")),
            train_total=_single_or_mean(g.values("train_total")),
            best_epoch=_single_or_mean(g.values("best_epoch")), **dead,
            topographic_grouping=grouping_text(g), diverged=any(g.values("diverged")),
            diverged_seeds=sum(bool(d) for d in g.values("diverged")), finished=g.n > 0,
            **_notebook_fields(run, g, scale)))
    return rows, why


def grouping_text(group: seeds.SeedGroup) -> str | None:
    """``fc6 rho -0.41 p 0.010; ...``: per layer the seeds' mean rho and p (None: unrecorded)."""
    parts = [f"{layer} rho {np.mean([e['spearman'] for e in entries]):+.2f} "
             f"p {np.mean([e['p_value'] for e in entries]):.3f}"
             + (f" (n={len(entries)})" if len(entries) > 1 else "")
             for layer, entries in group.topographic_grouping().items()]
    return "; ".join(parts) or None


_fmt = functools.partial(compare.cell, none="")  # a blank cell for None


def _value(r: dict) -> str:
    """The varied value, as ``notebook -> used`` where a miniature scale mapped it."""
    return r["value"] if r["used_value"] is None else f"{r['value']} -> {r['used_value']:.2g}"


def notebook_line(r: dict) -> str:
    """``- dxp4: 0.00016 -> 0.9131 (50000)`` (one seed) or ``... -> 0.4727 ± 0.0041 (n=5)``."""
    head = f"- {r['run']}: {_value(r)} -> "
    if not r["finished"]:
        return head + "(not finished)"
    if r["n"] == 1:
        line = head + f"{_fmt(r['test_accuracy'])} ({r['train_correct']})"
        line += " diverged" if r["diverged"] else ""
    else:
        line = head + f"{_fmt(r['test_accuracy'])} ± {_fmt(r['test_accuracy_sem'])} (n={r['n']})"
        line += f" ({r['diverged_seeds']} diverged)" if r["diverged"] else ""
    return line + (f" ({r['seeds_unfinished']} seed(s) not finished)"
                   if r["seeds_unfinished"] else "")


def notebook_lines(rows: list[dict]) -> list[str]:
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


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table's lines: `head`, the rule, then `rows`."""
    return ["| " + " | ".join(line) + " |" for line in [head, ["---"] * len(head), *rows]]


def _notebook_cells(r: dict) -> list[str]:
    """A row of the notebook table (`markdown`)."""
    diverged = "yes" if r["n"] == 1 else f"{r['diverged_seeds']}/{r['n']}"
    epoch = "unknown" if r["notebook_epoch"] is None else str(r["notebook_epoch"])
    return [r["run"], _value(r), _fmt(r["n"]), "" if r["train_correct"] is None else
            f"{_fmt(r['train_correct'], '.1f')}/{_fmt(r['train_total'], '.0f')}",
            _fmt(r["best_epoch"], ".1f"), _fmt(r["dead_1e9"], ".1f"), _fmt(r["dead_1e5"], ".1f"),
            diverged if r["diverged"] else "", _fmt(r["notebook_accuracy"]),
            "" if r["notebook_accuracy"] is None else epoch, _fmt(r["accuracy_at_epoch"]),
            _fmt(r["difference"], "+.4f"), r["notebook_note"] or ""]


def markdown(family: registry.Family, rows: list[dict], scale: str, protocol: dict,
             why: str) -> str:
    """summary.md: the notebook lines, the statistics table and the notebook table."""
    scaled = any(r["used_value"] is not None for r in rows)
    out = [f"# {family.name}: {family.description}", "",
           f"optimizer {family.optimizer}, varies {family.varies}; scale {scale} "
           f"({', '.join(f'{k}={v}' for k, v in protocol.items())})"
           + (f"; {family.varies}: the notebook's -> the one used at this scale"
              if scaled else ""), "",
           *notebook_lines(rows), "", verdict(rows), "",
           "## Test accuracy over seeds", "", compare.caption(why, rows) + ".", "",
           *markdown_table(["run", family.varies, *compare.STATS_HEAD], [
               [r["run"] + (" (reference)" if r["reference"] else ""), _value(r),
                *compare.stats_cells(r)] for r in rows]), "",
           "## Training and the notebook", "",
           "The notebook's number is compared with our mean test accuracy at the epoch the "
           "notebook took it (\"compared at epoch\"; \"unknown\": no difference)."
           + ("" if scale == "full" else f" The {scale} scale is not the notebook's protocol, "
              "so no difference is given."), "",
           *markdown_table(["run", family.varies, "n", "train correct", "best epoch",
                            "dead (1e-9)", "dead (1e-5)", "diverged", "notebook",
                            "compared at epoch", "ours at that epoch", "difference", "note"],
                           [_notebook_cells(r) for r in rows])]
    grouping = [[r["run"], r["topographic_grouping"]] for r in rows if r["topographic_grouping"]]
    if grouping:  # topographic schemes: is |W| lower between distant grid cells?
        out += ["", "## Topographic grouping", "",
                "Spearman's rho between grid-cell distance and mean |W| of the final "
                "kernels (negative: grouping), permutation p-value (100 permutations).", "",
                *markdown_table(["run", "grouping"], grouping)]
    return "\n".join(out) + "\n"


def write_results(family: registry.Family, runs: Sequence[registry.Run], family_dir: Path,
                  scale: str, baseline: str | None = None) -> list[dict]:
    """Write summary.md, summary.csv and the pictures into `family_dir`; return the rows."""
    family_dir = Path(family_dir)
    rows, why = summary_rows(family, runs, family_dir, scale, baseline)
    storage.atomic_write(family_dir / "summary.md",
                         markdown(family, rows, scale, scales.SCALES[scale], why))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    storage.atomic_write(family_dir / "summary.csv", buf.getvalue())
    ref = [seeds.load(run_dir(registry.all_runs()[r["run"]], family_dir))
           for r in rows if r["reference"]]
    sweep_pictures(family, runs, family_dir, scale == "full", next(iter(ref), None))
    return rows


def dry_run_lines(family: registry.Family, runs: Sequence[registry.Run], scale: str,
                  baseline: str | None = None) -> list[str]:
    """For --dry-run: the reference run, and when each notebook number is compared with ours."""
    out = [f"reference run: {baseline or family.baseline or 'the best mean'}",
           "notebook numbers, compared with our test accuracy at the epoch they were taken"
           + ("" if scale == "full" else " (at full scale only)") + ":"]
    for run in runs:
        rep = run.reported
        when = ("epoch unknown, not compared" if rep.epoch is None
                else f"compared at epoch {rep.epoch}")
        out.append(f"  {run.name}: no notebook number" if rep.test_accuracy is None else
                   f"  {run.name}: notebook {rep.test_accuracy:.4f}"
                   f"{f' ({rep.note})' if rep.note else ''}: {when}")
    return out


# ------------------------------------------------------------------------------ pictures
def seed_errorbar(ax: Axes, xs: Sequence[float], samples: Sequence[Sequence[float | None]],
                  fmt: str, label: str, **kwargs) -> None:
    """Per x its seeds' mean joined by `fmt`, the 95% t interval as a bar, seeds as faint dots."""
    kept = [(x, [v for v in s if v is not None]) for x, s in zip(xs, samples, strict=True)]
    if not any(s for _, s in kept):
        return
    xs, samples = zip(*[(x, s) for x, s in kept if s], strict=True)
    sums = [stats.summarize(s) for s in samples]
    bars = plots.interval_errorbar(ax, xs, [s.mean for s in sums], [s.low for s in sums],
                                   [s.high for s in sums], fmt, label, **kwargs)
    plots.seed_dots(ax, xs, samples, bars.lines[0].get_color())


def _notebook_series(ax: Axes, runs: Sequence[registry.Run]) -> None:
    """The notebook's numbers, one series per epoch at which they were taken."""
    by_epoch: dict[int | None, list[tuple[float, float]]] = {}
    for r in runs:
        if r.reported.test_accuracy is not None:
            by_epoch.setdefault(r.reported.epoch, []).append((r.value, r.reported.test_accuracy))
    for epoch, pts in sorted(by_epoch.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
        when = "epoch unknown" if epoch is None else f"epoch {epoch}"
        style = "k^:" if epoch == registry.NOTEBOOK_EPOCHS else "kx" if epoch is None else "kv"
        ax.plot(*zip(*sorted(pts), strict=True), style, label=f"notebook ({when}, width 32)")


def finish_axes(ax: Axes, family: registry.Family, ylabel: str, title: str,
                xlabel: str | None = None) -> None:
    """Labels, grid and legend; a log x axis where the family's values span a wide range."""
    if xlabel is None and family.log_scale:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set(xlabel=xlabel or family.varies, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def accuracy_figure(family: registry.Family, done: Sequence[registry.Run],
                    groups: dict[str, seeds.SeedGroup], runs: Sequence[registry.Run],
                    same_protocol: bool, reference: seeds.SeedGroup | None):
    """Final and best test accuracy against the varied value, the reference's mean final as a
    line, notebook numbers beside (on their own y axis unless `same_protocol`)."""
    fig, ax = plots.subplots(figsize=(7, 4.2))
    xs = [r.value for r in done]
    for key, fmt, label in (("final_test_accuracy", "o-", "final"),
                            ("best_test_accuracy", "s--", "best")):
        seed_errorbar(ax, xs, [groups[r.name].values(key) for r in done], fmt,
                      f"{label} (mean, 95% interval)")
    if reference is not None and reference.values("final_test_accuracy"):
        (row,) = seeds.compare([reference], 0)
        ax.axhline(row["test_accuracy"], color="#777777", ls="-.", lw=0.9,
                   label=f"reference {reference.run_dir.name} (final)")
        if row["test_accuracy_low"] is not None:
            ax.axhspan(row["test_accuracy_low"], row["test_accuracy_high"], color="#777777",
                       alpha=0.12, lw=0)
    if any(r.reported.test_accuracy is not None for r in runs):
        nb_ax = ax if same_protocol else ax.twinx()
        _notebook_series(nb_ax, runs)
        if nb_ax is not ax:
            nb_ax.set_ylabel("notebook test accuracy")
            nb_ax.legend(loc="lower right", fontsize=7)
    if family.varies == "optimizer":
        ax.set_xticks(xs, [r.label for r in done])
    finish_axes(ax, family, "test accuracy", f"{family.name}: {family.optimizer} (dots: seeds)")
    return fig


def curves_figure(family: registry.Family, done: Sequence[registry.Run],
                  groups: dict[str, seeds.SeedGroup]):
    """Test accuracy per epoch: the mean over seeds, the 95% interval shaded."""
    fig, ax = plots.subplots(figsize=(7, 4.2))
    for r in done:
        per_seed = groups[r.name].metrics()
        length = min(len(rows) for rows in per_seed)  # the epochs every seed has
        if length:
            samples = np.array([[m["test_accuracy"] for m in rows[:length]] for rows in per_seed])
            plots.mean_band(ax, [m["epoch"] for m in per_seed[0][:length]], samples,
                            f"{r.name} ({r.label}), n={len(per_seed)}")
    finish_axes(ax, family, "test accuracy",
                f"{family.name}: test accuracy (mean over seeds, 95% interval)", "epoch")
    return fig


def dead_units_figure(family: registry.Family, done: Sequence[registry.Run],
                      groups: dict[str, seeds.SeedGroup]):
    """Mean dead input units per layer over seeds, and each run's decay coefficients."""
    configs = {r.name: groups[r.name].configs() for r in done}
    layers = list(configs[done[0].name][0]["layers"])
    width = 0.8 / len(done)
    fig, (a1, a2) = plots.subplots(2, 1, figsize=(10, 7), sharex=True)
    any_dead = False
    for i, r in enumerate(done):
        per_seed = groups[r.name].dead_units()
        mean = [float(np.mean([d.get(k, 0) for d in per_seed])) for k in layers]
        any_dead |= any(mean)
        a1.bar(np.arange(len(layers)) + (i - (len(done) - 1) / 2) * width, mean, width,
               label=r.name)
        coef = [np.mean([c["layers"][k]["coefficient"] for c in configs[r.name]]) for k in layers]
        a2.plot(range(len(layers)), coef, "o-", label=f"{r.name} ({r.label})")
    a1.set(title=f"{family.name}: dead units (mean over seeds)")
    if any_dead:
        a1.set_ylabel("dead input units (< 1e-9)")
        a1.legend(fontsize=7, ncol=3)
    else:
        plots.say_instead(a1, NO_DEAD_UNITS)
    a2.set(ylabel="decay coefficient (kernel)", yscale="log", title="per-layer decay coefficient")
    a2.set_xticks(range(len(layers)), layers, rotation=45)
    a2.grid(alpha=0.3)
    a2.legend(fontsize=7, ncol=3)
    return fig


def lines_figure(family: registry.Family, done: Sequence[registry.Run],
                 groups: dict[str, seeds.SeedGroup]):
    """Final test accuracy, one line per value of ``family.lines_by`` (None: no such setting)."""
    if family.lines_by is None:
        return None
    fig, ax = plots.subplots(figsize=(7, 4.2))
    by_line: dict[Any, list[registry.Run]] = {}
    for r in sorted(done, key=lambda r: r.value):
        by_line.setdefault(r.settings.get(family.lines_by), []).append(r)
    for key, members in sorted(by_line.items(), key=lambda kv: (kv[0] is None, kv[0])):
        seed_errorbar(ax, [r.value for r in members],
                      [groups[r.name].values("final_test_accuracy") for r in members], "o-",
                      f"{family.lines_by} {key}")
    finish_axes(ax, family, "final test accuracy",
                f"{family.name}: one line per {family.lines_by} (mean, 95% interval)")
    return fig


def grouping_figure(family: registry.Family, done: Sequence[registry.Run],
                    groups: dict[str, seeds.SeedGroup]):
    """Per run (rows) and layer the seeds' mean cell-by-cell |W| map; None if none recorded."""
    recorded = {r.name: groups[r.name].topographic_grouping() for r in done}
    runs = [r for r in done if recorded[r.name]]
    if not runs:
        return None
    layers = sorted({k for r in runs for k in recorded[r.name]})
    fig, axes = plots.subplots(len(runs), len(layers), squeeze=False,
                               figsize=(3.6 * len(layers), 3.0 * len(runs)))
    fig.set_layout_engine("constrained")
    for row, r in zip(axes, runs, strict=True):
        for ax, layer in zip(row, layers, strict=True):
            entries = recorded[r.name].get(layer, [])
            if not entries:
                plots.say_instead(ax, "not recorded")
                continue
            # None (a cell without units) -> NaN -> masked: empty unless some seed has it
            mean = np.ma.masked_invalid(np.array([e["cell_map"] for e in entries], float)).mean(0)
            fig.colorbar(ax.imshow(mean, cmap="viridis"), ax=ax, fraction=0.046)
            rho = np.mean([e["spearman"] for e in entries])
            p = np.mean([e["p_value"] for e in entries])
            ax.set(title=f"{r.name} {layer}: rho {rho:+.2f}, p {p:.3f}", xlabel="input cell",
                   ylabel="output cell")
    return fig


def sweep_pictures(family: registry.Family, runs: Sequence[registry.Run], family_dir: Path,
                   same_protocol: bool = False,
                   reference: seeds.SeedGroup | None = None) -> list[Path]:
    """accuracy_vs_<param>.png, curves.png, dead_units_and_coefficients.png and where they apply
    topographic_grouping.png and accuracy_vs_<param>_by_<lines_by>.png; the paths written."""
    family_dir = Path(family_dir)
    groups = {r.name: seeds.load(family_dir / r.name) for r in runs}
    done = [r for r in runs if groups[r.name].n]
    if not done:
        return []
    figures = {f"accuracy_vs_{family.varies}.png": accuracy_figure(
                   family, done, groups, runs, same_protocol, reference),
               "curves.png": curves_figure(family, done, groups),
               "dead_units_and_coefficients.png": dead_units_figure(family, done, groups),
               "topographic_grouping.png": grouping_figure(family, done, groups),
               f"accuracy_vs_{family.varies}_by_{family.lines_by}.png": lines_figure(
                   family, done, groups)}
    return [plots.save(fig, family_dir / name) for name, fig in figures.items() if fig is not None]
