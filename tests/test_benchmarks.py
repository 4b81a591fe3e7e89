"""`python -m benchmarks.run --tiny` end to end, and the arithmetic and arguments of the bench."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import device_check, run

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_run_tiny_measures_every_claim_and_records_it(tmp_path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--tiny", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    env = res["environment"]
    # The CPU model and the conv plan it ran are printed before the timings.
    assert f"CPU {env['cpu_model']}" in proc.stdout
    for key, lines in res["conv_plans"].items():
        assert f"conv plan, {key}" in proc.stdout and lines and lines[0] in proc.stdout
    sections = {r["section"] for r in res["rows"]}
    expected = {"decay costs nothing", "vmapped sweeps", "data never waits"}
    if env["torch_device"] is not None:
        expected.add("step vs PyTorch")
        assert "step / PyTorch in this run: wdjax step, width 4" in proc.stdout
        if env["torch_device"] == "cpu":  # the tuned plan and the rules' plan, side by side
            steps = [r["name"] for r in res["rows"] if r["name"].startswith("wdjax step")]
            assert {n.split(", ", 1)[1] for n in steps} == {"width 4 plan tuned",
                                                            "width 4 plan by rules"}
            assert set(res["conv_plans"]) == {"width 4 hybrid plan tuned",
                                              "width 4 hybrid plan by rules"}
    assert sections == expected
    for r in res["rows"]:
        assert r["unit"] == "img/s" and r["value"] > 0
        assert all(x > 0 for xs in r["samples"].values() for x in xs)
        assert r["name"] in proc.stdout
        if r["goal"]:  # a comparison: one ratio per round, judged against its goal
            assert len(r["ratios"]) == res["scope"]["rounds"] and r["ratio"] > 0
            assert r["ok"] in (True, False)
    assert set(res["seconds"]) == {"torch", "schemes", "vmap", "epoch"}


def test_projection_uses_first_epoch_and_median_of_the_rest() -> None:
    # The first epoch carries the compilation; later epochs are the steady state.
    assert device_check.projected([10.0, 2.0, 3.0, 2.0], 200) == 10.0 + 199 * 2.0
    assert device_check.projected([4.0], 5) == 20.0


@pytest.mark.parametrize(("main", "argv", "needle"), [
    (device_check.main, ["--epochs", "0"], "--epochs must be >= 1"),
    (device_check.main, ["--skip", "lint"], "--skip: allowed tests, steps, projection"),
    (run.main, ["--sections", "torch,speed"], "--sections: allowed torch, schemes"),
    (run.main, ["--impls", "fft"], "--impls: allowed xla, im2col"),
    (run.main, ["--tiny", "--quick"], "not allowed with argument"),
])
def test_bad_arguments_are_one_line_errors(main, argv, needle, capsys, tmp_path) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--json", str(tmp_path / "out.json")])
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()
