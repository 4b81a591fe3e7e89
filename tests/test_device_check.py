"""`python -m benchmarks.device_check --tiny`: the accelerator check's every part, on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.device_check import PRECISIONS

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_tiny_device_check_runs_every_part_and_writes_one_json(tmp_path) -> None:
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.device_check", "--tiny",
                           "--json", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    # The marked tests are selected (collected only, in the smoke test).
    assert res["tests"]["returncode"] == 0 and res["tests"]["collected"] > 0
    assert f"{res['tests']['collected']} collected" in proc.stdout
    # torch sees the CPU JAX runs on: the step against it in each precision.
    rows = [r for r in res["steps"] if r["goal"]]
    assert [r["name"] for r in rows] == [f"wdjax step, width 4 {p}" for p in PRECISIONS]
    assert all(r["value"] > 0 and r["ratio"] > 0 for r in rows)
    proj = res["projection"]
    assert [p["precision"] for p in proj] == list(PRECISIONS)
    for p in proj:
        assert p["width"] == 4 and p["epochs_measured"] == 2
        assert len(p["single"]["epoch_seconds"]) == 2 and p["family_vmap"]["runs"] > 1
        for key in ("single", "family_vmap", "family_sequential"):
            assert p[key]["projected_s"] > 0
        assert f"[projection {p['precision']}] width 4" in proc.stdout
