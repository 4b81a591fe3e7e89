"""Training-step throughput of the wdjax VGG against the identical PyTorch model on CPU.

Why: the issue "Fast on every machine" asks for JAX steps at least as fast as PyTorch's on the
same model, batch and optimizer. Both sides run one SGD step (lr 0.1, momentum 0, weight decay
5e-4 on every parameter, as ``torch.optim.SGD(weight_decay=...)`` does) on a batch of 128
32x32x3 images with mean softmax cross-entropy, BatchNorm in training mode.

Usage::

    python -m benchmarks.step_speed            # bases 32 and 16, every conv impl, 7 repeats
    python -m benchmarks.step_speed --quick    # < 1 minute: fewer steps and repeats
    python -m benchmarks.step_speed --bases 32 --impls im2col --no-torch

Torch runs with ``--torch-threads`` (default 2) threads, JAX with its default threading, in
the same process (so both see the allocator settings of ``wdjax.ops.tune_cpu_allocator``,
applied unless ``--no-tune-alloc``). Configurations are timed in interleaved rounds and the
ratio is taken per round against the best torch layout, so load from other processes on a
shared machine hits both sides alike. Torch's OpenMP team is the exception: with other
processes on the cores it stalls on its barriers and can fall far below its one-thread
speed, so on a busy machine compare with ``--torch-threads 1`` as well (``benchmarks.run``
lets both counts compete).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from wdjax import models, ops

BATCH = 128
LR = 0.1
WEIGHT_DECAY = 5e-4
NUM_CLASSES = 10


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


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random NHWC batch and its labels."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, NUM_CLASSES, BATCH).astype(np.int32)
    return x, y


def make_jax_step(base: int, impl: str) -> tuple[Callable[..., Any], Any]:
    """A jitted, buffer-donating train step for ``VGG(vgg_conf(base), conv_impl=impl)``.

    Returns ``(step, state)`` with ``step(state, x, y) -> (state, loss)``.
    """
    model = models.VGG(models.vgg_conf(base, NUM_CLASSES), conv_impl=impl)
    variables = models.init_variables(model, jax.random.key(0))
    tx = optax.chain(optax.add_decayed_weights(WEIGHT_DECAY), optax.sgd(LR))
    state = (variables["params"], variables["batch_stats"],
             tx.init(variables["params"]))

    def loss_fn(params: Any, batch_stats: Any, x: jax.Array, y: jax.Array) -> tuple:
        logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, x,
                                      train=True, mutable=["batch_stats"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, updates["batch_stats"]

    def step(state: Any, x: jax.Array, y: jax.Array) -> tuple[Any, jax.Array]:
        params, batch_stats, opt_state = state
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch_stats, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, batch_stats, opt_state), loss

    return jax.jit(step, donate_argnums=0), state


def bench_jax(base: int, impl: str) -> Bench:
    """The wdjax step with conv formulation `impl`."""
    step, state = make_jax_step(base, impl)
    x, y = (jnp.asarray(a) for a in _data())
    box = [state]

    def one() -> jax.Array:
        box[0], loss = step(box[0], x, y)
        return loss

    return Bench(f"jax   base={base} impl={impl}", one, jax.block_until_ready)


def build_torch(base: int) -> Any:
    """The PyTorch twin of ``VGG(vgg_conf(base))``: conv(+bias)/BN/ReLU, max-pools, 1x1s."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    layers: list[nn.Module] = []
    cin = 3
    for name, (a, b) in models.vgg_conf(base, NUM_CLASSES):
        kind = models.layer_kind(name)
        if kind in ("conv", "fc"):
            k = 3 if kind == "conv" else 1
            layers += [nn.Conv2d(cin, a, k, padding=k // 2), nn.BatchNorm2d(a), nn.ReLU()]
            cin = a
        elif kind == "pool":
            layers.append(nn.MaxPool2d(a, b))
        elif kind == "logit":
            layers.append(nn.Conv2d(cin, a, 1))
        elif kind == "flatter":
            layers.append(nn.Flatten())
    return nn.Sequential(*layers).train()


def bench_torch(base: int, channels_last: bool, threads: int | None = None) -> Bench:
    """The identical PyTorch model and SGD step (NCHW or channels_last).

    `threads`: torch's intra-op threads for this configuration's steps (set before each
    step, so configurations with different counts can be interleaved); None: as set.
    """
    import torch
    from torch import nn

    net = build_torch(base)
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=0.0, weight_decay=WEIGHT_DECAY)
    xn, yn = _data()
    x = torch.from_numpy(xn).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(yn).long()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    loss_fn = nn.CrossEntropyLoss()

    def one() -> Any:
        if threads is not None:
            torch.set_num_threads(threads)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        return loss

    layout = "channels_last" if channels_last else "NCHW"
    suffix = "" if threads is None else f" {threads}t"
    return Bench(f"torch base={base} {layout}{suffix}", one, lambda out: None)


def main(argv: list[str] | None = None) -> None:
    """Run the comparison and print one line per configuration plus jax/torch ratios."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer steps/repeats (< 1 minute)")
    p.add_argument("--bases", type=int, nargs="+", default=[32, 16])
    p.add_argument("--impls", nargs="+", default=list(ops.CONV_IMPLS))
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="steps per timed repeat")
    p.add_argument("--torch-threads", type=int, default=2)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-tune-alloc", action="store_true",
                   help="skip ops.tune_cpu_allocator() (XLA:CPU then page-faults every step)")
    args = p.parse_args(argv)
    # Before any JAX computation: it must precede the creation of XLA's worker threads.
    tuned = not args.no_tune_alloc and ops.tune_cpu_allocator()
    repeats = args.repeats or (3 if args.quick else 7)
    steps = args.steps or (2 if args.quick else 5)
    warmup = 1 if args.quick else 3
    if args.quick and args.impls == list(ops.CONV_IMPLS):
        args.impls = [ops.default_conv_impl()]
    print(f"jax {jax.__version__} backend={jax.default_backend()} "
          f"default_conv_impl={ops.default_conv_impl()}; batch {BATCH}, "
          f"{repeats} repeats x {steps} steps; tune_cpu_allocator={tuned}")
    if not args.no_torch:
        import torch
        torch.set_num_threads(args.torch_threads)
        print(f"torch {torch.__version__} threads={torch.get_num_threads()}")
    for base in args.bases:
        torch_benches = [] if args.no_torch else [
            bench_torch(base, cl) for cl in ((True,) if args.quick else (False, True))]
        jax_benches = [bench_jax(base, impl) for impl in args.impls]
        for b in torch_benches + jax_benches:
            b.warmup(warmup)
            b.steps = steps
        # Interleave the configurations round by round so that load from other processes on
        # this machine hits all of them alike; ratios are taken within a round.
        interleave(torch_benches + jax_benches, repeats)
        ratios = {b.name: round_ratios(b, torch_benches) if torch_benches else []
                  for b in jax_benches}
        for b in torch_benches:
            print(b.result.line())
        for b in jax_benches:
            r = ratios[b.name]
            extra = (f"  jax/torch = {statistics.median(r):.2f} ({min(r):.2f}-{max(r):.2f})"
                     if r else "")
            print(b.result.line() + extra, flush=True)


if __name__ == "__main__":
    main()
