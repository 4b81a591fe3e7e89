"""Multi-device and multi-host training on CPU (forced host devices, loopback coordinator)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("parallel_worker.py")
ROOT = Path(__file__).resolve().parents[1]


def run_worker(*args, devices=4, timeout=240, background=False):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, str(WORKER), *map(str, args)]
    if background:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return result(r.stdout)


def result(stdout: str) -> dict:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.fixture(scope="module")
def four_devices(cifar_archive, tmp_path_factory):
    """Every 4-device scenario, run once in one worker process (see `four_devices` there)."""
    out = tmp_path_factory.mktemp("four-devices")
    return out, run_worker("four_devices", cifar_archive, out, timeout=480)


def test_data_parallel_step_equals_single_device(four_devices):
    r = four_devices[1]["step"]
    assert r["devices"] == 4
    assert r["loss_diff"] < 1e-5
    # Two steps of lr 0.1: the global-batch BN and loss are all-reduced in another order,
    # so kernels agree to float32 rounding amplified by two updates, not bit for bit.
    assert r["kernel_rel_err"] < 1e-4


def test_eval_set_not_divisible_by_devices_is_padded(four_devices):
    """510 test images on 4 devices: padded, masked batches; 1 vs 4 devices after one step."""
    r = four_devices[1]["eval510"]
    one, four = r["1"], r["4"]
    assert one["test_total"] == four["test_total"] == 510
    assert four["train_loss"] == pytest.approx(one["train_loss"], rel=1e-3)
    assert four["test_loss"] == pytest.approx(one["test_loss"], rel=1e-3)
    # The epoch row's monitors are the (only) step's: ||p|| of the initial params and the
    # norm of the update it applied (checkpoint minus initial params), per kernel.
    assert r["monitor_err"] < 1e-4


def test_sharded_vmapped_sweep_equals_unsharded(four_devices):
    r = four_devices[1]["sweep"]
    assert "runs=2 x data=2" in r["mesh"]
    # The first steps agree to float rounding. Later the runs drift apart: the vmapped,
    # data-split program sums in another order, and BatchNorm divides by the tiny variance
    # of near-dead channels at width 4, which amplifies rounding (see README, "Devices").
    for (tr1, te1, l1, w1), (tr4, te4, l4, w4) in zip(r["results"]["1"], r["results"]["4"],
                                                      strict=True):
        assert w1 == pytest.approx(w4, rel=1e-5)
        assert l1 == pytest.approx(l4, rel=0.03)
        assert abs(tr1 - tr4) <= 16 and abs(te1 - te4) <= 12


def test_sharded_checkpoint_restores_on_one_device(four_devices, cifar_archive):
    out, results = four_devices
    assert results["checkpoint"]["epochs"] == 1
    r = run_worker("checkpoint", cifar_archive, out / "checkpoint", "single", devices=1)
    assert r["epochs"] == 2
    # Epoch 1 ran on 4 devices, epoch 2 on one: same drift as the sweep test above.
    assert abs(r["resumed"] - r["ref"]) <= 12
    assert r["loss"][0] == pytest.approx(r["loss"][1], rel=0.03)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_multihost_matches_single_process(cifar_archive, tmp_path):
    port = _free_port()
    procs = [run_worker("multihost", cifar_archive, tmp_path / "mh", pid, port, devices=2,
                        background=True) for pid in (0, 1)]
    try:
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:  # never leave a worker behind
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    r0, r1 = (result(o) for o, _ in outs)
    assert r0["processes"] == 2 and r0["devices"] == 4
    assert r0["test"] == r1["test"]  # both processes computed the same global result
    # Process 0 wrote the finished run's records: both epochs' rows and the summary.
    assert (tmp_path / "mh" / "mh" / "summary.json").exists() and len(r0["losses"]) == 2
    single = run_worker("single", cifar_archive, tmp_path / "single", devices=1)
    assert abs(single["test"] - r0["test"]) <= 12
    assert r0["losses"] == pytest.approx(single["losses"], rel=0.03)
