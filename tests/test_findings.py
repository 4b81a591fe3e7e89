"""The notebook's findings as data (no training): the notebook's own numbers make every
finding true, a broken number makes it false, seeds give one-sided p-values that match
SciPy's, and the command scores run records on disk."""

import dataclasses

import numpy as np
import pytest
from scipy import stats as sps
from synthetic_runs import LAYERS, write_run

from experiments import cli, findings, registry
from experiments.findings import ALL_1E5, CONV5_1E9, EARLY_1E9, FINDINGS, Sample

BY_ID = {f.id: f for f in FINDINGS}


def _with(records, run, accuracy=None, dead=None):
    """`records` with run's accuracy (one value) or one dead fraction replaced."""
    s = records[run]
    new = Sample((accuracy,) if accuracy is not None else s.accuracy,
                 {**s.dead, **{q: (v,) for q, v in (dead or {}).items()}})
    return {**records, run: new}


def _result(finding_id, records):
    return findings.score(BY_ID[finding_id], records).result


def test_notebook_numbers_make_every_finding_true():
    records = findings.notebook_records()
    for f in FINDINGS:
        result = _result(f.id, records)
        assert result.holds and result.reproduced, (f.id, result.text)
        assert result.p_value is None  # one seed: decided on the values


def test_rows_name_their_families_and_runs_from_the_registry():
    assert [f.id for f in FINDINGS] == [f"F{i}" for i in range(1, 9)]
    for f in FINDINGS:
        assert f.families == tuple(dict.fromkeys(registry.FAMILY_OF[r].name for r in f.runs))
        assert f.notebook and f.statement
    assert BY_ID["F8"].families == ("lxp", "ixp")
    assert {f.id for f in FINDINGS if f.calibration} == {"F1", "F5"}  # exp and dxp


BREAKERS = [  # (finding, run, new accuracy or {query: dead fraction}): the finding is false
    ("F1", "exp7", 0.9200),  # exp7 above exp6
    ("F1", "exp3", 0.9140),  # rank correlation 0.7
    ("F2", "axp3", 0.8000),  # axp3 the worst
    ("F2", "axp1", 0.8500),  # 4.2 points, not 5
    ("F3", "bxp3", 0.8300),  # bxp3 the worst
    ("F3", "bxp1", 0.8500),  # 1.6 points, not 2
    ("F4", "cxp2", 0.8700),  # no rise: rank correlation 0.7
    ("F4", "cxp4", 0.8900),  # the best outside the plateau
    ("F4", "cxp9", 0.8000),  # 8.1 points below the best, not 10
    ("F4", "cxp9", {EARLY_1E9: 0.0}),  # no dead early units
    ("F5", "dxp2", 0.9200),  # the best is dxp2
    ("F5", "dxp1", 0.9000),  # 1.3 points, not 2
    ("F5", "dxp6", 0.8800),  # 3.3 points, not 4
    ("F6", "fxp7", 0.2000),  # fxp7 trains
    ("F6", "fxp3", 0.3000),  # fxp3 does not
    ("F7", "hxp5", 0.8900),  # 2 points off the mean
    ("F8", "lxp2", {CONV5_1E9: 0.01}),  # too few dead in lxp2
    ("F8", "ixp2", {ALL_1E5: 10 / 1731}),  # too many dead in ixp2
]


@pytest.mark.parametrize(("finding_id", "run", "change"), BREAKERS)
def test_a_broken_number_makes_the_finding_false(finding_id, run, change):
    records = findings.notebook_records()
    if isinstance(change, dict):
        records = _with(records, run, dead=change)
    else:
        records = _with(records, run, accuracy=change)
    result = _result(finding_id, records)
    assert not result.holds and not result.reproduced, result.text


def test_every_finding_is_broken_by_some_case():
    assert {b[0] for b in BREAKERS} == set(BY_ID)


def test_missing_dead_units_make_a_dead_unit_finding_false():
    records = findings.notebook_records()
    records = {**records, "ixp2": Sample(records["ixp2"].accuracy)}
    result = _result("F8", records)
    assert not result.holds and "not recorded" in result.text


@pytest.mark.parametrize("best", [0.25, 0.5, 0.8])
def test_point_thresholds_scale_with_the_accuracy_range(best):
    """Notebook numbers moved toward chance (best -> `best`) keep every finding; the same
    gaps unscaled would not (F2's 5 points exceed its axp1-axp2 gap at best 0.5)."""
    records = findings.notebook_records()
    nb_best = max(r.reported.test_accuracy for r in registry.all_runs().values()
                  if r.name in records)
    squeeze = (best - findings.CHANCE) / (nb_best - findings.CHANCE)
    shrunk = {name: dataclasses.replace(s, accuracy=tuple(
        findings.CHANCE + (a - findings.CHANCE) * squeeze for a in s.accuracy))
        for name, s in records.items()}
    for f in FINDINGS:
        assert _result(f.id, shrunk).holds, (f.id, _result(f.id, shrunk).text)
    gap = shrunk["axp1"].accuracy[0] - shrunk["axp2"].accuracy[0]
    assert (gap < 0.05) == (best < 0.8)


# Per seed, the notebook's dead fraction times these: around it where the finding asks for
# many (or some) dead units, below it where it asks for at most that many.
DEAD_SPREAD = {EARLY_1E9: (1.0, 2.0, 1.0), CONV5_1E9: (1.0, 1.2, 0.9), ALL_1E5: (0.0, 0.25, 0.0)}


def _seeds(records, spread, rng):
    """Three seeds per run: the notebook's value plus noise of sd `spread`, and its dead
    fractions spread by `DEAD_SPREAD`."""
    out = {}
    for name, s in records.items():
        acc = tuple(float(v) for v in s.accuracy[0] + spread * rng.standard_normal(3))
        dead = {q: tuple(v[0] * np.array(DEAD_SPREAD[q])) for q, v in s.dead.items()}
        out[name] = Sample(acc, dead)
    return out


def test_seeds_clear_differences_pass_every_finding_with_p_values():
    seeded = _seeds(findings.notebook_records(), 0.0005, np.random.default_rng(0))
    for f in FINDINGS:
        result = _result(f.id, seeded)
        assert result.p_value is not None and result.p_value < 0.05, (f.id, result.text)
        assert result.reproduced


def test_seeds_noise_as_large_as_the_effects_fails():
    seeded = _seeds(findings.notebook_records(), 0.03, np.random.default_rng(1))
    failed = {f.id for f in FINDINGS if not _result(f.id, seeded).reproduced}
    assert {"F1", "F3", "F5", "F7"} <= failed


def test_one_sided_welch_matches_scipy_and_noise_is_not_significant():
    clear = {"axp1": [0.871, 0.873, 0.875], "axp2": [0.806, 0.808, 0.810]}
    part = findings.below(clear, "axp2", "axp1", 0.05)
    direct = sps.ttest_ind(np.array(clear["axp1"]) - 0.05, clear["axp2"], equal_var=False,
                           alternative="greater").pvalue
    assert part.holds and part.p_value == pytest.approx(direct) and part.p_value < 0.01
    noisy = {"axp1": [0.80, 0.873, 0.946], "axp2": [0.74, 0.808, 0.876]}
    part = findings.below(noisy, "axp2", "axp1", 0.05)
    assert part.holds and part.p_value > 0.05 and not part.reproduced
    one = findings.below({"a": [0.8], "b": [0.9]}, "a", "b", 0.05)
    assert one.holds and one.p_value is None and one.reproduced


def test_one_sample_tests_and_samples_without_spread():
    low = findings.at_most("fxp7", [0.1, 0.1, 0.1], 0.15)
    assert low.holds and low.p_value == 0.0
    high = findings.at_most("fxp7", [0.2, 0.2, 0.2], 0.15)
    assert not high.holds and high.p_value == 1.0
    x = [0.12, 0.13, 0.16]
    part = findings.above("lxp1", x, 0.07)
    assert part.p_value == pytest.approx(sps.ttest_1samp(x, 0.07, alternative="greater").pvalue)


def test_dead_fractions_are_read_from_summary_json(tmp_path):
    write_run(tmp_path / "cxp" / "cxp9", [0.5, 0.6], dead={"conv1_1": 2})
    records = findings.load_records(tmp_path, ["cxp9", "cxp8"])
    assert set(records) == {"cxp9"}  # cxp8 has no records
    assert records["cxp9"].accuracy == (0.5, 0.6)
    assert records["cxp9"].dead[EARLY_1E9] == (2 / LAYERS["conv1_1"],) * 2
    assert CONV5_1E9 not in records["cxp9"].dead and ALL_1E5 not in records["cxp9"].dead


def _write_family(out, runs, scale_by=1.0, seeds=3):
    rng = np.random.default_rng(2)
    for name in runs:
        acc = registry.all_runs()[name].reported.test_accuracy
        finals = [findings.CHANCE + (acc - findings.CHANCE) * scale_by + 0.0005 * e
                  for e in rng.standard_normal(seeds)]
        write_run(out / registry.FAMILY_OF[name].name / name, finals)


def test_collect_prints_the_table_and_writes_markdown_and_picture(tmp_path, capsys):
    _write_family(tmp_path, BY_ID["F5"].runs, scale_by=0.45)
    _write_family(tmp_path, BY_ID["F1"].runs[:3], scale_by=0.45)  # exp: half the runs
    assert findings.main(["--collect", "--scale", "quick", "--out", str(tmp_path),
                          "--families", "dxp", "exp"]) == 0
    printed = capsys.readouterr().out
    assert "| finding | set |" in printed
    lines = {line.split(" ")[1]: line for line in printed.splitlines() if line.startswith("| F")}
    assert set(lines) == {"F1", "F5"}
    assert "| yes |" in lines["F5"] and "calibration" in lines["F5"] and "(n=3)" in lines["F5"]
    assert "not run" in lines["F1"] and "3 of 6 runs missing" in lines["F1"]
    md = (tmp_path / "findings.md").read_text()
    assert "| F5 (dxp)" in md and "findings.png" in md
    assert (tmp_path / "findings.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_goes_through_the_sweep_with_the_runs_the_findings_read(tmp_path, monkeypatch,
                                                                          capsys):
    from experiments import sweep

    calls = []

    def fake_sweep(argv):
        sweep.parser().parse_args(argv)  # the real sweep's flags
        calls.append(argv)
        runs = argv[argv.index("--runs") + 1].split(",")
        _write_family(tmp_path, runs, seeds=int(argv[argv.index("--seeds") + 1]))
        return 0

    monkeypatch.setattr(sweep, "main", fake_sweep)
    assert findings.main(["--scale", "quick", "--seeds", "2", "--out", str(tmp_path),
                          "--families", "lxp"]) == 0
    assert [c[:4] for c in calls] == [["--name", "lxp", "--runs", "lxp1,lxp2,lxp3"],
                                      ["--name", "ixp", "--runs", "ixp2"]]
    assert all(c[c.index("--seeds") + 1] == "2" and c[c.index("--out") + 1] == str(tmp_path)
               for c in calls)
    out = capsys.readouterr().out
    assert "| F8 (lxp/ixp)" in out and "not recorded" in out  # synthetic records: no conv5


@pytest.mark.parametrize(("argv", "needle"), [
    (["--families", "nope", "--collect"], "no finding reads family 'nope'"),
    (["--collect", "--out", "/nonexistent/findings"], "nothing to collect"),
    (["--scale", "huge"], "argument --scale"),
])
def test_bad_input_is_one_line_exit_2(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.run_main(findings.main, argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wdjax: error:") and needle in err and "\n" not in err

