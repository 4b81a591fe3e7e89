"""Where a step's time goes, per layer and pass (conv forward, input and kernel gradient,
BatchNorm, ReLU + pool), wdjax's plan and PyTorch's kernels side by side; ``--candidates`` times
every method the plan may choose (`wdjax.cpu.plan.RULES`' source). See docs/performance.md."""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.harness import BATCH, Bench, Layer, measure, vgg_layers


def resnet_layers(batch: int = BATCH) -> list[Layer]:
    """The stride-1 3x3 conv shapes of a CIFAR ResNet-18, one per stage."""
    return [Layer(f"stage{s}", (batch, 32 >> s, 32 >> s, 64 << s), (3, 3, 64 << s, 64 << s),
                  False) for s in range(4)]


def ms(bench: Bench) -> float:
    """Median ms per call (a sample is calls per second)."""
    return statistics.median(1e3 / s for s in bench.samples)


def jax_calls(layer: Layer) -> tuple[str, dict[str, Callable[[], Any]]]:
    """The layer's plan (as text) and every pass of it as the hybrid model runs them:
    the convolution's, BatchNorm's (train mode, masked as in the trainer) and ReLU + pool's."""
    import jax
    import jax.numpy as jnp

    from wdjax import models
    from wdjax.cpu import ops, plan

    (n, h, w, cin), (ksize, _, _, cout) = layer.x_shape, layer.k_shape
    p = (plan.Plan(*[plan.im2col_method()] * 3) if ksize == 1  # 1x1: one matmul
         else plan.conv_plan(layer.x_shape, layer.k_shape))
    kx, kk, kg = jax.random.split(jax.random.key(0), 3)
    xc = jax.random.normal(kx, layer.x_shape)
    k = jax.random.normal(kk, layer.k_shape) * (2 / (ksize ** 2 * cin)) ** 0.5
    g = jax.random.normal(kg, (n, h, w, cout))
    bn, x, mask = models.BatchNorm(), g * 3 + 1, jnp.ones((n,), jnp.float32)
    variables = bn.init(jax.random.key(2), x[:1], train=False)

    def bn_fwd(params, x):
        return bn.apply({**variables, "params": params}, x, True, mask, mutable=["batch_stats"])

    def act(x):
        return ops.max_pool(jax.nn.relu(x), 2, 2) if layer.pool else jax.nn.relu(x)

    _, bn_vjp = jax.vjp(lambda p, x: bn_fwd(p, x)[0], variables["params"], x)
    y, act_vjp = jax.vjp(act, x)
    calls = {"conv fwd": (lambda x, k: ops.conv_forward(x, k, p.forward), xc, k),
             "conv dx": (lambda g, k: ops.conv_input_grad(g, k, p.input_grad), g, k),
             "conv dw": (lambda x, g, k: ops.conv_kernel_grad(x, g, k, p.kernel_grad), xc, g, k),
             "bn fwd": (bn_fwd, variables["params"], x),
             "bn bwd": (lambda f, g: f(g), bn_vjp, x),
             "relu/pool fwd": (act, x),
             "relu/pool bwd": (lambda f, g: f(g), act_vjp, y)}
    return str(p), {op: functools.partial(jax.jit(f), *a) for op, (f, *a) in calls.items()}


def torch_calls(layer: Layer) -> dict[str, Callable[[], Any]]:
    """The same passes through PyTorch's kernels, channels_last (oneDNN on CPU)."""
    import torch
    import torch.nn.functional as F  # noqa: N812 - PyTorch's own convention

    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).contiguous(memory_format=torch.channels_last)

    (n, h, w_, cin), (ksize, _, _, cout) = layer.x_shape, layer.k_shape
    x, g, pad = rand(n, cin, h, w_), rand(n, cout, h, w_), ksize // 2
    w, b = rand(cout, cin, ksize, ksize), torch.zeros(cout)

    def conv_bwd(mask):
        return lambda: torch.ops.aten.convolution_backward(
            g, x, w, [cout], [1, 1], [pad, pad], [1, 1], False, [0, 0], 1, mask)

    def act(x):
        return F.max_pool2d(F.relu(x), 2) if layer.pool else F.relu(x)

    bn = torch.nn.BatchNorm2d(cout).train()
    xb, xa = (g * 3 + 1).requires_grad_(True), g.clone().requires_grad_(True)
    yb, ya = bn(xb), act(xa)
    return {"conv fwd": lambda: F.conv2d(x, w, b, padding=pad),
            "conv dx": conv_bwd([True, False, False]),
            "conv dw": conv_bwd([False, True, True]),
            "bn fwd": lambda: bn(g),
            "bn bwd": lambda: torch.autograd.grad(yb, (xb, *bn.parameters()), g,
                                                  retain_graph=True),
            "relu/pool fwd": lambda: act(g),
            "relu/pool bwd": lambda: torch.autograd.grad(ya, xa, torch.ones_like(ya),
                                                         retain_graph=True)}


def _benches(side: str, calls: dict[str, Callable[[], Any]], sync: Callable,
             first: bool) -> dict[str, Bench]:
    # Neither training step computes the gradient of the input images (XLA drops it).
    return {op: Bench(f"{side} {op}", f, sync, images=1) for op, f in calls.items()
            if not (first and op == "conv dx")}


def profile(layers: Sequence[Layer], rounds: int, sample_s: float,
            with_torch: bool) -> list[dict[str, Any]]:
    """Rows ``{layer, shape, op, plan, wdjax_ms, torch_ms}``, timed layer by layer; prints
    their table (`profile_table`)."""
    import jax

    rows = []
    for i, layer in enumerate(layers):
        plan, calls = jax_calls(layer)
        ours = _benches("jax", calls, jax.block_until_ready, i == 0)
        peers = _benches("torch", torch_calls(layer), lambda _: None, i == 0) if with_torch else {}
        measure([*ours.values(), *peers.values()], rounds, 1, sample_s)
        rows += [dict(layer=layer.name, shape=layer.shape, op=op,
                      plan=plan if op.startswith("conv") else "", wdjax_ms=ms(b),
                      torch_ms=ms(peers[op]) if op in peers else None) for op, b in ours.items()]
        print(f"  {layer.name}: {plan}", file=sys.stderr, flush=True)
    print(profile_table(rows), flush=True)
    return rows


def profile_table(rows: Sequence[dict[str, Any]]) -> str:
    """Layer by layer and op by op, with totals per op kind and overall."""
    head = (f"{'layer':<8s} {'shape':<16s} {'op':<14s} {'wdjax ms':>9s} {'torch ms':>9s} "
            f"{'torch/wdjax':>11s}  plan")
    lines = [head, "-" * len(head)]
    for r in rows:
        t = r["torch_ms"]
        lines.append(f"{r['layer']:<8s} {r['shape']:<16s} {r['op']:<14s} {r['wdjax_ms']:9.2f} "
                     f"{t or float('nan'):9.2f} {t / r['wdjax_ms'] if t else float('nan'):11.2f}"
                     f"  {r['plan']}".rstrip())
    lines.append("-" * len(head))
    for op in dict.fromkeys([r["op"] for r in rows] + ["total"]):
        sel = [r for r in rows if op in (r["op"], "total")]
        jt, tt = sum(r["wdjax_ms"] for r in sel), sum(r["torch_ms"] or 0 for r in sel)
        lines.append(f"{'all':<8s} {'':<16s} {op:<14s} {jt:9.2f} {tt:9.2f} "
                     f"{tt / jt if tt else float('nan'):11.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from wdjax.cpu import ops, tune

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", choices=("vgg", "resnet18"), default="vgg")
    p.add_argument("--width", type=int, default=32, help="VGG width (default: %(default)s)")
    p.add_argument("--batch", type=int, default=BATCH)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--sample-s", type=float, default=0.1, help="seconds per timed sample")
    p.add_argument("--candidates", action="store_true",
                   help="time every method of every pass instead of the plan vs PyTorch")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--torch-threads", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    ops.tune_cpu_allocator()  # before any JAX computation
    layers = (vgg_layers(args.width, args.batch) if args.model == "vgg"
              else resnet_layers(args.batch))
    if args.candidates:  # every method the tuner may pick, per pass, fastest first
        for layer in layers:
            for op, times in tune.time_passes(layer.x_shape, layer.k_shape, args.rounds).items():
                got = sorted(times.items(), key=lambda mt: mt[1])
                print(f"{layer.name:<8s} {layer.shape:<16s} {op:<11s} best "
                      + "  ".join(f"{m} {t:.2f}" for m, t in got), flush=True)
        return 0
    if not args.no_torch:
        import torch

        torch.set_num_threads(args.torch_threads)
    profile(layers, args.rounds, args.sample_s, not args.no_torch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
