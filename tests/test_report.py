"""Sweep reports over seeds, from hand-written run records (no training).

Numbers are checked against NumPy/SciPy computed here from the per-seed values; the
notebook comparison is checked at the epoch the notebook took its number.
"""

import csv

import numpy as np
import pytest
from scipy import stats as sps
from synthetic_runs import write_run, write_seed

from experiments import registry, report, scales, sweep
from wdjax import storage
from wdjax.analysis import seeds

DXP3 = [0.4712, 0.4790, 0.4655]
DXP4 = [0.4801, 0.4822, 0.4769]
DXP5 = [0.4523, 0.4561, 0.4500]
BEST_OFFSET = 0.004


def _direct(values):
    x = np.array(values)
    sem = x.std(ddof=1) / np.sqrt(len(x))
    low, high = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sem)
    return dict(mean=x.mean(), std=x.std(ddof=1), sem=sem, low=low, high=high, min=x.min(),
                max=x.max())


@pytest.fixture
def dxp_sweep(tmp_path):
    fam = registry.get_family("dxp")
    runs = registry.select_runs(fam, ["dxp3", "dxp4", "dxp5"])
    for run, finals in zip(runs, (DXP3, DXP4, DXP5), strict=True):
        write_run(tmp_path / "dxp" / run.name, finals, [v + BEST_OFFSET for v in finals])
    return fam, runs, tmp_path / "dxp"


def test_seed_statistics_match_direct_computation(dxp_sweep):
    fam, runs, family_dir = dxp_sweep
    rows = report.write_results(fam, runs, family_dir, "quick")
    by_run = {r["run"]: r for r in rows}
    assert [r["run"] for r in rows] == ["dxp3", "dxp4", "dxp5"]
    assert [r["reference"] for r in rows] == [False, True, False]  # dxp: no base; best mean
    for name, finals in (("dxp3", DXP3), ("dxp4", DXP4), ("dxp5", DXP5)):
        r = by_run[name]
        for key, values in (("test_accuracy", finals),
                            ("best_test_accuracy", [v + BEST_OFFSET for v in finals])):
            d = _direct(values)
            assert r[key] == pytest.approx(d["mean"], rel=1e-12)
            for stat in ("std", "sem", "low", "high", "min", "max"):
                assert r[f"{key}_{stat}"] == pytest.approx(d[stat], rel=1e-12), (name, stat)
    p3 = sps.ttest_ind(DXP3, DXP4, equal_var=False).pvalue
    p5 = sps.ttest_ind(DXP5, DXP4, equal_var=False).pvalue
    assert by_run["dxp3"]["p_value"] == pytest.approx(p3, rel=1e-12)
    assert by_run["dxp5"]["p_value"] == pytest.approx(p5, rel=1e-12)
    assert by_run["dxp4"]["p_value"] is None
    lo, hi = sorted([float(p3), float(p5)])  # Holm, m = 2: 2 * smaller; max(that, larger)
    holm = {lo: min(1.0, 2 * lo), hi: max(min(1.0, 2 * lo), hi)}
    holm = {"dxp3": holm[float(p3)], "dxp5": holm[float(p5)]}
    for name in ("dxp3", "dxp5"):
        assert by_run[name]["holm_p"] == pytest.approx(holm[name], rel=1e-12)
        assert by_run[name]["significant"] == (holm[name] <= 0.05)
    assert by_run["dxp5"]["significant"]  # 0.045 below the reference, tight seeds
    # The written table and CSV carry the same numbers.
    md = (family_dir / "summary.md").read_text()
    d4 = _direct(DXP4)
    assert f"- dxp4: 0.00016 -> {d4['mean']:.4f} ± {d4['sem']:.4f} (n=3)" in md
    assert f"[{d4['low']:.4f}, {d4['high']:.4f}]" in md
    assert "| dxp5 | 8e-05 |" not in md and "| dxp5 | 0.00032 | 3 |" in md
    csv_rows = {r["run"]: r for r in csv.DictReader((family_dir / "summary.csv").open())}
    assert float(csv_rows["dxp3"]["test_accuracy_high"]) == pytest.approx(
        _direct(DXP3)["high"], rel=1e-12)
    assert float(csv_rows["dxp5"]["p_value"]) == pytest.approx(p5, rel=1e-12)
    assert report.verdict(rows) == ("reference dxp4; different at 0.05 (Welch, "
                                    "Holm-corrected): " + ("dxp3, dxp5" if holm["dxp3"] <= 0.05
                                                           else "dxp5"))


def test_one_seed_line_is_unchanged(tmp_path):
    fam = registry.get_family("dxp")
    runs = registry.select_runs(fam, ["dxp4", "dxp6"])
    write_run(tmp_path / "dxp" / "dxp4", [0.4623], train_correct=5084)
    write_run(tmp_path / "dxp" / "dxp6", [0.1], train_correct=1000, diverged=True)
    assert (tmp_path / "dxp" / "dxp4" / "summary.json").exists()  # no seed0/ for one seed
    rows, _ = report.summary_rows(fam, runs, tmp_path / "dxp", "quick")
    assert report.notebook_lines(rows) == ["- dxp4: 0.00016 -> 0.4623 (5084)",
                                           "- dxp6: 0.00064 -> 0.1000 (1000) diverged"]
    assert rows[0]["test_accuracy_std"] is None and rows[0]["p_value"] is None
    assert report.verdict(rows).endswith("needs at least 2 finished seeds per run")


def test_reference_is_the_notebook_base_from_another_family(tmp_path):
    fam = registry.get_family("gxp")
    runs = registry.select_runs(fam, ["gxp1", "gxp2"])
    write_run(tmp_path / "gxp" / "gxp1", DXP3)
    write_run(tmp_path / "gxp" / "gxp2", DXP5)
    # Without dxp4's records: the best mean, and the table says why.
    rows, why = report.summary_rows(fam, runs, tmp_path / "gxp", "quick")
    assert [r["run"] for r in rows if r["reference"]] == ["gxp1"]
    assert why.startswith("gxp1, the best mean (dxp4 (the notebook's base")
    # dxp4 at another protocol does not count either.
    write_run(tmp_path / "dxp" / "dxp4", DXP4, scale="full")
    rows, _ = report.summary_rows(fam, runs, tmp_path / "gxp", "quick")
    assert [(r["run"], r["reference"]) for r in rows] == [("gxp1", True), ("gxp2", False)]
    write_run(tmp_path / "dxp" / "dxp4", DXP4)  # now at the sweep's protocol
    rows, why = report.summary_rows(fam, runs, tmp_path / "gxp", "quick")
    assert [r["run"] for r in rows] == ["dxp4", "gxp1", "gxp2"]
    assert rows[0]["reference"] and rows[0]["value"] == "1" and rows[0]["family"] == "dxp"
    assert rows[1]["p_value"] == pytest.approx(
        sps.ttest_ind(DXP3, DXP4, equal_var=False).pvalue, rel=1e-12)
    assert why == "dxp4 (the notebook's base for this family)"
    rows, why = report.summary_rows(fam, runs, tmp_path / "gxp", "quick", baseline="gxp2")
    assert [r["run"] for r in rows if r["reference"]] == ["gxp2"] and why.startswith("gxp2")
    with pytest.raises(ValueError, match="unknown --baseline run 'zz'"):
        report.summary_rows(fam, runs, tmp_path / "gxp", "quick", baseline="zz")


def test_baseline_flag_is_checked_before_anything_runs(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown --baseline run 'nope'"):
        sweep.main(["--name", "gxp", "--baseline", "nope", "--dry-run", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--baseline ixp2 has no finished run in"):
        sweep.main(["--name", "gxp", "--baseline", "ixp2", "--out", str(tmp_path),
                    "--data", "folder:/nonexistent"])
    assert sweep.main(["--name", "gxp", "--baseline", "ixp2", "--dry-run",
                       "--out", str(tmp_path)]) == 0
    assert "reference run: ixp2" in capsys.readouterr().out


def test_dry_run_shows_the_comparison_epoch(tmp_path, capsys):
    assert sweep.main(["--name", "jxp", "--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "reference run: ixp2" in out
    for name, acc in (("jxp1", "0.8672"), ("jxp4", "0.8710")):
        assert f"  {name}: notebook {acc} (aborted at epoch 7): compared at epoch 7" in out
    assert sweep.main(["--name", "exp", "--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "  exp1: notebook 0.8519 (pre-terminated): epoch unknown, not compared" in out
    assert "  exp2: notebook 0.8639: compared at epoch 200" in out
    assert "reference run: the best mean" in out


def test_notebook_number_is_compared_at_its_epoch(tmp_path):
    """jxp's numbers were taken at epoch 7: ours at epoch 7, not at the end, is compared."""
    fam = registry.get_family("jxp")
    runs = registry.select_runs(fam, ["jxp1"])
    write_run(tmp_path / "jxp" / "jxp1", [0.95, 0.93], scale="full",
              curve={1: 0.5, 6: 0.84, 7: 0.86, 200: 0.0})
    rows = report.write_results(fam, runs, tmp_path / "jxp", "full")
    (row,) = rows
    assert row["compared_at_epoch"] == 7 and row["notebook_note"] == "aborted at epoch 7"
    assert row["accuracy_at_epoch"] == pytest.approx(0.86)
    assert row["difference"] == pytest.approx(0.86 - 0.8672)
    md = (tmp_path / "jxp" / "summary.md").read_text()
    assert "compared at epoch" in md
    assert "| 0.8672 | 7 | 0.8600 | -0.0072 | aborted at epoch 7 |" in md
    # A preview scale gives no difference, but still says when the notebook took it.
    (row,) = report.summary_rows(fam, runs, tmp_path / "jxp", "quick")[0]
    assert row["difference"] is None and row["notebook_epoch"] == 7


def test_unknown_notebook_epoch_gives_no_difference(tmp_path):
    fam = registry.get_family("exp")
    runs = registry.select_runs(fam, ["exp1", "exp2"])
    for run in runs:
        write_run(tmp_path / "exp" / run.name, [0.85], scale="full",
                  curve={199: 0.8, 200: 0.85})
    exp1, exp2 = report.write_results(fam, runs, tmp_path / "exp", "full")
    assert exp1["notebook_epoch"] is None and exp1["notebook_note"] == "pre-terminated"
    assert exp1["accuracy_at_epoch"] is None and exp1["difference"] is None
    assert exp2["compared_at_epoch"] == 200
    assert exp2["difference"] == pytest.approx(0.85 - 0.8639)
    md = (tmp_path / "exp" / "summary.md").read_text()
    assert "| 0.8519 | unknown |  |  | pre-terminated |" in md


def _legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_pictures_label_notebook_epochs(tmp_path):
    fam = registry.get_family("exp")
    runs = registry.select_runs(fam, ["exp1", "exp2"])
    for run in runs:
        write_run(tmp_path / "exp" / run.name, [0.85, 0.86], scale="full")
    groups = {r.name: seeds.load(tmp_path / "exp" / r.name) for r in runs}
    fig = report.accuracy_figure(fam, runs, groups, fam.runs, True, None)
    labels = _legend_texts(fig.axes[0])
    assert "notebook (epoch 200, width 32)" in labels
    assert "notebook (epoch unknown, width 32)" in labels
    assert not any("200 epochs" in t for t in labels)
    jxp = registry.get_family("jxp")
    fig = report.accuracy_figure(fam, runs, groups, jxp.runs, False, None)
    assert "notebook (epoch 7, width 32)" in _legend_texts(fig.axes[1])  # its own y axis


def test_pictures_are_written_and_say_when_no_unit_died(dxp_sweep):
    fam, runs, family_dir = dxp_sweep
    paths = report.sweep_pictures(fam, runs, family_dir)
    assert [p.name for p in paths] == ["accuracy_vs_weight_decay.png", "curves.png",
                                       "dead_units_and_coefficients.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    groups = {r.name: seeds.load(family_dir / r.name) for r in runs}
    fig = report.dead_units_figure(fam, runs, groups)
    assert [t.get_text() for t in fig.axes[0].texts] == [report.NO_DEAD_UNITS]
    assert report.NO_DEAD_UNITS == "no dead units (threshold 1e-9)"
    # One dead fc6 unit in every dxp5 seed: bars, no sentence.
    write_run(family_dir / "dxp5", DXP5, dead={"fc6": 1})
    groups["dxp5"] = seeds.load(family_dir / "dxp5")
    fig = report.dead_units_figure(fam, runs, groups)
    assert len(fig.axes[0].texts) == 0
    heights = [b.get_height() for b in fig.axes[0].patches]
    assert max(heights) == pytest.approx(1.0)
    # Curves: one mean line per run and a shaded band per run (3 seeds each).
    fig = report.curves_figure(fam, runs, groups)
    assert len(fig.axes[0].get_lines()) == 3 and len(fig.axes[0].collections) == 3
    mean = fig.axes[0].get_lines()[0].get_ydata()
    assert mean[-1] == pytest.approx(np.mean(DXP3))


def test_scaled_values_show_the_notebooks_and_the_used(tmp_path, capsys):
    """At preview the rule maps weight_decay (and lr): the table shows notebook -> used for
    the varied value (dxp), and the value alone where the varied one is unmapped (ixp)."""
    for name, picked in (("dxp", ["dxp3", "dxp4"]), ("ixp", ["ixp1"])):
        fam = registry.get_family(name)
        runs = registry.select_runs(fam, picked)
        configs = sweep.configs_for(fam, runs, "preview", None, 0, seeds=2)
        for c, final in zip(configs, [0.40, 0.41, 0.45, 0.46], strict=False):
            d = write_seed(tmp_path / name / c.run_path, final, scale="preview")
            record = storage.read_json(d / "config.json")
            storage.write_json(d / "config.json", {**record, "config": c.to_dict()})
    used = {c.name: c.weight_decay for c in sweep.configs_for(
        registry.get_family("dxp"), registry.get_family("dxp").runs, "preview", None, 0)}
    rule = scales.MINIATURES["preview"]
    g = rule.kept * scales.lr_integral(scales.SCALES["full"]) / scales.lr_integral(
        scales.SCALES["preview"])
    assert used["dxp4"] == pytest.approx(1.6e-4 * g ** (1 - rule.lr_share))
    rows = report.write_results(registry.get_family("dxp"), registry.select_runs(
        registry.get_family("dxp"), ["dxp3", "dxp4"]), tmp_path / "dxp", "preview")
    assert [r["used_value"] for r in rows] == [used["dxp3"], used["dxp4"]]
    line = report.notebook_lines(rows)[1]
    assert line.startswith(f"- dxp4: 0.00016 -> {used['dxp4']:.2g} -> 0.4")
    md = (tmp_path / "dxp" / "summary.md").read_text()
    assert f"| dxp3 | 8e-05 -> {used['dxp3']:.2g} | 2 |" in md
    assert "weight_decay: the notebook's -> the one used at this scale" in md
    csv_rows = list(csv.DictReader((tmp_path / "dxp" / "summary.csv").open()))
    assert [(r["value"], float(r["used_value"])) for r in csv_rows] == [
        ("8e-05", used["dxp3"]), ("0.00016", used["dxp4"])]
    ixp = registry.get_family("ixp")
    rows = report.write_results(ixp, registry.select_runs(ixp, ["ixp1"]), tmp_path / "ixp",
                                "preview")  # dxp4, the reference, first
    assert [(r["run"], r["used_value"]) for r in rows] == [("dxp4", None), ("ixp1", None)]
    assert report.notebook_line(rows[1]).startswith("- ixp1: 3 -> 0.4")
    assert "the one used at this scale" not in (tmp_path / "ixp" / "summary.md").read_text()
