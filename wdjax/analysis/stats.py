"""Statistics over seeds: per-sample summaries, Welch's t-test and Holm's correction.

A run trained with several seeds gives one number per seed (its final test accuracy, say).
`summarize` describes such a sample; `welch_p` asks whether two runs' samples differ in
mean without assuming equal variances; `holm` corrects a family of such p-values for
multiple comparisons. The t distribution comes from `scipy.stats`.
"""

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
    """One sample of n values; the spread fields are None when n == 1.

    ``std`` uses ddof=1; ``sem`` = std / sqrt(n); ``low``/``high`` is the two-sided t
    interval ``mean -+ t_{(1+confidence)/2, n-1} * sem`` for the mean.
    """

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
    half = float(sps.t.ppf((1.0 + confidence) / 2.0, n - 1)) * sem
    return Summary(n, mean, std, sem, mean - half, mean + half, float(x.min()), float(x.max()))


def band(samples: np.ndarray, confidence: float = CONFIDENCE
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and t interval per column of a (n, points) array; the interval is the mean at n=1.

    For curves over epochs: row i is seed i, column j is epoch j.
    """
    x = np.asarray(samples, dtype=float)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"band: need a (seeds, points) array with a seed, got shape {x.shape}")
    mean = x.mean(axis=0)
    n = x.shape[0]
    if n == 1:
        return mean, mean.copy(), mean.copy()
    half = float(sps.t.ppf((1.0 + confidence) / 2.0, n - 1)) * x.std(axis=0, ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (unequal variances) that a and b share a mean.

    None when either side has fewer than two values, or when the test is undefined (both
    samples constant and equal).
    """
    x, y = _sample(a, "welch_p a"), _sample(b, "welch_p b")
    if x.size < 2 or y.size < 2:
        return None
    with warnings.catch_warnings():
        # scipy warns of precision loss for nearly constant samples (seeds that agree to
        # the last digit); the p-value it returns is still the right one, or NaN.
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(sps.ttest_ind(x, y, equal_var=False).pvalue)
    return None if math.isnan(p) else p


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values, in the input order; None entries are not comparisons.

    With the m given p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted value
    of p_(i) is ``max_{j <= i} min(1, (m - j + 1) p_(j))`` (Holm 1979, step-down). Rejecting
    where the adjusted value is <= alpha controls the family-wise error rate at alpha.
    """
    tested = [(p, i) for i, p in enumerate(p_values) if p is not None]
    for p, _ in tested:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"holm: p-values must be in [0, 1], got {p}")
    m = len(tested)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(tested)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def significant(adjusted: float | None, alpha: float = ALPHA) -> bool | None:
    """Whether a Holm-adjusted p-value rejects at `alpha` (None: not tested)."""
    return None if adjusted is None else adjusted <= alpha
