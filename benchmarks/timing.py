"""Timing on a shared machine: benches sampled in interleaved rounds, ratios per round.

Load from other processes hits every configuration of a round alike, so comparisons are
made within a round (`round_ratios`); process CPU time (`cpu_ratios`) is a second,
load-robust view of the work done.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

BATCH = 128


class Bench:
    """One configuration's step closure, warmed up, sized, then sampled in rounds.

    `images` is what one call of `step` processes (a vmapped step counts every run's batch);
    `steps` is how many calls one timed sample makes (None: sized by `calibrate`). `samples`
    holds img/s, `cpu_ms` this process's CPU time per call, all threads: other processes on
    the cores barely move it, but it also counts OpenMP spin-waiting on the torch side.
    """

    def __init__(self, name: str, step: Callable[[], object],
                 sync: Callable[[object], object], images: int = BATCH,
                 steps: int | None = None) -> None:
        self.name, self.step, self.sync, self.images = name, step, sync, images
        self.fixed_steps, self.steps = steps, steps or 1
        self.samples: list[float] = []
        self.cpu_ms: list[float] = []

    def warmup(self, n: int) -> None:
        for _ in range(n):
            self.sync(self.step())

    def calibrate(self, target_s: float, max_steps: int = 50) -> None:
        """Unless fixed, set `steps` so that one sample takes about `target_s`."""
        if self.fixed_steps:
            return
        t0 = time.perf_counter()
        self.sync(self.step())
        self.steps = max(1, min(max_steps, round(target_s / max(time.perf_counter() - t0,
                                                                1e-6))))

    def sample(self) -> None:
        c0, t0 = time.process_time(), time.perf_counter()
        out = None
        for _ in range(self.steps):
            out = self.step()
        self.sync(out)
        self.samples.append(self.images * self.steps / (time.perf_counter() - t0))
        self.cpu_ms.append((time.process_time() - c0) * 1e3 / self.steps)


def measure(benches: Sequence[Bench], rounds: int, warmup: int = 1,
            sample_s: float = 0.25) -> None:
    """Warm every bench up, size its samples to about `sample_s` seconds, then sample each
    once per round for `rounds` rounds in ABBA order: load from other processes hits every
    configuration alike, and reversing the order every other round cancels a steady drift."""
    for b in benches:
        b.warmup(warmup)
        b.calibrate(sample_s)
    for r in range(rounds):
        for b in benches if r % 2 == 0 else benches[::-1]:
            b.sample()


def round_ratios(num: Bench, den: Sequence[Bench]) -> list[float]:
    """Per round: `num`'s throughput over the best of `den`'s in the same round."""
    return [x / max(d.samples[r] for d in den) for r, x in enumerate(num.samples)]


def cpu_ratios(num: Bench, den: Sequence[Bench]) -> list[float]:
    """Per round: CPU time per image of the cheapest of `den` over `num`'s (higher: `num`
    does less work); it tracks the work ratio on a busy machine, but misses time spent
    waiting."""
    return [min(d.cpu_ms[r] / d.images for d in den) / (c / num.images)
            for r, c in enumerate(num.cpu_ms)]
