"""Per layer and per pass: where a training step's time goes, for wdjax and the PyTorch peer.

Each conv layer of the VGG (or the CIFAR ResNet-18's stride-1 3x3 shapes) is timed pass by
pass in isolation at the training batch size: the convolution's forward, input gradient and
kernel gradient, BatchNorm's forward and backward (training mode, with the trainer's row
mask), and ReLU + max-pool forward and backward where the VGG pools. The PyTorch side runs
the same shapes through the ATen kernels its training step uses.

``--candidates`` instead times every method the plan can choose for each pass of each conv
layer (as the tuner does, `wdjax.cpu.tune`); the rules in `wdjax.cpu.plan.RULES` come from
these tables.

Usage::

    python -m benchmarks.profile                 # VGG width 32, wdjax plan vs PyTorch
    python -m benchmarks.profile --width 16 --model resnet18
    python -m benchmarks.profile --candidates --width 8 --rounds 3

Timings: median ms per call over interleaved rounds (ABBA), after warm-up; on a shared
machine compare within a table, not across runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from benchmarks.timing import BATCH, Bench, measure


class Layer(NamedTuple):
    """One conv layer's input shape, kernel and whether a 2x2 max-pool follows it."""

    name: str
    n: int
    h: int
    w: int
    cin: int
    cout: int
    ksize: int
    pool: bool

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.h, self.w, self.cin)

    @property
    def k_shape(self) -> tuple[int, int, int, int]:
        return (self.ksize, self.ksize, self.cin, self.cout)

    @property
    def shape(self) -> str:
        return f"{self.h}x{self.w} {self.cin}->{self.cout}"


def vgg_layers(width: int, batch: int = BATCH, image: int = 32) -> list[Layer]:
    """The conv/fc layers of ``vgg_conf(width)`` with their input shapes."""
    from wdjax import models

    conf = models.vgg_conf(width)
    layers, size, cin = [], image, conf[0][1][0]
    for i, (name, (a, _)) in enumerate(conf):
        kind = models.layer_kind(name)
        if kind in ("conv", "fc"):
            pool = i + 1 < len(conf) and models.layer_kind(conf[i + 1][0]) == "pool"
            layers.append(Layer(name, batch, size, size, cin, a, 3 if kind == "conv" else 1,
                                pool))
            cin = a
        elif kind == "pool":
            size //= a
    return layers


def resnet_layers(batch: int = BATCH) -> list[Layer]:
    """The stride-1 3x3 conv shapes of a CIFAR ResNet-18, one per stage."""
    return [Layer(f"stage{s}", batch, 32 >> s, 32 >> s, 64 << s, 64 << s, 3, False)
            for s in range(4)]


def _timed(calls: dict[str, Callable[[], Any]], sync: Callable, prefix: str) -> dict[str, Bench]:
    return {op: Bench(f"{prefix} {op}", f, sync, images=1) for op, f in calls.items()}


def ms(bench: Bench) -> float:
    """Median ms per call (a sample is calls per second)."""
    return statistics.median(1e3 / s for s in bench.samples)


def _jit_call(fn: Callable, *args: Any) -> Callable[[], Any]:
    import jax

    f = jax.jit(fn)
    return lambda: f(*args)


def jax_calls(layer: Layer) -> tuple[str, dict[str, Callable[[], Any]]]:
    """The layer's plan (as text) and every pass of it as the hybrid model runs them:
    the convolution's, BatchNorm's (train mode, masked as in the trainer) and ReLU + pool's."""
    import jax
    import jax.numpy as jnp

    from wdjax import models
    from wdjax.cpu import ops, plan

    p = (plan.Plan(*[plan.im2col_method()] * 3) if layer.ksize == 1  # 1x1: one matmul
         else plan.conv_plan(layer.x_shape, layer.k_shape))
    kx, kk, kg = jax.random.split(jax.random.key(0), 3)
    xc = jax.random.normal(kx, layer.x_shape)
    k = jax.random.normal(kk, layer.k_shape) * (2 / (layer.ksize ** 2 * layer.cin)) ** 0.5
    g = jax.random.normal(kg, (*layer.x_shape[:3], layer.cout))
    bn = models.BatchNorm()
    x = g * 3 + 1
    mask = jnp.ones((layer.n,), jnp.float32)
    variables = bn.init(jax.random.key(2), x[:1], train=False)

    def bn_fwd(params, x):
        return bn.apply({**variables, "params": params}, x, True, mask, mutable=["batch_stats"])

    def act(x):
        return ops.max_pool(jax.nn.relu(x), 2, 2) if layer.pool else jax.nn.relu(x)

    _, bn_vjp = jax.vjp(lambda p, x: bn_fwd(p, x)[0], variables["params"], x)
    y, act_vjp = jax.vjp(act, x)
    return str(p), {"conv fwd": _jit_call(lambda x, k: ops.conv_forward(x, k, p.forward), xc, k),
                    "conv dx": _jit_call(lambda g, k: ops.conv_input_grad(g, k, p.input_grad),
                                         g, k),
                    "conv dw": _jit_call(lambda x, g, k: ops.conv_kernel_grad(
                        x, g, k, p.kernel_grad), xc, g, k),
                    "bn fwd": _jit_call(bn_fwd, variables["params"], x),
                    "bn bwd": _jit_call(lambda f, g: f(g), bn_vjp, x),
                    "relu/pool fwd": _jit_call(act, x),
                    "relu/pool bwd": _jit_call(lambda f, g: f(g), act_vjp, y)}


def torch_calls(layer: Layer) -> dict[str, Callable[[], Any]]:
    """The same passes through PyTorch's kernels, channels_last (oneDNN on CPU)."""
    import torch
    import torch.nn.functional as F  # noqa: N812 - PyTorch's own convention

    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).contiguous(memory_format=torch.channels_last)

    x, g = rand(layer.n, layer.cin, layer.h, layer.w), rand(layer.n, layer.cout, layer.h,
                                                            layer.w)
    w, pad = rand(layer.cout, layer.cin, layer.ksize, layer.ksize), layer.ksize // 2
    b = torch.zeros(layer.cout)

    def conv_bwd(mask):
        return lambda: torch.ops.aten.convolution_backward(
            g, x, w, [layer.cout], [1, 1], [pad, pad], [1, 1], False, [0, 0], 1, mask)

    def act(x):
        return F.max_pool2d(F.relu(x), 2) if layer.pool else F.relu(x)

    bn = torch.nn.BatchNorm2d(layer.cout).train()
    xb = (g * 3 + 1).requires_grad_(True)
    yb = bn(xb)
    xa = g.clone().requires_grad_(True)
    ya = act(xa)
    return {"conv fwd": lambda: F.conv2d(x, w, b, padding=pad),
            "conv dx": conv_bwd([True, False, False]),
            "conv dw": conv_bwd([False, True, True]),
            "bn fwd": lambda: bn(g),
            "bn bwd": lambda: torch.autograd.grad(yb, (xb, *bn.parameters()), g,
                                                  retain_graph=True),
            "relu/pool fwd": lambda: act(g),
            "relu/pool bwd": lambda: torch.autograd.grad(ya, xa, torch.ones_like(ya),
                                                         retain_graph=True)}


def profile(layers: Sequence[Layer], rounds: int, sample_s: float,
            with_torch: bool) -> list[dict[str, Any]]:
    """Rows ``{layer, shape, op, plan, wdjax_ms, torch_ms}``, timed layer by layer."""
    import jax

    rows = []
    for i, layer in enumerate(layers):
        plan, calls = jax_calls(layer)
        # Neither training step computes the gradient of the input images (XLA drops it).
        skip = {"conv dx"} if i == 0 else set()
        ours = _timed({k: f for k, f in calls.items() if k not in skip}, jax.block_until_ready,
                      "jax")
        peers = _timed({k: f for k, f in torch_calls(layer).items() if k not in skip},
                       lambda _: None, "torch") if with_torch else {}
        measure([*ours.values(), *peers.values()], rounds, 1, sample_s)
        rows += [dict(layer=layer.name, shape=layer.shape, op=op,
                      plan=plan if op.startswith("conv") else "", wdjax_ms=ms(b),
                      torch_ms=ms(peers[op]) if op in peers else None) for op, b in ours.items()]
        print(f"  {layer.name}: {plan}", file=sys.stderr, flush=True)
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


def candidates(layers: Sequence[Layer], rounds: int) -> list[dict[str, Any]]:
    """Rows ``{layer, shape, op, method, ms}``: every method the tuner may pick
    (`wdjax.cpu.tune.time_passes`) for every pass; prints each pass's methods, fastest first."""
    from wdjax.cpu import tune

    rows = []
    for layer in layers:
        for op, times in tune.time_passes(layer.x_shape, layer.k_shape, rounds).items():
            got = sorted(times.items(), key=lambda mt: mt[1])
            rows += [dict(layer=layer.name, shape=layer.shape, op=op, method=str(m), ms=t)
                     for m, t in got]
            print(f"{layer.name:<8s} {layer.shape:<16s} {op:<11s} best "
                  + "  ".join(f"{m} {t:.2f}" for m, t in got), flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    from wdjax.cpu import ops

    ops.tune_cpu_allocator()
    layers = (vgg_layers(args.width, args.batch) if args.model == "vgg"
              else resnet_layers(args.batch))
    if args.candidates:
        candidates(layers, args.rounds)
        return 0
    if not args.no_torch:
        import torch

        torch.set_num_threads(args.torch_threads)
    print(profile_table(profile(layers, args.rounds, args.sample_s, not args.no_torch)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
