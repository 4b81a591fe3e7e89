"""How long the notebook's protocol takes on this machine: one run, and the dxp family.

Why: the issue "Fast on every machine" asks, on an accelerator, for the time of one full-size
epoch, the projected time of the notebook's 200-epoch run, and the vmapped dxp family
against its runs one after another. Device time is scarce (minutes), so this trains a few
epochs of each with `wdjax.train` and projects from the steady epochs; nothing else.

* single: one full-scale run (base 32, batch 128, 50 000 images), `--epochs` epochs;
  projected = first epoch (compilation included) + (total - 1) x median later epoch.
* family: the dxp runs (6 weight decays) at full scale, `--parallel vmap` and/or
  `sequential` (runs one after another: the single-run epoch time x 6 runs, same program).

Usage::

    python -m benchmarks.projection                      # 3 epochs each, vmap and sequential
    python -m benchmarks.projection --epochs 2 --json out.json
    python -m benchmarks.projection --tiny               # a CPU smoke test, seconds

Images come from ``$WDJAX_DATA`` when set, else random uint8 images (speed does not depend
on pixel values). Prints a table and writes JSON (default ``projection.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import machine, make_dataset


def _epoch_seconds(run_dir: Path) -> list[float]:
    from wdjax import storage

    return [float(r["seconds"]) for r in storage.read_jsonl(run_dir / "metrics.jsonl")]


def _projection(seconds: Sequence[float], total: int) -> float:
    """First epoch as measured, the rest at the median of the later (compiled) epochs."""
    steady = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
    return seconds[0] + (total - 1) * steady


def measure(epochs: int, tiny: bool, parallel: Sequence[str]) -> dict[str, Any]:
    from experiments import registry, scales, sweep
    from wdjax.training import train

    protocol = dict(scales.SCALES["full"])
    n_train, n_test = 50000, 10000
    if tiny:
        protocol.update(base=4, stages=2, epochs_per_stage=2)
        n_train, n_test = 512, 256
    total = protocol["stages"] * protocol["epochs_per_stage"]
    dataset = make_dataset(n_train, n_test)
    family = registry.get_family("dxp")
    configs = sweep.configs_for(family, family.runs, "full", None, 0)
    configs = [dataclasses.replace(c, **protocol).validate() for c in configs]
    out: dict[str, Any] = dict(machine=machine(), epochs_measured=epochs, total_epochs=total,
                               train_images=n_train, test_images=n_test,
                               base=protocol["base"], data=dataset.source)
    with tempfile.TemporaryDirectory(prefix="wdjax-proj-") as tmp, \
            contextlib.redirect_stdout(io.StringIO()):
        t = time.perf_counter()
        train.train(configs[3], Path(tmp) / "single", dataset=dataset, progress=False,
                    plots=False, stop_after_epochs=epochs)
        single = _epoch_seconds(Path(tmp) / "single" / configs[3].name)
        out["single"] = dict(epoch_seconds=single, wall_s=time.perf_counter() - t,
                             projected_s=_projection(single, total))
        if "vmap" in parallel:
            t = time.perf_counter()
            train.train(configs, Path(tmp) / "vmap", dataset=dataset, progress=False,
                        plots=False, stop_after_epochs=epochs)
            together = _epoch_seconds(Path(tmp) / "vmap" / configs[0].name)
            out["family_vmap"] = dict(runs=len(configs), epoch_seconds=together,
                                      wall_s=time.perf_counter() - t,
                                      projected_s=_projection(together, total))
        if "sequential" in parallel:
            # One compiled program serves every run, so the runs one after another are one
            # long run of runs x total epochs with the compilation paid once.
            out["family_sequential"] = dict(
                runs=len(configs), projected_s=_projection(single, len(configs) * total))
    return out


def table(res: dict[str, Any]) -> str:
    lines = [f"{res['machine'].get('jax_devices')}; base {res['base']}, "
             f"{res['train_images']} train / {res['test_images']} test images; "
             f"{res['epochs_measured']} epochs measured of {res['total_epochs']}"]
    s = res["single"]
    lines.append(f"one run: epochs {', '.join(f'{x:.2f}' for x in s['epoch_seconds'])} s; "
                 f"projected {res['total_epochs']} epochs: {s['projected_s'] / 60:.1f} min")
    for key in ("family_vmap", "family_sequential"):
        if key in res:
            f = res[key]
            lines.append(f"dxp ({f['runs']} runs) {key.split('_')[1]}: projected "
                         f"{f['projected_s'] / 60:.1f} min")
    if "family_vmap" in res and "family_sequential" in res:
        ratio = res["family_sequential"]["projected_s"] / res["family_vmap"]["projected_s"]
        lines.append(f"vmapped / sequential family throughput: {ratio:.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.projection", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3, help="epochs measured per run (>= 1)")
    p.add_argument("--parallel", default="vmap,sequential",
                   help="comma-separated subset of vmap,sequential")
    p.add_argument("--tiny", action="store_true", help="a tiny model and data: a smoke test")
    p.add_argument("--json", default="projection.json", metavar="PATH")
    args = p.parse_args(argv)
    parallel = [s.strip() for s in args.parallel.split(",") if s.strip()]
    if args.epochs < 1:
        p.error(f"--epochs must be >= 1, got {args.epochs}")
    if not set(parallel) <= {"vmap", "sequential"}:
        p.error(f"--parallel: allowed vmap, sequential; got {args.parallel!r}")
    from wdjax.training import runtime

    runtime.enable_compilation_cache(min_compile_secs=0)
    res = measure(args.epochs, args.tiny, parallel)
    print(table(res))
    Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
