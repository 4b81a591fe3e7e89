"""The four measured claims of `benchmarks.run`, one function per claim, each returning rows.

1. step vs PyTorch: the trainer's compiled step (scheme SGD, batch 128) against the identical
   PyTorch model, batch and optimizer (`benchmarks.step_speed`).
2. decay costs nothing: the library's `train_step` with each named scheme against the same
   `train_step` with a plain Optax optimizer (``optax.sgd``; ``optax.adam`` for Adam).
3. vmapped sweeps: K runs in one vmapped trainer step against K single-run steps in turn.
4. data never waits: an epoch of `wdjax.train` (its own ``seconds``, evaluation
   included) against the trainer's bare step repeated for as many batches.
"""

from __future__ import annotations

import contextlib
import io
import math
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import step_speed
from benchmarks.harness import (
    Setup,
    config,
    initial_states,
    place,
    programs,
    scheme_tx,
    step_bench,
    train_step_bench,
)
from benchmarks.report import Row, info_row, ratio_row
from benchmarks.timing import BATCH, Bench, cpu_ratios, interleave, prepare, round_ratios

QUICK_SCHEMES = ("SGD", "SGDL1A", "SGD_topo.ab", "LSSGD_var_dup2_last1_mult")
K_RUNS = 4


@dataclass(frozen=True)
class Scope:
    """How much to measure: `--quick` or the full run."""

    quick: bool
    repeats: int          # timed rounds per comparison (>= 5)
    warmup: int           # untimed calls before calibration
    sample_s: float       # target seconds of one timed sample
    torch_bases: tuple[int, ...]
    torch_layouts: tuple[bool, ...]  # channels_last flags tried for the peer
    scheme_base: int
    schemes: tuple[str, ...]
    vmap_bases: tuple[int, ...]
    epoch_base: int
    n_train: int          # images per epoch (and in the device-resident training set)
    n_test: int

    @classmethod
    def make(cls, quick: bool) -> Scope:
        from wdjax import schemes

        if quick:
            return cls(True, 5, 1, 0.25, (16,), (True,), 8, QUICK_SCHEMES, (8,), 8, 640, 128)
        # Train and test images in CIFAR-10's 5:1 proportion, so an epoch's evaluation
        # weighs what it weighs in a real epoch.
        return cls(False, 7, 2, 0.6, (32, 16), (False, True), 16, schemes.names(), (8, 16),
                   16, 2560, 512)

    def prepare(self, benches: list[Bench]) -> None:
        prepare(benches, self.warmup, self.sample_s)


def say(msg: str) -> None:
    print(msg, flush=True)


def torch_available() -> tuple[bool, str]:
    try:
        import torch
    except Exception as err:  # noqa: BLE001 - any import failure means "no peer"
        return False, f"{type(err).__name__}: {err}"
    return True, torch.__version__


def bench_torch(scope: Scope, setup: Setup, threads: int) -> list[Row]:
    ok, why = torch_available()
    if not ok:
        say(f"[1] step vs PyTorch: SKIPPED, torch is not importable ({why}); "
            "install the bench extra: pip install -e '.[bench]'")
        return []
    import torch

    rows = []
    for base in scope.torch_bases:
        say(f"[1] step vs PyTorch {torch.__version__}, base {base} ...")
        cfg = config(base)
        prog = programs(setup, cfg)
        jax_bench = step_bench(f"wdjax trainer step base={base}", prog.step,
                               [place(initial_states(prog, cfg, [{}]), setup.mesh)], setup)
        # Under load from other processes torch's OpenMP team of `threads` stalls on its
        # barriers and can drop below its one-thread speed: both counts compete as the peer.
        peers = [step_speed.bench_torch(base, cl, n) for cl in scope.torch_layouts
                 for n in sorted({1, threads})]
        benches = [*peers, jax_bench]
        scope.prepare(benches)
        interleave(benches, scope.repeats)
        best = max(peers, key=lambda b: b.result.median)
        # CPU ratio against one-thread torch only: a team of threads counts its OpenMP
        # spin-waiting as CPU time.
        single = [b for b in peers if b.name.endswith(" 1t")]
        rows.append(ratio_row("step vs PyTorch", f"jax step img/s, base {base}", jax_bench,
                              round_ratios(jax_bench, peers), ">= 1.00",
                              "/ best torch config per round; cpu: / torch 1 thread", peers,
                              cpu_ratios(jax_bench, single)))
        rows.append(info_row("step vs PyTorch", f"torch step img/s, base {base}", best,
                             "best median: " + best.name.split(maxsplit=2)[-1]))
    return rows


def bench_schemes(scope: Scope, setup: Setup) -> list[Row]:
    import optax

    base = scope.scheme_base
    say(f"[2] scheme step vs plain optax step, base {base}, {len(scope.schemes)} schemes ...")
    rows = []
    for name in scope.schemes:
        cfg = config(base, name)
        prog = programs(setup, cfg)
        lr = prog.schedule
        plain_name, plain_tx = (("optax.adam", optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8))
                                if name == "Adam" else ("optax.sgd", optax.sgd(lr)))
        tx = scheme_tx(prog, cfg)
        scheme = train_step_bench(f"{name} base={base}", prog, tx,
                                  place(initial_states(prog, cfg, [{}], tx), setup.mesh), setup)
        plain = train_step_bench(f"{plain_name} base={base}", prog, plain_tx,
                                 place(initial_states(prog, cfg, [{}], plain_tx), setup.mesh),
                                 setup)
        scope.prepare([scheme, plain])
        interleave([scheme, plain], scope.repeats)
        # Time per step: scheme / plain = plain img/s / scheme img/s.
        ratios = [1 / r for r in round_ratios(scheme, [plain])]
        cpu = [1 / r for r in cpu_ratios(scheme, [plain])]
        rows.append(ratio_row("decay costs nothing", f"{name} vs {plain_name}, base {base}",
                              scheme, ratios, "<= 1.03", "ratios: time per step", [plain], cpu))
        say(f"    {name:<30s} {statistics.median(ratios):.3f}")
    return rows


def bench_vmap(scope: Scope, setup: Setup) -> list[Row]:
    rows = []
    for base in scope.vmap_bases:
        say(f"[3] {K_RUNS} runs vmapped vs {K_RUNS} sequential steps, base {base} ...")
        cfg = config(base)
        hps = [dict(weight_decay=5e-4 * 2.0 ** -k) for k in range(K_RUNS)]
        one = programs(setup, cfg)
        many = programs(setup, cfg, K_RUNS)
        seq = step_bench(f"sequential {K_RUNS}x base={base}", one.step,
                         [place([s], setup.mesh) for s in initial_states(one, cfg, hps)], setup)
        vm = step_bench(f"vmapped K={K_RUNS} base={base}", many.step,
                        [place(initial_states(many, cfg, hps), many.mesh)], setup,
                        images_per_call=BATCH * K_RUNS)
        scope.prepare([vm, seq])
        interleave([vm, seq], scope.repeats)
        rows.append(ratio_row("vmapped sweeps", f"vmapped K={K_RUNS} model-img/s, base {base}",
                              vm, round_ratios(vm, [seq]), ">= 1.00",
                              f"/ {K_RUNS} sequential single-run steps", [seq]))
    return rows


class EpochBench(Bench):
    """One epoch of `wdjax.train` per sample, timed by the trainer itself.

    Each sample resumes the run for one more epoch (``stop_after_epochs=1``) and reads that
    epoch's ``seconds`` from ``metrics.jsonl``: steps, host syncs, evaluation and monitors,
    not the checkpoint written after it.
    """

    def __init__(self, name: str, cfg: Any, dataset: Any, out: Path) -> None:
        super().__init__(name, lambda: None, lambda _: None, images=len(dataset.train_labels))
        self.cfg, self.dataset, self.out = cfg, dataset, out

    def _epoch(self) -> float:
        from wdjax import storage
        from wdjax.training import train

        with contextlib.redirect_stdout(io.StringIO()):  # its per-epoch line
            train.train(self.cfg, self.out, dataset=self.dataset, progress=False, plots=False,
                        stop_after_epochs=1)
        return float(storage.read_jsonl(self.out / self.cfg.name / "metrics.jsonl")[-1]
                     ["seconds"])

    def warmup(self, n: int) -> None:
        for _ in range(n):
            self._epoch()

    def calibrate(self, target_s: float, max_steps: int = 50) -> int:
        return 1

    def sample(self, steps: int | None = None) -> float:
        ips = self.images / self._epoch()
        self.result.samples.append(ips)
        return ips


def bench_epoch(scope: Scope, setup: Setup) -> list[Row]:
    base = scope.epoch_base
    n, n_test = setup.n_train, len(setup.dataset.test_labels)
    say(f"[4] epoch throughput vs bare step, base {base}, {n} train / {n_test} test images ...")
    cfg = config(base, name="epoch")
    prog = programs(setup, cfg)
    pure = step_bench(f"bare step base={base}", prog.step,
                      [place(initial_states(prog, cfg, [{}]), setup.mesh)], setup)
    with tempfile.TemporaryDirectory(prefix="wdjax-bench-") as tmp:
        e2e = EpochBench(f"train.train epoch base={base}", cfg, setup.dataset, Path(tmp))
        scope.prepare([pure, e2e])
        pure.steps = setup.steps_per_epoch  # one epoch's worth of steps per sample
        interleave([e2e, pure], scope.repeats)
    n_eval = math.ceil(n_test / min(cfg.eval_batch_size, n_test))
    return [
        ratio_row("data never waits", f"train.train epoch img/s, base {base}", e2e,
                  round_ratios(e2e, [pure]), ">= 0.95",
                  f"incl. eval of {n_test} images ({n_eval} eval batch(es)) + monitors", [pure]),
        info_row("data never waits", f"bare step img/s, base {base}", pure,
                 "one batch row after another, no host sync"),
    ]


def vgg_conv_plans(base: int) -> list[tuple[str, str, str]]:
    """(layer, shape, plan) of every 3x3 conv of the VGG at `base` under the default impl."""
    from benchmarks.profile import vgg_layers
    from wdjax.cpu import ops, plan

    if ops.default_conv_impl() != "hybrid":
        return [("all", "", f"{ops.default_conv_impl()} for every pass")]
    return [(lay.name, f"{lay.h}x{lay.w} {lay.cin}->{lay.cout}",
             str(plan.conv_plan(lay.x_shape, lay.k_shape)))
            for lay in vgg_layers(base) if lay.ksize == 3]

