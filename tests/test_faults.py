"""Nothing lost, nothing confusing: faults, interruptions and bad input.

* Interruption: a driver subprocess runs the real CLI with one writer patched to SIGKILL
  the process at its n-th call (mid-epoch, while a checkpoint is being written, while the
  summary is written, ...); the same command, run again, must end with exactly the
  numbers of an uninterrupted run. SIGINT/SIGTERM stop with one line, keeping the last
  checkpoint.
* Corruption: a truncated or bit-flipped newest checkpoint, a torn JSON line, a half
  written temporary file, a corrupt data cache: one warning line at most, same numbers.
* Bad input: one stderr line naming the problem, exit 2, the output directory untouched
  (file list, sizes and mtimes) and training never started.
* Divergence inside a sweep, and what every run records about itself.

The data is a 200 / 100 image CIFAR-10 folder cut from the shared archive (PNG, lossless),
so each process loads it in milliseconds instead of re-reading the 19 MB archive.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

import wdjax
import wdjax.training.train
from experiments import cli, sweep
from experiments import train as train_cli
from wdjax import data, storage

REPO = Path(__file__).resolve().parents[1]
# 3 stages of 1 epoch (the learning rate halves twice), 4 steps an epoch (200 = 3 x 64 + 8:
# a padded last batch), a steps.jsonl line every step.
TINY = ["-o", "SGD", "--lr", "0.1", "-nb", "4", "-b", "64", "--stages", "3",
        "--epochs-per-stage", "1", "--log-every", "1", "--conv-impl", "xla", "--no-progress"]
# The same protocol for sweeps (family exp trains SGD with lr 0.1, like TINY), so runs of
# both commands share their compiled programs.
SWEEP_SCALE = dict(width=4, batch_size=64, stages=3, epochs_per_stage=1, train_subset=None,
                   test_subset=None, log_every=1, conv_impl="xla")
# exp1's weight decay of 1e4 makes its loss NaN in epoch 2; exp2 trains normally.
SWEEP_SETUP = dict(family="exp", scale=SWEEP_SCALE, hparams={"exp1": {"weight_decay": 1e4}})
SWEEP_ARGS = ["--name", "exp", "--runs", "exp1,exp2", "--scale", "quick", "--parallel",
              "sequential", "--no-progress"]


# ------------------------------------------------------------------------------ helpers
def _apply_sweep_setup(setup, mp):
    """Shrink the sweep protocol and override run hyperparameters (also run by the driver).

    `mp` is a pytest MonkeyPatch, or in the driver anything with its setitem / setattr.
    """
    import dataclasses
    import types

    from experiments import registry, scales

    mp.setitem(scales.SCALES, "quick", dict(setup["scale"]))
    fam = registry.FAMILIES[setup["family"]]
    runs = tuple(dataclasses.replace(r, hparams=types.MappingProxyType(
        {**r.hparams, **setup["hparams"].get(r.name, {})})) for r in fam.runs)
    mp.setattr(registry, "FAMILIES", types.MappingProxyType(
        {**registry.FAMILIES, fam.name: dataclasses.replace(fam, runs=runs)}))


# Runs the CLI in a fresh process; POINT = ACTION-WHERE[:TARGET] says which writer stops it
# at its NTH call, and how. ACTION kill: SIGKILL, leaving that write half done; term / int:
# the write completes, then SIGTERM / SIGINT. WHERE:
#   line:FILE   storage.append_jsonl to FILE (kill: half the line, no newline)
#   file:GLOB   storage.atomic_write to a name matching GLOB (kill: half a temp file)
#   checkpoint  checkpoint.Manager.save, once its asynchronous write has started
DRIVER = textwrap.dedent('''
    import fnmatch, json, os, signal, sys, tempfile, time
    from pathlib import Path

    point, nth, command, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    action, _, where = point.partition("-")
    where, _, target = where.partition(":")
    calls = [0]

    def due():
        calls[0] += 1
        return calls[0] == nth

    def stop():
        sig = dict(kill=signal.SIGKILL, term=signal.SIGTERM, int=signal.SIGINT)[action]
        os.kill(os.getpid(), sig)  # SIGTERM / SIGINT: raised by the CLI's handler here
        time.sleep(60)

    from wdjax.training import checkpoint
    from wdjax import storage

    append_jsonl, atomic_write, save = (storage.append_jsonl, storage.atomic_write,
                                        checkpoint.Manager.save)

    def patched_append(path, obj):
        if where != "line" or Path(path).name != target or not due():
            return append_jsonl(path, obj)
        if action == "kill":
            with open(path, "a") as f:
                line = storage.dumps(obj) + "\\n"
                f.write(line[: len(line) // 2])
        else:
            append_jsonl(path, obj)
        stop()

    def patched_write(path, data):
        path = Path(path)
        if where != "file" or not fnmatch.fnmatch(path.name, target) or not due():
            return atomic_write(path, data)
        if action == "kill":
            fd, _ = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            raw = data if isinstance(data, bytes) else data.encode()
            os.write(fd, raw[: len(raw) // 2])
        else:
            atomic_write(path, data)
        stop()

    def patched_save(self, epoch, state, extra):
        save(self, epoch, state, extra)
        if where == "checkpoint" and due():
            stop()

    storage.append_jsonl, storage.atomic_write = patched_append, patched_write
    checkpoint.Manager.save = patched_save
    from experiments import cli
    if command == "sweep":
        @SWEEP_SETUP_SOURCE@
        class Patch:
            setitem, setattr = staticmethod(dict.__setitem__), staticmethod(setattr)
        _apply_sweep_setup(json.loads(os.environ["FAULT_SWEEP_SETUP"]), Patch)
        from experiments.sweep import main
    else:
        from experiments.train import main
    cli.run_main(main, argv)
''').replace("@SWEEP_SETUP_SOURCE@",
          textwrap.indent(inspect.getsource(_apply_sweep_setup), " " * 4).strip())


def _drive(tmp_path, env, point, nth, command, argv):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**env, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "FAULT_SWEEP_SETUP": json.dumps(SWEEP_SETUP)}
    return subprocess.run([sys.executable, str(script), point, str(nth), command, *argv],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)


def _main(main, argv, capsys=None) -> tuple[int, str, str]:
    """Run a CLI `main` in this process as its `__main__` would; (exit code, out, err)."""
    with pytest.raises(SystemExit) as exc:
        cli.run_main(main, argv)
    out, err = capsys.readouterr() if capsys else ("", "")
    return exc.value.code, out, err


def _train_argv(images, out, name="r"):
    return ["--name", name, *TINY, "--data", f"folder:{images}", "--out", str(out)]


def _results(run_dir: Path) -> dict:
    """Everything a run computed: summary, per-epoch rows (without timings), step lines."""
    metrics = storage.read_jsonl(run_dir / "metrics.jsonl")
    for row in metrics:
        row.pop("seconds")
    return dict(summary=storage.read_json(run_dir / "summary.json"), metrics=metrics,
                steps=storage.read_jsonl(run_dir / "steps.jsonl"))


@contextlib.contextmanager
def _recording_atomic_writes(mp: pytest.MonkeyPatch):
    """Collect the paths written through storage.atomic_write (temp file + rename)."""
    written: set[Path] = set()
    real = storage.atomic_write

    def spy(path, data):
        written.add(Path(path).resolve())
        return real(path, data)

    mp.setattr(storage, "atomic_write", spy)
    yield written


def _visible(run_dir: Path) -> set[str]:
    return {p.name for p in run_dir.iterdir() if not p.name.startswith(".")}


def _snapshot(root: Path) -> dict:
    """Every path under `root` (itself included) with its kind, size, mode and mtime."""
    if not root.exists():
        return {}
    snap = {}
    for p in [root, *sorted(root.rglob("*"))]:
        st = p.lstat()
        snap[str(p.relative_to(root))] = (p.is_dir(), st.st_size, st.st_mode, st.st_mtime_ns)
    return snap


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def images(cifar_archive, tmp_path_factory) -> Path:
    """The first 20 train and 10 test images of each class of the offline CIFAR-10, as PNG."""
    root = tmp_path_factory.mktemp("fault-images") / "cifar-small"
    want, have = {"train": 20, "test": 10}, {}
    with tarfile.open(cifar_archive, "r:*") as tar:
        for member in tar:
            parts = Path(member.name).parts[-3:]
            if not member.isfile() or len(parts) < 3 or parts[0] not in want:
                continue
            folder = root / parts[0] / parts[1]
            if have.setdefault(folder, 0) < want[parts[0]]:
                have[folder] += 1
                folder.mkdir(parents=True, exist_ok=True)
                with Image.open(tar.extractfile(member)) as im:
                    im.save(folder / (Path(parts[2]).stem + ".png"))
    assert sum(1 for _ in root.rglob("*.png")) == 300
    return root


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fault-cache")


@pytest.fixture(autouse=True)
def _data_cache(cache_dir, monkeypatch):
    monkeypatch.setenv(data.ENV_CACHE, str(cache_dir))


@pytest.fixture
def env(cache_dir) -> dict:
    """The environment of CLI subprocesses (the session's data cache)."""
    return {**os.environ, data.ENV_CACHE: str(cache_dir)}


@pytest.fixture(scope="session")
def reference(images, cache_dir, tmp_path_factory) -> dict:
    """The uninterrupted run every interrupted one must reproduce (trained in-process)."""
    out = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as mp, _recording_atomic_writes(mp) as written:
        mp.setenv(data.ENV_CACHE, str(cache_dir))
        assert _main(train_cli.main, _train_argv(images, out))[0] == 0
    run = out / "r"
    return dict(_results(run), dir=run, files=_visible(run), written=written)


@pytest.fixture(scope="session")
def sweep_reference(images, cache_dir, tmp_path_factory) -> dict:
    """An uninterrupted two-run sweep whose first run diverges."""
    out = tmp_path_factory.mktemp("sweep-reference")
    with pytest.MonkeyPatch.context() as mp, _recording_atomic_writes(mp) as written:
        mp.setenv(data.ENV_CACHE, str(cache_dir))
        mp.setenv(data.ENV_DATA, f"folder:{images}")
        _apply_sweep_setup(SWEEP_SETUP, mp)
        code, _, _ = _main(sweep.main, [*SWEEP_ARGS, "--out", str(out)])
    assert code == 0
    return dict(_sweep_results(out / "exp"), written=written)


def _sweep_results(fam: Path) -> dict:
    return dict(dir=fam, md=(fam / "summary.md").read_text(),
                csv=list(csv.DictReader((fam / "summary.csv").read_text().splitlines())),
                runs={r: _results(fam / r) for r in ("exp1", "exp2")})


# ------------------------------------------------------------------------------ interruption
def _epochs(run: Path) -> list[int]:
    return [row["epoch"] for row in storage.read_jsonl(run / "metrics.jsonl")]


def _checkpoints(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


# (driver point, n-th call, what the killed process must have left: proof the point was hit)
KILL_POINTS = {
    # step 6 of 12 (epoch 2), its steps.jsonl line torn in half
    "mid-epoch-torn-step-line": ("kill-line:steps.jsonl", 6, lambda run: (
        not (run / "steps.jsonl").read_text().endswith("\n")
        and len(storage.read_jsonl(run / "steps.jsonl")) == 5 and _epochs(run) == [1])),
    # epoch 2's metrics line torn; its checkpoint not started. Checkpoint 1 is written
    # asynchronously, so on a busy machine it may still be in orbax's temporary folder.
    "torn-metrics-line": ("kill-line:metrics.jsonl", 2, lambda run: (
        not (run / "metrics.jsonl").read_text().endswith("\n") and _epochs(run) == [1]
        and _checkpoints(run) in (["1"], ["1.orbax-checkpoint-tmp"]))),
    # checkpoint 2 being written asynchronously: orbax's temporary folder left behind
    "during-checkpoint": ("kill-checkpoint", 2, lambda run: (
        _epochs(run) == [1, 2] and _checkpoints(run) == ["1", "2.orbax-checkpoint-tmp"])),
    # all three checkpoints complete; summary.json half written to its temporary file
    "during-summary": ("kill-file:summary.json", 1, lambda run: (
        _checkpoints(run) == ["2", "3"] and not (run / "summary.json").exists()
        and len(list(run.glob(".summary.json.*"))) == 1)),
    # the first picture half written to its temporary file (summary.json, written after
    # the pictures, has not marked the run finished yet)
    "during-pictures": ("kill-file:*.png", 1, lambda run: (
        _checkpoints(run) == ["2", "3"] and len(list(run.glob(".*.png.*"))) == 1
        and not list(run.glob("*.png")))),
}
@pytest.mark.parametrize("where", list(KILL_POINTS))
@pytest.mark.slow
def test_sigkill_then_same_command_gives_same_numbers(reference, images, env, tmp_path,
                                                      capsys, where):
    point, nth, left = KILL_POINTS[where]
    out = tmp_path / "out"
    argv = _train_argv(images, out)
    r = _drive(tmp_path, env, point, nth, "train", argv)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert left(out / "r"), sorted(p.name for p in (out / "r").rglob("*"))
    code, stdout, err = _main(train_cli.main, argv, capsys)
    assert code == 0, err
    assert err == ""  # nothing to report: no warning, no orbax noise
    assert "r: test" in stdout
    assert _results(out / "r") == {k: reference[k] for k in ("summary", "metrics", "steps")}
    assert _visible(out / "r") == reference["files"]
    assert _checkpoints(out / "r") == ["2", "3"]


@pytest.mark.parametrize("sig,point,nth", [
    # right after epoch 2's metrics line, before its checkpoint
    pytest.param(signal.SIGINT, "int-line:metrics.jsonl", 2, id="SIGINT-after-metrics"),
    # while checkpoint 1 is still being committed in the background: it must complete
    pytest.param(signal.SIGTERM, "term-checkpoint", 1, id="SIGTERM-during-checkpoint"),
])
@pytest.mark.slow
def test_sigint_sigterm_stop_with_one_line_and_keep_the_checkpoint(reference, images, env,
                                                                   tmp_path, capsys, sig,
                                                                   point, nth):
    out = tmp_path / "out"
    argv = _train_argv(images, out)
    r = _drive(tmp_path, env, point, nth, "train", argv)
    assert r.returncode == 128 + sig, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"interrupted ({sig.name})" in lines[0], r.stderr
    assert "rerun the same command" in lines[0]
    run = out / "r"
    assert _checkpoints(run) == ["1"] and not (run / "summary.json").exists()
    code, _, err = _main(train_cli.main, argv, capsys)
    assert code == 0 and err == "", err
    assert _results(run) == {k: reference[k] for k in ("summary", "metrics", "steps")}


def test_lock_held_by_live_pid_and_start_time_only(tmp_path):
    """A lock whose pid lives but started at another time (a reused pid) is taken over."""
    parent = os.getppid()
    path = tmp_path / ".r.lock"
    path.write_text(f"{parent} {storage.start_time(parent)}")
    with (pytest.raises(storage.RunError, match=f"r is locked by another run \\(pid {parent}"),
          storage.lock(tmp_path, "run", ".r.lock")):
        pass
    assert path.read_text() == f"{parent} {storage.start_time(parent)}"  # untouched
    path.write_text(f"{parent} 1")  # the same pid, another process start: stale
    with storage.lock(tmp_path, "run", ".r.lock"):
        assert path.read_text().split()[0] == str(os.getpid())
    assert not path.exists()


@pytest.mark.slow
def test_sweep_sigkill_mid_run_then_same_command(sweep_reference, images, env, tmp_path,
                                                 capsys, monkeypatch):
    out = tmp_path / "out"
    argv = [*SWEEP_ARGS, "--out", str(out)]
    # metrics.jsonl lines: exp1 epochs 1-2 (diverged), then exp2: the 4th is exp2's epoch 2.
    r = _drive(tmp_path, {**env, data.ENV_DATA: f"folder:{images}"}, "kill-line:metrics.jsonl",
               4, "sweep", argv)
    assert r.returncode == -signal.SIGKILL, r.stderr
    fam = out / "exp"
    assert (fam / ".lock").exists()  # left by the killed sweep; must not block the rerun
    assert (fam / "exp1" / "summary.json").exists()
    assert not (fam / "exp2" / "summary.json").exists()
    monkeypatch.setenv(data.ENV_DATA, f"folder:{images}")
    _apply_sweep_setup(SWEEP_SETUP, monkeypatch)
    mtime = (fam / "exp1" / "summary.json").stat().st_mtime_ns
    code, stdout, err = _main(sweep.main, argv, capsys)
    assert code == 0 and err == "", err
    assert "1 finished run(s) skipped" in stdout
    assert (fam / "exp1" / "summary.json").stat().st_mtime_ns == mtime
    assert not (fam / ".lock").exists()
    got = _sweep_results(fam)
    assert got["md"] == sweep_reference["md"] and got["csv"] == sweep_reference["csv"]
    assert got["runs"] == sweep_reference["runs"]


# ------------------------------------------------------------------------------ corruption
def _damage(step_dir: Path, how: str) -> None:
    files = sorted((p for p in (step_dir / "state").rglob("*") if p.is_file()),
                   key=lambda p: p.stat().st_size)
    if how == "truncate":
        for f in files:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    else:  # one flipped byte in the middle of the array data: orbax reads it back silently
        raw = bytearray(files[-1].read_bytes())
        raw[len(raw) // 2] ^= 0x40
        files[-1].write_bytes(bytes(raw))


def _two_of_three_epochs(argv, capsys, monkeypatch) -> None:
    real = wdjax.training.train.train
    monkeypatch.setattr(wdjax.training.train, "train",
                        lambda *a, **k: real(*a, **{**k, "stop_after_epochs": 2}))
    assert _main(train_cli.main, argv, capsys)[0] == 0
    monkeypatch.setattr(wdjax.training.train, "train", real)


@pytest.mark.parametrize("how", ["truncate", "flip"])
@pytest.mark.slow
def test_damaged_latest_checkpoint_falls_back_with_one_line(reference, images, tmp_path,
                                                            capsys, monkeypatch, how):
    out = tmp_path / "out"
    argv = _train_argv(images, out)
    _two_of_three_epochs(argv, capsys, monkeypatch)
    ckpts = out / "r" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["1", "2"]
    _damage(ckpts / "2", how)
    code, _, err = _main(train_cli.main, argv, capsys)
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("wdjax: warning: checkpoint epoch 2 in ")
    assert "falling back to an older one" in lines[0]
    assert _results(out / "r") == {k: reference[k] for k in ("summary", "metrics", "steps")}


@pytest.mark.slow
def test_no_readable_checkpoint_is_one_error_and_its_advice_works(reference, images,
                                                                   tmp_path, capsys,
                                                                   monkeypatch):
    out = tmp_path / "out"
    argv = _train_argv(images, out)
    _two_of_three_epochs(argv, capsys, monkeypatch)
    ckpts = out / "r" / "checkpoints"
    for epoch in ("1", "2"):
        _damage(ckpts / epoch, "flip")
    code, _, err = _main(train_cli.main, argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err, err
    assert [ln.split(":")[1].strip() for ln in lines] == ["warning", "warning", "error"]
    assert f"no readable checkpoint in {ckpts}; delete that folder" in lines[-1]
    shutil.rmtree(ckpts)  # as the message says: the run starts over
    code, _, err = _main(train_cli.main, argv, capsys)
    assert code == 0 and err == ""
    assert _results(out / "r") == {k: reference[k] for k in ("summary", "metrics", "steps")}


@pytest.mark.slow
def test_run_killed_while_writing_its_first_file_restarts(reference, images, tmp_path, capsys):
    # What a SIGKILL inside the first write_json(config.json) leaves: a hidden temp file.
    run = tmp_path / "out" / "r"
    run.mkdir(parents=True)
    (run / ".config.json.k1ll3d").write_text('{"config": {"na')
    code, _, err = _main(train_cli.main, _train_argv(images, tmp_path / "out"), capsys)
    assert code == 0 and err == ""
    assert _results(run) == {k: reference[k] for k in ("summary", "metrics", "steps")}


@pytest.mark.slow
def test_corrupt_data_cache_is_rebuilt_with_one_line(reference, images, cache_dir, tmp_path,
                                                     capsys, monkeypatch):
    own = tmp_path / "cache"
    shutil.copytree(cache_dir, own)
    key = data.load(f"folder:{images}", cache_dir=own).checksum[:16]
    (npz,) = [p for p in own.glob("*.npz") if key in p.name]
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    monkeypatch.setenv(data.ENV_CACHE, str(own))
    code, _, err = _main(train_cli.main, _train_argv(images, tmp_path / "out"), capsys)
    assert code == 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "wdjax: warning: wdjax data cache" in lines[0], err
    assert "rebuilding" in lines[0]
    assert _results(tmp_path / "out" / "r") == {
        k: reference[k] for k in ("summary", "metrics", "steps")}
    data.load(f"folder:{images}", cache_dir=own)  # rebuilt: loads without a warning


@pytest.mark.slow
def test_every_results_file_is_written_atomically(reference, sweep_reference):
    umask = os.umask(0o022)
    os.umask(umask)
    mode = 0o666 & ~umask  # what a plain open() would give, not mkstemp's 0600
    for where, ref in (("run", reference), ("sweep", sweep_reference)):
        files = [p for p in ref["dir"].rglob("*") if p.is_file() and "checkpoints" not in
                 p.parts and p.suffix in (".json", ".csv", ".md", ".png")]
        assert len(files) >= (4 if where == "run" else 11), files
        for f in files:
            assert f.resolve() in ref["written"], f"{f} not written by storage.atomic_write"
            assert f.stat().st_mode & 0o777 == mode, f
        assert not [p for p in ref["dir"].rglob(".*") if p.name != ".lock"]  # no temp left


def test_torn_and_garbled_jsonl_lines_are_skipped_and_repaired(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2, "x": [1, 2\n{"epoch": 3}\n{"epo')
    assert storage.read_jsonl(path) == [{"epoch": 1}, {"epoch": 3}]
    storage.append_jsonl(path, {"epoch": 4})
    assert storage.read_jsonl(path) == [{"epoch": 1}, {"epoch": 3}, {"epoch": 4}]
    assert path.read_text().endswith('{"epoch": 4}\n')


# ------------------------------------------------------------------------------ divergence
@pytest.mark.slow
def test_diverging_run_is_recorded_and_the_sweep_continues(sweep_reference):
    runs, rows = sweep_reference["runs"], sweep_reference["csv"]
    bad, good = runs["exp1"]["summary"], runs["exp2"]["summary"]
    assert bad["diverged"] == {"step": 5, "epoch": 2, "loss": "nan"}
    assert bad["epochs_done"] == 2 and bad["final_train_correct"] is not None
    last = runs["exp1"]["metrics"][-1]
    assert last["epoch"] == 2 and last["diverged"] == bad["diverged"]
    assert not good["diverged"] and good["epochs_done"] == 3
    assert [(r["run"], r["diverged"], r["finished"]) for r in rows] == [
        ("exp1", "True", "True"), ("exp2", "False", "True")]
    md = sweep_reference["md"]
    assert "- exp1: 10000 -> " in md and " diverged" in md.split("- exp1:")[1].split("\n")[0]
    assert "| exp1 | 10000 |" in md and "| yes |" in md.split("| exp1 |")[-1].split("\n")[0]
    assert "| yes |" not in md.split("| exp2 |")[1].split("\n")[0]


# ------------------------------------------------------------------------------ integrity
@pytest.mark.slow
def test_run_record_holds_versions_device_and_full_config(reference, images):
    rec = storage.read_json(reference["dir"] / "config.json")
    envr = rec["environment"]
    assert envr["wdjax"] == wdjax.__version__ and envr["jax"] == jax.__version__
    assert envr["device_kind"] == jax.devices()[0].device_kind
    want = wdjax.training.train.Config(name="r", optimizer="SGD", lr=0.1, width=4, batch_size=64,
                              stages=3, epochs_per_stage=1, log_every=1, conv_impl="xla",
                              data=f"folder:{images}")
    assert rec["config"] == storage.jsonable(want.to_dict())
    assert wdjax.training.train.Config.from_dict(rec["config"]) == want
    ds = data.load(f"folder:{images}")
    assert rec["data"]["checksum"] == ds.checksum and rec["data"]["source"] == ds.source


# ------------------------------------------------------------------------------ bad input
def _image_tree(root: Path, *, size=(32, 32), mode="RGB", classes=("a", "b"),
                test_classes=None, per_class=2, flat=False) -> Path:
    rng = np.random.default_rng(0)
    for split, names in (("train", classes), ("test", test_classes or classes)):
        for c in names:
            folder = root / split if flat else root / split / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                px = rng.integers(0, 256, (size[1], size[0], 3), np.uint8)
                Image.fromarray(px, "RGB").convert(mode).save(folder / f"{c}{i}.png")
    return root


def _tar_gz(src: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(src, arcname=".")
    return dest


def _bad_data(kind: str, tmp: Path) -> Path:
    """A data source with one kind of problem."""
    if kind == "plain-file":
        (tmp / "notes.txt").write_text("not images")
        return tmp / "notes.txt"
    if kind == "no-splits":
        return _image_tree(tmp / "d", classes=("a",)).joinpath("train")
    if kind == "no-classes":
        return _image_tree(tmp / "d", flat=True)
    if kind == "class-mismatch":
        return _image_tree(tmp / "d", test_classes=("a", "c"))
    if kind == "small":
        return _image_tree(tmp / "d", size=(8, 8))
    if kind == "large":
        return _image_tree(tmp / "d", size=(64, 64))
    if kind == "mixed-size":
        root = _image_tree(tmp / "d")
        Image.new("RGB", (16, 16)).save(root / "test" / "b" / "b9.png")
        return root
    if kind == "gray":
        return _image_tree(tmp / "d", mode="L")
    if kind == "undecodable":
        root = _image_tree(tmp / "d")
        (root / "train" / "a" / "a0.png").write_bytes(b"\x89PNG not really")
        return root
    if kind == "garbage-archive":
        (tmp / "g.tar.gz").write_bytes(gzip.compress(os.urandom(3000))[:-100])
        return tmp / "g.tar.gz"
    if kind == "truncated-archive":
        full = _tar_gz(_image_tree(tmp / "d"), tmp / "full.tar.gz").read_bytes()
        (tmp / "cut.tar.gz").write_bytes(full[: len(full) // 2])
        return tmp / "cut.tar.gz"
    if kind == "gray-archive":
        return _tar_gz(_image_tree(tmp / "d", mode="L"), tmp / "gray.tar.gz")
    raise AssertionError(kind)


def _full_disk(out):
    usage = shutil.disk_usage(out)
    return lambda p: usage._replace(free=1 << 20)


def _no_write_access(out):
    real = os.access
    return lambda p, mode, **kw: False if Path(p) == out else real(p, mode, **kw)


# (id, command, extra argv, words the one stderr line must hold, data kind or None, patch)
# Extra argv is appended to a valid command line (argparse keeps the last value);
# "{out}", "{data}" and "{images}" are filled in.
BAD = [
    # numbers: negative, zero where not allowed, NaN, inf, not a number
    ("negative-decay", "train", ["-wd", "-1"], ["--weight-decay", "-1"], None, None),
    ("negative-lr", "train", ["--lr", "-0.1"], ["--lr", "(0, inf)"], None, None),
    ("inf-lr", "train", ["--lr", "inf"], ["--lr must be a finite number", "inf"], None, None),
    ("nan-L1", "train", ["-L1", "nan"], ["--L1-decay", "nan"], None, None),
    ("nan-last1", "train", ["--last1-mult", "NaN"], ["--last1-mult", "NaN"], None, None),
    ("momentum-1", "train", ["--momentum", "1"], ["--momentum", "[0, 1)"], None, None),
    ("norm-ema-neg", "train", ["--norm-ema", "-0.5"], ["--norm-ema"], None, None),
    ("batch-word", "train", ["-b", "abc"], ["--batch-size must be an integer", "abc"], None,
     None),
    ("width-float", "train", ["-nb", "4.5"], ["--width must be an integer"], None, None),
    ("stages-0", "train", ["--stages", "0"], ["--stages must be an integer >= 1"], None, None),
    ("epochs-0", "train", ["--epochs-per-stage", "0"], ["--epochs-per-stage"], None, None),
    ("log-every-0", "train", ["--log-every", "0"], ["--log-every"], None, None),
    ("subset-0", "train", ["--train-subset", "0"], ["--train-subset"], None, None),
    ("subset-too-big", "train", ["--test-subset", "101"],
     ["test_subset must be between 1 and 100"], None, None),
    ("seed-negative", "train", ["--seed", "-1"], ["--seed must be an integer >= 0"], None,
     None),
    ("seed-float", "train", ["--seed", "0.5"], ["--seed must be an integer"], None, None),
    # names, choices, flags
    ("unknown-optimizer", "train", ["-o", "sgd"], ["unknown optimizer", "sgd"], None, None),
    ("conv-impl", "train", ["--conv-impl", "cudnn"], ["invalid choice", "cudnn"], None, None),
    ("unknown-flag", "train", ["--epochs", "3"], ["unrecognized arguments", "--epochs"], None,
     None),
    ("separate-decay-sgd", "train", ["--separate-decay"], ["separate_decay", "Adam"], None,
     None),
    ("name-dotdot", "train", ["--name", ".."], ["invalid run name", "'..'"], None, None),
    ("name-hidden", "train", ["--name", ".r"], ["invalid run name"], None, None),
    ("name-backslash", "train", ["--name", "a\\b"], ["invalid run name"], None, None),
    ("name-empty", "train", ["--name", ""], ["invalid run name"], None, None),
    ("name-abs", "train", ["--name", "/tmp/r"], ["invalid run name", "path separators"],
     None, None),
    # existing runs
    ("partial-other-config", "train", ["--name", "part"], ["different config",
                                                           "--force-name"], None, None),
    ("finished-run", "train", ["--name", "old"], ["already has results", "--force-name"],
     None, None),
    ("force-with-bad-images", "train", ["--name", "old", "--force-name", "--data",
                                        "folder:{data}"], ["mode 'L'", "only RGB"], "gray",
     None),
    # data
    ("data-form", "train", ["--data", "s3:bucket"], ["invalid data source", "folder:PATH"],
     None, None),
    ("data-missing", "train", ["--data", "folder:{out}/nope"], ["does not exist"], None,
     None),
    ("data-plain-file", "train", ["--data", "folder:{data}"],
     ["is not a directory or a .tar.gz"], "plain-file", None),
    ("data-no-splits", "train", ["--data", "folder:{data}"],
     ["not an image folder/archive"], "no-splits", None),
    ("data-no-classes", "train", ["--data", "folder:{data}"], ["no class folders"],
     "no-classes", None),
    ("data-class-mismatch", "train", ["--data", "folder:{data}"],
     ["test classes differ", "'c'"], "class-mismatch", None),
    ("data-8x8", "train", ["--data", "folder:{data}"], ["are 8x8", "needs 32x32"], "small",
     None),
    ("data-64x64", "train", ["--data", "folder:{data}"], ["are 64x64", "needs 32x32"],
     "large", None),
    ("data-mixed-size", "train", ["--data", "folder:{data}"],
     ["b9.png is 16x16", "share one size"], "mixed-size", None),
    ("data-gray", "train", ["--data", "folder:{data}"], ["mode 'L'", "only RGB"], "gray",
     None),
    ("data-undecodable", "train", ["--data", "folder:{data}"], ["cannot decode image",
                                                                "a0.png"], "undecodable",
     None),
    ("data-garbage-archive", "train", ["--data", "folder:{data}"],
     ["cannot read archive", "corrupt or truncated"], "garbage-archive", None),
    ("data-truncated-archive", "train", ["--data", "folder:{data}"],
     ["cannot read archive", "corrupt or truncated"], "truncated-archive", None),
    ("data-gray-archive", "train", ["--data", "folder:{data}"], ["mode 'L'"], "gray-archive",
     None),
    # output directory
    ("out-under-file", "train", ["--out", "{out}/notes.txt/runs"], ["not a directory"], None,
     None),
    ("out-unwritable", "train", [], ["output directory", "is not writable"], None,
     ("os.access", _no_write_access)),
    ("out-full", "train", [], ["MiB free", "need at least"], None,
     ("shutil.disk_usage", _full_disk)),
    # sweeps
    ("sweep-no-family", "sweep", ["--name", ""], ["--name is required"], None, None),
    ("sweep-duplicate-run", "sweep", ["--runs", "exp1,exp1"], ["duplicate run 'exp1'"], None,
     None),
    ("sweep-seed", "sweep", ["--seed", "-3"], ["--seed must be an integer >= 0"], None, None),
    ("sweep-parallel", "sweep", ["--parallel", "threads"], ["invalid choice", "threads"],
     None, None),
    ("sweep-locked", "sweep", [], ["locked by another sweep", "pid"], None, None),
    ("run-locked", "train", [], ["out/x is locked by another training run", "pid"], None,
     None),
    ("sweep-out-under-file", "sweep", ["--out", "{out}/notes.txt/x"], ["not a directory"],
     None, None),
    ("sweep-full", "sweep", [], ["MiB free"], None, ("shutil.disk_usage", _full_disk)),
    ("sweep-gray", "sweep", ["--data", "folder:{data}"], ["only RGB"], "gray", None),
    ("sweep-8x8", "sweep", ["--data", "folder:{data}"], ["needs 32x32"], "small", None),
]


@pytest.fixture
def out_dir(tmp_path) -> Path:
    """An output directory that already holds a finished run, a partial one and a file."""
    out = tmp_path / "out"
    for name, finished in (("old", True), ("part", False)):
        run = out / name
        run.mkdir(parents=True)
        storage.write_json(run / "config.json", {"config": {"name": name, "width": 99}})
        storage.append_jsonl(run / "metrics.jsonl", {"epoch": 1})
        if finished:
            storage.write_json(run / "summary.json", {"name": name})
    (out / "notes.txt").write_text("a regular file\n")
    (out / "exp").mkdir()
    return out


@pytest.mark.parametrize("case,command,extra,words,data_kind,patch", BAD,
                         ids=[c[0] for c in BAD])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, command, extra, words,
                                                          data_kind, patch, images, out_dir,
                                                          tmp_path, capsys, monkeypatch):
    fill = dict(out=out_dir, images=images,
                data=_bad_data(data_kind, tmp_path) if data_kind else "")
    extra = [a.format(**fill) for a in extra]
    if command == "train":
        main, argv = train_cli.main, [*_train_argv(images, out_dir, "x"), *extra]
    else:
        main, argv = sweep.main, [*SWEEP_ARGS, "--data", f"folder:{images}", "--out",
                                  str(out_dir), *extra]
        _apply_sweep_setup(SWEEP_SETUP, monkeypatch)
    if case == "sweep-locked":  # a live process (our parent) holds the family's lock
        (out_dir / "exp" / ".lock").write_text(str(os.getppid()))
    if case == "run-locked":  # ... or the run's, as a first trainer of the name writes it
        parent = os.getppid()
        (out_dir / ".x.lock").write_text(f"{parent} {storage.start_time(parent)}")
    if patch:  # tests run as root, where chmod cannot make a directory unwritable
        target, make = patch
        module = {"os.access": os, "shutil.disk_usage": shutil}[target]
        monkeypatch.setattr(module, target.split(".")[1], make(out_dir))

    def no_training(*a, **k):
        raise AssertionError("training started on bad input")

    monkeypatch.setattr(wdjax.training.train, "train", no_training)
    before = _snapshot(out_dir)
    code, _, err = _main(main, argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("wdjax: error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert "Traceback" not in err
    assert _snapshot(out_dir) == before


def test_no_tensorflow_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # unimportable even where installed
    out = tmp_path / "out"
    code, _, err = _main(train_cli.main, ["--name", "x", "--data", "tfds:cifar10", "--out",
                                          str(out)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "TensorFlow is not installed" in err and not out.exists()

