"""The wdjax performance claims, measured in one run: a table of ratios and a JSON record.

Four claims (`benchmarks.claims`), each a ratio of throughputs timed in interleaved (ABBA)
rounds, so that load from other processes on a shared machine hits both sides of a ratio
alike: the trainer's step vs the identical PyTorch model; each decay scheme vs plain Optax;
vmapped vs sequential runs; a `wdjax.train` epoch vs its bare steps. Every bench
calls the library's own compiled programs (`steps.programs`, `steps.train_step`,
`wdjax.train`). The PyTorch peer is, per round, the fastest of NCHW / channels_last at
1 thread and at ``--torch-threads`` (default: every core); the CPU time per step of both
sides (one-thread torch) gives a load-robust ratio of the work done.

Usage::

    python -m benchmarks.run                  # full run, < 10 minutes on 2 cores
    python -m benchmarks.run --quick          # about a minute: base 16/8, 4 schemes
    python -m benchmarks.run --profile        # also time every layer and pass vs PyTorch
    python -m benchmarks.run --json out.json  # default: bench-results.json in the cwd

The conv plan (each layer's method per pass) is printed before the step comparison.
Every timing is warmed up, synchronised with ``jax.block_until_ready`` and reported as the
median of its repeats with the min-max spread. Images come from ``$WDJAX_DATA`` when set,
else random uint8 images (speed does not depend on pixel values). Compiled programs are
kept in the persistent XLA cache (``$WDJAX_XLA_CACHE``, as for the CLIs; ``off`` disables
it); a run on a cold cache spends several minutes compiling on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import claims, profile
from benchmarks.harness import machine, make_dataset, make_setup
from benchmarks.report import Row, conv_plan_lines, header, table
from benchmarks.timing import BATCH

SECTIONS = ("torch", "schemes", "vmap", "epoch")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="about a minute: fewer rounds, base 16/8, four schemes")
    p.add_argument("--json", default="bench-results.json", metavar="PATH",
                   help="where to write the results (default: %(default)s)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--profile", action="store_true",
                   help="also time each layer's passes (conv, BN, ReLU/pool) vs PyTorch")
    p.add_argument("--torch-threads", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; allowed: {', '.join(SECTIONS)}")
    return args


def profile_section(scope: claims.Scope, with_torch: bool) -> list[dict[str, Any]]:
    """Per layer and per pass, wdjax vs PyTorch, at each base of the step comparison."""
    rows = []
    for base in scope.torch_bases:
        claims.say(f"[profile] per layer and pass, base {base} ...")
        got = profile.profile(profile.vgg_layers(base), 3 if scope.quick else 5, 0.1,
                              with_torch)
        print(profile.profile_table(got), flush=True)
        rows += [dict(base=base, **r) for r in got]
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    from wdjax.cpu import ops
    from wdjax.training import runtime

    args = parse(argv)
    # Before any JAX computation: it must precede the creation of XLA's worker threads.
    tuned = ops.tune_cpu_allocator()
    cache = runtime.enable_compilation_cache(min_compile_secs=0)
    t_start = time.perf_counter()
    scope = claims.Scope.make(args.quick)
    env = machine()
    dataset = make_dataset(scope.n_train, scope.n_test)
    env.update(tune_cpu_allocator=tuned, data=dataset.source, batch=BATCH)
    has_torch, torch_version = claims.torch_available()
    torch_version = torch_version if has_torch else "not importable"
    print(header(env, scope.quick, scope.repeats, cache, torch_version), flush=True)
    plans = {base: claims.vgg_conv_plans(base) for base in scope.torch_bases}
    for base, plan in plans.items():
        print(conv_plan_lines(base, plan), flush=True)

    setup = make_setup(dataset)
    runners = dict(torch=lambda: claims.bench_torch(scope, setup, args.torch_threads),
                   schemes=lambda: claims.bench_schemes(scope, setup),
                   vmap=lambda: claims.bench_vmap(scope, setup),
                   epoch=lambda: claims.bench_epoch(scope, setup))
    rows: list[Row] = []
    seconds = {}
    for s in args.sections:
        t0 = time.perf_counter()
        rows += runners[s]()
        seconds[s] = round(time.perf_counter() - t0, 1)
    layer_rows = []
    if args.profile:
        t0 = time.perf_counter()
        layer_rows = profile_section(scope, has_torch)
        seconds["profile"] = round(time.perf_counter() - t0, 1)
    env["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    total = time.perf_counter() - t_start
    report(rows, seconds, total, env)
    out = Path(args.json)
    out.write_text(json.dumps(dict(
        environment=env, torch=torch_version, scope=asdict(scope), seconds=seconds,
        total_seconds=round(total, 1), conv_plans={str(b): p for b, p in plans.items()},
        rows=[{**asdict(r), "ok": r.ok} for r in rows], profile=layer_rows),
        indent=1, default=str) + "\n")
    print(f"results: {out}")
    return 0


def report(rows: Sequence[Row], seconds: dict[str, float], total: float,
           env: dict[str, Any]) -> None:
    print()
    print(table(rows))
    failed = [r.name for r in rows if r.ok is False]
    print(f"\n{sum(r.ok is True for r in rows)} pass, {len(failed)} fail; "
          f"{total:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())}); "
          f"load avg at end {' '.join(f'{x:.1f}' for x in env['loadavg_end'] or [])}")


if __name__ == "__main__":
    sys.exit(main())
