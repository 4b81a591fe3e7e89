"""The SLURM launcher (`experiments.launch`), run through submitit's LocalExecutor: the same
job functions as on a cluster, as local processes. No SLURM is needed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from experiments import launch, registry, report, scales, sweep
from wdjax import data, records
from wdjax.train import Config, train

submitit = pytest.importorskip("submitit", reason="submitit absent: pip install -e '.[dev]'")
import cloudpickle  # noqa: E402  (a submitit dependency)

# The job pickles carry this module's task classes by value: a task process cannot import
# a test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

# The VGG needs 32x32 inputs; 60 training images make an epoch two steps.
PROTOCOL = dict(base=2, batch_size=32, stages=2, epochs_per_stage=1, train_subset=None,
                test_subset=None)
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


@pytest.fixture(scope="module")
def in_process_table(env, images) -> str:
    """What today's in-process sequential sweep writes for the same runs."""
    family, runs, configs = family_configs(env)
    dataset = data.load(env)
    family_dir = images.parent / "local" / "dxp"
    for c in configs:
        train([c], family_dir, dataset=dataset, progress=False)
    return table(family, runs, family_dir)


def test_local_array_gives_the_in_process_table(env, tmp_path, in_process_table, capsys):
    family, runs, configs = family_configs(env)
    family_dir = tmp_path / "array" / "dxp"
    jobs = launch.submit([[c] for c in configs], family_dir, launch.Resources(gpus_per_task=0),
                         cluster="local")
    assert len(jobs) == 2
    assert launch.wait(jobs, configs, family_dir, poll_s=0.2) == []
    out = capsys.readouterr().out
    assert "submitted job" in out and "2 task(s), 2 run(s)" in out
    assert "finished dxp3" in out and "finished dxp4" in out and "(2/2)" in out
    assert table(family, runs, family_dir) == in_process_table
    assert (family_dir / "dxp3" / "accuracy.png").exists()  # the run's pictures, as locally
    assert (family_dir / launch.JOBS_SUBDIR).is_dir()  # submitit's logs, beside the runs
    # Submitting again queues nothing: every run is finished.
    assert launch.submit([[c] for c in configs], family_dir, launch.Resources()) == []


class CrashOnce(launch.GroupTask):
    """Trains `victim` one epoch, then dies as a preempted task would (the first time)."""

    def __init__(self, victim: str, marker: Path) -> None:
        super().__init__(train_options={"plots": False})
        self.victim, self.marker = victim, marker

    def train(self, todo, family_dir):
        if todo[0].name == self.victim and not self.marker.exists():
            self.marker.touch()
            train(todo, family_dir, progress=False, stop_after_epochs=1, **self.train_options)
            raise RuntimeError("simulated preemption after epoch 1")
        super().train(todo, family_dir)


def test_failed_task_resumes_when_submitted_again(env, tmp_path, in_process_table, capsys):
    family, runs, configs = family_configs(env)
    family_dir = tmp_path / "array" / "dxp"
    task = CrashOnce("dxp4", tmp_path / "crashed")
    groups = [[c] for c in configs]
    jobs = launch.submit(groups, family_dir, launch.Resources(gpus_per_task=0), cluster="local",
                         task=task)
    with pytest.raises(records.RunError) as info:
        launch.wait(jobs, configs, family_dir, poll_s=0.2)
    message = str(info.value)
    assert "1 of 2 task(s) failed" in message and "\n" not in message
    assert "RuntimeError: simulated preemption after epoch 1" in message
    assert records.run_state(family_dir / "dxp4") == "partial"
    assert len(records.read_jsonl(family_dir / "dxp4" / "metrics.jsonl")) == 1
    done = (family_dir / "dxp3" / "summary.json").stat().st_mtime_ns

    capsys.readouterr()
    jobs = launch.submit(groups, family_dir, launch.Resources(gpus_per_task=0), cluster="local",
                         task=task)
    assert "1 task(s), 1 run(s)" in capsys.readouterr().out  # dxp3 is skipped
    assert launch.wait(jobs, configs, family_dir, poll_s=0.2) == []
    assert (family_dir / "dxp3" / "summary.json").stat().st_mtime_ns == done
    assert not (family_dir / "dxp4" / "accuracy.png").exists()  # train_options reach train
    epochs = [r["epoch"] for r in records.read_jsonl(family_dir / "dxp4" / "metrics.jsonl")]
    assert epochs == [1, 2]
    # Resumed from its epoch-1 checkpoint, dxp4 ends where an uninterrupted run does.
    assert table(family, runs, family_dir) == in_process_table


def _fake_slurm(bin_dir: Path, captured: Path) -> None:
    """`srun` (probed by submitit) and an `sbatch` that keeps the script and queues nothing."""
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(
        f"#!/bin/sh\ncp \"$1\" {captured}\necho 'Submitted batch job 4242'\n")
    for name in ("srun", "sbatch"):
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


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("gpus_per_task", -1, "gpus_per_task must be an integer >= 0, got -1"),
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
