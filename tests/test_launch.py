"""The SLURM launcher (`experiments.launch`), run through submitit's LocalExecutor: the same
job functions as on a cluster, as local processes. No SLURM is needed."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from conftest import read_tensorboard_scalars

from experiments import launch, registry, report, scales, sweep
from wdjax import data, storage
from wdjax.training import tensorboard as tb
from wdjax.training.train import Config, train

submitit = pytest.importorskip("submitit", reason="submitit absent: pip install -e '.[dev]'")
import cloudpickle  # noqa: E402  (a submitit dependency)

# The job pickles carry this module's task classes by value: a task process cannot import
# a test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

# The VGG needs 32x32 inputs; 60 training images make an epoch two steps.
PROTOCOL = dict(width=2, batch_size=32, stages=2, epochs_per_stage=1, train_subset=None,
                test_subset=None, conv_impl="xla")  # XLA's conv compiles fastest
RUNS = ("dxp3", "dxp4")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    from conftest import write_image_tree

    root = tmp_path_factory.mktemp("launch-data") / "images"
    classes = [f"class{c}" for c in range(10)]
    write_image_tree(root, {"train": dict.fromkeys(classes, 6),
                            "test": dict.fromkeys(classes, 3)}, size=(32, 32))
    return root


@pytest.fixture(scope="module")
def env(images):
    """Data cache and protocol shared by this process and the task processes."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(data.ENV_CACHE, str(images.parent / "cache"))
        mp.setitem(scales.SCALES, "quick", PROTOCOL)
        yield f"folder:{images}"


def family_configs(data_spec: str) -> tuple[registry.Family, list, list[Config]]:
    family = registry.get_family("dxp")
    runs = registry.select_runs(family, list(RUNS))
    return family, runs, sweep.configs_for(family, runs, "quick", data_spec, seed=0)


def table(family, runs, family_dir: Path) -> str:
    report.write_results(family, runs, family_dir, "quick")
    return (family_dir / "summary.csv").read_text()


def sweep_argv(data_spec: str, out: Path, *extra: str) -> list[str]:
    """The sweep command of this module's two tiny runs."""
    return ["--name", "dxp", "--runs", ",".join(RUNS), "--scale", "quick", "--data", data_spec,
            "--out", str(out), "--no-progress", *extra]


@pytest.fixture(scope="module")
def in_process(env, images) -> tuple[str, Path]:
    """What today's in-process sequential sweep writes for the same runs (TensorBoard on):
    its summary.csv and its family directory."""
    out = images.parent / "local"
    assert sweep.main(sweep_argv(env, out, "--parallel", "sequential", "--tensorboard")) == 0
    return (out / "dxp" / "summary.csv").read_text(), out / "dxp"


@pytest.fixture
def fast_polling(monkeypatch):
    monkeypatch.setattr(launch, "POLL_S", 0.2)  # tiny runs take seconds, not minutes


@pytest.mark.slow
def test_sweep_launcher_gives_the_in_process_table(env, tmp_path, in_process, capsys,
                                                    fast_polling):
    out = tmp_path / "array"
    assert sweep.main(sweep_argv(env, out, "--launcher", "local-submitit")) == 0
    text = capsys.readouterr().out
    assert "submitted job" in text and "2 task(s), 2 run(s)" in text
    assert "finished dxp3" in text and "finished dxp4" in text and "(2/2)" in text
    family_dir = out / "dxp"
    assert (family_dir / "summary.csv").read_text() == in_process[0]
    assert (family_dir / "dxp3" / "accuracy.png").exists()  # the run's pictures, as locally
    assert (family_dir / launch.JOBS_SUBDIR).is_dir()  # submitit's logs, beside the runs
    assert not (family_dir / "dxp3" / "tensorboard").exists()  # TensorBoard is off
    # --collect builds the same table from disk alone.
    (family_dir / "summary.csv").unlink()
    assert sweep.main(sweep_argv(env, out, "--collect")) == 0
    assert (family_dir / "summary.csv").read_text() == in_process[0]
    assert "submitted" not in capsys.readouterr().out
    # Submitting again queues nothing: every run is finished.
    assert sweep.main(sweep_argv(env, out, "--launcher", "local-submitit")) == 0
    assert "all 2 run(s)" in capsys.readouterr().out


class KillOnce(launch.GroupTask):
    """Trains `victim` one epoch, then is killed (SIGKILL: no Python clean-up at all), as a
    task whose node is lost would be (the first time)."""

    def __init__(self, victim: str, marker: Path) -> None:
        super().__init__(train_options={"plots": False, "tensorboard": True})
        self.victim, self.marker = victim, marker

    def train(self, todo, family_dir):
        if todo[0].name == self.victim and not self.marker.exists():
            self.marker.touch()
            train(todo, family_dir, progress=False, stop_after_epochs=1, **self.train_options)
            os.kill(os.getpid(), signal.SIGKILL)
        super().train(todo, family_dir)


@pytest.mark.slow
def test_killed_task_resumes_when_the_sweep_is_submitted_again(env, tmp_path, in_process,
                                                                capsys, fast_polling,
                                                                monkeypatch):
    # submitit waits this long for a result file a killed task never writes (for slow
    # shared file systems; its own tests set it to 0 too).
    monkeypatch.setattr(submitit.core.core.Job, "_results_timeout_s", 0)
    family, runs, configs = family_configs(env)
    family_dir = tmp_path / "array" / "dxp"
    task = KillOnce("dxp4", tmp_path / "killed")
    jobs = launch.submit([[c] for c in configs], family_dir, launch.Resources(gpus_per_task=0),
                         cluster="local", task=task)
    with pytest.raises(storage.RunError) as info:
        launch.wait(jobs, configs, family_dir)
    message = str(info.value)
    assert "1 of 2 task(s) failed" in message and "\n" not in message
    assert "UncompletedJobError: has not produced any output (state:" in message
    assert storage.run_state(family_dir / "dxp4") == "partial"
    assert len(storage.read_jsonl(family_dir / "dxp4" / "metrics.jsonl")) == 1
    assert not (family_dir / "dxp3" / "accuracy.png").exists()  # train_options reach train
    done = (family_dir / "dxp3" / "summary.json").stat().st_mtime_ns

    capsys.readouterr()
    assert sweep.main(sweep_argv(env, tmp_path / "array", "--launcher", "local-submitit",
                                 "--tensorboard")) == 0
    text = capsys.readouterr().out
    assert "1 task(s), 1 run(s)" in text and "finished dxp4 (1/1)" in text  # dxp3 skipped
    assert (family_dir / "dxp3" / "summary.json").stat().st_mtime_ns == done
    rows = storage.read_jsonl(family_dir / "dxp4" / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2]
    # Resumed from its epoch-1 checkpoint, dxp4 ends where an uninterrupted run does.
    assert (family_dir / "summary.csv").read_text() == in_process[0]
    # Its events (one epoch per process) show each epoch once, as metrics.jsonl does.
    scalars = read_tensorboard_scalars(family_dir / "dxp4" / "tensorboard")
    assert [step for step, _ in scalars["accuracy/test"]] == [1, 2]
    assert [v for _, v in scalars["loss/train"]] == pytest.approx(
        [r["train_loss"] for r in rows], rel=1e-6)


@pytest.mark.slow
def test_tensorboard_events_of_the_trainer_equal_its_records(in_process):
    """The trainer writes one event per epoch; read back, they are metrics.jsonl's numbers."""
    family_dir = in_process[1]
    for name in RUNS:
        rows = storage.read_jsonl(family_dir / name / "metrics.jsonl")
        scalars = read_tensorboard_scalars(family_dir / name / "tensorboard")
        want = [tb.epoch_scalars(r) for r in rows]
        assert set(scalars) == set(want[0])
        assert any(t.startswith("angular_update/") for t in scalars)  # per-layer numbers
        assert any(t.startswith("tensor_param/") for t in scalars)
        assert any(t.startswith("dead_units_") for t in scalars)
        assert {"loss/train", "accuracy/test", "lr"} <= set(scalars)
        for tag, events in scalars.items():
            assert [step for step, _ in events] == [r["epoch"] for r in rows], tag
            for (_, value), w in zip(events, want, strict=True):
                assert value == pytest.approx(w[tag], rel=1e-6, nan_ok=True), tag
        assert len(list((family_dir / name / "tensorboard").glob("*.hparams"))) == 1
    assert len(list((family_dir / "tensorboard").glob("*.hparams"))) == 1  # the experiment


def _fake_slurm(bin_dir: Path, captured: Path) -> None:
    """`srun` (probed by submitit), an `sbatch` that keeps the script and queues nothing, and
    an `sinfo` with one partition without GPUs (the default --gpus-per-task asks it)."""
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(
        f"#!/bin/sh\ncp \"$1\" {captured}\necho 'Submitted batch job 4242'\n")
    (bin_dir / "sinfo").write_text("#!/bin/sh\necho 'debug* (null)'\n")
    for name in ("srun", "sbatch", "sinfo"):
        (bin_dir / name).chmod(0o755)


def test_slurm_array_parameters_without_submitting(env, tmp_path, monkeypatch, capsys):
    resources = launch.Resources(partition="gpu", gpus_per_task=4, cpus_per_task=16,
                                 timeout_min=90, max_parallel=2, nodes=2)
    assert launch.executor_parameters(3, resources, "wdjax-dxp") == dict(
        name="wdjax-dxp", timeout_min=90, nodes=2, tasks_per_node=1, gpus_per_node=4,
        cpus_per_task=16, slurm_partition="gpu", slurm_array_parallelism=2)
    assert launch.executor_parameters(1, launch.Resources(max_parallel=8), "x")[
        "slurm_array_parallelism"] == 1

    captured = tmp_path / "sbatch.sh"
    _fake_slurm(tmp_path / "bin", captured)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    _, _, configs = family_configs(env)
    extra = Config(**{**configs[0].to_dict(), "name": "dxp3b"})
    groups = [[configs[0]], [configs[1]], [extra]]
    jobs = launch.submit(groups, tmp_path / "out" / "dxp", resources, cluster="slurm")
    assert [j.job_id for j in jobs] == ["4242_0", "4242_1", "4242_2"]
    assert "submitted job 4242: 3 task(s), 3 run(s)" in capsys.readouterr().out
    script = captured.read_text().splitlines()
    for line in ("#SBATCH --array=0-2%2", "#SBATCH --partition=gpu", "#SBATCH --nodes=2",
                 "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --cpus-per-task=16", "#SBATCH --time=90",
                 "#SBATCH --job-name=wdjax-dxp"):
        assert line in script, line
    # Each task's pickled call: a distributed GroupTask on its own group.
    submission = jobs[2].submission()
    assert isinstance(submission.function, launch.GroupTask)
    assert submission.function.distributed is True and submission.function.train_options == {}
    assert [c.name for c in submission.args[0]] == ["dxp3b"]
    assert submission.args[1] == str((tmp_path / "out" / "dxp").resolve())


def test_sweep_slurm_flags_build_the_array_without_submitting(env, tmp_path, monkeypatch,
                                                              capsys):
    captured = tmp_path / "sbatch.sh"
    _fake_slurm(tmp_path / "bin", captured)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    assert sweep.main(sweep_argv(
        env, out, "--launcher", "slurm", "--partition", "gpu", "--gpus-per-task", "2",
        "--cpus-per-task", "8", "--timeout-min", "30", "--max-parallel", "1", "--nodes", "1",
        "--no-wait")) == 0
    text = capsys.readouterr().out
    assert "submitted job 4242: 2 task(s), 2 run(s)" in text  # one task per run
    assert f"--scale quick --out {out} --runs dxp3,dxp4 --collect" in text  # for later
    assert not (out / "dxp" / "summary.csv").exists()
    script = captured.read_text().splitlines()
    for line in ("#SBATCH --array=0-1%1", "#SBATCH --partition=gpu", "#SBATCH --nodes=1",
                 "#SBATCH --gpus-per-node=2", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --time=30", "#SBATCH --job-name=wdjax-dxp"):
        assert line in script, line
    pickles = sorted((out / "dxp" / launch.JOBS_SUBDIR).rglob("*_submitted.pkl"))
    assert len(pickles) == 2
    submission = submitit.helpers.DelayedSubmission.load(pickles[0])
    assert submission.function.distributed is False  # one host per task
    assert submission.function.train_options == {"tensorboard": False}


def test_slurm_vmap_puts_runs_and_seeds_in_one_task(env, tmp_path, monkeypatch, capsys):
    captured = tmp_path / "sbatch.sh"
    _fake_slurm(tmp_path / "bin", captured)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    assert sweep.main(sweep_argv(env, out, "--launcher", "slurm", "--parallel", "vmap",
                                 "--seeds", "2", "--no-wait")) == 0
    assert "1 task(s), 4 run(s)" in capsys.readouterr().out
    assert "#SBATCH --job-name=wdjax-dxp" in captured.read_text().splitlines()
    pickle = next((out / "dxp" / launch.JOBS_SUBDIR).rglob("*_submitted.pkl"))
    group = submitit.helpers.DelayedSubmission.load(pickle).args[0]
    assert [str(c.run_path) for c in group] == ["dxp3/seed0", "dxp3/seed1", "dxp4/seed0",
                                                "dxp4/seed1"]


@pytest.mark.parametrize(("flags", "needle"), [
    (["--partition", "gpu"], "--partition applies to --launcher slurm only"),
    (["--nodes", "2"], "--nodes applies to --launcher slurm only"),
    (["--no-wait"], "--no-wait applies to --launcher slurm only"),
    (["--launcher", "slurm", "--distributed"], "--distributed and --coordinator apply to "
                                               "--launcher local; with --launcher slurm"),
])
def test_launcher_flags_are_checked_first(env, tmp_path, flags, needle):
    with pytest.raises(sweep.cli.UsageError, match=needle):
        sweep.main(sweep_argv(env, tmp_path, *flags))
    assert not tmp_path.joinpath("dxp").exists()


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("gpus_per_task", -1, "gpus_per_task must be an integer >= 0 or unset, got -1"),
    ("nodes", 0, "nodes must be an integer >= 1, got 0"),
    ("max_parallel", 1.5, "max_parallel must be an integer >= 1 or unset, got 1.5"),
    ("timeout_min", None, "timeout_min must be an integer >= 1, got None"),
    ("partition", " ", "partition must be a SLURM partition name or unset"),
])
def test_bad_resources_are_one_line(field, value, needle):
    with pytest.raises(ValueError, match=needle):
        launch.Resources(**{field: value}).validate()


def test_unknown_cluster_is_refused(env, tmp_path):
    _, _, configs = family_configs(env)
    with pytest.raises(ValueError, match="unknown cluster 'pbs'; valid: slurm, local"):
        launch.submit([configs], tmp_path / "dxp", launch.Resources(), cluster="pbs")
