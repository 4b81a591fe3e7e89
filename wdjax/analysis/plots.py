"""Pictures of runs, and figure helpers for sweeps over seeds (matplotlib). PNGs are atomic.

Figures are plain ``matplotlib.figure.Figure`` objects, not pyplot ones: drawing needs no
GUI backend and importing this module changes no global matplotlib state.
"""

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
    ys = np.concatenate([np.asarray(line.get_ydata(), float) for line in ax.get_lines()] or
                        [np.array([])])
    ys = ys[~np.isnan(ys)]
    if ys.size and np.all(np.isfinite(ys)) and np.all(ys > 0):
        ax.set_yscale("log")


def _layers(rows: list[dict]) -> list[str]:
    return list(rows[-1]["angular_update"]) if rows else []


def accuracy_figure(rows: list[dict], title: str = "") -> Figure:
    """Train/test accuracy and loss per epoch."""
    ep = [r["epoch"] for r in rows]
    fig, (a1, a2) = subplots(1, 2, figsize=(11, 4))
    a1.plot(ep, [r["train_accuracy"] for r in rows], label="train (augmented, while training)")
    a1.plot(ep, [r["test_accuracy"] for r in rows], label="test")
    a1.set(xlabel="epoch", ylabel="accuracy", title=f"{title} accuracy", ylim=(0, 1))
    a1.grid(alpha=0.3)
    a1.legend()
    a2.plot(ep, [r["train_loss"] for r in rows], label="train")
    a2.plot(ep, [r["test_loss"] for r in rows], label="test")
    a2.set(xlabel="epoch", ylabel="cross-entropy", title=f"{title} loss")
    _log_if_positive(a2)
    a2.grid(alpha=0.3)
    a2.legend()
    return fig


def norms_figure(rows: list[dict], title: str = "") -> Figure:
    """Per-layer kernel norm; angular update against its equilibrium prediction; and the
    equilibrium monitor's ratio (EMA of the angular update over the prediction; 1 at
    equilibrium)."""
    layers = _layers(rows)
    ep = [r["epoch"] for r in rows]
    cmap = matplotlib.colormaps["viridis"].resampled(max(len(layers), 2))
    fig, (a1, a2, a3) = subplots(1, 3, figsize=(17, 4.5))
    for i, layer in enumerate(layers):
        key = f"{layer}/conv/kernel"
        a1.plot(ep, [r["tensors"].get(key, {}).get("param", np.nan) for r in rows],
                color=cmap(i), label=layer)
        angular = [r["angular_update"][layer] for r in rows]
        a2.plot(ep, [a["measured"] for a in angular], color=cmap(i), label=layer)
        pred = [a.get("predicted") for a in angular]
        if any(p is not None for p in pred):
            a2.plot(ep, [np.nan if p is None else p for p in pred], color=cmap(i), ls="--",
                    lw=0.8)
        ratio = [a.get("ratio") for a in angular]
        if any(q is not None for q in ratio):
            a3.plot(ep, [np.nan if q is None else q for q in ratio], color=cmap(i),
                    label=layer)
    a3.axhline(1.0, color="black", lw=0.8, ls=":")
    a1.set(xlabel="epoch", ylabel="||W||", title=f"{title} kernel norms")
    a2.set(xlabel="epoch", ylabel="||dW|| / ||W|| per step",
           title="angular update (dashed: equilibrium prediction)")
    a3.set(xlabel="epoch", ylabel="EMA angular update / prediction",
           title="distance to rotational equilibrium (1: there)")
    for a in (a1, a2, a3):
        a.grid(alpha=0.3)
        _log_if_positive(a)
    a1.legend(fontsize=7, ncol=2)
    return fig


def dead_units_figure(dead: Mapping[str, Sequence[int]], title: str = "") -> Figure:
    """Dead input units per layer (bars) out of the layer's inputs."""
    layers = list(dead)
    counts = [dead[k][0] for k in layers]
    totals = [dead[k][1] for k in layers]
    fig, ax = subplots(figsize=(10, 3.5))
    ax.bar(layers, totals, color="#dddddd", label="inputs")
    ax.bar(layers, counts, color="#c0392b", label="dead")
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
    name = run_dir.name
    out = [save(accuracy_figure(rows, name), run_dir / "accuracy.png"),
           save(norms_figure(rows, name), run_dir / "norms.png")]
    dead = rows[-1]["dead_units"]
    thr = "1e-09" if "1e-09" in dead else next(iter(dead))
    out.append(save(dead_units_figure(dead[thr], f"{name}: dead units (threshold {thr})"),
                    run_dir / "dead_units.png"))
    return out


def activation_histograms(outputs: Mapping[str, np.ndarray], path: str | os.PathLike) -> Path:
    """One histogram per layer of unit outputs over the test set."""
    fig, axes = subplots(1, len(outputs), figsize=(3 * len(outputs), 2.8), squeeze=False)
    for ax, (layer, values) in zip(axes[0], outputs.items(), strict=True):
        ax.hist(values, bins=60, log=True, color="#2c7fb8")
        ax.set_title(layer, fontsize=9)
    return save(fig, path)


# ------------------------------------------------------------------- seeds and intervals
def interval_errorbar(ax: Axes, xs: Sequence[float], means: Sequence[float],
                      lows: Sequence[float | None], highs: Sequence[float | None],
                      fmt: str, label: str, **kwargs) -> Any:
    """Means joined by `fmt`, each with its interval as an error bar (none where None)."""
    means = np.asarray(means, float)
    low = np.array([m if lo is None else lo for m, lo in zip(means, lows, strict=True)])
    high = np.array([m if hi is None else hi for m, hi in zip(means, highs, strict=True)])
    return ax.errorbar(xs, means, yerr=np.stack([means - low, high - means]), fmt=fmt,
                       capsize=3, label=label, **kwargs)


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


# ------------------------------------------------------------------ topographic grouping
def topographic_maps(groupings: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """The cell-by-cell mean |W| map of each kernel, side by side, as one PNG.

    `groupings` maps a layer name (e.g. ``fc6``, ``conv5_2``) to its
    `wdjax.analysis.units.topographic_grouping` result; each panel's title gives Spearman's rho
    between cell distance and |W| and its permutation p-value.
    """
    fig, axes = subplots(1, len(groupings), figsize=(4.6 * len(groupings), 3.8),
                         squeeze=False)
    fig.set_layout_engine("constrained")  # keeps each colour bar clear of the next panel
    for ax, (layer, g) in zip(axes[0], groupings.items(), strict=True):
        image = ax.imshow(g.cell_map, cmap="viridis")
        fig.colorbar(image, ax=ax, fraction=0.046, label="mean |W|")
        ax.set(xlabel="input cell", ylabel="output cell",
               title=f"{layer}: rho {g.spearman:+.2f}, p {g.p_value:.3f}")
        ticks = np.arange(g.cell_map.shape[0])
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
    return save(fig, path)
