"""The wdjax performance claims, measured in one run: a table of ratios and a JSON record.

Each claim (`benchmarks.claims`) is a ratio of throughputs timed in interleaved (ABBA)
rounds, so that load from other processes hits both sides alike; the CPU time per image of
both sides gives a load-robust ratio of the work done. Every bench calls the library's own
compiled programs, optimiser and states (`wdjax.training.steps`, `wdjax.train`).

Usage::

    python -m benchmarks.run                  # full run: width 32/16/8, < 15 minutes on 2 cores
    python -m benchmarks.run --quick          # a few minutes: width 16/8, four schemes
    python -m benchmarks.run --tiny           # a smoke test of every section, seconds
    python -m benchmarks.run --profile        # also time every layer and pass vs PyTorch
    python -m benchmarks.run --impls hybrid,xla --sections torch --json out.json
    python -m benchmarks.run --conv-tune off  # the rules' plan only (default: tuned and rules)

The CPU model and the conv plan of every measured width are printed before the timings.
Images come from ``$WDJAX_DATA`` when set, else random uint8 images. Compiled programs are
kept in the persistent XLA cache (``$WDJAX_XLA_CACHE``; ``off`` disables it).
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

from benchmarks import claims, harness, profile
from benchmarks.claims import span

SECTIONS = ("torch", "schemes", "vmap", "epoch")
# --conv-tune: the CPU conv plans the step vs PyTorch runs (`wdjax.cpu.tune`); True: tuned.
TUNINGS: dict[str, tuple[bool, ...]] = {"both": (True, False), "on": (True,), "off": (False,)}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    from wdjax.cpu import ops

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="width 16/8, four schemes")
    mode.add_argument("--tiny", action="store_true", help="tiny widths and data, few steps")
    p.add_argument("--json", default="bench-results.json", metavar="PATH")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help="comma-separated subset of %(default)s")
    p.add_argument("--impls", default="", help="comma-separated conv impls for the step vs "
                   f"PyTorch ({', '.join(ops.CONV_IMPLS)}); default: the platform's")
    p.add_argument("--conv-tune", choices=tuple(TUNINGS), default="both",
                   help="CPU conv plans of the step vs PyTorch: tuned on this machine, by the "
                        "rules, or both side by side (default)")
    p.add_argument("--profile", action="store_true",
                   help="also time each layer's passes (conv, BN, ReLU/pool) vs PyTorch")
    p.add_argument("--torch-threads", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    args.sections = [s for s in args.sections.split(",") if s]
    args.impls = [s for s in args.impls.split(",") if s] or [None]
    if not set(args.sections) <= set(SECTIONS):
        p.error(f"--sections: allowed {', '.join(SECTIONS)}; got {args.sections}")
    if not set(args.impls) <= {None, *ops.CONV_IMPLS}:
        p.error(f"--impls: allowed {', '.join(ops.CONV_IMPLS)}; got {args.impls}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from wdjax.cpu import ops
    from wdjax.training import runtime

    args = parse(argv)
    # Before any JAX computation: it must precede the creation of XLA's worker threads.
    tuned = ops.tune_cpu_allocator()
    cache = runtime.enable_compilation_cache(min_compile_secs=0)
    t_start = time.perf_counter()
    scope = claims.Scope.make("tiny" if args.tiny else "quick" if args.quick else "full")
    dataset = harness.make_dataset(scope.n_train, scope.n_test)
    torch_device, torch_version = harness.torch_device()
    env = dict(harness.machine(), tune_cpu_allocator=tuned, data=dataset.source,
               xla_cache=cache, torch=torch_version, torch_device=torch_device)
    print(header(env, scope), flush=True)
    tunings = TUNINGS[args.conv_tune]
    plans = {" ".join(filter(None, [f"width {b} {impl or env['default_conv_impl']}",
                                    claims.TUNING[t]])): harness.conv_plans(b, impl, t)
             for b in scope.torch_widths for impl in args.impls for t in tunings}
    for key, lines in plans.items():
        print(f"conv plan, {key} (batch 128): layer, map and channels, method per pass\n  "
              + "\n  ".join(lines), flush=True)

    setup = harness.make_setup(dataset)
    runners = dict(torch=lambda: claims.bench_torch(scope, setup, args.torch_threads,
                                                    args.impls, tunings),
                   schemes=lambda: claims.bench_schemes(scope, setup),
                   vmap=lambda: claims.bench_vmap(scope, setup),
                   epoch=lambda: claims.bench_epoch(scope, setup))
    rows: list[dict[str, Any]] = []
    seconds = {}
    for s in args.sections:
        t0 = time.perf_counter()
        rows += runners[s]()
        seconds[s] = round(time.perf_counter() - t0, 1)
    layer_rows = []
    if args.profile:
        t0 = time.perf_counter()
        layer_rows = profile_rows(scope, torch_device == "cpu")
        seconds["profile"] = round(time.perf_counter() - t0, 1)
    env["loadavg_end"] = list(os.getloadavg())
    total = round(time.perf_counter() - t_start, 1)
    print("\n" + table(rows))
    steps = [f"{r['name']} {r['ratio']:.2f} (cpu {r['cpu_ratio']:.2f})"
             for r in rows if r["section"] == "step vs PyTorch" and r["ratios"]]
    if steps:
        print("step / PyTorch in this run: " + "; ".join(steps))
    print(f"{sum(r['ok'] is True for r in rows)} pass, {sum(r['ok'] is False for r in rows)} "
          f"fail; "
          f"{total:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())}); "
          f"load avg at end {' '.join(f'{x:.1f}' for x in env['loadavg_end'])}")
    out = Path(args.json)
    out.write_text(json.dumps(dict(
        environment=env, scope=asdict(scope), seconds=seconds, total_seconds=total,
        conv_plans=plans, rows=rows, profile=layer_rows),
        indent=1, default=str) + "\n")
    print(f"results: {out}")
    return 0


def profile_rows(scope: claims.Scope, with_torch: bool) -> list[dict[str, Any]]:
    """Per layer and pass, wdjax against PyTorch, at each width of the step comparison."""
    rows = []
    for width in scope.torch_widths:
        claims.say(f"[profile] per layer and pass, width {width} ...")
        got = profile.profile(profile.vgg_layers(width), 5 if scope.mode == "full" else 3, 0.1,
                              with_torch)
        print(profile.profile_table(got), flush=True)
        rows += [dict(width=width, **r) for r in got]
    return rows


def header(env: dict[str, Any], scope: claims.Scope) -> str:
    """Machine, versions and settings: the lines above the table."""
    return "\n".join([
        f"wdjax benchmarks ({scope.mode}) {env['date']}",
        f"machine: {env['platform']}, CPU {env['cpu_model']}, "
        f"load avg {' '.join(f'{x:.1f}' for x in env['loadavg_start'])}",
        f"jax {env['jax']} (jaxlib {env['jaxlib']}) backend={env['backend']} "
        f"device={env['device_kind']} x{env['device_count']}; flax {env['flax']}, "
        f"optax {env['optax']}, torch {env['torch']}, python {env['python']}",
        f"conv impl {env['default_conv_impl']}, plan tuned on this machine: "
        f"{env['conv_tune']}; tune_cpu_allocator={env['tune_cpu_allocator']}; "
        f"XLA cache {env['xla_cache'] or 'off'}; data {env['data']}; batch 128; "
        f"{scope.rounds} rounds per ratio (median, min-max)"])


def table(rows: Sequence[dict[str, Any]]) -> str:
    """One line per measurement (`claims.row`), grouped by claim."""
    w = max([len(r["name"]) for r in rows] + [11])
    head = (f"{'measurement':<{w}s} {'img/s':>9s} {'min-max':>15s} {'ratio':>6s} "
            f"{'ratio min-max':>13s} {'goal':>8s} {'result':>6s} {'cpu ratio':>9s}  note")
    lines, section = [head, "-" * len(head)], None
    for r in rows:
        if r["section"] != section:
            section = r["section"]
            lines.append(f"[{section}]")
        ratio = f"{r['ratio']:.3f}" if r["ratios"] else ""
        rsp = "{:.3f}-{:.3f}".format(*span(r["ratios"])) if r["ratios"] else ""
        cpu = f"{r['cpu_ratio']:.3f}" if r["cpu_ratios"] else ""
        goal = "{} {:.2f}".format(*r["goal"]) if r["goal"] else ""
        verdict = {True: "PASS", False: "FAIL", None: ""}[r["ok"]]
        spread = "{:.1f}-{:.1f}".format(*r["spread"])
        lines.append(f"{r['name']:<{w}s} {r['value']:9.1f} {spread:>15s} {ratio:>6s} {rsp:>13s} "
                     f"{goal:>8s} {verdict:>6s} {cpu:>9s}  {r['note']}".rstrip())
    return "\n".join([*lines, "", "ratio: wall clock, median of the per-round ratios of "
                      "interleaved rounds (min-max over rounds); the goal is judged on it.",
                      "cpu ratio: the same in process CPU time per image, which other "
                      "processes barely move (the work ratio)."])


if __name__ == "__main__":
    sys.exit(main())
