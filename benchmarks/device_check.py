"""The one prepared check for an accelerator, under 8 minutes: the tests marked ``device``, the
step against PyTorch and 200-epoch projections of one run and the vmapped dxp family per
precision; one table, one JSON rewritten after each part. Usage: docs/performance.md#measuring."""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import harness, run

REPO = Path(__file__).resolve().parents[1]
PARTS = ("tests", "steps", "projection")
PRECISIONS = ("fp32", "bf16")


def run_tests(tiny: bool, timeout_s: float) -> dict[str, Any]:
    """``pytest -m device`` (``--tiny``: only collected) in a subprocess, ended before this one
    touches the device (JAX preallocates most of its memory): counts, failures and seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp, "junit.xml")
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "device", "-p", "no:cacheprovider",
               f"--junitxml={xml}", *(["--collect-only"] if tiny else []), "tests"]
        out: dict[str, Any] = dict(command=" ".join(cmd[1:]))
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return dict(out, timed_out=True, seconds=timeout_s)
        out.update(returncode=proc.returncode, seconds=round(time.perf_counter() - t0, 1),
                   tail=proc.stdout[-2000:])
        if tiny:  # collected node ids, one a line
            return dict(out, collected=sum("::" in ln for ln in proc.stdout.splitlines()))
        cases = ET.parse(xml).getroot().iter("testcase") if xml.exists() else []
        result = {f"{c.get('classname')}::{c.get('name')}": next(
            (e.tag for e in c if e.tag in ("failure", "error", "skipped")), "passed")
            for c in cases}
    counts = Counter(result.values())
    return dict(out, **{k: counts[k] for k in ("passed", "failure", "error", "skipped")},
                not_passed={k: v for k, v in result.items() if v != "passed"})


def projected(seconds: Sequence[float], total: int) -> float:
    """The first epoch as measured (it compiles), the rest at the median later epoch."""
    return seconds[0] + (total - 1) * statistics.median(seconds[1:] or seconds)


def projection(tiny: bool, epochs: int, precision: str) -> dict[str, Any]:
    """`epochs` of one full-scale run (``tiny``: width 4, 512 images, 4 epochs in all) and of the
    vmapped dxp family with `wdjax.train`: the notebook's 200 epochs `projected`, those of the
    family's runs in turn from the single run's (one compiled program serves them all)."""
    from experiments import registry, sweep

    family = registry.get_family("dxp")
    protocol = dict(width=4, stages=2, epochs_per_stage=2) if tiny else None
    configs = [dataclasses.replace(c, precision=precision) for c in
               sweep.configs_for(family, family.runs, "full", None, 0, protocol=protocol)]
    total = configs[0].epochs
    dataset = harness.make_dataset(*((512, 256) if tiny else (50_000, 10_000)))
    out: dict[str, Any] = dict(precision=precision, width=configs[0].width, total_epochs=total,
                               epochs_measured=epochs, train_images=len(dataset.train_labels),
                               test_images=len(dataset.test_labels), data=dataset.source)
    with tempfile.TemporaryDirectory(prefix="wdjax-proj-") as tmp:
        for key, group in (("single", [configs[len(configs) // 2]]), ("family_vmap", configs)):
            t0 = time.perf_counter()
            secs = harness.train_seconds(group, Path(tmp, key), dataset, epochs)
            out[key] = dict(runs=len(group), epoch_seconds=secs, projected_s=projected(
                secs, total), wall_s=round(time.perf_counter() - t0, 1))
    out["family_sequential"] = dict(runs=len(configs), projected_s=projected(
        out["single"]["epoch_seconds"], len(configs) * total))
    return out


def report(res: dict[str, Any]) -> str:
    """The table: device, tests, step against PyTorch, projections."""
    lines = [f"device check: {res['machine']['jax_devices']}, CPU {res['machine']['cpu_model']}"]
    t = res.get("tests")
    if t:
        lines.append(f"[tests] {t['command']}: " + (
            "TIMED OUT" if t.get("timed_out") else f"{t['collected']} collected" if res["tiny"]
            else f"{t['passed']} passed, {t['failure']} failed, {t['error']} errors, "
                 f"{t['skipped']} skipped") + f" in {t['seconds']:.0f} s")
        lines += [f"  {what}: {name}" for name, what in t.get("not_passed", {}).items()]
    if res.get("steps"):
        lines.append(run.table(res["steps"]))
    for p in res.get("projection", []):
        s, total = p["single"], p["total_epochs"]
        lines += [f"[projection {p['precision']}] width {p['width']}, {p['train_images']} "
                  f"train / {p['test_images']} test images, {p['epochs_measured']} of {total} "
                  "epochs measured",
                  f"  one run: epochs {', '.join(f'{x:.1f}' for x in s['epoch_seconds'])} s; "
                  f"{total} epochs projected {s['projected_s'] / 60:.1f} min"]
        lines += [f"  dxp, {p[k]['runs']} runs, {how}: projected {p[k]['projected_s'] / 60:.1f} min"
                  for k, how in (("family_vmap", "vmapped"), ("family_sequential", "in turn"))]
        speedup = p["family_sequential"]["projected_s"] / p["family_vmap"]["projected_s"]
        lines.append(f"  vmapped family / runs in turn, throughput: {speedup:.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.device_check", description=__doc__)
    p.add_argument("--tiny", action="store_true", help="tiny sizes: a CPU smoke test")
    p.add_argument("--epochs", type=int, default=2, help="epochs measured per run (>= 1)")
    p.add_argument("--skip", default="", help=f"comma-separated parts of {','.join(PARTS)}")
    p.add_argument("--tests-timeout", type=float, default=240, metavar="S")
    p.add_argument("--json", default="device-check.json", metavar="PATH")
    args = p.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    if args.epochs < 1:
        p.error(f"--epochs must be >= 1, got {args.epochs}")
    if not skip <= set(PARTS):
        p.error(f"--skip: allowed {', '.join(PARTS)}; got {sorted(skip)}")
    res: dict[str, Any] = dict(tiny=args.tiny, seconds={})
    t0 = time.perf_counter()

    def save(part: str | None = None) -> None:
        if part:  # the seconds since the last part
            res["seconds"][part] = round(time.perf_counter() - t0 - sum(res["seconds"].values()), 1)
        Path(args.json).write_text(json.dumps(res, indent=1, default=str) + "\n")

    if "tests" not in skip:  # before this process touches the device
        run.say(f"[tests] pytest -m device{' --collect-only' if args.tiny else ''} ...")
        res["tests"] = run_tests(args.tiny, args.tests_timeout)
        save("tests")
    res["machine"] = harness.start()
    if "steps" not in skip:
        scope = dataclasses.replace(run.Scope.make("tiny" if args.tiny else "quick"),
                                    torch_widths=(4,) if args.tiny else (32,),
                                    torch_layouts=(True,) if args.tiny else (False, True))
        setup = harness.make_setup(harness.make_dataset(scope.n_train, scope.n_test))
        res["steps"] = []
        for precision in PRECISIONS:
            res["steps"] += run.bench_torch(scope, setup, 1, precision=precision)
            save(f"steps {precision}")
    if "projection" not in skip:
        res["projection"] = []
        for precision in PRECISIONS:
            run.say(f"[projection] {precision}: one run and the dxp family, "
                    f"{args.epochs} epochs each ...")
            res["projection"].append(projection(args.tiny, args.epochs, precision))
            save(f"projection {precision}")
    print("\n" + report(res))
    save()
    print(f"seconds: {res['seconds']}\nresults: {args.json}")
    t = res.get("tests")
    return int(bool(t) and (t.get("timed_out") or t["returncode"] != 0))


if __name__ == "__main__":
    raise SystemExit(main())
