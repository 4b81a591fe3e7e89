"""`--launcher slurm` against a real one-node SLURM cluster on localhost (`.ci/slurm-up`:
Debian's slurm-wlm and munge, loopback only, no accounting), started by this module and
stopped by the pids it recorded. Skips, with the reason, where no cluster can be had (not
root, no packages); anywhere else a cluster that does not start is a failure."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from experiments import launch, sweep
from wdjax import storage

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
submitit = pytest.importorskip("submitit", reason="submitit absent: pip install -e '.[dev]'")

CI = Path(__file__).resolve().parents[1] / ".ci"
CANNOT = 77  # slurm-up's exit status where no cluster can be had here
RUNS = "dxp1,dxp2"
TINY = ("--train-subset", "256", "--stages", "1", "--epochs-per-stage", "1")
# The second sweep is long enough that the cancelled task cannot finish in its KillWait.
LONGER = ("--train-subset", "256", "--stages", "2", "--epochs-per-stage", "2")


def _free_port_pair() -> int:
    """A loopback port whose successor is free too (slurmctld's and slurmd's)."""
    for _ in range(100):
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two consecutive free loopback ports")


def _queue() -> list[str]:
    out = subprocess.run(["squeue", "--noheader", "--format=%i"], capture_output=True,
                         text=True, check=True).stdout
    return out.split()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """SLURM_CONF of a fresh one-node cluster, its daemons stopped (by pid) afterwards."""
    where = tmp_path_factory.mktemp("slurm")
    env = dict(os.environ, WDJAX_SLURM_PORT=str(_free_port_pair()))
    up = subprocess.run([CI / "slurm-up", where], capture_output=True, text=True, env=env,
                        timeout=900)
    reason = (up.stderr.strip().splitlines() or [f"exit status {up.returncode}"])[-1]
    if up.returncode == CANNOT:
        pytest.skip(f"no SLURM cluster here: {reason}")
    assert up.returncode == 0, reason
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SLURM_CONF", str(where / "slurm.conf"))
            yield where
            subprocess.run(["scancel", f"--user={os.getuid()}"], check=False)
            deadline = time.time() + 30
            while _queue() and time.time() < deadline:
                time.sleep(0.2)
    finally:
        subprocess.run([CI / "slurm-down", where], check=True, timeout=60)
        assert not (where / "pids").exists()


def argv(data_spec: str, out: Path, protocol: tuple[str, ...], *extra: str) -> list[str]:
    return ["--name", "dxp", "--runs", RUNS, "--scale", "quick", *protocol, "--data",
            data_spec, "--out", str(out), "--no-progress", *extra]


def test_sweep_on_a_real_slurm_cluster(cluster, cifar_archive, tmp_path, capsys,
                                       monkeypatch):
    monkeypatch.setattr(launch, "POLL_S", 0.2)
    monkeypatch.setattr(launch, "QUEUE_POLL_S", 2.0)
    monkeypatch.setattr(submitit.core.core.Job, "_results_timeout_s", 2)
    data_spec = f"folder:{cifar_archive}"

    # 1. The table of a job array equals the in-process one.
    assert sweep.main(argv(data_spec, tmp_path / "here", TINY)) == 0
    assert sweep.main(argv(data_spec, tmp_path / "slurm", TINY, "--launcher", "slurm")) == 0
    text = capsys.readouterr().out
    assert "2 task(s), 2 run(s)" in text and "(2/2)" in text
    here = (tmp_path / "here" / "dxp" / "summary.csv").read_text()
    there = (tmp_path / "slurm" / "dxp" / "summary.csv").read_text()
    assert there == here
    script = next((tmp_path / "slurm" / "dxp" / launch.JOBS_SUBDIR).rglob("*_submission.sh"))
    assert "#SBATCH --gpus-per-node=0" in script.read_text().splitlines()  # sinfo: no GPUs

    # 2. A cancelled task ends the wait with the failed-task line; submitted again, it
    # resumes from its last checkpoint.
    out = tmp_path / "resume"
    run_dir = out / "dxp" / "dxp2"
    ended: list[BaseException | int] = []

    def first_submission() -> None:
        try:
            ended.append(sweep.main(argv(data_spec, out, LONGER, "--launcher", "slurm")))
        except BaseException as err:  # handed to the test's thread
            ended.append(err)

    waiting = threading.Thread(target=first_submission)
    waiting.start()
    deadline = time.time() + 300
    while not (run_dir / "checkpoints" / "1").is_dir():
        assert time.time() < deadline and waiting.is_alive(), "dxp2 wrote no checkpoint"
        time.sleep(0.1)
    task = next((out / "dxp" / launch.JOBS_SUBDIR).glob("*_1")).name  # dxp2's
    subprocess.run(["scancel", task], check=True)
    cancelled = time.time()
    waiting.join(timeout=240)
    assert not waiting.is_alive(), "the wait did not end after the task was cancelled"
    assert time.time() - cancelled < 120
    assert isinstance(ended[0], storage.RunError), ended
    message = str(ended[0])
    assert "1 of 2 task(s) failed" in message and "submit the sweep again" in message
    assert "\n" not in message
    assert storage.run_state(run_dir) == "partial", "dxp2 finished before it was cancelled"
    resumed_at = max(int(p.name) for p in (run_dir / "checkpoints").iterdir()
                     if p.name.isdigit())
    assert 1 <= resumed_at < 4
    kept = (run_dir / "metrics.jsonl").read_text().splitlines()[:resumed_at]

    capsys.readouterr()
    assert sweep.main(argv(data_spec, out, LONGER, "--launcher", "slurm")) == 0
    text = capsys.readouterr().out
    assert "1 task(s), 1 run(s)" in text and "finished dxp2 (1/1)" in text  # dxp1 skipped
    # The epochs up to the checkpoint are not trained again (each row holds its seconds).
    assert (run_dir / "metrics.jsonl").read_text().splitlines()[:resumed_at] == kept
    rows = storage.read_jsonl(run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert storage.run_state(run_dir) == "finished"
