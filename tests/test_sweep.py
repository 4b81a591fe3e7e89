"""The sweep command: --list, --dry-run, a tiny end-to-end sweep, resume, lock, vmap."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from experiments import registry, scales, sweep
from wdjax import storage

# XLA's own convolution: the tiny model compiles several times faster than with the
# Winograd plan, which tests/test_winograd.py and tests/test_models.py check on their own.
TINY = dict(width=4, batch_size=128, stages=2, epochs_per_stage=1, train_subset=200,
            test_subset=100, conv_impl="xla")


@pytest.fixture
def tiny_scale(monkeypatch, cifar_archive, cifar_cache_dir, tmp_path):
    monkeypatch.setitem(scales.SCALES, "quick", TINY)  # the tests pass --scale quick
    monkeypatch.setenv("WDJAX_DATA", f"folder:{cifar_archive}")
    monkeypatch.setenv("WDJAX_CACHE", str(cifar_cache_dir))  # decoded once per session
    return tmp_path / "out"


def test_list_prints_every_family(capsys):
    assert sweep.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name, fam in registry.FAMILIES.items():
        line = next(ln for ln in out.splitlines() if ln.split()[0] == name)
        assert fam.optimizer in line and str(len(fam.runs)) in line.split()


def test_dry_run_prints_configs_and_trains_nothing(tiny_scale, capsys):
    assert sweep.main(["--name", "gxp", "--scale", "quick", "--dry-run", "--out",
                       str(tiny_scale)]) == 0
    out = capsys.readouterr().out
    assert "protocol:" in out and '"last2_mult": 0.1' in out and '"last2_mult": 30.0' in out
    assert out.count('"optimizer": "SGD_var_dup2_last2_mult"') == 5
    assert not tiny_scale.exists()


def test_protocol_flags_replace_the_scales_values(tmp_path, capsys):
    argv = ["--name", "dxp", "--runs", "dxp1", "--scale", "quick", "--train-subset", "256",
            "--stages", "1", "--epochs-per-stage", "3", "--out", str(tmp_path / "o")]
    assert sweep.main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    given = {"train_subset": 256, "stages": 1, "epochs_per_stage": 3}
    assert json.loads(out.split("protocol: ")[1].splitlines()[0]) == {
        **scales.SCALES["quick"], **given}
    config = json.loads(next(ln for ln in out.splitlines() if '"name": "dxp1"' in ln))
    assert {k: config[k] for k in given} == given
    family = registry.get_family("dxp")
    later = sweep.collect_command(family, "quick", tmp_path / "o", sweep.parser().parse_args(argv))
    assert "--runs dxp1 --train-subset 256 --stages 1 --epochs-per-stage 3" in later


@pytest.mark.parametrize("argv,needle", [
    (["--name", "zzz"], "unknown family 'zzz'; valid: exp, hxp"),
    (["--name", "dxp", "--runs", "dxp7"], "valid: dxp1, dxp2"),
    (["--name", "dxp", "--scale", "huge"], "invalid choice"),
    (["--name", "dxp", "--data", "folder:/nope"], "does not exist"),
    (["--name", "dxp", "--stages", "0"], "--stages must be an integer >= 1, got 0"),
])
def test_bad_sweep_input_is_one_line_exit_2(tmp_path, argv, needle):
    out = tmp_path / "o"
    r = subprocess.run([sys.executable, "-m", "experiments.sweep", *argv, "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, r.stderr
    assert not out.exists()


@pytest.mark.slow
def test_tiny_sweep_end_to_end_resume_and_lock(tiny_scale, capsys):
    argv = ["--name", "dxp", "--runs", "dxp3,dxp4", "--scale", "quick", "--out", str(tiny_scale),
            "--no-progress"]
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
        with pytest.raises(storage.RunError, match="locked by another sweep"):
            sweep.main(argv)
    finally:
        holder.kill()
        holder.wait()
    assert sweep.main(argv) == 0  # the stale lock is taken over
    assert not (fam / ".lock").exists()


@pytest.mark.slow
def test_unfinished_run_resumes(tiny_scale, monkeypatch):
    """A sweep killed mid-run continues from the run's checkpoint on the next call."""
    from wdjax.training import train as train_mod

    real = train_mod.train
    monkeypatch.setattr(train_mod, "train",
                        lambda *a, **k: real(*a, **{**k, "stop_after_epochs": 1}))
    argv = ["--name", "ixp", "--runs", "ixp2", "--scale", "quick", "--out", str(tiny_scale),
            "--no-progress"]
    sweep.main(argv)
    run = tiny_scale / "ixp" / "ixp2"
    assert len(storage.read_jsonl(run / "metrics.jsonl")) == 1
    assert not (run / "summary.json").exists()
    monkeypatch.setattr(train_mod, "train", real)
    assert sweep.main(argv) == 0
    rows = storage.read_jsonl(run / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2] and (run / "summary.json").exists()


@pytest.mark.slow
def test_seeds_vmapped_equal_sequential_and_added_seeds_reuse_finished(tiny_scale, capsys):
    """Runs x seeds trained in one vmapped program equal each seed trained alone.

    The sequential side first trains one seed (records in ``RUN/``), then ``--seeds 2``
    moves that seed into ``RUN/seed0/`` untouched and trains only ``seed1``.
    """
    seq, vm = tiny_scale / "seq", tiny_scale / "vm"
    base = ["--name", "ixp", "--runs", "ixp1,ixp4", "--scale", "quick", "--no-progress"]
    assert sweep.main([*base, "--out", str(seq), "--parallel", "sequential"]) == 0
    mtime = (seq / "ixp" / "ixp1" / "summary.json").stat().st_mtime_ns
    capsys.readouterr()
    assert sweep.main([*base, "--out", str(seq), "--parallel", "sequential", "--seeds", "2"]) == 0
    assert (seq / "ixp" / "ixp1" / "seed0" / "summary.json").stat().st_mtime_ns == mtime
    assert "2 finished run(s) skipped" in capsys.readouterr().out
    assert sweep.main([*base, "--out", str(vm), "--parallel", "vmap", "--seeds", "2"]) == 0
    out = capsys.readouterr().out

    def losses(out, run, seed):
        rows = storage.read_jsonl(out / "ixp" / run / f"seed{seed}" / "metrics.jsonl")
        return [(r["train_loss"], r["test_loss"]) for r in rows]

    # Equal up to float rounding. The first epoch (2 steps) agrees tightly, so each run got
    # its own seed's weights, batches, flips and factors; later steps drift apart by
    # rounding (vmapped convolutions of 4 different batches are summed in another order, and
    # lr 0.1 on this near-chance model amplifies it), as equivalent settings do (README).
    for run in ("ixp1", "ixp4"):
        for seed in (0, 1):
            (first_a, *rest_a), (first_b, *rest_b) = losses(seq, run, seed), losses(vm, run, seed)
            assert first_a[0] == pytest.approx(first_b[0], rel=1e-5)
            assert first_a[1] == pytest.approx(first_b[1], rel=1e-3)
            for (tr_a, _), (tr_b, _) in zip(rest_a, rest_b, strict=True):
                assert tr_a == pytest.approx(tr_b, rel=1e-2)
    # The tolerance tells runs and seeds apart: a hyperparameter or a seed routed to the
    # wrong run fails.
    (_, te1), (_, te4) = losses(vm, "ixp1", 0)[-1], losses(vm, "ixp4", 0)[-1]
    assert te1 != pytest.approx(te4, rel=1e-2)
    assert losses(vm, "ixp1", 0)[0][0] != pytest.approx(losses(vm, "ixp1", 1)[0][0], rel=1e-3)
    # The table line is the mean over seeds with its standard error, from the seeds' records.
    finals = [storage.read_json(vm / "ixp" / "ixp1" / f"seed{s}" / "summary.json")
              ["final_test_accuracy"] for s in (0, 1)]
    mean, sem = np.mean(finals), np.std(finals, ddof=1) / np.sqrt(2)
    assert f"- ixp1: 3 -> {mean:.4f} ± {sem:.4f} (n=2)" in out.splitlines()


def test_medium_scale_defaults_to_three_seeds(tmp_path, capsys):
    assert sweep.main(["--name", "dxp", "--scale", "medium", "--dry-run", "--out",
                       str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "6 runs x 3 seeds at medium scale" in out
    assert out.count('"seed_dir": true') == 18 and out.count('"seed": 2,') == 6
    assert sweep.main(["--name", "dxp", "--scale", "medium", "--seeds", "1", "--dry-run",
                       "--out", str(tmp_path)]) == 0
    assert '"seed_dir": true' not in capsys.readouterr().out


@pytest.mark.parametrize("backend,scale,parallel", [("cpu", "preview", "sequential"),
                                                     ("gpu", "full", "vmap"),
                                                     ("tpu", "full", "vmap")])
def test_default_scale_and_parallel_follow_the_backend(monkeypatch, backend, scale, parallel):
    monkeypatch.setattr(scales.jax, "default_backend", lambda: backend)
    got, why = scales.choose(None)
    assert got == scale and (backend in why or "CPU" in why)
    assert scales.default_parallel() == parallel
    assert scales.choose("full") == ("full", "as asked")
