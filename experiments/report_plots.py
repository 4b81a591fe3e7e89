"""A sweep's pictures, drawn from its runs' records over seeds (registry-aware).

Figures are plain matplotlib Figures (`wdjax.analysis.plots.subplots`); no pyplot state is touched.
Where a run has several seeds, points are means with 95% t intervals and each seed is a
faint dot; curves are means with a shaded interval.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.ticker
import numpy as np
from matplotlib.axes import Axes

from experiments import registry
from wdjax.analysis import plots, seeds

NO_DEAD_UNITS = "no dead units (threshold 1e-9)"


def _notebook_series(ax: Axes, runs: Sequence[registry.Run]) -> None:
    """The notebook's numbers, one series per epoch at which they were taken."""
    by_epoch: dict[int | None, list[tuple[float, float]]] = {}
    for r in runs:
        if r.reported.test_accuracy is not None:
            by_epoch.setdefault(r.reported.epoch, []).append((r.value, r.reported.test_accuracy))
    for epoch, pts in sorted(by_epoch.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
        when = "epoch unknown" if epoch is None else f"epoch {epoch}"
        style = "k^:" if epoch == registry.NOTEBOOK_EPOCHS else "kx" if epoch is None else "kv"
        ax.plot(*zip(*sorted(pts), strict=True), style, label=f"notebook ({when}, base 32)")


def _reference_line(ax: Axes, reference: seeds.SeedGroup | None) -> None:
    """The reference run's mean final test accuracy, with its interval shaded."""
    finals = reference.values("final_test_accuracy") if reference is not None else []
    if not finals:
        return
    (row,) = seeds.compare([reference], 0)
    ax.axhline(row["test_accuracy"], color="#777777", ls="-.", lw=0.9,
               label=f"reference {reference.run_dir.name} (final)")
    if row["test_accuracy_low"] is not None:
        ax.axhspan(row["test_accuracy_low"], row["test_accuracy_high"], color="#777777",
                   alpha=0.12, lw=0)


def accuracy_figure(family: registry.Family, done: Sequence[registry.Run],
                    groups: dict[str, seeds.SeedGroup], runs: Sequence[registry.Run],
                    same_protocol: bool, reference: seeds.SeedGroup | None):
    """Final and best test accuracy against the varied value, notebook numbers beside."""
    fig, ax = plots.subplots(figsize=(7, 4.2))
    xs = [r.value for r in done]
    rows = seeds.compare([groups[r.name] for r in done], None)
    for key, fmt, label in (("test_accuracy", "o-", "final"), ("best_test_accuracy", "s--",
                                                                 "best")):
        bars = plots.interval_errorbar(
            ax, xs, [row[key] for row in rows], [row[f"{key}_low"] for row in rows],
            [row[f"{key}_high"] for row in rows], fmt, f"{label} (mean, 95% interval)")
        samples = [[v for v in groups[r.name].values(key) if v is not None] for r in done]
        plots.seed_dots(ax, xs, samples, bars.lines[0].get_color())
    _reference_line(ax, reference)
    if any(r.reported.test_accuracy is not None for r in runs):
        nb_ax = ax if same_protocol else ax.twinx()
        _notebook_series(nb_ax, runs)
        if nb_ax is not ax:
            nb_ax.set_ylabel("notebook test accuracy")
            nb_ax.legend(loc="lower right", fontsize=7)
    if family.varies == "optimizer":
        ax.set_xticks(xs, [r.label for r in done])
    _finish_hparam_axes(ax, family, "test accuracy",
                        f"{family.name}: {family.optimizer} (dots: seeds)")
    return fig


def _finish_hparam_axes(ax, family: registry.Family, ylabel: str, title: str) -> None:
    """The varied hyperparameter on x (log where the family's values span a wide range)."""
    if family.log_scale and family.varies != "optimizer":
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set(xlabel=family.varies, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def curves_figure(family: registry.Family, done: Sequence[registry.Run],
                  groups: dict[str, seeds.SeedGroup]):
    """Test accuracy per epoch: the mean over seeds, the 95% interval shaded."""
    fig, ax = plots.subplots(figsize=(7, 4.2))
    for r in done:
        per_seed = groups[r.name].metrics()
        length = min(len(rows) for rows in per_seed)  # the epochs every seed has
        if not length:
            continue
        samples = np.array([[m["test_accuracy"] for m in rows[:length]] for rows in per_seed])
        plots.mean_band(ax, [m["epoch"] for m in per_seed[0][:length]], samples,
                        f"{r.name} ({r.label}), n={len(per_seed)}")
    ax.set(xlabel="epoch", ylabel="test accuracy",
           title=f"{family.name}: test accuracy (mean over seeds, 95% interval)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
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
        pos = np.arange(len(layers)) + (i - (len(done) - 1) / 2) * width
        a1.bar(pos, mean, width, label=r.name)
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
    """Final test accuracy against the varied value, one line per value of the family's
    ``lines_by`` setting (txp: accuracy vs tau_epochs, one line per width)."""
    fig, ax = plots.subplots(figsize=(7, 4.2))
    by_line: dict[Any, list[registry.Run]] = {}
    for r in done:
        by_line.setdefault(r.settings.get(family.lines_by), []).append(r)
    for key, members in sorted(by_line.items(), key=lambda kv: (kv[0] is None, kv[0])):
        members = sorted(members, key=lambda r: r.value)
        rows = seeds.compare([groups[r.name] for r in members], None)
        plots.interval_errorbar(
            ax, [r.value for r in members], [row["test_accuracy"] for row in rows],
            [row["test_accuracy_low"] for row in rows],
            [row["test_accuracy_high"] for row in rows], "o-", f"{family.lines_by} {key}")
    _finish_hparam_axes(ax, family, "final test accuracy",
                        f"{family.name}: one line per {family.lines_by} (mean, 95% interval)")
    return fig


def grouping_figure(family: registry.Family, done: Sequence[registry.Run],
                    groups: dict[str, seeds.SeedGroup]):
    """Per run (rows) and layer (columns) the cell-by-cell mean |W| map of the final kernel
    (mean over seeds), titled with rho and p (`analysis.topographic_grouping`); None when
    no run recorded one."""
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
            maps = np.array([[[np.nan if v is None else v for v in line]
                              for line in e["cell_map"]] for e in entries], float)
            seen = (~np.isnan(maps)).sum(0)  # cells without units stay empty (NaN)
            mean = np.where(seen > 0, np.nansum(maps, 0) / np.maximum(seen, 1), np.nan)
            image = ax.imshow(mean, cmap="viridis")
            fig.colorbar(image, ax=ax, fraction=0.046)
            rho = np.mean([e["spearman"] for e in entries])
            p = np.mean([e["p_value"] for e in entries])
            ax.set(title=f"{r.name} {layer}: rho {rho:+.2f}, p {p:.3f}", xlabel="input cell",
                   ylabel="output cell")
    return fig


def sweep_pictures(family: registry.Family, runs: Sequence[registry.Run],
                   family_dir: str | os.PathLike, same_protocol: bool = False,
                   reference: seeds.SeedGroup | None = None) -> list[Path]:
    """accuracy_vs_<param>.png, curves.png and dead_units_and_coefficients.png for a sweep.

    Each run's finished seeds are read from ``family_dir/<run>/``. Unless `same_protocol`
    (a full-scale sweep), the notebook's numbers get their own y axis: a preview is not on
    the same scale. `reference`, when given, is drawn as a horizontal line.
    """
    family_dir = Path(family_dir)
    groups = {r.name: seeds.load(family_dir / r.name) for r in runs}
    done = [r for r in runs if groups[r.name].n]
    if not done:
        return []
    saved = [
        plots.save(accuracy_figure(family, done, groups, runs, same_protocol, reference),
                   family_dir / f"accuracy_vs_{family.varies}.png"),
        plots.save(curves_figure(family, done, groups), family_dir / "curves.png"),
        plots.save(dead_units_figure(family, done, groups),
                   family_dir / "dead_units_and_coefficients.png"),
    ]
    grouping = grouping_figure(family, done, groups)
    if grouping is not None:
        saved.append(plots.save(grouping, family_dir / "topographic_grouping.png"))
    if family.lines_by is not None:
        saved.append(plots.save(lines_figure(family, done, groups), family_dir /
                                f"accuracy_vs_{family.varies}_by_{family.lines_by}.png"))
    return saved
