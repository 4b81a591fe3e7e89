"""The findings scored at one scale, as a table (``findings.md``, also printed) and a picture
(``findings.png``): per family, the notebook's accuracy curve beside this scale's.

Both curves are normalised to one axis, ``(accuracy - chance) / (best - chance)``, each by
its own best over the runs shown (the notebook's reported numbers; this scale's means), so
1 is each one's best run and 0 is chance; the legend gives each best's raw accuracy. On this
axis a gap of k notebook points has the same height at every scale, as the findings' scaled
thresholds have (`experiments.findings`). This scale's points are means over seeds with 95%
t intervals, each seed a faint dot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from experiments import registry
from experiments.findings import CHANCE, RUNS, Records, Scored, runs_by_family
from wdjax import storage
from wdjax.analysis import plots, stats

COLUMNS = ("finding", "set", "notebook (full scale)", "this scale (95% interval)",
           "reproduced", "p-value")


def verdict(s: Scored) -> str:
    """"yes", "no" or "not run"."""
    if s.result is None:
        return "not run"
    return "yes" if s.result.reproduced else "no"


def _row(s: Scored) -> list[str]:
    f = s.finding
    if s.result is None:
        shown = ", ".join(s.missing[:3]) + (", ..." if len(s.missing) > 3 else "")
        here, p = f"{len(s.missing)} of {len(f.runs)} runs missing ({shown})", ""
    else:
        here = f"{s.result.text} (n={s.seeds})"
        p = "-" if s.result.p_value is None else f"{s.result.p_value:.3g}"
    return [f"{f.id} ({'/'.join(f.families)}): {f.statement}",
            "calibration" if f.calibration else "held out", f.notebook, here, verdict(s), p]


def table(scored: Sequence[Scored], scale: str) -> str:
    """The markdown table, calibration findings first, with a count of what reproduced."""
    ordered = sorted(scored, key=lambda s: not s.finding.calibration)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_row(s)) + " |" for s in ordered]
    counts = []
    for name, calibration in (("calibration", True), ("held out", False)):
        group = [s for s in scored if s.finding.calibration == calibration]
        done = [s for s in group if s.result is not None]
        if group:
            counts.append(f"{name} {sum(s.result.reproduced for s in done)} of {len(done)} "
                          f"scored ({len(group) - len(done)} not run)")
    return "\n".join([f"Findings reproduced at {scale} scale: {'; '.join(counts)}. "
                      f"p-values: one-sided, largest over a finding's parts, uncorrected; "
                      f"'-': one seed, decided on the values.", "", *lines])


def _normalised(values: Sequence[float | None], best: float) -> list[float | None]:
    gap = best - CHANCE if best - CHANCE > 1e-12 else 1.0  # a curve at chance stays at 0
    return [None if v is None else (v - CHANCE) / gap for v in values]


def _panel(ax: Axes, family: registry.Family, runs: Sequence[str], records: Records,
           scale: str) -> None:
    ordered = sorted(runs, key=lambda r: RUNS[r].value)
    reported = [RUNS[r].reported.test_accuracy for r in ordered]
    ax.plot([RUNS[r].value for r in ordered], _normalised(reported, max(reported)), "k^:",
            label=f"notebook, full (best {max(reported):.4f})")
    done = [r for r in ordered if r in records]
    if done:
        xs = [RUNS[r].value for r in done]
        sums = [stats.summarize(records[r].accuracy) for r in done]
        best = max(s.mean for s in sums)
        n = min(s.n for s in sums)
        plots.interval_errorbar(
            ax, xs, _normalised([s.mean for s in sums], best),
            _normalised([s.low for s in sums], best), _normalised([s.high for s in sums], best),
            "o-", f"{scale}, n={n} (best {best:.4f})", color="#c0392b")
        plots.seed_dots(ax, xs, [_normalised(records[r].accuracy, best) for r in done],
                        "#c0392b")
    else:
        ax.text(0.5, 0.1, f"not run at {scale}", transform=ax.transAxes, ha="center",
                color="#555555")
    if family.log_scale:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(family.varies)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def figure(scored: Sequence[Scored], records: Records, scale: str) -> Figure:
    """One panel per family the findings read: the notebook's curve and this scale's."""
    families = runs_by_family([s.finding for s in scored])
    cols = min(3, len(families))
    rows = math.ceil(len(families) / cols)
    fig, axes = plots.subplots(rows, cols, figsize=(5.0 * cols, 3.8 * rows), squeeze=False)
    fig.set_layout_engine("constrained")
    for i, (ax, (name, runs)) in enumerate(zip(axes.flat, families.items(), strict=False)):
        _panel(ax, registry.get_family(name), runs, records, scale)
        marks = [f"{s.finding.id} {verdict(s)}" + (" (calibration)" if s.finding.calibration
                                                   else "")
                 for s in scored if name in s.finding.families]
        ax.set_title(f"{name}: {', '.join(marks)}", fontsize=9)
        if i % cols == 0:
            ax.set_ylabel("(acc - chance) / (best - chance)")
    for ax in list(axes.flat)[len(families):]:
        ax.set_visible(False)
    fig.suptitle(f"The notebook's findings at {scale} scale (1: each curve's best, 0: chance)")
    return fig


def write(scored: Sequence[Scored], records: Mapping, scale: str, out: str | Path) -> str:
    """Write ``findings.md`` and ``findings.png`` in `out`; return the table's text."""
    text = table(scored, scale)
    storage.atomic_write(Path(out) / "findings.md",
                         f"# The notebook's findings at {scale} scale\n\n{text}\n\n"
                         "![notebook and this scale, per family](findings.png)\n")
    plots.save(figure(scored, records, scale), Path(out) / "findings.png")
    return text
