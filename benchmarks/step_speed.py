"""Training-step throughput of the wdjax VGG against the identical PyTorch model on CPU.

Why: the issue "Fast on every machine" asks for JAX steps at least as fast as PyTorch's on the
same model, batch and optimizer. The JAX side is the trainer's own compiled step
(`steps.programs`, scheme SGD: coupled weight decay 5e-4), which also gathers and flips
its batch on device and returns its metrics; the torch side runs one SGD step (lr 0.1,
momentum 0, weight decay 5e-4 on every parameter, as ``torch.optim.SGD(weight_decay=...)``
does). Both: a batch of 128 32x32x3 images, mean softmax cross-entropy, BatchNorm in
training mode.

Usage::

    python -m benchmarks.step_speed            # bases 32 and 16, every conv impl, 7 repeats
    python -m benchmarks.step_speed --quick    # < 1 minute: fewer steps and repeats
    python -m benchmarks.step_speed --bases 32 --impls im2col --no-torch

Torch runs with ``--torch-threads`` (default 2) threads, JAX with its default threading, in
the same process (so both see the allocator settings of ``wdjax.cpu.ops.tune_cpu_allocator``,
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
from typing import Any

import numpy as np

from benchmarks.timing import BATCH, Bench, interleave, round_ratios
from wdjax import models
from wdjax.cpu import ops

LR = 0.1
WEIGHT_DECAY = 5e-4
NUM_CLASSES = 10


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random NHWC batch and its labels."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, NUM_CLASSES, BATCH).astype(np.int32)
    return x, y


def bench_jax(base: int, impl: str, setup: Any) -> Bench:
    """The trainer's compiled step (`steps.programs`, scheme SGD) with conv `impl`."""
    from benchmarks.harness import config, initial_states, place, programs, step_bench

    cfg = config(base, conv_impl=impl)
    prog = programs(setup, cfg)
    return step_bench(f"jax   base={base} impl={impl}", prog.step,
                      [place(initial_states(prog, cfg, [{}]), setup.mesh)], setup)


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
    import jax

    from benchmarks.harness import make_dataset, make_setup

    setup = make_setup(make_dataset(4 * BATCH, BATCH))
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
        jax_benches = [bench_jax(base, impl, setup) for impl in args.impls]
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
