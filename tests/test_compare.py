"""`python -m experiments.compare`: statistics of finished runs, and its one-line errors."""

import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as sps
from synthetic_runs import write_run, write_seed

from experiments import cli, compare
from wdjax import storage

A = [0.4712, 0.4790, 0.4655]
B = [0.4801, 0.4822, 0.4769, 0.4790]
C = [0.4523, 0.4561, 0.4500]


@pytest.fixture
def runs(tmp_path):
    """Seed groups from two families and sweeps, and a one-seed run."""
    a = write_run(tmp_path / "quick" / "dxp" / "dxp4", A)
    b = write_run(tmp_path / "other" / "ixp" / "ixp2", B)
    c = write_run(tmp_path / "quick" / "dxp" / "dxp5", C, scale="full")
    one = write_run(tmp_path / "quick" / "dxp" / "dxp3", [0.4623])
    return a, b, c, one


def _lines(out):
    return {line.split()[0]: line for line in out.splitlines()[2:] if line.split()}


def test_compare_prints_the_statistics(runs, capsys):
    a, b, c, one = runs
    assert compare.main([str(a), str(b), str(c), str(one)]) == 0
    out = capsys.readouterr().out
    head, header = out.splitlines()[:2]
    assert head.startswith(f"reference: {a};") and "Holm-corrected over 2 comparison(s)" in head
    assert header.split()[:3] == ["run", "n", "final"]
    lines = _lines(out)
    assert lines[str(a)].split()[:3] == [str(a), "(reference)", "3"]
    x = np.array(B)
    sem = x.std(ddof=1) / np.sqrt(len(x))
    low, high = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sem)
    p_b = sps.ttest_ind(B, A, equal_var=False).pvalue
    p_c = sps.ttest_ind(C, A, equal_var=False).pvalue
    cells = lines[str(b)].split()
    assert cells[1] == "4" and cells[2] == f"{x.mean():.4f}" and cells[3] == f"{sem:.4f}"
    assert cells[4] == f"{x.std(ddof=1):.4f}"
    assert f"[{low:.4f}, {high:.4f}]" in lines[str(b)]
    assert f"{x.min():.4f}" in cells and f"{x.max():.4f}" in cells
    assert f" {p_b:.3g} " in lines[str(b)]
    holm_c = max(min(1, 2 * min(p_b, p_c)), max(p_b, p_c)) if p_c > p_b else min(1, 2 * p_c)
    assert f" {p_c:.3g}  {holm_c:.3g}" in lines[str(c)]
    assert lines[str(c)].rstrip().endswith("*") == (holm_c <= 0.05)
    # One seed: no spread, no test.
    assert lines[str(one)].split()[1:4] == ["1", "0.4623", "-"]
    # dxp5 was trained at another protocol: said, not hidden.
    assert out.splitlines()[-1].startswith("note: the runs differ in width")


def test_baseline_flag_moves_the_reference_first(runs, capsys):
    a, b, c, _ = runs
    assert compare.main([str(a), str(c), "--baseline", str(b)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"reference: {b};")
    assert _lines(out)[str(b)].split()[1] == "(reference)"
    assert f"{sps.ttest_ind(A, B, equal_var=False).pvalue:.3g}" in _lines(out)[str(a)]


def test_errors_are_one_line(runs, tmp_path, capsys):
    a = runs[0]
    unfinished = write_run(tmp_path / "u" / "run", A)
    (storage.seed_dir(unfinished, 1) / "summary.json").unlink()
    single = write_seed(tmp_path / "s" / "run", 0.5, finished=False)
    (tmp_path / "empty").mkdir()
    cases = [([str(a), str(tmp_path / "nope")], "nope: no such directory"),
             ([str(a), str(unfinished)], "run: not finished (seed1: no summary.json)"),
             ([str(single)], "run: not finished (the run: no summary.json)"),
             ([str(tmp_path / "empty")], "empty: not a run directory"),
             ([str(a), str(a) + "/"], "a RUN_DIR is given twice"),
             ([], "the following arguments are required: RUN_DIR")]
    for argv, needle in cases:
        with pytest.raises(SystemExit) as exit_info:
            cli.run_main(compare.main, argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and needle in err, (argv, err)


@pytest.mark.slow
def test_command_line_entry(runs):
    a, b, _, _ = runs
    r = subprocess.run([sys.executable, "-m", "experiments.compare", str(a), str(b)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and f"reference: {a};" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, "-m", "experiments.compare", str(a) + "x"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == f"wdjax: error: {a}x: no such directory"
