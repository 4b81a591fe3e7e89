"""The measured claims of `benchmarks.run`, one function per claim, each returning rows (`row`).

1. ``torch``: the trainer's compiled step (scheme SGD, batch 128) against the identical
   PyTorch model, batch and optimiser (`harness.torch_bench`), at each width.
2. ``schemes``: `steps.train_step` with each scheme's optimiser (`steps.optimizer`, the
   trainer's) against the same step with plain ``optax.sgd`` (``optax.adam`` for Adam).
3. ``vmap``: K runs in one vmapped trainer step against K single-run steps in turn.
4. ``epoch``: an epoch of `wdjax.train` (its own ``seconds``, evaluation and monitors
   included) against the trainer's bare step repeated for as many batches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.harness import Setup, config, step_bench, train_step_bench
from benchmarks.timing import Bench, cpu_ratios, measure, round_ratios


@dataclasses.dataclass(frozen=True)
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
        # Train and test images in CIFAR-10's 5:1 proportion, so an epoch's evaluation
        # weighs what it weighs in a real epoch.
        return cls(mode, 7, 2, 0.6, (32, 16, 8), (False, True), 16, schemes.names(), (8, 16),
                   4, 16, 2560, 512)

    def measure(self, benches: Sequence[Bench]) -> None:
        measure(benches, self.rounds, self.warmup, self.sample_s)


def row(section: str, name: str, bench: Bench, peers: Sequence[Bench] = (),
        ratios: list[float] | None = None, cpu: list[float] | None = None,
        goal: tuple[str, float] | None = None, note: str = "") -> dict[str, Any]:
    """One line of the table and the JSON: `bench`'s img/s and, against `peers`, the
    per-round ratio (default: its throughput over the best peer's; wall clock, which the
    `goal` (">=" or "<=", bound) judges) and the same ratio in CPU time."""
    if peers and ratios is None:
        ratios, cpu = round_ratios(bench, peers), cpu_ratios(bench, peers)
    ratio = statistics.median(ratios) if ratios else None
    ok = None if goal is None or ratio is None else (
        ratio >= goal[1] if goal[0] == ">=" else ratio <= goal[1])
    return dict(section=section, name=name, value=statistics.median(bench.samples),
                spread=span(bench.samples), unit="img/s", ratio=ratio, ratios=ratios or [],
                cpu_ratio=statistics.median(cpu) if cpu else None, cpu_ratios=cpu or [],
                goal=goal, ok=ok, note=note, samples={b.name: b.samples for b in (bench, *peers)},
                cpu_ms={b.name: b.cpu_ms for b in (bench, *peers)})


def span(xs: Sequence[float]) -> tuple[float, float]:
    return min(xs), max(xs)


def say(msg: str) -> None:
    print(msg, flush=True)


TUNING = {True: "plan tuned", False: "plan by rules", None: ""}  # the row names' words


def bench_torch(scope: Scope, setup: Setup, threads: int,
                impls: Sequence[str | None] = (None,), tunings: Sequence[bool | None] = (None,),
                **fields: Any) -> list[dict[str, Any]]:
    """The trainer's step (each conv `impl`, and on CPU each conv plan of `tunings`: tuned
    on this machine, by the rules, or None as ``$WDJAX_CONV_TUNE`` says; `fields` of its
    config, e.g. ``precision``) against the PyTorch peer on the same device, per width.
    On CPU the peer is, per round,
    the fastest layout at 1 thread and at `threads`: under load torch's OpenMP team stalls
    on its barriers and can fall below its one-thread speed."""
    device, version = harness.torch_device()
    if device is None:
        say(f"[torch] step vs PyTorch: SKIPPED, torch {version}; "
            "pip install -e '.[bench]' for the peer")
        return []
    bf16, tags = fields.get("precision") == "bf16", [str(v) for v in fields.values()]
    counts = sorted({1, threads}) if device == "cpu" else [None]
    rows = []
    for width in scope.torch_widths:
        say(f"[torch] step vs PyTorch {version} on {device}, width {width} {fields or ''}...")
        peers = [harness.torch_bench(width, cl, n, device, bf16) for cl in scope.torch_layouts
                 for n in counts]
        # Tuning picks among the CPU formulations: it matters to the hybrid plan only.
        variants = [(impl, t) for impl in impls
                    for t in (tunings if device == "cpu" and impl in (None, "hybrid") else [None])]
        ours = [step_bench(f"wdjax step width={width} {impl or 'default'} {TUNING[t]}", setup,
                           [config(width, conv_impl=impl, **fields)], tuned=t)
                for impl, t in variants]
        scope.measure([*peers, *ours])
        # The CPU ratio is against one-thread torch only: a team of threads counts its
        # OpenMP spin-waiting as CPU time.
        single = [b for b in peers if b.name.endswith(" 1t")] or peers
        for (impl, t), b in zip(variants, ours, strict=True):
            words = [f"wdjax step, width {width}", *filter(None, [impl, TUNING[t]]), *tags]
            rows.append(row("step vs PyTorch", " ".join(words),
                            b, peers, round_ratios(b, peers), cpu_ratios(b, single), (">=", 1.0),
                            "/ best torch config per round; cpu: / torch 1 thread"))
        best = max(peers, key=lambda b: statistics.median(b.samples))
        rows.append(row("step vs PyTorch", " ".join([f"torch step, width {width}", *tags]),
                        best, note=f"best median: {best.name}"))
    return rows


def bench_schemes(scope: Scope, setup: Setup) -> list[dict[str, Any]]:
    import optax

    width = scope.scheme_width
    say(f"[schemes] scheme step vs plain optax step, width {width}, {len(scope.schemes)} "
        "schemes ...")
    rows = []
    for name in scope.schemes:
        cfg = config(width, name)
        lr = harness.programs(setup, [cfg]).schedule
        plain_name, plain_tx = (("optax.adam", optax.adam(lr)) if name == "Adam"
                                else ("optax.sgd", optax.sgd(lr)))
        scheme = train_step_bench(f"{name} width={width}", setup, cfg)
        plain = train_step_bench(f"{plain_name} width={width}", setup, cfg, plain_tx)
        scope.measure([scheme, plain])
        # Time per step: scheme / plain = plain img/s / scheme img/s.
        rows.append(row("decay costs nothing", f"{name} vs {plain_name}, width {width}", scheme,
                        [plain], [1 / r for r in round_ratios(scheme, [plain])],
                        [1 / r for r in cpu_ratios(scheme, [plain])], ("<=", 1.03),
                        "ratios: time per step; the scheme's chain includes the trainer's "
                        "equilibrium monitor"))
        say(f"    {name:<30s} {rows[-1]['ratio']:.3f}")
    return rows


def bench_vmap(scope: Scope, setup: Setup) -> list[dict[str, Any]]:
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
    """One epoch of `wdjax.train` per sample, timed by the trainer itself: each sample
    resumes the run for one more epoch and reads that epoch's ``seconds`` from
    ``metrics.jsonl`` (steps, host syncs, evaluation and monitors; not the checkpoint)."""

    def __init__(self, name: str, cfg: Any, dataset: Any, out: Path) -> None:
        super().__init__(name, self._epoch, lambda _: None, len(dataset.train_labels), 1)
        self.cfg, self.dataset, self.out = cfg, dataset, out

    def _epoch(self) -> float:
        from wdjax import storage
        from wdjax.training import train

        with contextlib.redirect_stdout(io.StringIO()):  # its per-epoch line
            train.train(self.cfg, self.out, dataset=self.dataset, progress=False, plots=False,
                        stop_after_epochs=1)
        return float(storage.read_jsonl(self.out / self.cfg.name / "metrics.jsonl")[-1]
                     ["seconds"])

    def sample(self) -> None:
        self.samples.append(self.images / self._epoch())


def bench_epoch(scope: Scope, setup: Setup) -> list[dict[str, Any]]:
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
