"""Statistics over seeds: sample summaries with t intervals, Welch's t-test, Holm's correction."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95
ALPHA = 0.05


@dataclasses.dataclass(frozen=True)
class Summary:
    """One sample: ``std`` (ddof=1), ``sem``, and the two-sided t interval ``low``/``high`` for
    the mean; the spread fields are None when n == 1."""

    n: int
    mean: float
    std: float | None
    sem: float | None
    low: float | None
    high: float | None
    min: float
    max: float


def _sample(values: Sequence[float], what: str) -> np.ndarray:
    x = np.asarray(values, dtype=float).reshape(-1)
    if x.size == 0:
        raise ValueError(f"{what}: need at least one value, got none")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: values must be finite, got {x.tolist()}")
    return x


def _t(confidence: float, n: int) -> float:
    """The t quantile of a two-sided `confidence` interval for the mean of n values."""
    return float(sps.t.ppf((1.0 + confidence) / 2.0, n - 1))


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """n, mean, std (ddof=1), standard error, t interval, min and max of `values`."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x = _sample(values, "summarize")
    n, mean = x.size, float(x.mean())
    if n == 1:
        return Summary(1, mean, None, None, None, None, mean, mean)
    std = float(x.std(ddof=1))
    sem = std / math.sqrt(n)
    half = _t(confidence, n) * sem
    return Summary(n, mean, std, sem, mean - half, mean + half, float(x.min()), float(x.max()))


def band(samples: np.ndarray, confidence: float = CONFIDENCE
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and t interval per column of a (seeds, points) array (the mean itself at 1 seed)."""
    x = np.asarray(samples, dtype=float)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"band: need a (seeds, points) array with a seed, got shape {x.shape}")
    mean, n = x.mean(axis=0), x.shape[0]
    if n == 1:
        return mean, mean.copy(), mean.copy()
    half = _t(confidence, n) * x.std(axis=0, ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test that `a` and `b` share a mean; None with fewer than
    two values a side, or when undefined (both samples constant and equal)."""
    x, y = _sample(a, "welch_p a"), _sample(b, "welch_p b")
    if x.size < 2 or y.size < 2:
        return None
    with warnings.catch_warnings():
        # precision-loss warning for seeds that agree to the last digit; the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(sps.ttest_ind(x, y, equal_var=False).pvalue)
    return None if math.isnan(p) else p


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values (step-down, Holm 1979), in input order; None: not a comparison.

    With the m p-values sorted, p_(i) becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))``.
    """
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"holm: p-values must be in [0, 1], got {p}")
        running = max(running, min(1.0, (len(tested) - rank) * p))
        out[i] = running
    return out


def significant(adjusted: float | None, alpha: float = ALPHA) -> bool | None:
    """Whether a Holm-adjusted p-value rejects at `alpha` (None: not tested)."""
    return None if adjusted is None else adjusted <= alpha
