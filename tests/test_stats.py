"""wdjax.analysis.stats against NumPy/SciPy computations, Holm on a hand example, seed dirs."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from wdjax import storage
from wdjax.analysis import stats

SAMPLE = [0.4712, 0.4790, 0.4655, 0.4731, 0.4688]


def test_summarize_matches_direct_computation():
    s = stats.summarize(SAMPLE)
    x = np.array(SAMPLE)
    sem = x.std(ddof=1) / math.sqrt(len(x))
    low, high = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sem)
    assert s.n == 5
    assert s.mean == pytest.approx(x.mean(), abs=1e-15)
    assert s.std == pytest.approx(np.sqrt(((x - x.mean()) ** 2).sum() / 4), rel=1e-12)
    assert s.sem == pytest.approx(sem, rel=1e-12)
    assert (s.low, s.high) == (pytest.approx(low, rel=1e-12), pytest.approx(high, rel=1e-12))
    # t_{0.975, 4} = 2.776 (tables): the interval is not the normal one (1.96)
    assert s.high - s.mean == pytest.approx(2.776 * sem, rel=1e-3)
    assert (s.min, s.max) == (0.4655, 0.4790)


def test_one_value_has_no_spread():
    s = stats.summarize([0.4623])
    assert (s.n, s.mean, s.min, s.max) == (1, 0.4623, 0.4623, 0.4623)
    assert s.std is s.sem is s.low is s.high is None


@pytest.mark.parametrize("values", [[], [0.5, float("nan")], [float("inf")]])
def test_summarize_rejects_empty_and_non_finite(values):
    with pytest.raises(ValueError, match="summarize"):
        stats.summarize(values)


def test_welch_matches_scipy_and_the_formula():
    a, b = SAMPLE, [0.4801, 0.4822, 0.4769]
    p = stats.welch_p(a, b)
    assert p == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-12)
    # Welch's statistic and Welch-Satterthwaite degrees of freedom, written out.
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    t = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    assert p == pytest.approx(2 * sps.t.sf(abs(t), df), rel=1e-10)
    assert p < 0.05


def test_welch_needs_two_values_a_side():
    assert stats.welch_p([0.5], SAMPLE) is None
    assert stats.welch_p(SAMPLE, [0.5]) is None
    assert stats.welch_p([0.5, 0.5], [0.5, 0.5]) is None  # undefined: both constant, equal


def test_holm_hand_example():
    # m = 4: sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, max(1*0.04, 0.06)
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # Uncorrected, all four are below 0.05; after Holm only two are.
    assert [stats.significant(p) for p in adjusted] == [True, False, False, True]
    assert stats.holm([None, 0.6, None, 0.7]) == [None, 1.0, None, 1.0]
    assert stats.significant(None) is None
    with pytest.raises(ValueError, match=r"p-values must be in \[0, 1\]"):
        stats.holm([0.2, 1.5])


def test_band_matches_summarize_per_column():
    x = np.array([SAMPLE, [v + 0.01 * i for i, v in enumerate(SAMPLE)], SAMPLE[::-1]])
    mean, low, high = stats.band(x)
    for j in range(x.shape[1]):
        s = stats.summarize(x[:, j])
        assert (mean[j], low[j], high[j]) == pytest.approx((s.mean, s.low, s.high))
    one = stats.band(x[:1])
    assert all(np.array_equal(part, x[0]) for part in one)


def test_seed_dirs(tmp_path):
    assert storage.seed_dirs(tmp_path / "missing") == []
    single = tmp_path / "single"
    single.mkdir()
    (single / "metrics.jsonl").write_text("")
    assert storage.seed_dirs(single) == [single]
    group = tmp_path / "group"
    for name in ("seed10", "seed2", "seed0", "seedx", "seed01", "notes"):
        (group / name).mkdir(parents=True)
    (group / "seed3").write_text("a file, not a seed")
    assert storage.seed_dirs(group) == [group / "seed0", group / "seed2", group / "seed10"]
    assert storage.seed_dir(group, 4) == group / "seed4"
