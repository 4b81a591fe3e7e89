"""Timing on a shared machine: benches sampled in interleaved rounds, ratios per round.

Load from other processes hits every configuration of a round alike, so comparisons are
made within a round (`round_ratios`); process CPU time (`cpu_ratios`) is a second,
load-robust view of the work done.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

BATCH = 128


@dataclass
class Result:
    """Throughput samples (img/s) of one configuration, one per timed repeat."""

    name: str
    samples: list[float]
    cpu_ms: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> tuple[float, float]:
        """(min, max) of the samples."""
        return min(self.samples), max(self.samples)

    def line(self) -> str:
        lo, hi = self.spread
        return (f"{self.name:<30s} {self.median:7.1f} img/s (min {lo:7.1f}, max {hi:7.1f}) "
                f"cpu {min(self.cpu_ms):6.0f} ms/step")


class Bench:
    """One configuration's step closure, warmed up once and then timed in interleaved rounds.

    `images` is what one call of `step` processes (a vmapped sweep step counts every run's
    batch); `steps` is how many calls one timed sample makes (see `calibrate`).
    """

    def __init__(self, name: str, step: Callable[[], object],
                 sync: Callable[[object], None], images: int = BATCH) -> None:
        self.name, self.step, self.sync, self.images = name, step, sync, images
        self.steps = 1
        self.result = Result(name, [])

    def warmup(self, n: int) -> None:
        out = None
        for _ in range(n):
            out = self.step()
        self.sync(out)

    def calibrate(self, target_s: float, max_steps: int = 50) -> int:
        """Set `steps` so that one sample takes about `target_s` (one untimed call)."""
        t0 = time.perf_counter()
        self.sync(self.step())
        dt = time.perf_counter() - t0
        self.steps = max(1, min(max_steps, round(target_s / max(dt, 1e-6))))
        return self.steps

    def sample(self, steps: int | None = None) -> float:
        """Time `steps` steps; record and return img/s (and process CPU time per step).

        CPU time is this process's, all threads: a load-robust measure of work when other
        processes share the cores (it also counts OpenMP spin-waiting on the torch side).
        """
        steps = steps or self.steps
        c0, t0 = time.process_time(), time.perf_counter()
        out = None
        for _ in range(steps):
            out = self.step()
        self.sync(out)
        ips = self.images * steps / (time.perf_counter() - t0)
        self.result.samples.append(ips)
        self.result.cpu_ms.append((time.process_time() - c0) * 1e3 / steps)
        return ips


def prepare(benches: Sequence[Bench], warmup: int, sample_s: float) -> None:
    """Warm every bench up and size its samples to about `sample_s` seconds."""
    for b in benches:
        b.warmup(warmup)
        b.calibrate(sample_s)


def interleave(benches: Sequence[Bench], repeats: int) -> None:
    """Sample every bench once per round for `repeats` rounds, in ABBA order.

    Interleaving makes load from other processes on a shared machine hit all configurations
    alike, and reversing the order every other round cancels a steady drift; compare
    configurations within a round (`round_ratios`).
    """
    for r in range(repeats):
        for b in benches if r % 2 == 0 else benches[::-1]:
            b.sample()


def round_ratios(num: Bench, den: Sequence[Bench]) -> list[float]:
    """Per round: `num`'s throughput over the best of `den`'s in the same round."""
    return [x / max(d.result.samples[r] for d in den)
            for r, x in enumerate(num.result.samples)]


def cpu_ratios(num: Bench, den: Sequence[Bench]) -> list[float]:
    """Per round: CPU time per image of the cheapest of `den` over `num`'s (higher: `num`
    does less work). Process CPU time barely grows when other processes take the cores,
    unlike wall time, so this tracks the work ratio on a busy machine; but it also counts
    threads spinning idle, and it misses time spent waiting."""
    return [min(d.result.cpu_ms[r] / d.images for d in den) / (c / num.images)
            for r, c in enumerate(num.result.cpu_ms)]
