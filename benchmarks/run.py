"""The wdjax performance claims, measured in one run: a table of ratios and a JSON record.

Four claims, each a ratio of throughputs timed in interleaved (ABBA) rounds, so that load
from other processes on a shared machine hits both sides of a ratio alike:

1. step vs PyTorch: the trainer's compiled step (``wdjax.train.programs(...).step``, scheme
   SGD, batch 128) against the identical PyTorch model, batch and optimizer
   (`benchmarks.step_speed`). The peer is, per round, the fastest torch configuration of
   NCHW / channels_last at 1 thread and at ``--torch-threads`` (default: every core): on a
   busy machine torch's OpenMP team stalls and one thread wins. The CPU time per step of
   both sides (one-thread torch) gives a load-robust ratio of the work done.
2. decay transforms cost nothing: the trainer's step with each named scheme against the
   same step with a plain Optax optimizer (``optax.sgd``; ``optax.adam`` for Adam).
3. vmapped sweeps: K=4 runs in one vmapped program against 4 single-run steps in turn.
4. data never waits: a training epoch (``wdjax.train.train``'s own ``seconds``, which
   include evaluation; and the trainer's step loop alone) against the bare step repeated on
   one batch.

Usage::

    python -m benchmarks.run                  # full run, < 10 minutes on 2 cores
    python -m benchmarks.run --quick          # about a minute: base 16/8, 4 schemes
    python -m benchmarks.run --json out.json  # default: bench-results.json in the cwd

Every timing is warmed up, synchronised with ``jax.block_until_ready`` and reported as the
median of its repeats with the min-max spread. Images come from ``$WDJAX_DATA`` when set,
else random uint8 images (speed does not depend on pixel values). Compiled programs are
kept in the persistent XLA cache (``$WDJAX_XLA_CACHE``, as for the CLIs; ``off`` disables
it); a run on a cold cache spends several minutes compiling on a 2-core machine.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import step_speed
from benchmarks.step_speed import BATCH, Bench, interleave, round_ratios
from wdjax import ops

QUICK_SCHEMES = ("SGD", "SGDL1A", "SGD_topo.ab", "LSSGD_var_dup2_last1_mult")
IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
K_RUNS = 4


@dataclass(frozen=True)
class Plan:
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
    def make(cls, quick: bool) -> Plan:
        from wdjax import schemes

        if quick:
            return cls(True, 5, 1, 0.25, (16,), (True,), 8, QUICK_SCHEMES, (8,), 8, 640, 128)
        # Train and test images in CIFAR-10's 5:1 proportion, so an epoch's evaluation
        # weighs what it weighs in a real epoch.
        return cls(False, 7, 2, 0.6, (32, 16), (False, True), 16, schemes.names(), (8, 16),
                   16, 2560, 512)


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


def cpu_ratios(num: Bench, den: Sequence[Bench]) -> list[float]:
    """Per round: CPU time per image of the cheapest of `den` over `num`'s (higher: `num`
    does less work). Process CPU time barely grows when other processes take the cores,
    unlike wall time, so this tracks the work ratio on a busy machine; but it also counts
    threads spinning idle, and it misses time spent waiting."""
    return [min(d.result.cpu_ms[r] / d.images for d in den) / (c / num.images)
            for r, c in enumerate(num.result.cpu_ms)]


def _ratio_row(section: str, name: str, bench: Bench, ratios: list[float], goal: str | None,
               note: str = "", peers: Sequence[Bench] = (), cpu: list[float] | None = None,
               ) -> Row:
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


def _info_row(section: str, name: str, bench: Bench, note: str = "") -> Row:
    res = bench.result
    return Row(section, name, res.median, "img/s", res.spread, note=note,
               samples={bench.name: res.samples}, cpu_ms={bench.name: res.cpu_ms})


def _say(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------- environment
def enable_compilation_cache() -> str | None:
    """The persistent XLA cache of the CLIs, also for sub-second compiles (model init).

    ``wdjax.models.init_variables`` runs op by op; each op's compile is short but there
    are hundreds, about 9 s per model width and process on 2 cores unless cached.
    """
    import jax

    where = os.environ.get("WDJAX_XLA_CACHE", os.path.expanduser("~/.cache/wdjax/xla"))
    if where == "off":
        return None
    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    return where


def machine() -> dict[str, Any]:
    """Date, machine, device and versions: what a reader needs to trust the numbers."""
    import jax
    import jaxlib

    from wdjax import train

    env = dict(train.environment())
    env.update(
        date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        platform=platform.platform(), machine=platform.machine(),
        processor=platform.processor() or "?", cpu_count=os.cpu_count(),
        cpu_affinity=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        cpu_model=_cpu_model(), jaxlib=jaxlib.__version__, numpy=np.__version__,
        loadavg_start=list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        jax_devices=[str(d) for d in jax.devices()], default_conv_impl=ops.default_conv_impl(),
    )
    return env


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


# ------------------------------------------------------------------------- shared setup
@dataclass
class Setup:
    """Device-resident training data and what every trainer step takes besides the state."""

    mesh: Any
    dataset: Any
    images: Any
    labels: Any
    idx: Any
    mask: Any
    key: Any

    @property
    def n_train(self) -> int:
        return len(self.dataset.train_labels)

    @property
    def steps_per_epoch(self) -> int:
        return self.idx.shape[0]


def make_dataset(n_train: int, n_test: int) -> Any:
    """``$WDJAX_DATA`` (a class-balanced subset) when set, else random uint8 images."""
    from wdjax import data

    if os.environ.get(data.ENV_DATA, "").strip():
        return data.load(None, train_subset=n_train, test_subset=n_test)
    rng = np.random.default_rng(0)
    return data.Dataset(
        train_images=rng.integers(0, 256, (n_train, *IMAGE_SHAPE), dtype=np.uint8),
        train_labels=rng.integers(0, NUM_CLASSES, n_train).astype(np.int32),
        test_images=rng.integers(0, 256, (n_test, *IMAGE_SHAPE), dtype=np.uint8),
        test_labels=rng.integers(0, NUM_CLASSES, n_test).astype(np.int32),
        classes=tuple(f"class{c}" for c in range(NUM_CLASSES)),
        source="random:uint8", checksum="random-seed-0",
    )


def make_setup(dataset: Any) -> Setup:
    """Place the data as `wdjax.train.train` does (replicated; rows of the epoch split)."""
    import jax

    from wdjax import batches, parallel

    mesh = parallel.make_mesh(1)
    rep = parallel.replicated(mesh)
    rows = parallel.rows_sharding(mesh)
    idx, mask = batches.epoch_batches(0, 0, len(dataset.train_labels), BATCH)
    return Setup(mesh, dataset, parallel.put(dataset.train_images, rep),
                 parallel.put(dataset.train_labels, rep), parallel.put(idx, rows),
                 parallel.put(mask, rows), parallel.put(np.asarray(jax.random.PRNGKey(0)), rep))


def config(base: int, optimizer: str = "SGD", name: str = "bench") -> Any:
    """One trainer config for every section, so compiled programs are shared between them."""
    from wdjax import train

    # A long stage keeps the benchmark run from finishing (and the lr constant).
    return train.Config(name=name, optimizer=optimizer, base=base, batch_size=BATCH,
                        stages=1, epochs_per_stage=1000, seed=0)


def programs(setup: Setup, cfg: Any, k_runs: int = 1) -> Any:
    """The trainer's compiled programs for `cfg`, on the mesh `wdjax.train.train` would use."""
    from wdjax import parallel, train

    mesh = setup.mesh if k_runs == 1 else parallel.make_mesh(k_runs)
    return train.programs(cfg, k_runs, setup.dataset.train_images.shape[1:],
                          setup.dataset.num_classes, setup.n_train, mesh)


def initial_states(prog: Any, cfg: Any, hparams: Sequence[dict[str, float]],
                   tx: Any = None) -> list[Any]:
    """Host-side initial TrainStates, one per run (as `wdjax.train.train` makes them)."""
    import jax
    import jax.numpy as jnp

    from wdjax import schemes, train

    out = []
    for hp in hparams:
        t = tx or schemes.build(cfg.optimizer, params=prog.params0, conf=prog.conf,
                                lr=prog.schedule, **{**cfg.hparams(), **hp})
        out.append(jax.device_get(train.TrainState(jnp.zeros([], jnp.int32), prog.params0,
                                                   prog.batch_stats0, t.init(prog.params0))))
    return out


def place(states: Sequence[Any], mesh: Any) -> Any:
    """One state on the mesh, or several stacked on a leading run axis (a vmapped sweep)."""
    import jax

    from wdjax import parallel

    stacked = len(states) > 1
    tree = jax.tree.map(lambda *xs: np.stack(xs), *states) if stacked else states[0]
    return parallel.put_tree(tree, parallel.run_sharding(mesh, stacked))


def step_bench(name: str, step: Callable, states: Sequence[Any], setup: Setup,
               images_per_call: int = BATCH) -> Bench:
    """Calls of a trainer-style `step` cycling through the epoch's batch rows.

    Several states are stepped one after another in each call (sequential runs).
    """
    import jax

    box = list(states)
    count = [0]

    def one() -> Any:
        i = count[0] % setup.steps_per_epoch
        count[0] += 1
        for r, s in enumerate(box):
            box[r], metrics = step(s, setup.images, setup.labels, setup.idx, setup.mask, 0, i,
                                   setup.key)
        return box, metrics

    return Bench(name, one, jax.block_until_ready, images=images_per_call * len(box))


def plain_step(prog: Any, tx: Any, mesh: Any) -> Callable:
    """The trainer's single-run step (as `wdjax.train.programs` builds it) with optimizer `tx`.

    `check_replica` verifies that, given the scheme's optimizer, this lowers to the very
    program of `wdjax.train.programs`, so the two differ in the optimizer alone.
    """
    import jax

    from wdjax import batches, parallel, train

    rep, split = parallel.replicated(mesh), parallel.batch_sharding(mesh)

    def step(state, images, labels, idx, mask, epoch, i, key):
        x = jax.lax.with_sharding_constraint(images[idx[i]], split)
        y, m = labels[idx[i]], jax.lax.with_sharding_constraint(mask[i], split)
        key = jax.random.fold_in(jax.random.fold_in(key, epoch), i)
        x = batches.augment(jax.random.fold_in(key, 0), x)
        return train.train_step(state, x, y, m, jax.random.fold_in(key, 1), model=prog.model,
                                tx=tx)

    return jax.jit(step, out_shardings=(rep, rep), donate_argnums=0)


def check_replica(prog: Any, cfg: Any, setup: Setup) -> bool:
    """Whether `plain_step` with `cfg`'s scheme lowers to the trainer's own step program."""
    from wdjax import schemes

    tx = schemes.build(cfg.optimizer, params=prog.params0, conf=prog.conf, lr=prog.schedule)
    state = place(initial_states(prog, cfg, [{}], tx), setup.mesh)
    args = (state, setup.images, setup.labels, setup.idx, setup.mask, 0, 0, setup.key)
    mine = plain_step(prog, tx, setup.mesh).lower(*args).as_text()
    return mine == prog.step.lower(*args).as_text()


def _prepare(benches: Sequence[Bench], plan: Plan) -> None:
    for b in benches:
        b.warmup(plan.warmup)
        b.calibrate(plan.sample_s)


# ------------------------------------------------------------------------- 1. vs PyTorch
def torch_available() -> tuple[bool, str]:
    try:
        import torch
    except Exception as err:  # noqa: BLE001 - any import failure means "no peer"
        return False, f"{type(err).__name__}: {err}"
    return True, torch.__version__


def bench_torch(plan: Plan, setup: Setup, threads: int) -> list[Row]:
    ok, why = torch_available()
    if not ok:
        _say(f"[1] step vs PyTorch: SKIPPED, torch is not importable ({why}); "
             "install the bench extra: pip install -e '.[bench]'")
        return []
    import torch

    rows = []
    for base in plan.torch_bases:
        _say(f"[1] step vs PyTorch {torch.__version__}, base {base} ...")
        cfg = config(base)
        prog = programs(setup, cfg)
        jax_bench = step_bench(f"wdjax trainer step base={base}", prog.step,
                               [place(initial_states(prog, cfg, [{}]), setup.mesh)], setup)
        # Under load from other processes torch's OpenMP team of `threads` stalls on its
        # barriers and can drop below its one-thread speed: both counts compete as the peer.
        peers = [step_speed.bench_torch(base, cl, n) for cl in plan.torch_layouts
                 for n in sorted({1, threads})]
        benches = [*peers, jax_bench]
        _prepare(benches, plan)
        interleave(benches, plan.repeats)
        best = max(peers, key=lambda b: b.result.median)
        # CPU ratio against one-thread torch only: a team of threads counts its OpenMP
        # spin-waiting as CPU time.
        single = [b for b in peers if b.name.endswith(" 1t")]
        rows.append(_ratio_row("step vs PyTorch", f"jax step img/s, base {base}", jax_bench,
                               round_ratios(jax_bench, peers), ">= 1.00",
                               "/ best torch config per round; cpu: / torch 1 thread", peers,
                               cpu_ratios(jax_bench, single)))
        rows.append(_info_row("step vs PyTorch", f"torch step img/s, base {base}", best,
                              "best median: " + best.name.split(maxsplit=2)[-1]))
    return rows


# ------------------------------------------------------------------------- 2. schemes
def bench_schemes(plan: Plan, setup: Setup) -> list[Row]:
    import optax

    base = plan.scheme_base
    _say(f"[2] scheme step vs plain optax step, base {base}, {len(plan.schemes)} schemes ...")
    sgd_cfg = config(base, "SGD")
    sgd_prog = programs(setup, sgd_cfg)
    same = check_replica(sgd_prog, sgd_cfg, setup)
    _say(f"    baseline step lowers to the trainer's own program: {same}")
    rows = []
    for name in plan.schemes:
        cfg = config(base, name)
        prog = programs(setup, cfg)
        lr = prog.schedule
        plain_name, tx = (("optax.adam", optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8))
                          if name == "Adam" else ("optax.sgd", optax.sgd(lr)))
        scheme = step_bench(f"{name} base={base}", prog.step,
                            [place(initial_states(prog, cfg, [{}]), setup.mesh)], setup)
        plain = step_bench(f"{plain_name} base={base}", plain_step(prog, tx, setup.mesh),
                           [place(initial_states(prog, cfg, [{}], tx), setup.mesh)], setup)
        _prepare([scheme, plain], plan)
        interleave([scheme, plain], plan.repeats)
        # Time per step: scheme / plain = plain img/s / scheme img/s.
        ratios = [1 / r for r in round_ratios(scheme, [plain])]
        cpu = [1 / r for r in cpu_ratios(scheme, [plain])]
        note = "" if same else "baseline replica differs from the trainer's step"
        rows.append(_ratio_row("decay costs nothing", f"{name} vs {plain_name}, base {base}",
                               scheme, ratios, "<= 1.03", note or "ratios: time per step",
                               [plain], cpu))
        _say(f"    {name:<30s} {statistics.median(ratios):.3f}")
    return rows


# ------------------------------------------------------------------------- 3. vmapped sweeps
def bench_vmap(plan: Plan, setup: Setup) -> list[Row]:
    rows = []
    for base in plan.vmap_bases:
        _say(f"[3] {K_RUNS} runs vmapped vs {K_RUNS} sequential steps, base {base} ...")
        cfg = config(base)
        hps = [dict(weight_decay=5e-4 * 2.0 ** -k) for k in range(K_RUNS)]
        one = programs(setup, cfg)
        many = programs(setup, cfg, K_RUNS)
        seq = step_bench(f"sequential {K_RUNS}x base={base}", one.step,
                         [place([s], setup.mesh) for s in initial_states(one, cfg, hps)], setup)
        vm = step_bench(f"vmapped K={K_RUNS} base={base}", many.step,
                        [place(initial_states(many, cfg, hps), many.mesh)], setup,
                        images_per_call=BATCH * K_RUNS)
        _prepare([vm, seq], plan)
        interleave([vm, seq], plan.repeats)
        rows.append(_ratio_row("vmapped sweeps", f"vmapped K={K_RUNS} model-img/s, base {base}",
                               vm, round_ratios(vm, [seq]), ">= 1.00",
                               f"/ {K_RUNS} sequential single-run steps", [seq]))
    return rows


# ------------------------------------------------------------------------- 4. data pipeline
class EpochBench(Bench):
    """One epoch of `wdjax.train.train` per sample, timed by the trainer itself.

    Each sample resumes the run for one more epoch (``stop_after_epochs=1``) and reads that
    epoch's ``seconds`` from ``metrics.jsonl``: steps, host syncs, evaluation and monitors,
    not the checkpoint written after it.
    """

    def __init__(self, name: str, cfg: Any, dataset: Any, out: Path) -> None:
        super().__init__(name, lambda: None, lambda _: None, images=len(dataset.train_labels))
        self.cfg, self.dataset, self.out = cfg, dataset, out

    def _epoch(self) -> float:
        from wdjax import records, train

        with contextlib.redirect_stdout(io.StringIO()):  # its per-epoch line
            train.train(self.cfg, self.out, dataset=self.dataset, progress=False, plots=False,
                        stop_after_epochs=1)
        return float(records.read_jsonl(self.out / self.cfg.name / "metrics.jsonl")[-1]
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


def train_loop_bench(name: str, prog: Any, state: Any, setup: Setup, log_every: int) -> Bench:
    """The step loop of `wdjax.train.train`, one epoch per call: a fresh shuffle put on the
    mesh, every step on device-resident data, one host sync per `log_every` steps."""
    import jax

    from wdjax import batches, parallel

    rows = parallel.rows_sharding(setup.mesh)
    box, epoch = [state], [0]

    def one() -> Any:
        epoch[0] += 1
        idx, mask = batches.epoch_batches(0, epoch[0], setup.n_train, BATCH)
        idx, mask = parallel.put(idx, rows), parallel.put(mask, rows)
        window = []
        for i in range(idx.shape[0]):
            box[0], m = prog.step(box[0], setup.images, setup.labels, idx, mask, epoch[0], i,
                                  setup.key)
            window.append(m)
            if len(window) == log_every or i == idx.shape[0] - 1:
                jax.device_get(window)
                window = []
        return box[0]

    return Bench(name, one, jax.block_until_ready, images=setup.n_train)


def bench_epoch(plan: Plan, setup: Setup) -> list[Row]:
    base = plan.epoch_base
    n, n_test = setup.n_train, len(setup.dataset.test_labels)
    _say(f"[4] epoch throughput vs bare step, base {base}, {n} train / {n_test} test images ...")
    cfg = config(base, name="epoch")
    prog = programs(setup, cfg)
    pure = step_bench(f"bare step base={base}", prog.step,
                      [place(initial_states(prog, cfg, [{}]), setup.mesh)], setup)
    loop = train_loop_bench(f"train loop base={base}", prog,
                            place(initial_states(prog, cfg, [{}]), setup.mesh), setup,
                            cfg.log_every)
    with tempfile.TemporaryDirectory(prefix="wdjax-bench-") as tmp:
        e2e = EpochBench(f"train.train epoch base={base}", cfg, setup.dataset, Path(tmp))
        _prepare([pure, loop, e2e], plan)
        pure.steps = setup.steps_per_epoch  # one epoch's worth of steps per sample
        interleave([e2e, loop, pure], plan.repeats)
    n_eval = math.ceil(n_test / min(cfg.eval_batch_size, n_test))
    # What an epoch adds to its steps (evaluation, monitors, records), per round.
    extra = [n / a - n / b for a, b in zip(e2e.result.samples, loop.result.samples,
                                           strict=True)]
    return [
        _ratio_row("data never waits", f"train.train epoch img/s, base {base}", e2e,
                   round_ratios(e2e, [pure]), ">= 0.95",
                   f"incl. eval of {n_test} images ({n_eval} eval batch(es)) + monitors",
                   [pure]),
        _ratio_row("data never waits", f"trainer step loop img/s, base {base}", loop,
                   round_ratios(loop, [pure]), ">= 0.95",
                   f"{setup.steps_per_epoch} steps, fresh shuffle, sync per {cfg.log_every}",
                   [pure]),
        _info_row("data never waits", f"bare step img/s, base {base}", pure,
                  "one batch repeated, no host sync"),
        Row("data never waits", f"epoch end cost s (e2e - loop), base {base}",
            statistics.median(extra), "s", (min(extra), max(extra)),
            note="eval + monitors + records per epoch", samples=dict(seconds=extra)),
    ]


# ------------------------------------------------------------------------- report
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


def header(env: dict[str, Any], plan: Plan, cache: str | None, torch_version: str) -> str:
    return "\n".join([
        f"wdjax benchmarks ({'quick' if plan.quick else 'full'}) {env['date']}",
        f"machine: {env['platform']}, {env['cpu_model']}, os.cpu_count()={env['cpu_count']}, "
        f"load avg {' '.join(f'{x:.1f}' for x in env['loadavg_start'] or [])}",
        f"jax {env['jax']} (jaxlib {env['jaxlib']}) backend={env['backend']} "
        f"device={env['device_kind']} x{env['device_count']}; flax {env['flax']}, "
        f"optax {env['optax']}, numpy {env['numpy']}, torch {torch_version}, "
        f"python {env['python']}, wdjax {env['wdjax']}",
        f"conv impl {env['default_conv_impl']}; tune_cpu_allocator={env['tune_cpu_allocator']}; "
        f"XLA cache {cache or 'off'}; data {env['data']}; batch {BATCH}; "
        f"{plan.repeats} rounds per ratio (median, min-max)",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="about a minute: fewer rounds, base 16/8, four schemes")
    p.add_argument("--json", default="bench-results.json", metavar="PATH",
                   help="where to write the results (default: %(default)s)")
    p.add_argument("--sections", default="torch,schemes,vmap,epoch",
                   help="comma-separated subset of torch,schemes,vmap,epoch")
    p.add_argument("--torch-threads", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - {"torch", "schemes", "vmap", "epoch"}
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}")

    # Before any JAX computation: it must precede the creation of XLA's worker threads.
    tuned = ops.tune_cpu_allocator()
    cache = enable_compilation_cache()
    t_start = time.perf_counter()
    plan = Plan.make(args.quick)
    env = machine()
    env["tune_cpu_allocator"] = tuned
    dataset = make_dataset(plan.n_train, plan.n_test)
    env["data"] = dataset.source
    has_torch, torch_version = torch_available()
    torch_version = torch_version if has_torch else "not importable"
    print(header(env, plan, cache, torch_version), flush=True)

    setup = make_setup(dataset)
    runners = dict(torch=lambda: bench_torch(plan, setup, args.torch_threads),
                   schemes=lambda: bench_schemes(plan, setup),
                   vmap=lambda: bench_vmap(plan, setup),
                   epoch=lambda: bench_epoch(plan, setup))
    rows: list[Row] = []
    seconds = {}
    for s in sections:
        t0 = time.perf_counter()
        rows += runners[s]()
        seconds[s] = round(time.perf_counter() - t0, 1)
    env["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    total = time.perf_counter() - t_start

    print()
    print(table(rows))
    failed = [r.name for r in rows if r.ok is False]
    print(f"\n{sum(r.ok is True for r in rows)} pass, {len(failed)} fail; "
          f"{total:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())}); "
          f"load avg at end {' '.join(f'{x:.1f}' for x in env['loadavg_end'] or [])}")
    out = Path(args.json)
    out.write_text(json.dumps(dict(
        environment=env, torch=torch_version, plan=asdict(plan), seconds=seconds,
        total_seconds=round(total, 1),
        rows=[{**asdict(r), "ok": r.ok} for r in rows]), indent=1, default=str) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
