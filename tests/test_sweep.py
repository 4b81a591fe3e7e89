"""The sweep command: --list, --dry-run, a tiny end-to-end sweep, resume, lock, vmap."""

import csv
import subprocess
import sys

import pytest

from experiments import registry, scales, sweep
from wdjax import records

TINY = dict(base=4, batch_size=128, stages=2, epochs_per_stage=1, train_subset=200,
            test_subset=100)


@pytest.fixture
def tiny_scale(monkeypatch, cifar_archive, tmp_path):
    monkeypatch.setitem(scales.SCALES, "quick", TINY)
    monkeypatch.setenv("WDJAX_DATA", f"folder:{cifar_archive}")
    monkeypatch.setenv("WDJAX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "out"


def test_list_prints_every_family(capsys):
    assert sweep.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name, fam in registry.FAMILIES.items():
        line = next(ln for ln in out.splitlines() if ln.split()[0] == name)
        assert fam.optimizer in line and str(len(fam.runs)) in line.split()


def test_dry_run_prints_configs_and_trains_nothing(tiny_scale, capsys):
    assert sweep.main(["--name", "gxp", "--dry-run", "--out", str(tiny_scale)]) == 0
    out = capsys.readouterr().out
    assert "protocol:" in out and '"last2_mult": 0.1' in out and '"last2_mult": 30.0' in out
    assert out.count('"optimizer": "SGD_var_dup2_last2_mult"') == 5
    assert not tiny_scale.exists()


@pytest.mark.parametrize("argv,needle", [
    (["--name", "zzz"], "unknown family 'zzz'; valid: exp, hxp"),
    (["--name", "dxp", "--runs", "dxp7"], "valid: dxp1, dxp2"),
    (["--name", "dxp", "--scale", "huge"], "invalid choice"),
    (["--name", "dxp", "--data", "folder:/nope"], "does not exist"),
])
def test_bad_sweep_input_is_one_line_exit_2(tmp_path, argv, needle):
    out = tmp_path / "o"
    r = subprocess.run([sys.executable, "-m", "experiments.sweep", *argv, "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, r.stderr
    assert not out.exists()


def test_tiny_sweep_end_to_end_resume_and_lock(tiny_scale, capsys):
    argv = ["--name", "dxp", "--runs", "dxp3,dxp4", "--out", str(tiny_scale), "--no-progress"]
    assert sweep.main(argv) == 0
    fam = tiny_scale / "dxp"
    out = capsys.readouterr().out
    assert "- dxp3: 8e-05 -> " in out and "- dxp4: 0.00016 -> " in out
    for f in ("summary.md", "summary.csv", "accuracy_vs_weight_decay.png", "curves.png",
              "dead_units_and_coefficients.png"):
        assert (fam / f).exists(), f
    rows = list(csv.DictReader((fam / "summary.csv").read_text().splitlines()))
    assert [r["run"] for r in rows] == ["dxp3", "dxp4"]
    assert rows[1]["notebook_accuracy"] == "0.9131" and rows[1]["difference"] == ""
    assert "| dxp4 | 0.00016 |" in (fam / "summary.md").read_text()
    # Re-running skips the finished runs (their records are untouched).
    mtime = (fam / "dxp4" / "summary.json").stat().st_mtime_ns
    assert sweep.main(argv) == 0
    assert "2 finished run(s) skipped" in capsys.readouterr().out
    assert (fam / "dxp4" / "summary.json").stat().st_mtime_ns == mtime
    # A live lock holder refuses a second sweep; a dead one does not block.
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (fam / ".lock").write_text(str(holder.pid))
        with pytest.raises(records.RunError, match="locked by another sweep"):
            sweep.main(argv)
    finally:
        holder.kill()
        holder.wait()
    assert sweep.main(argv) == 0  # the stale lock is taken over
    assert not (fam / ".lock").exists()


def test_unfinished_run_resumes(tiny_scale, monkeypatch):
    """A sweep killed mid-run continues from the run's checkpoint on the next call."""
    from wdjax import train as train_mod

    real = train_mod.train
    monkeypatch.setattr(train_mod, "train",
                        lambda *a, **k: real(*a, **{**k, "stop_after_epochs": 1}))
    argv = ["--name", "ixp", "--runs", "ixp2", "--out", str(tiny_scale), "--no-progress"]
    sweep.main(argv)
    run = tiny_scale / "ixp" / "ixp2"
    assert len(records.read_jsonl(run / "metrics.jsonl")) == 1
    assert not (run / "summary.json").exists()
    monkeypatch.setattr(train_mod, "train", real)
    assert sweep.main(argv) == 0
    rows = records.read_jsonl(run / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2] and (run / "summary.json").exists()


def test_vmap_sweep_equals_sequential(tiny_scale):
    seq, vm = tiny_scale / "seq", tiny_scale / "vm"
    base = ["--name", "ixp", "--runs", "ixp1,ixp4", "--no-progress"]
    assert sweep.main([*base, "--out", str(seq), "--parallel", "sequential"]) == 0
    assert sweep.main([*base, "--out", str(vm), "--parallel", "vmap"]) == 0
    def losses(out, run):
        rows = records.read_jsonl(out / "ixp" / run / "metrics.jsonl")
        return [(r["train_loss"], r["test_loss"]) for r in rows]

    # Equal up to float rounding (see test_train.test_vmapped_runs_equal_separate_runs):
    # losses to 0.1% (train) and 1% (test, where rounding moves near-tied predictions of
    # this near-chance tiny model); counts can move by several of the 100 test images.
    for run in ("ixp1", "ixp4"):
        for (tr_a, te_a), (tr_b, te_b) in zip(losses(seq, run), losses(vm, run), strict=True):
            assert tr_a == pytest.approx(tr_b, rel=1e-3)
            assert te_a == pytest.approx(te_b, rel=1e-2)
        a = records.read_json(seq / "ixp" / run / "summary.json")
        b = records.read_json(vm / "ixp" / run / "summary.json")
        assert abs(a["final_train_correct"] - b["final_train_correct"]) <= 4
    # The tolerance tells the runs apart: a hyperparameter routed to the wrong run fails.
    (_, te1), (_, te4) = losses(vm, "ixp1")[-1], losses(vm, "ixp4")[-1]
    assert te1 != pytest.approx(te4, rel=1e-2)


@pytest.mark.parametrize("backend,scale,parallel", [("cpu", "quick", "sequential"),
                                                     ("gpu", "full", "vmap"),
                                                     ("tpu", "full", "vmap")])
def test_default_scale_and_parallel_follow_the_backend(monkeypatch, backend, scale, parallel):
    monkeypatch.setattr(scales.jax, "default_backend", lambda: backend)
    got, why = scales.choose(None)
    assert got == scale and (backend in why or "CPU" in why)
    assert scales.default_parallel() == parallel
    assert scales.choose("full") == ("full", "as asked")
