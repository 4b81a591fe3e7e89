"""The comparisons the notebook's findings are made of (`experiments.findings`).

Each gives a `Result`: whether its criterion holds on the means, a one-sided p-value (None
when a compared run has one seed: decided on the values), and what it compared. `combine`
joins parts as an intersection-union test: it holds when every part holds, with the
largest of their p-values. The tests: "a is at least d below b" is Welch's t-test of b - d
against a, one-sided; "above / at most c" the one-sample t-test, one-sided; "rises"
(`rank`) Spearman's rho between the swept value and each seed's accuracy, one-sided, the
criterion rho of the means >= rho_min; "flat" (`within`) two one-sided tests per run that
its mean lies within d of the mean of means. Samples without spread (collapsed runs) get
p 0 where the criterion holds, else 1.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats as sps

from wdjax.analysis import stats

Samples = Mapping[str, Sequence[float]]  # run name -> one value per seed


@dataclasses.dataclass(frozen=True)
class Result:
    """A comparison's verdict: the criterion on the means, its p-value, what was compared."""

    holds: bool
    p_value: float | None
    text: str

    @property
    def reproduced(self) -> bool:
        """The criterion holds, and with seeds its p-value is at most `stats.ALPHA`."""
        return self.holds and (self.p_value is None or self.p_value <= stats.ALPHA)


def mean(values: Sequence[float]) -> float:
    return float(np.mean(values))


def shown(name: str, values: Sequence[float]) -> str:
    """``name mean`` with one value, ``name mean [low, high]`` (95% t interval) with more."""
    s = stats.summarize(values)
    if s.n == 1:
        return f"{name} {s.mean:.4f}"
    return f"{name} {s.mean:.4f} [{s.low:.4f}, {s.high:.4f}]"


def _degenerate(holds: bool) -> float:
    return 0.0 if holds else 1.0


def _welch_greater(x: Sequence[float], y: Sequence[float], holds: bool) -> float | None:
    """One-sided p that mean(x) > mean(y) (None: a side with one value)."""
    if len(x) < 2 or len(y) < 2:
        return None
    p = stats.welch_p(x, y)
    if p is None:  # both sides constant and equal
        return _degenerate(holds)
    return p / 2 if mean(x) > mean(y) else 1.0 - p / 2


def _one_sample_greater(x: Sequence[float], c: float, holds: bool) -> float | None:
    """One-sided p that the mean of x exceeds c (None: one value)."""
    if len(x) < 2:
        return None
    if np.ptp(x) == 0:
        return _degenerate(holds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nearly constant seeds
        return float(sps.ttest_1samp(x, c, alternative="greater").pvalue)


def below(samples: Samples, a: str, b: str, d: float) -> Result:
    """Run `a` is at least `d` (accuracy, a fraction) below run `b`, and below it at all."""
    x, y = samples[a], samples[b]
    diff = mean(y) - mean(x)
    holds = diff >= d and diff > 0
    p = _welch_greater([v - d for v in y], x, holds)
    need = f", need >= {100 * d:.2f} below" if d > 0 else ""
    side = "below" if diff >= 0 else "above"
    return Result(holds, p, f"{shown(a, x)} {100 * abs(diff):.2f} pts {side} "
                            f"{shown(b, y)}{need}")


def above(name: str, values: Sequence[float], c: float) -> Result:
    """The mean of `values` exceeds `c`."""
    holds = mean(values) > c
    return Result(holds, _one_sample_greater(values, c, holds),
                  f"{shown(name, values)} > {c:.4f}")


def at_most(name: str, values: Sequence[float], c: float) -> Result:
    """The mean of `values` is at most `c`."""
    holds = mean(values) <= c
    p = _one_sample_greater([-v for v in values], -c, holds)
    return Result(holds, p, f"{shown(name, values)} <= {c:.4f}")


def lowest(samples: Samples, run: str, runs: Sequence[str]) -> Result:
    """`run` has the lowest mean of `runs`, below each of the others."""
    parts = [below(samples, run, r, 0.0) for r in runs if r != run]
    worst = min(runs, key=lambda r: mean(samples[r]))
    return dataclasses.replace(combine(parts), text=f"worst: {worst}")


def best_among(samples: Samples, group: Sequence[str], runs: Sequence[str]) -> Result:
    """The best mean of `runs` belongs to `group`: its best member is above every run
    outside it."""
    top = max(group, key=lambda r: mean(samples[r]))
    parts = [below(samples, r, top, 0.0) for r in runs if r not in group]
    best = max(runs, key=lambda r: mean(samples[r]))
    return dataclasses.replace(combine(parts), text=f"best: {shown(best, samples[best])}")


def rank(samples: Samples, runs: Sequence[str], xs: Sequence[float], rho_min: float) -> Result:
    """Accuracy rises with the swept value: Spearman's rho of the means >= `rho_min`."""
    means = [mean(samples[r]) for r in runs]
    rho = float(sps.spearmanr(xs, means).statistic) if len(set(means)) > 1 else math.nan
    holds = rho >= rho_min  # NaN (constant means) does not hold
    p = None
    if all(len(samples[r]) > 1 for r in runs):
        x = [v for r, xv in zip(runs, xs, strict=True) for v in [xv] * len(samples[r])]
        y = [v for r in runs for v in samples[r]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a constant input: rho undefined, p NaN
            p = float(sps.spearmanr(x, y, alternative="greater").pvalue)
        p = _degenerate(holds) if math.isnan(p) else p
    return Result(holds, p, f"Spearman {runs[0]}..{runs[-1]} {rho:.2f}, need >= {rho_min:.2f}")


def within(samples: Samples, runs: Sequence[str], d: float) -> Result:
    """Every run's mean lies within `d` of the mean of the runs' means (TOST per run)."""
    centre = mean([mean(samples[r]) for r in runs])
    parts = []
    for r in runs:
        x = samples[r]
        holds = abs(mean(x) - centre) <= d
        low = _one_sample_greater(x, centre - d, holds)
        high = _one_sample_greater([-v for v in x], -(centre + d), holds)
        parts.append(Result(holds, None if low is None else max(low, high), r))
    far = max(runs, key=lambda r: abs(mean(samples[r]) - centre))
    off = 100 * abs(mean(samples[far]) - centre)
    return dataclasses.replace(combine(parts), text=(
        f"mean {centre:.4f}; furthest {shown(far, samples[far])}, {off:.2f} pts off, "
        f"need <= {100 * d:.2f}"))


def combine(parts: Sequence[Result]) -> Result:
    """All parts hold; p the largest of theirs (None when any is None); texts joined."""
    ps = [r.p_value for r in parts]
    p = None if not parts or any(v is None for v in ps) else max(ps)
    return Result(all(r.holds for r in parts), p, "; ".join(r.text for r in parts))
