"""The benchmark's record: one `Row` per measurement, printed as a table and kept as JSON."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.timing import Bench, cpu_ratios


@dataclass
class Row:
    """One line of the table: a measured value and the ratio that the goal applies to."""

    section: str
    name: str
    value: float
    unit: str
    spread: tuple[float, float]
    ratio: float | None = None
    ratio_spread: tuple[float, float] | None = None
    goal: str | None = None  # ">= 1.00" or "<= 1.03"; judged on the wall-clock `ratio`
    note: str = ""
    cpu_ratio: float | None = None  # the same ratio in process CPU time (load-robust)
    cpu_ratio_spread: tuple[float, float] | None = None
    samples: dict[str, list[float]] = field(default_factory=dict)  # img/s; "ratio"
    cpu_ms: dict[str, list[float]] = field(default_factory=dict)  # process CPU per call

    @property
    def ok(self) -> bool | None:
        if self.goal is None or self.ratio is None:
            return None
        op, bound = self.goal.split()
        return self.ratio >= float(bound) if op == ">=" else self.ratio <= float(bound)


def ratio_row(section: str, name: str, bench: Bench, ratios: list[float], goal: str | None,
              note: str = "", peers: Sequence[Bench] = (), cpu: list[float] | None = None,
              ) -> Row:
    """A row judged on `ratios` (per round), with the CPU-time ratio against `peers`."""
    res = bench.result
    samples = {b.name: b.result.samples for b in (bench, *peers)}
    samples["ratio"] = ratios
    if cpu is None and res.cpu_ms and peers and all(p.result.cpu_ms for p in peers):
        cpu = cpu_ratios(bench, peers)
    if cpu:
        samples["cpu_ratio"] = cpu
    return Row(section, name, res.median, "img/s", res.spread, statistics.median(ratios),
               (min(ratios), max(ratios)), goal, note,
               cpu_ratio=statistics.median(cpu) if cpu else None,
               cpu_ratio_spread=(min(cpu), max(cpu)) if cpu else None, samples=samples,
               cpu_ms={b.name: b.result.cpu_ms for b in (bench, *peers) if b.result.cpu_ms})


def info_row(section: str, name: str, bench: Bench, note: str = "") -> Row:
    """A row that only reports a throughput."""
    res = bench.result
    return Row(section, name, res.median, "img/s", res.spread, note=note,
               samples={bench.name: res.samples}, cpu_ms={bench.name: res.cpu_ms})


def table(rows: Sequence[Row]) -> str:
    """The printed table: one row per measurement, grouped by claim."""
    w = max([len(r.name) for r in rows] + [11])
    head = (f"{'measurement':<{w}s} {'value':>9s} {'min-max':>19s} {'ratio':>6s} "
            f"{'ratio min-max':>13s} {'goal':>8s} {'result':>6s} {'cpu ratio':>9s}  note")
    lines = [head, "-" * len(head)]
    section = None
    for r in rows:
        if r.section != section:
            section = r.section
            lines.append(f"[{section}]")
        d = 3 if r.unit == "s" else 1
        spread = f"{r.spread[0]:.{d}f}-{r.spread[1]:.{d}f}"
        ratio = f"{r.ratio:6.3f}" if r.ratio is not None else ""
        rsp = f"{r.ratio_spread[0]:.3f}-{r.ratio_spread[1]:.3f}" if r.ratio_spread else ""
        verdict = {True: "PASS", False: "FAIL", None: ""}[r.ok]
        cpu = f"{r.cpu_ratio:.3f}" if r.cpu_ratio is not None else ""
        lines.append(f"{r.name:<{w}s} {r.value:9.{d}f} {spread:>19s} {ratio:>6s} {rsp:>13s} "
                     f"{r.goal or '':>8s} {verdict:>6s} {cpu:>9s}  {r.note}".rstrip())
    lines += ["", "ratio: wall-clock, median over interleaved rounds of the per-round ratio "
              "(min-max over rounds); the goal is judged on it.",
              "cpu ratio: the same comparison in process CPU time per image, which other "
              "processes on the machine barely move (the work ratio)."]
    return "\n".join(lines)


def header(env: dict[str, Any], quick: bool, repeats: int, cache: str | None,
           torch_version: str) -> str:
    """Machine, versions and settings: the lines above the table."""
    return "\n".join([
        f"wdjax benchmarks ({'quick' if quick else 'full'}) {env['date']}",
        f"machine: {env['platform']}, {env['cpu_model']}, os.cpu_count()={env['cpu_count']}, "
        f"load avg {' '.join(f'{x:.1f}' for x in env['loadavg_start'] or [])}",
        f"jax {env['jax']} (jaxlib {env['jaxlib']}) backend={env['backend']} "
        f"device={env['device_kind']} x{env['device_count']}; flax {env['flax']}, "
        f"optax {env['optax']}, numpy {env['numpy']}, torch {torch_version}, "
        f"python {env['python']}, wdjax {env['wdjax']}",
        f"conv impl {env['default_conv_impl']}; tune_cpu_allocator={env['tune_cpu_allocator']}; "
        f"XLA cache {cache or 'off'}; data {env['data']}; batch {env['batch']}; "
        f"{repeats} rounds per ratio (median, min-max)",
    ])


def conv_plan_lines(base: int, plans: Sequence[tuple[str, str, str]]) -> str:
    """The per-layer, per-pass conv plan of one model width, as printed before its timings."""
    lines = [f"conv plan, base {base} (batch 128): layer, input map and channels, methods"]
    lines += [f"  {name:<8s} {shape:<16s} {plan}" for name, shape, plan in plans]
    return "\n".join(lines)
