"""The notebook's findings (F1..F8) as data, each with a test scoring its runs' records at any
scale: ``python -m experiments.findings [--scale S] [--seeds N] [--families ...]``. One seed:
decided on the values; several: every part a one-sided test at p <= 0.05 (largest p, uncorrected).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy import stats as sps

from experiments import cli, registry, report, scales
from wdjax import storage
from wdjax.analysis import plots, seeds, stats
from wdjax.models import vgg

CHANCE = 0.1  # ten CIFAR-10 classes
NOTEBOOK_WIDTH: int = scales.SCALES["full"]["width"]
RUNS = registry.all_runs()
Samples = Mapping[str, Sequence[float]]  # run name -> one value per seed


# ------------------------------------------------------------------------------ comparisons
@dataclasses.dataclass(frozen=True)
class Result:
    """A comparison: its criterion on the means, a one-sided p-value (None: one seed), its text."""

    holds: bool
    p_value: float | None
    text: str

    @property
    def reproduced(self) -> bool:
        return self.holds and (self.p_value is None or self.p_value <= stats.ALPHA)


def mean(values: Sequence[float]) -> float:
    return float(np.mean(values))


def shown(name: str, values: Sequence[float]) -> str:
    """``name mean``, with its 95% t interval ``[low, high]`` when there are several values."""
    s = stats.summarize(values)
    return f"{name} {s.mean:.4f}" + ("" if s.n == 1 else f" [{s.low:.4f}, {s.high:.4f}]")


def _greater(x: Sequence[float], y: Sequence[float] | float, holds: bool) -> float | None:
    """One-sided p that the mean of `x` exceeds `y` (Welch against a sample, one-sample t against
    a number); None with one value a side, 0 or 1 (as `holds`) when neither side has spread."""
    number = np.ndim(y) == 0
    if len(x) < 2 or not number and len(y) < 2:
        return None
    if np.ptp(x) == 0 and (number or np.ptp(y) == 0):
        return float(not holds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nearly constant seeds
        if number:
            return float(sps.ttest_1samp(x, y, alternative="greater").pvalue)
        return float(sps.ttest_ind(x, y, equal_var=False, alternative="greater").pvalue)


def below(samples: Samples, a: str, b: str, d: float) -> Result:
    """Run `a` is at least `d` (a fraction) below run `b`, and below it at all (Welch)."""
    x, y = samples[a], samples[b]
    diff = mean(y) - mean(x)
    holds = diff >= d and diff > 0
    need = f", need >= {100 * d:.2f} below" if d > 0 else ""
    return Result(holds, _greater([v - d for v in y], x, holds),
                  f"{shown(a, x)} {100 * abs(diff):.2f} pts {'below' if diff >= 0 else 'above'} "
                  f"{shown(b, y)}{need}")


def above(name: str, values: Sequence[float], c: float) -> Result:
    """The mean of `values` exceeds `c` (one-sample t-test)."""
    holds = mean(values) > c
    return Result(holds, _greater(values, c, holds), f"{shown(name, values)} > {c:.4f}")


def at_most(name: str, values: Sequence[float], c: float) -> Result:
    """The mean of `values` is at most `c` (one-sample t-test)."""
    holds = mean(values) <= c
    return Result(holds, _greater([-v for v in values], -c, holds),
                  f"{shown(name, values)} <= {c:.4f}")


def lowest(samples: Samples, run: str, runs: Sequence[str]) -> Result:
    """`run` has the lowest mean of `runs`, below each of the others."""
    worst = min(runs, key=lambda r: mean(samples[r]))
    return dataclasses.replace(combine([below(samples, run, r, 0.0) for r in runs if r != run]),
                               text=f"worst: {worst}")


def best_among(samples: Samples, group: Sequence[str], runs: Sequence[str]) -> Result:
    """The best mean of `runs` is in `group`: its best member is above every run outside."""
    top = _best(samples, group)
    parts = [below(samples, r, top, 0.0) for r in runs if r not in group]
    best = _best(samples, runs)
    return dataclasses.replace(combine(parts), text=f"best: {shown(best, samples[best])}")


def rank(samples: Samples, runs: Sequence[str], rho_min: float) -> Result:
    """Accuracy rises with the runs' swept value: Spearman's rho of the means >= `rho_min`; p:
    one-sided, of rho between the values and every seed's accuracy."""
    xs = _values(runs)
    means = [mean(samples[r]) for r in runs]
    rho = float(sps.spearmanr(xs, means).statistic) if len(set(means)) > 1 else math.nan
    holds = rho >= rho_min  # NaN (constant means) does not hold
    p = None
    if all(len(samples[r]) > 1 for r in runs):
        x = [xv for r, xv in zip(runs, xs, strict=True) for _ in samples[r]]
        y = [v for r in runs for v in samples[r]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a constant input: rho undefined, p NaN
            p = float(sps.spearmanr(x, y, alternative="greater").pvalue)
        p = float(not holds) if math.isnan(p) else p
    return Result(holds, p, f"Spearman {runs[0]}..{runs[-1]} {rho:.2f}, need >= {rho_min:.2f}")


def within(samples: Samples, runs: Sequence[str], d: float) -> Result:
    """Every run's mean lies within `d` of the mean of the means (two one-sided tests each)."""
    centre = mean([mean(samples[r]) for r in runs])
    parts = [p for r in runs for p in (above(r, samples[r], centre - d),
                                       at_most(r, samples[r], centre + d))]
    far = max(runs, key=lambda r: abs(mean(samples[r]) - centre))
    off = 100 * abs(mean(samples[far]) - centre)
    return dataclasses.replace(combine(parts), text=(
        f"mean {centre:.4f}; furthest {shown(far, samples[far])}, {off:.2f} pts off, "
        f"need <= {100 * d:.2f}"))


def combine(parts: Sequence[Result]) -> Result:
    """All parts hold (intersection-union test): p the largest (None if any is None)."""
    ps = [r.p_value for r in parts]
    p = None if not parts or None in ps else max(ps)
    return Result(all(r.holds for r in parts), p, "; ".join(r.text for r in parts))


# ------------------------------------------------------------------------------ dead units
@dataclasses.dataclass(frozen=True)
class DeadUnits:
    """Dead input units at `threshold` (as summary.json keys it) in `layers` (None: all), as a
    fraction of their inputs so that counts compare across widths."""

    threshold: str
    layers: tuple[str, ...] | None = None

    def fraction(self, record: Mapping | None) -> float | None:
        """Dead over inputs in the layers a ``dead_units`` record has (None: none)."""
        per_layer = (record or {}).get(self.threshold) or {}
        kept = [per_layer[k] for k in (self.layers or per_layer) if k in per_layer]
        return sum(d for d, _ in kept) / sum(n for _, n in kept) if kept else None

    def inputs(self, width: int) -> int:
        """Input units of the layers in the notebook's VGG of width `width`."""
        conf = vgg.vgg_conf(width)
        names = vgg.weight_layers(conf)
        fan_in = [conf[0][1][0], *(dict(conf)[n][0] for n in names[:-1])]  # previous features
        return sum(c for n, c in zip(names, fan_in, strict=True) if n in (self.layers or names))


EARLY_1E9 = DeadUnits("1e-09", ("conv1_1", "conv1_2", "conv2_1", "conv2_2"))
CONV5_1E9 = DeadUnits("1e-09", ("conv5_1", "conv5_2"))
ALL_1E5 = DeadUnits("1e-05")
DEAD_QUERIES = (EARLY_1E9, CONV5_1E9, ALL_1E5)


@dataclasses.dataclass(frozen=True)
class NotebookDead:
    """A count the notebook states in words: `count` dead in `query` for `runs`, at its width."""

    runs: tuple[str, ...]
    query: DeadUnits
    count: int
    note: str  # how exact the count is

    @property
    def fraction(self) -> float:
        return self.count / self.query.inputs(NOTEBOOK_WIDTH)

    @property
    def text(self) -> str:
        where = "+".join(self.query.layers) if self.query.layers else "all layers"
        return (f"{','.join(self.runs)}: {self.count} of {self.query.inputs(NOTEBOOK_WIDTH)} "
                f"inputs of {where} dead at {self.query.threshold} ({self.note})")


@dataclasses.dataclass(frozen=True)
class Sample:
    """One run's final test accuracy per seed, and per `DeadUnits` query its dead fractions."""

    accuracy: tuple[float, ...]
    dead: Mapping[DeadUnits, tuple[float, ...]] = dataclasses.field(default_factory=dict)


Records = Mapping[str, Sample]  # run name -> its records


@dataclasses.dataclass(frozen=True)
class Finding:
    """One claim: its runs, the notebook's numbers (text), its test's parts and dead counts."""

    id: str
    runs: tuple[str, ...]
    statement: str
    reported: str
    parts: Callable[[Records, Samples], list[Result]]  # (records, final accuracies)
    notebook_dead: tuple[NotebookDead, ...] = ()

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(registry.FAMILY_OF[r].name for r in self.runs))

    @property
    def notebook(self) -> str:
        return "; ".join(filter(None, [self.reported, *(d.text for d in self.notebook_dead)]))

    @property
    def calibration(self) -> bool:
        return any(f in scales.CALIBRATION_FAMILIES for f in self.families)


# ------------------------------------------------------------------------------ the findings
def _points(rec: Records, runs: Sequence[str], k: float) -> float:
    """`k` notebook points at this scale: ``k/100 * (best_here - CHANCE) / (best_notebook -
    CHANCE)``, the bests being the highest mean final test accuracy among `runs`."""
    here = max(mean(rec[r].accuracy) for r in runs)
    notebook = max(RUNS[r].reported.test_accuracy for r in runs)
    return k / 100 * max(here - CHANCE, 0.0) / (notebook - CHANCE)


def _best(acc: Samples, runs: Sequence[str]) -> str:
    return max(runs, key=lambda r: mean(acc[r]))


def _dead(rec: Records, run: str, query: DeadUnits, compare: Callable, c: float) -> Result:
    """`compare` (`above` or `at_most`) of run's dead fractions and `c`; false unrecorded."""
    values = rec[run].dead.get(query, ())
    if not values:
        return Result(False, None, f"{run}: dead units at {query.threshold} not recorded")
    return compare(f"{run} dead fraction", values, c)


# Every run of the family; exp without exp1 (stopped early), exp8 (exp6 again), exp9 (momentum).
_AXP, _BXP, _CXP, _DXP, _FXP, _HXP, _LXP = (
    registry.get_family(f).run_names for f in ("axp", "bxp", "cxp", "dxp", "fxp", "hxp", "lxp"))
_EXP = ("exp2", "exp3", "exp4", "exp5", "exp6", "exp7")
_CXP_DEAD = NotebookDead(("cxp9",), EARLY_1E9, 1, "'some': at least 1")
_LXP_DEAD = NotebookDead(_LXP, CONV5_1E9, 70, "about; no run named")
_IXP2_DEAD = NotebookDead(("ixp2",), ALL_1E5, 4, "exact")


def _values(runs: Sequence[str]) -> list[float]:
    return [RUNS[r].value for r in runs]


def _reported(runs: Sequence[str]) -> str:
    return ", ".join(f"{r} {RUNS[r].reported.test_accuracy:.4f}" for r in runs)


def _span(runs: Sequence[str]) -> str:
    acc = [RUNS[r].reported.test_accuracy for r in runs]
    return f"{runs[0]}..{runs[-1]} {min(acc):.4f}-{max(acc):.4f} (mean {mean(acc):.4f})"


def _f6(rec: Records, acc: Samples) -> list[Result]:
    at_chance, trained = CHANCE + _points(rec, _FXP, 5), CHANCE + _points(rec, _FXP, 50)
    low = min(_FXP[:6], key=lambda r: mean(acc[r]))
    trains = combine([above(r, acc[r], trained) for r in _FXP[:6]])
    return [*(at_most(r, acc[r], at_chance) for r in _FXP[6:]), dataclasses.replace(
        trains, text=f"lowest of fxp1..fxp6: {shown(low, acc[low])} > {trained:.4f}")]


FINDINGS: tuple[Finding, ...] = (
    Finding("F1", _EXP, "SGD with L2 everywhere: accuracy rises with weight decay from exp2 "
            "to exp6 (Spearman >= 0.8), and exp7 is below exp6", _reported(_EXP),
            lambda rec, acc: [rank(acc, _EXP[:5], 0.8), below(acc, "exp7", "exp6", 0.0)]),
    Finding("F2", _AXP, "SGDL1: strong L1 hurts; axp2 (1.6e-3) is the family's worst, at "
            "least 5 points below axp1", _reported(("axp1", "axp2")),
            lambda rec, acc: [lowest(acc, "axp2", _AXP),
                              below(acc, "axp2", "axp1", _points(rec, _AXP, 5))]),
    Finding("F3", _BXP, "SGDL1A: accuracy falls with L1; bxp4 (the strongest) is the worst, "
            "at least 2 points below bxp1", _reported(_BXP),
            lambda rec, acc: [lowest(acc, "bxp4", _BXP),
                              below(acc, "bxp4", "bxp1", _points(rec, _BXP, 2))]),
    Finding("F4", _CXP, "dup4: accuracy rises (cxp1..cxp5, Spearman >= 0.8) to a plateau "
            "holding the best at cxp5-cxp7; cxp9 collapses, at least 10 points below the "
            "best, with dead units in the early layers",
            _reported(("cxp1", "cxp5", "cxp6", "cxp7", "cxp9")), lambda rec, acc: [
                rank(acc, _CXP[:5], 0.8),
                best_among(acc, _CXP[4:7], _CXP),
                below(acc, "cxp9", _best(acc, _CXP), _points(rec, _CXP, 10)),
                _dead(rec, "cxp9", EARLY_1E9, above, 0.0)], (_CXP_DEAD,)),
    Finding("F5", _DXP, "dup2: an inverted U; the best is dxp3 or dxp4, dxp1 at least 2 "
            "points below it and dxp6 at least 4", _reported(("dxp1", "dxp3", "dxp4", "dxp6")),
            lambda rec, acc: [
                best_among(acc, ("dxp3", "dxp4"), _DXP),
                below(acc, "dxp1", _best(acc, ("dxp3", "dxp4")), _points(rec, _DXP, 2)),
                below(acc, "dxp6", _best(acc, ("dxp3", "dxp4")), _points(rec, _DXP, 4))]),
    Finding("F6", _FXP, "dup1: fxp7 and fxp8 end at chance (at most 5 points above it), "
            "fxp1-fxp6 train (more than 50 points above it)",
            f"{_span(_FXP[:6])}; {_reported(_FXP[6:])}", _f6),
    Finding("F7", _HXP, "SGD, weight decay 0.010-0.026: flat, every run within 1 point of "
            "the family mean", _span(_HXP),
            lambda rec, acc: [within(acc, _HXP, _points(rec, _HXP, 1))]),
    Finding("F8", (*_LXP, "ixp2"), "normalised updates kill units: every lxp run has many "
            "dead conv5_1/conv5_2 inputs at 1e-9, ixp2 at most 4 per 1731 inputs at 1e-5",
            "", lambda rec, acc: [
                *(_dead(rec, r, CONV5_1E9, above, _LXP_DEAD.fraction / 2) for r in _LXP),
                _dead(rec, "ixp2", ALL_1E5, at_most, _IXP2_DEAD.fraction)],
            (_LXP_DEAD, _IXP2_DEAD)),
)


# ------------------------------------------------------------------------------ records
def notebook_records(findings: Sequence[Finding] = FINDINGS) -> dict[str, Sample]:
    """The notebook's numbers as one-seed records (its dead-unit counts as fractions)."""
    dead: dict[str, dict[DeadUnits, tuple[float, ...]]] = {}
    for d in (d for f in findings for d in f.notebook_dead):
        for r in d.runs:
            dead.setdefault(r, {})[d.query] = (d.fraction,)
    return {r: Sample((RUNS[r].reported.test_accuracy,), dead.get(r, {}))
            for f in findings for r in f.runs}


def load_records(out: str | Path, runs: Iterable[str]) -> dict[str, Sample]:
    """The finished seeds of each of `runs` in ``out/<family>/<run>/`` (none: left out)."""
    records = {}
    for r in runs:
        group = seeds.load(Path(out) / registry.FAMILY_OF[r].name / r)
        acc = tuple(float(v) for v in group.values("final_test_accuracy") if v is not None)
        if acc:
            dead = {q: tuple(f for f in map(q.fraction, group.values("dead_units"))
                             if f is not None) for q in DEAD_QUERIES}
            records[r] = Sample(acc, {q: v for q, v in dead.items() if v})
    return records


@dataclasses.dataclass(frozen=True)
class Scored:
    """A finding's result (None: not run), its runs missing, the fewest seeds of its runs."""

    finding: Finding
    result: Result | None
    missing: tuple[str, ...]
    seeds: int


def score(finding: Finding, records: Records) -> Scored:
    missing = tuple(r for r in finding.runs if r not in records)
    if missing:
        return Scored(finding, None, missing, 0)
    n = min(len(records[r].accuracy) for r in finding.runs)
    acc = {name: s.accuracy for name, s in records.items()}
    return Scored(finding, combine(finding.parts(records, acc)), (), n)


def runs_by_family(findings: Sequence[Finding]) -> dict[str, list[str]]:
    """Per family, in the findings' order, the runs they read."""
    out: dict[str, list[str]] = {}
    for r in dict.fromkeys(r for f in findings for r in f.runs):
        out.setdefault(registry.FAMILY_OF[r].name, []).append(r)
    return out


def select(families: Sequence[str] | None) -> tuple[Finding, ...]:
    """The findings that read any of `families` (None: all); UsageError for one none reads."""
    known = runs_by_family(FINDINGS)
    unknown = [n for n in families or () if n not in known]
    if unknown:
        raise cli.UsageError(f"no finding reads family {unknown[0]!r}; they read: "
                             f"{', '.join(known)}")
    return tuple(row for row in FINDINGS if families is None or set(row.families) & {*families})


# ------------------------------------------------------------------------------ table, picture
def verdict(s: Scored) -> str:
    return "not run" if s.result is None else "yes" if s.result.reproduced else "no"


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
    counts = []
    for name, calibration in (("calibration", True), ("held out", False)):
        group = [s for s in scored if s.finding.calibration == calibration]
        done = [s for s in group if s.result is not None]
        if group:
            counts.append(f"{name} {sum(s.result.reproduced for s in done)} of {len(done)} "
                          f"scored ({len(group) - len(done)} not run)")
    ordered = sorted(scored, key=lambda s: not s.finding.calibration)
    return "\n".join([f"Findings reproduced at {scale} scale: {'; '.join(counts)}. "
                      f"p-values: one-sided, largest over a finding's parts, uncorrected; "
                      f"'-': one seed, decided on the values.", "",
                      *report.markdown_table(
                          ("finding", "set", "notebook (full scale)", "this scale (95% interval)",
                           "reproduced", "p-value"), [_row(s) for s in ordered])])


def _normalised(values: Sequence[float], best: float) -> list[float]:
    gap = best - CHANCE if best - CHANCE > 1e-12 else 1.0  # a curve at chance stays at 0
    return [(v - CHANCE) / gap for v in values]


def _panel(ax: Axes, family: registry.Family, runs: Sequence[str], records: Records,
           scale: str) -> None:
    """The notebook's curve and this scale's (means, 95% intervals, seeds as dots)."""
    ordered = sorted(runs, key=lambda r: RUNS[r].value)
    reported = [RUNS[r].reported.test_accuracy for r in ordered]
    ax.plot(_values(ordered), _normalised(reported, max(reported)), "k^:",
            label=f"notebook, full (best {max(reported):.4f})")
    done = [r for r in ordered if r in records]
    if done:
        best = max(mean(records[r].accuracy) for r in done)
        n = min(len(records[r].accuracy) for r in done)
        report.seed_errorbar(ax, _values(done),
                             [_normalised(records[r].accuracy, best) for r in done], "o-",
                             f"{scale}, n={n} (best {best:.4f})", color="#c0392b")
    else:
        ax.text(0.5, 0.1, f"not run at {scale}", transform=ax.transAxes, ha="center",
                color="#555555")
    report.finish_axes(ax, family, "", "")


def figure(scored: Sequence[Scored], records: Records, scale: str) -> Figure:
    """One panel per family the findings read: the notebook's curve and this scale's."""
    families = runs_by_family([s.finding for s in scored])
    cols = min(3, len(families))
    rows = math.ceil(len(families) / cols)
    fig, axes = plots.subplots(rows, cols, figsize=(5.0 * cols, 3.8 * rows), squeeze=False)
    fig.set_layout_engine("constrained")
    for i, (ax, (name, runs)) in enumerate(zip(axes.flat, families.items(), strict=False)):
        _panel(ax, registry.get_family(name), runs, records, scale)
        marks = [f"{s.finding.id} {verdict(s)}" + " (calibration)" * s.finding.calibration
                 for s in scored if name in s.finding.families]
        ax.set_title(f"{name}: {', '.join(marks)}", fontsize=9)
        if i % cols == 0:
            ax.set_ylabel("(acc - chance) / (best - chance)")
    for ax in list(axes.flat)[len(families):]:
        ax.set_visible(False)
    fig.suptitle(f"The notebook's findings at {scale} scale (1: each curve's best, 0: chance)")
    return fig


def write(scored: Sequence[Scored], records: Records, scale: str, out: str | Path) -> str:
    """Write ``findings.md`` and ``findings.png`` in `out`; return the table's text."""
    text = table(scored, scale)
    storage.atomic_write(Path(out) / "findings.md",
                         f"# The notebook's findings at {scale} scale\n\n{text}\n\n"
                         "![notebook and this scale, per family](findings.png)\n")
    plots.save(figure(scored, records, scale), Path(out) / "findings.png")
    return text


# ------------------------------------------------------------------------------ command
def parser() -> cli.Parser:
    p = cli.Parser(prog="python -m experiments.findings",
                   description="Score the notebook's findings on a sweep's runs at one scale, "
                               "training the missing runs first (unless --collect).")
    a = p.add_argument
    a("--scale", choices=tuple(scales.SCALES), default=None, help="as the sweep's")
    a("--seeds", type=cli.integer("--seeds"), default=None, help="default: the scale's")
    a("--families", nargs="+", default=None, metavar="FAMILY",
      help="score the findings that read these families (default: all)")
    a("--out", default=None, help="the sweep's output directory (default results/<scale>)")
    a("--data", default=None, help="passed to the sweep")
    a("--no-progress", action="store_true")
    a("--collect", action="store_true",
      help="train nothing: score the runs on disk (missing ones: not run)")
    return p


def train(runs: Mapping[str, Sequence[str] | None], scale: str, n_seeds: int, out: Path,
          args) -> None:
    """Sweep each family's `runs` (None: all of them); the sweep skips finished ones."""
    from experiments import sweep

    extra = (["--data", args.data] if args.data else []) + (
        ["--no-progress"] if args.no_progress else [])
    for family, names in runs.items():
        sweep.main(["--name", family, *(["--runs", ",".join(names)] if names else []),
                    "--scale", scale, "--seeds", str(n_seeds), "--out", str(out), *extra])


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    scale, why = scales.choose(args.scale)
    n_seeds = args.seeds or scales.SEEDS.get(scale, 1)
    chosen = select(args.families)
    out = Path(args.out or f"results/{scale}")
    if args.collect and not out.is_dir():
        raise storage.RunError(f"nothing to collect: {out} does not exist")
    if not args.collect:
        print(f"findings {', '.join(f.id for f in chosen)} at {scale} scale ({why}), "
              f"{n_seeds} seed(s); results in {out}")
        train(runs_by_family(chosen), scale, n_seeds, out, args)
    records = load_records(out, dict.fromkeys(r for f in chosen for r in f.runs))
    print("\n" + write([score(f, records) for f in chosen], records, scale, out))
    return 0


if __name__ == "__main__":
    cli.run_main(main, sys.argv[1:])
