"""The wdjax performance claims, measured in one run: a table of ratios and a JSON record.
Each claim (``bench_*``) is a per-round ratio of throughputs, in wall clock and in CPU time per
image; usage and the claims: docs/performance.md#measuring."""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import operator
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import harness, profile
from benchmarks.harness import Bench, Setup, config, round_ratios, step_bench

SECTIONS = ("torch", "schemes", "vmap", "epoch")
# --conv-tune: the CPU conv plans the step vs PyTorch runs (`wdjax.cpu.tune`); True: tuned.
TUNINGS: dict[str, tuple[bool, ...]] = {"both": (True, False), "on": (True,), "off": (False,)}
TUNING = {True: "plan tuned", False: "plan by rules", None: ""}  # the row names' words
OPS = {">=": operator.ge, "<=": operator.le}  # a goal's comparison
say = functools.partial(print, flush=True)


@dataclass(frozen=True)
class Scope:
    """How much to measure (`make`: ``full``, ``quick`` or ``tiny``)."""

    mode: str
    rounds: int           # timed rounds per comparison
    warmup: int           # untimed calls before calibration
    sample_s: float       # target seconds of one timed sample
    torch_widths: tuple[int, ...]
    torch_layouts: tuple[bool, ...]  # channels_last flags tried for the peer
    scheme_width: int
    schemes: tuple[str, ...]
    vmap_widths: tuple[int, ...]
    k_runs: int
    epoch_width: int
    n_train: int          # images per epoch (the device-resident training set)
    n_test: int

    @classmethod
    def make(cls, mode: str) -> Scope:
        from wdjax import schemes

        few = ("SGD", "SGDL1A", "SGD_topo.ab", "LSSGD_var_dup2_last1_mult")
        if mode == "tiny":  # a smoke test: every code path, seconds of compute
            return cls(mode, 2, 1, 0.02, (4,), (True,), 4, few[1:2], (4,), 2, 4, 256, 128)
        if mode == "quick":
            return cls(mode, 5, 1, 0.25, (16, 8), (True,), 8, few, (8,), 4, 8, 640, 128)
        # Train and test images in CIFAR-10's 5:1, so evaluation weighs what it does in an epoch.
        return cls(mode, 7, 2, 0.6, (32, 16, 8), (False, True), 16, schemes.names(), (8, 16),
                   4, 16, 2560, 512)

    def measure(self, benches: Sequence[Bench]) -> None:
        harness.measure(benches, self.rounds, self.warmup, self.sample_s)


def row(section: str, name: str, bench: Bench, peers: Sequence[Bench] = (),
        ratios: list[float] | None = None, cpu: list[float] | None = None,
        goal: tuple[str, float] | None = None, note: str = "") -> dict[str, Any]:
    """One line of the table and the JSON: `bench`'s img/s and per-round `ratios` to `peers` in
    wall clock, judged by `goal` (">=" or "<=", bound), and `cpu` time (default: `round_ratios`)."""
    if peers and ratios is None:
        ratios, cpu = round_ratios(bench, peers), round_ratios(bench, peers, cpu=True)
    ratio = statistics.median(ratios) if ratios else None
    ok = None if goal is None or ratio is None else OPS[goal[0]](ratio, goal[1])
    return dict(section=section, name=name, value=statistics.median(bench.samples),
                spread=(min(bench.samples), max(bench.samples)), unit="img/s", ratio=ratio,
                ratios=ratios or [], cpu_ratio=statistics.median(cpu) if cpu else None,
                cpu_ratios=cpu or [], goal=goal, ok=ok, note=note,
                samples={b.name: b.samples for b in (bench, *peers)},
                cpu_ms={b.name: b.cpu_ms for b in (bench, *peers)})


def bench_torch(scope: Scope, setup: Setup, threads: int,
                impls: Sequence[str | None] = (None,), tunings: Sequence[bool | None] = (None,),
                **fields: Any) -> list[dict[str, Any]]:
    """The trainer's step (scheme SGD; per conv `impl`, on CPU per plan of `tunings`, None: as
    ``$WDJAX_CONV_TUNE`` says; config `fields`) against the identical PyTorch model, per width.
    On CPU the peer is, per round, its fastest layout at 1 thread and at `threads`."""
    device, version = harness.torch_device()
    if device is None:
        say(f"[torch] step vs PyTorch: SKIPPED, torch {version}; "
            "pip install -e '.[bench]' for the peer")
        return []
    bf16, tags = fields.get("precision") == "bf16", [str(v) for v in fields.values()]
    counts = sorted({1, threads}) if device == "cpu" else [None]
    # Tuning picks among the CPU formulations: it matters to the hybrid plan only.
    variants = [(impl, t) for impl in impls
                for t in (tunings if device == "cpu" and impl in (None, "hybrid") else [None])]
    rows = []
    for width in scope.torch_widths:
        say(f"[torch] step vs PyTorch {version} on {device}, width {width} {fields or ''}...")
        peers = [harness.torch_bench(width, cl, n, device, bf16) for cl in scope.torch_layouts
                 for n in counts]
        ours = [step_bench(f"wdjax step width={width} {impl or 'default'} {TUNING[t]}", setup,
                           [config(width, conv_impl=impl, **fields)], tuned=t)
                for impl, t in variants]
        scope.measure([*peers, *ours])
        # CPU time against one-thread torch only: a team counts its spin-waiting as CPU time.
        single = [b for b in peers if b.name.endswith(" 1t")] or peers
        for (impl, t), b in zip(variants, ours, strict=True):
            words = [f"wdjax step, width {width}", *filter(None, [impl, TUNING[t]]), *tags]
            rows.append(row("step vs PyTorch", " ".join(words), b, peers, round_ratios(b, peers),
                            round_ratios(b, single, cpu=True), (">=", 1.0),
                            "/ best torch config per round; cpu: / torch 1 thread"))
        best = max(peers, key=lambda b: statistics.median(b.samples))
        rows.append(row("step vs PyTorch", " ".join([f"torch step, width {width}", *tags]),
                        best, note=f"best median: {best.name}"))
    return rows


def bench_schemes(scope: Scope, setup: Setup) -> list[dict[str, Any]]:
    """`steps.train_step` with each scheme's optimiser (the trainer's) against the same step
    with plain ``optax.sgd`` (``optax.adam`` for Adam): time per step."""
    import optax

    width, rows = scope.scheme_width, []
    say(f"[schemes] scheme step vs plain optax step, width {width}, {len(scope.schemes)} "
        "schemes ...")
    for name in scope.schemes:
        cfg, plain = config(width, name), "adam" if name == "Adam" else "sgd"
        tx = getattr(optax, plain)(harness.programs(setup, [cfg]).schedule)
        scheme = harness.train_step_bench(f"{name} width={width}", setup, cfg)
        base = harness.train_step_bench(f"optax.{plain} width={width}", setup, cfg, tx)
        scope.measure([scheme, base])
        # Time per step: scheme / plain = plain img/s / scheme img/s.
        rows.append(row("decay costs nothing", f"{name} vs optax.{plain}, width {width}", scheme,
                        [base], round_ratios(base, [scheme]),
                        round_ratios(base, [scheme], cpu=True), ("<=", 1.03),
                        "ratios: time per step; the scheme's chain includes the trainer's "
                        "equilibrium monitor"))
        say(f"    {name:<30s} {rows[-1]['ratio']:.3f}")
    return rows


def bench_vmap(scope: Scope, setup: Setup) -> list[dict[str, Any]]:
    """K runs in one vmapped trainer step against K single-run steps in turn."""
    k, rows = scope.k_runs, []
    for width in scope.vmap_widths:
        say(f"[vmap] {k} runs vmapped vs {k} sequential steps, width {width} ...")
        cfgs = [config(width, weight_decay=5e-4 * 2.0 ** -i) for i in range(k)]
        vm = step_bench(f"vmapped K={k} width={width}", setup, cfgs)
        seq = step_bench(f"sequential {k}x width={width}", setup, cfgs, sequential=True)
        scope.measure([vm, seq])
        rows.append(row("vmapped sweeps", f"vmapped K={k} model-img/s, width {width}", vm, [seq],
                        goal=(">=", 1.0), note=f"/ {k} sequential single-run steps"))
    return rows


class EpochBench(Bench):
    """One epoch of `wdjax.train` per sample (resuming the run), timed by the trainer itself."""

    def __init__(self, name: str, cfg: Any, dataset: Any, out: Path) -> None:
        epoch = functools.partial(harness.train_seconds, [cfg], out, dataset, 1)
        super().__init__(name, epoch, lambda _: None, len(dataset.train_labels), 1)

    def sample(self) -> None:
        self.samples.append(self.images / self.step()[-1])


def bench_epoch(scope: Scope, setup: Setup) -> list[dict[str, Any]]:
    """An epoch of `wdjax.train` (evaluation and monitors included) against the trainer's
    bare step repeated for as many batches."""
    width, n_test = scope.epoch_width, len(setup.dataset.test_labels)
    say(f"[epoch] epoch throughput vs bare step, width {width}, {scope.n_train} train / "
        f"{n_test} test images ...")
    cfg = config(width, name="epoch")
    pure = step_bench(f"bare step width={width}", setup, [cfg], steps=setup.steps_per_epoch)
    with tempfile.TemporaryDirectory(prefix="wdjax-bench-") as tmp:
        e2e = EpochBench(f"train.train epoch width={width}", cfg, setup.dataset, Path(tmp))
        scope.measure([e2e, pure])
    return [row("data never waits", f"train.train epoch img/s, width {width}", e2e, [pure],
                round_ratios(e2e, [pure]), goal=(">=", 0.95),
                note=f"incl. eval of {n_test} images + monitors"),
            row("data never waits", f"bare step img/s, width {width}", pure,
                note="one batch row after another, no host sync")]


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
    args = parse(argv)
    env, t_start = harness.start(), time.perf_counter()
    scope = Scope.make("tiny" if args.tiny else "quick" if args.quick else "full")
    dataset = harness.make_dataset(scope.n_train, scope.n_test)
    env["data"] = dataset.source
    say(header(env, scope))
    tunings = TUNINGS[args.conv_tune]
    plans = {" ".join(filter(None, [f"width {b} {impl or env['default_conv_impl']}",
                                    TUNING[t]])): harness.conv_plans(b, impl, t)
             for b in scope.torch_widths for impl in args.impls for t in tunings}
    for key, lines in plans.items():
        say(f"conv plan, {key} (batch 128): layer, map and channels, method per pass\n  "
            + "\n  ".join(lines))
    setup = harness.make_setup(dataset)
    runners = dict(torch=functools.partial(bench_torch, threads=args.torch_threads,
                                           impls=args.impls, tunings=tunings),
                   schemes=bench_schemes, vmap=bench_vmap, epoch=bench_epoch,
                   profile=functools.partial(profile_rows, with_torch=env["torch_device"] == "cpu"))
    got, seconds = {}, {}
    for s in [*args.sections, *(["profile"] if args.profile else [])]:
        t0 = time.perf_counter()
        got[s] = runners[s](scope, setup)
        seconds[s] = round(time.perf_counter() - t0, 1)
    layer_rows = got.pop("profile", [])
    rows = [r for section in got.values() for r in section]
    env["loadavg_end"] = list(os.getloadavg())
    total = round(time.perf_counter() - t_start, 1)
    print("\n" + table(rows))
    steps = [f"{r['name']} {r['ratio']:.2f} (cpu {r['cpu_ratio']:.2f})"
             for r in rows if r["section"] == "step vs PyTorch" and r["ratios"]]
    if steps:
        print("step / PyTorch in this run: " + "; ".join(steps))
    print(f"{sum(r['ok'] is True for r in rows)} pass, {sum(r['ok'] is False for r in rows)} "
          f"fail; {total:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())}); "
          f"load avg at end {' '.join(f'{x:.1f}' for x in env['loadavg_end'])}")
    Path(args.json).write_text(json.dumps(dict(
        environment=env, scope=asdict(scope), seconds=seconds, total_seconds=total,
        conv_plans=plans, rows=rows, profile=layer_rows), indent=1, default=str) + "\n")
    print(f"results: {args.json}")
    return 0


def profile_rows(scope: Scope, _: Setup, with_torch: bool) -> list[dict[str, Any]]:
    """Per layer and pass, wdjax against PyTorch, at each width of the step comparison."""
    rows = []
    for width in scope.torch_widths:
        say(f"[profile] per layer and pass, width {width} ...")
        rows += [dict(width=width, **r) for r in profile.profile(
            harness.vgg_layers(width), 5 if scope.mode == "full" else 3, 0.1, with_torch)]
    return rows


def header(env: dict[str, Any], scope: Scope) -> str:
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
    """One line per measurement (`row`), grouped by claim."""
    w = max([len(r["name"]) for r in rows] + [11])
    head = (f"{'measurement':<{w}s} {'img/s':>9s} {'min-max':>15s} {'ratio':>6s} "
            f"{'ratio min-max':>13s} {'goal':>8s} {'result':>6s} {'cpu ratio':>9s}  note")
    lines = [head, "-" * len(head)]
    for section, group in itertools.groupby(rows, operator.itemgetter("section")):
        lines.append(f"[{section}]")
        for r in group:
            ratio = f"{r['ratio']:.3f}" if r["ratios"] else ""
            rsp = f"{min(r['ratios']):.3f}-{max(r['ratios']):.3f}" if r["ratios"] else ""
            cpu = f"{r['cpu_ratio']:.3f}" if r["cpu_ratios"] else ""
            goal = "{} {:.2f}".format(*r["goal"]) if r["goal"] else ""
            verdict = {True: "PASS", False: "FAIL", None: ""}[r["ok"]]
            spread = "{:.1f}-{:.1f}".format(*r["spread"])
            lines.append(f"{r['name']:<{w}s} {r['value']:9.1f} {spread:>15s} {ratio:>6s} "
                         f"{rsp:>13s} {goal:>8s} {verdict:>6s} {cpu:>9s}  {r['note']}".rstrip())
    return "\n".join([*lines, "", "ratio: wall clock, median of the per-round ratios of "
                      "interleaved rounds (min-max over rounds); the goal is judged on it.",
                      "cpu ratio: the same in process CPU time per image, which other "
                      "processes barely move (the work ratio)."])


if __name__ == "__main__":
    sys.exit(main())
