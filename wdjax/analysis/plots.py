"""Pictures of runs and figure helpers for sweeps over seeds, written atomically as PNGs (plain
``matplotlib.figure.Figure`` objects, no pyplot: no GUI backend, no global state)."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from wdjax import storage
from wdjax.analysis import stats


def subplots(*args, figsize: tuple[float, float], **kwargs) -> tuple[Figure, Any]:
    """``pyplot.subplots`` without pyplot: a Figure with its axes."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def save(fig: Figure, path: str | os.PathLike) -> Path:
    """Render `fig` to PNG bytes, then write them atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    storage.atomic_write(path, buf.getvalue())
    return Path(path)


def _log_if_positive(ax: Axes) -> None:
    """Log y axis when every plotted value is positive and finite (a diverged run is not)."""
    ys = np.concatenate([np.asarray(line.get_ydata(), float) for line in ax.get_lines()] + [[]])
    ys = ys[~np.isnan(ys)]
    if ys.size and np.all(np.isfinite(ys) & (ys > 0)):
        ax.set_yscale("log")


def accuracy_figure(rows: list[dict], title: str = "") -> Figure:
    """Train/test accuracy and loss per epoch."""
    ep = [r["epoch"] for r in rows]
    fig, (a1, a2) = subplots(1, 2, figsize=(11, 4))
    panels = ((a1, "accuracy", "accuracy", "train (augmented, while training)"),
              (a2, "loss", "cross-entropy", "train"))
    for ax, what, ylabel, train in panels:
        ax.plot(ep, [r[f"train_{what}"] for r in rows], label=train)
        ax.plot(ep, [r[f"test_{what}"] for r in rows], label="test")
        ax.set(xlabel="epoch", ylabel=ylabel, title=f"{title} {what}")
        ax.grid(alpha=0.3)
        ax.legend()
    a1.set_ylim(0, 1)
    _log_if_positive(a2)
    return fig


def norms_figure(rows: list[dict], title: str = "") -> Figure:
    """Per-layer kernel norm; angular update against its equilibrium prediction; and the
    equilibrium monitor's ratio (EMA angular update / prediction; 1 at equilibrium)."""
    layers = list(rows[-1]["angular_update"]) if rows else []
    ep = [r["epoch"] for r in rows]
    cmap = matplotlib.colormaps["viridis"].resampled(max(len(layers), 2))
    fig, (a1, a2, a3) = subplots(1, 3, figsize=(17, 4.5))
    for i, layer in enumerate(layers):
        a1.plot(ep, [r["tensors"].get(f"{layer}/conv/kernel", {}).get("param", np.nan)
                     for r in rows], color=cmap(i), label=layer)
        angular = [r["angular_update"][layer] for r in rows]
        a2.plot(ep, [a["measured"] for a in angular], color=cmap(i), label=layer)
        optional = ((a2, "predicted", dict(ls="--", lw=0.8)), (a3, "ratio", dict(label=layer)))
        for ax, key, style in optional:
            values = [a.get(key) for a in angular]
            if any(v is not None for v in values):
                ax.plot(ep, [np.nan if v is None else v for v in values], color=cmap(i), **style)
    a3.axhline(1.0, color="black", lw=0.8, ls=":")
    names = (("||W||", f"{title} kernel norms"),
             ("||dW|| / ||W|| per step", "angular update (dashed: equilibrium prediction)"),
             ("EMA angular update / prediction", "distance to rotational equilibrium (1: there)"))
    for ax, (ylabel, what) in zip((a1, a2, a3), names, strict=True):
        ax.set(xlabel="epoch", ylabel=ylabel, title=what)
        ax.grid(alpha=0.3)
        _log_if_positive(ax)
    a1.legend(fontsize=7, ncol=2)
    return fig


def dead_units_figure(dead: Mapping[str, Sequence[int]], title: str = "") -> Figure:
    """Dead input units per layer (bars) out of the layer's inputs."""
    layers = list(dead)
    fig, ax = subplots(figsize=(10, 3.5))
    ax.bar(layers, [dead[k][1] for k in layers], color="#dddddd", label="inputs")
    ax.bar(layers, [dead[k][0] for k in layers], color="#c0392b", label="dead")
    ax.set(ylabel="units", title=title)
    ax.tick_params(axis="x", rotation=45)
    ax.legend()
    return fig


def run_pictures(run_dir: str | os.PathLike) -> list[Path]:
    """accuracy.png, norms.png and dead_units.png for one run directory."""
    run_dir = Path(run_dir)
    rows = storage.read_jsonl(run_dir / "metrics.jsonl")
    if not rows:
        return []
    name, dead = run_dir.name, rows[-1]["dead_units"]
    thr = "1e-09" if "1e-09" in dead else next(iter(dead))
    figures = {"accuracy": accuracy_figure(rows, name), "norms": norms_figure(rows, name),
               "dead_units": dead_units_figure(dead[thr], f"{name}: dead units (threshold {thr})")}
    return [save(fig, run_dir / f"{key}.png") for key, fig in figures.items()]


def activation_histograms(outputs: Mapping[str, np.ndarray], path: str | os.PathLike) -> Path:
    """One histogram per layer of unit outputs over the test set."""
    fig, axes = subplots(1, len(outputs), figsize=(3 * len(outputs), 2.8), squeeze=False)
    for ax, (layer, values) in zip(axes[0], outputs.items(), strict=True):
        ax.hist(values, bins=60, log=True, color="#2c7fb8")
        ax.set_title(layer, fontsize=9)
    return save(fig, path)


def interval_errorbar(ax: Axes, xs: Sequence[float], means: Sequence[float],
                      lows: Sequence[float | None], highs: Sequence[float | None],
                      fmt: str, label: str, **kwargs) -> Any:
    """Means joined by `fmt`, each with its interval as an error bar (none where None)."""
    means = np.asarray(means, float)
    low, high = np.array([lows, highs], dtype=float)  # None -> NaN: no bar
    yerr = np.nan_to_num(np.stack([means - low, high - means]))
    return ax.errorbar(xs, means, yerr=yerr, fmt=fmt, capsize=3, label=label, **kwargs)


def seed_dots(ax: Axes, xs: Sequence[float], samples: Sequence[Sequence[float]],
              color: Any, alpha: float = 0.3) -> None:
    """Every seed's value as a faint dot above its x."""
    pts = [(x, v) for x, vals in zip(xs, samples, strict=True) for v in vals]
    if pts:
        ax.plot(*zip(*pts, strict=True), ".", color=color, alpha=alpha, ms=5, zorder=1)


def mean_band(ax: Axes, x: Sequence[float], samples: np.ndarray, label: str,
              confidence: float = stats.CONFIDENCE, **kwargs) -> Any:
    """The mean over seeds (rows of `samples`) as a line, its t interval as a shaded band."""
    mean, low, high = stats.band(samples, confidence)
    (line,) = ax.plot(x, mean, label=label, **kwargs)
    if samples.shape[0] > 1:
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, lw=0)
    return line


def say_instead(ax: Axes, text: str) -> None:
    """Replace an empty panel's axis by a sentence saying why it is empty."""
    ax.set_yticks([])
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=11,
            color="#555555")


def topographic_maps(groupings: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """The cell-by-cell mean |W| map of each layer's `units.topographic_grouping` result, side
    by side, titled with its Spearman rho and permutation p-value."""
    fig, axes = subplots(1, len(groupings), figsize=(4.6 * len(groupings), 3.8), squeeze=False)
    fig.set_layout_engine("constrained")  # keeps each colour bar clear of the next panel
    for ax, (layer, g) in zip(axes[0], groupings.items(), strict=True):
        image = ax.imshow(g.cell_map, cmap="viridis")
        fig.colorbar(image, ax=ax, fraction=0.046, label="mean |W|")
        ticks = np.arange(g.cell_map.shape[0])
        ax.set(xlabel="input cell", ylabel="output cell", xticks=ticks, yticks=ticks,
               title=f"{layer}: rho {g.spearman:+.2f}, p {g.p_value:.3f}")
    return save(fig, path)
