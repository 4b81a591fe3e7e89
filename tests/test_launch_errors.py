"""How `--launcher slurm` fails: fake ``sbatch``/``squeue``/``sinfo``/``scancel`` scripts on
PATH (no ``sacct``, as on a cluster without accounting) stand in for SLURM. A refused
submission, a task gone from the queue and a task that can never start each end as one
line, within a bounded time."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from experiments import cli, launch, registry, sweep
from wdjax import storage

submitit = pytest.importorskip("submitit", reason="submitit absent: pip install -e '.[dev]'")

GRES = "Invalid generic resource (gres) specification"
COUNT = "n=$(( $(/bin/cat {calls} 2>/dev/null || echo 0) + 1 )); echo $n > {calls}"
"""Shell lines counting a fake command's calls in file `calls` (in $n)."""


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    from conftest import write_image_tree

    root = tmp_path_factory.mktemp("launch-errors") / "images"
    classes = [f"class{c}" for c in range(10)]
    write_image_tree(root, {"train": dict.fromkeys(classes, 2),
                            "test": dict.fromkeys(classes, 1)}, size=(32, 32))
    return root


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    """A folder of fake SLURM commands, alone on PATH; `slurm(name, body)` writes one
    (a /bin/sh script). `srun` (probed by submitit) is there; ``sacct`` is not."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(launch, "POLL_S", 0.05)
    monkeypatch.setattr(launch, "QUEUE_POLL_S", 0.1)
    monkeypatch.setattr(submitit.core.core.Job, "_results_timeout_s", 0)

    def write(name: str, body: str) -> Path:
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
        return path

    write("srun", "exit 0")
    write("sinfo", "echo 'debug* (null)'")  # one partition, no GPUs
    write("sbatch", "echo 'Submitted batch job 4242'")
    return write


def sweep_argv(images: Path, out: Path, *extra: str) -> list[str]:
    return ["--name", "dxp", "--runs", "dxp1,dxp2", "--scale", "quick", "--train-subset", "20",
            "--stages", "1", "--epochs-per-stage", "1", "--data", f"folder:{images}",
            "--out", str(out), "--no-progress", "--launcher", "slurm", *extra]


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """`cli.run_main` on the sweep: (exit status, stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        cli.run_main(sweep.main, argv)
    return info.value.code, capsys.readouterr().err


def files(root: Path) -> set[Path]:
    return set(root.rglob("*")) if root.exists() else set()


@pytest.mark.parametrize(("refusal", "flag"), [
    (f"sbatch: error: {GRES}", "change --gpus-per-task (0 where the partition has no GPUs)"),
    ("sbatch: error: invalid partition specified: nope\n"
     "sbatch: error: Batch job submission failed: Invalid partition name specified",
     "change --partition (sinfo lists them)"),
])
def test_refused_submission_is_one_line_and_leaves_nothing(images, tmp_path, slurm, capsys,
                                                           refusal, flag):
    slurm("sbatch", f"/bin/cat >&2 <<'EOF'\n{refusal}\nEOF\nexit 1")
    out = tmp_path / "out"
    code, err = run_cli(sweep_argv(images, out, "--gpus-per-task", "1"), capsys)
    message = refusal.replace("sbatch: error: ", "").replace("\n", ". ")
    assert code == 2
    assert err.splitlines() == [f"wdjax: error: sbatch refused the array: {message}; {flag}"]
    assert not out.exists()  # nothing was there before: nothing is now
    # Beside an earlier job's files, only the refused submission's are removed.
    earlier = out / "dxp" / launch.JOBS_SUBDIR / "4000_0" / "4000_0_0_log.out"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("an earlier job's log\n")
    before = files(out)
    assert run_cli(sweep_argv(images, out, "--gpus-per-task", "1"), capsys)[0] == 2
    assert files(out) == before


def test_default_gpus_come_from_the_partition(slurm):
    slurm("sinfo", "printf 'cpu* (null)\\ngpu gpu:a100:4(S:0-1)\\ngpu gpu:a100:8\\n'")
    assert launch.default_gpus(None) == 0  # the default partition, marked *
    assert launch.default_gpus("gpu") == 1
    assert launch.default_gpus("nope") == 0  # sbatch names the unknown partition
    slurm("sinfo", "echo 'sinfo: error: Unable to contact slurm controller' >&2; exit 1")
    assert launch.default_gpus(None) == 1  # cannot tell: as before


def test_no_flag_asks_for_no_gpus_where_the_partition_has_none(images, tmp_path, slurm,
                                                                capsys):
    script = tmp_path / "sbatch.sh"
    slurm("sbatch", f"/bin/cat \"$1\" > {script}; echo 'Submitted batch job 4242'")
    assert sweep.main(sweep_argv(images, tmp_path / "out", "--no-wait")) == 0
    assert "#SBATCH --gpus-per-node=0" in script.read_text().splitlines()


def submitted(images: Path, family_dir: Path) -> tuple[list, list]:
    """Two jobs of a (fake) array, one task per run of dxp1, dxp2."""
    family = registry.get_family("dxp")
    runs = registry.select_runs(family, ["dxp1", "dxp2"])
    configs = sweep.configs_for(family, runs, "quick", f"folder:{images}", seed=0,
                                protocol={"train_subset": 20, "stages": 1,
                                          "epochs_per_stage": 1})
    return launch.submit([[c] for c in configs], family_dir, launch.Resources(),
                         cluster="slurm"), configs


def test_task_gone_from_the_queue_without_sacct_ends_the_wait(images, tmp_path, slurm,
                                                              caplog):
    # squeue fails twice (a busy controller), then lists task 0 running: task 1, which was
    # cancelled, is gone. sacct does not exist.
    slurm("squeue", COUNT.format(calls=tmp_path / "calls") + "\n[ $n -le 2 ] && exit 1\n"
                    "echo '4242_0|RUNNING|node1|None'")
    family_dir = tmp_path / "out" / "dxp"
    jobs, configs = submitted(images, family_dir)
    assert [j.job_id for j in jobs] == ["4242_0", "4242_1"]
    # Task 0 then ends with its result, as submitit writes it.
    result = jobs[0].paths.result_pickle
    result.parent.mkdir(parents=True, exist_ok=True)
    submitit.core.utils.cloudpickle_dump(("success", ["dxp1"]), result)
    start = time.time()
    with caplog.at_level(logging.WARNING, logger="submitit"), \
            pytest.raises(storage.RunError) as info:
        launch.wait(jobs, configs, family_dir)
    assert time.time() - start < 30
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("1 of 2 task(s) failed (job 4242_1: UncompletedJobError: has "
                              "not produced any output (state: NOT_IN_QUEUE)); logs in ")
    assert message.endswith("submit the sweep again to resume them")
    assert int((tmp_path / "calls").read_text()) >= 3  # the failed calls were retried
    bypassed = [r for r in caplog.records if "Bypassing sacct error" in r.getMessage()]
    assert len(bypassed) == 1  # the same warning, said once


def test_task_that_can_never_start_is_reported_in_one_line(images, tmp_path, slurm, capsys,
                                                           monkeypatch):
    monkeypatch.setattr(launch, "PENDING_GRACE_S", 0.3)
    cancelled = tmp_path / "scancel-args"
    slurm("squeue", "echo '4242_0|PENDING||PartitionConfig'; echo '4242_1|PENDING||Priority'")
    slurm("scancel", f"echo \"$@\" > {cancelled}")
    start = time.time()
    code, err = run_cli(sweep_argv(images, tmp_path / "out", "--cpus-per-task", "4"), capsys)
    assert time.time() - start < 60
    assert code == 2
    [line] = err.splitlines()
    assert line.startswith("wdjax: error: task 4242_0 pended ")
    assert line.endswith(" s for PartitionConfig, which waiting does not clear: job 4242 is "
                         "cancelled; change --cpus-per-task, --gpus-per-task or --nodes and "
                         "submit the sweep again")
    assert cancelled.read_text().split() == ["4242"]


def test_pending_for_a_reason_that_clears_is_waited_for(images, tmp_path, slurm,
                                                        monkeypatch):
    monkeypatch.setattr(launch, "PENDING_GRACE_S", 0.05)
    # Pending on busy nodes for three looks (past the grace), then gone without results.
    slurm("squeue", COUNT.format(calls=tmp_path / "calls") + "\n[ $n -le 3 ] || exit 0\n"
                    "echo '4242_0|PENDING||Resources'; echo '4242_1|PENDING||Priority'")
    family_dir = tmp_path / "out" / "dxp"
    jobs, configs = submitted(images, family_dir)
    with pytest.raises(storage.RunError, match=r"^2 of 2 task\(s\) failed \(job 4242_0: "):
        launch.wait(jobs, configs, family_dir)
    assert (tmp_path / "calls").read_text().strip() == "4"
