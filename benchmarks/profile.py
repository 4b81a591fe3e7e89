"""Per layer and per pass: where a training step's time goes, for wdjax and the PyTorch peer.

Each conv layer of the VGG (or the CIFAR ResNet-18's stride-1 3x3 shapes) is timed pass by
pass in isolation at the training batch size: the convolution's forward, input gradient and
kernel gradient, BatchNorm's forward and backward (training mode, with the trainer's
padded-row mask), and ReLU + max-pool forward and backward where the VGG pools. The PyTorch
side runs the same shapes through the same ATen kernels its training step uses
(``convolution_backward`` split by output mask, autograd for BatchNorm and pooling).

``--candidates`` instead times every method `wdjax.cpu.plan` can choose for each pass of
each conv layer; these tables are where the rules in `wdjax.cpu.plan.RULES` come from.

Usage::

    python -m benchmarks.profile                 # VGG base 32, wdjax plan vs PyTorch
    python -m benchmarks.profile --base 16 --model resnet18
    python -m benchmarks.profile --candidates --base 8 --rounds 3

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

from benchmarks.timing import BATCH, Bench, interleave


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


def vgg_layers(base: int, batch: int = BATCH, image: int = 32) -> list[Layer]:
    """The conv/fc layers of ``vgg_conf(base)`` with their input shapes."""
    from wdjax import models

    conf = models.vgg_conf(base)
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


def _bench(name: str, fn: Callable[[], Any], sync: Callable[[Any], Any]) -> Bench:
    return Bench(name, fn, sync, images=1)


def ms(bench: Bench) -> float:
    """Median ms per call (a Bench sample is calls per second)."""
    return statistics.median(1e3 / s for s in bench.result.samples)


def time_all(benches: Sequence[Bench], rounds: int, sample_s: float) -> None:
    for b in benches:
        b.warmup(1)
        b.calibrate(sample_s)
    interleave(benches, rounds)


# ------------------------------------------------------------------------- wdjax side
def _jit_call(fn: Callable, *args: Any) -> Callable[[], Any]:
    import jax

    f = jax.jit(fn)
    return lambda: f(*args)


def conv_pass_calls(layer: Layer, plan: Any) -> dict[str, Callable[[], Any]]:
    """Closures running one conv layer's forward, input-gradient and kernel-gradient pass."""
    import jax

    from wdjax.cpu import ops

    kx, kk, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, layer.x_shape)
    k = jax.random.normal(kk, layer.k_shape) * (2 / (layer.ksize ** 2 * layer.cin)) ** 0.5
    g = jax.random.normal(kg, (*layer.x_shape[:3], layer.cout))
    return {
        "conv fwd": _jit_call(lambda x, k: ops.conv_forward(x, k, plan.forward), x, k),
        "conv dx": _jit_call(lambda g, k: ops.conv_input_grad(g, k, plan.input_grad), g, k),
        "conv dw": _jit_call(lambda x, g, k: ops.conv_kernel_grad(x, g, k, plan.kernel_grad),
                             x, g, k),
    }


def norm_pool_calls(layer: Layer) -> dict[str, Callable[[], Any]]:
    """BatchNorm (train mode, masked as in the trainer) and ReLU + pool, forward and backward."""
    import jax
    import jax.numpy as jnp

    from wdjax import models
    from wdjax.cpu import ops

    bn = models.BatchNorm()
    shape = (*layer.x_shape[:3], layer.cout)
    x = jax.random.normal(jax.random.key(1), shape) * 3 + 1
    mask = jnp.ones((layer.n,), jnp.float32)
    variables = bn.init(jax.random.key(2), x[:1], train=False)

    def bn_fwd(params, x):
        return bn.apply({**variables, "params": params}, x, True, mask,
                        mutable=["batch_stats"])

    def act(x):
        y = jax.nn.relu(x)
        return ops.max_pool(y, 2, 2) if layer.pool else y

    out = {"bn fwd": _jit_call(bn_fwd, variables["params"], x)}
    _, bn_vjp = jax.vjp(lambda p, x: bn_fwd(p, x)[0], variables["params"], x)
    out["bn bwd"] = _jit_call(lambda f, g: f(g), bn_vjp, x)
    out["relu/pool fwd"] = _jit_call(act, x)
    y, act_vjp = jax.vjp(act, x)
    out["relu/pool bwd"] = _jit_call(lambda f, g: f(g), act_vjp, y)
    return out


def jax_calls(layer: Layer) -> tuple[str, dict[str, Callable[[], Any]]]:
    """The layer's plan (as text) and every pass of it, as the hybrid model runs them."""
    from wdjax.cpu import plan

    if layer.ksize == 1:
        plan = plan.Plan(*[plan.im2col_method()] * 3)  # 1x1: one matmul
    else:
        plan = plan.conv_plan(layer.x_shape, layer.k_shape)
    return str(plan), {**conv_pass_calls(layer, plan), **norm_pool_calls(layer)}


# ------------------------------------------------------------------------- PyTorch side
def torch_calls(layer: Layer, channels_last: bool = True) -> dict[str, Callable[[], Any]]:
    """The same passes through PyTorch's kernels (oneDNN convolutions on CPU)."""
    import torch
    import torch.nn.functional as F  # noqa: N812 - PyTorch's own convention

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).contiguous(memory_format=fmt) \
            if len(shape) == 4 else torch.randn(*shape, generator=gen)

    x, g = rand(layer.n, layer.cin, layer.h, layer.w), rand(layer.n, layer.cout, layer.h,
                                                            layer.w)
    w = rand(layer.cout, layer.cin, layer.ksize, layer.ksize)
    b, pad = torch.zeros(layer.cout), layer.ksize // 2

    def conv_bwd(mask):
        return lambda: torch.ops.aten.convolution_backward(
            g, x, w, [layer.cout], [1, 1], [pad, pad], [1, 1], False, [0, 0], 1, mask)

    bn = torch.nn.BatchNorm2d(layer.cout).train()
    xb = (g * 3 + 1).requires_grad_(True)
    yb = bn(xb)
    xa = g.clone().requires_grad_(True)
    ya = F.max_pool2d(F.relu(xa), 2) if layer.pool else F.relu(xa)
    gy = torch.ones_like(ya)

    def act():
        y = F.relu(g)
        return F.max_pool2d(y, 2) if layer.pool else y

    return {
        "conv fwd": lambda: F.conv2d(x, w, b, padding=pad),
        "conv dx": conv_bwd([True, False, False]),
        "conv dw": conv_bwd([False, True, True]),
        "bn fwd": lambda: bn(g),
        "bn bwd": lambda: torch.autograd.grad(yb, (xb, *bn.parameters()), g,
                                              retain_graph=True),
        "relu/pool fwd": act,
        "relu/pool bwd": lambda: torch.autograd.grad(ya, xa, gy, retain_graph=True),
    }


# ------------------------------------------------------------------------- tables
def profile(layers: Sequence[Layer], rounds: int, sample_s: float,
            with_torch: bool) -> list[dict[str, Any]]:
    """Rows ``{layer, op, plan, wdjax_ms, torch_ms}``, timed layer by layer."""
    import jax

    rows = []
    for i, layer in enumerate(layers):
        plan, calls = jax_calls(layer)
        # Neither training step computes the gradient of the input images (XLA drops it).
        skip = {"conv dx"} if i == 0 else set()
        benches = {op: _bench(f"jax {op}", f, jax.block_until_ready)
                   for op, f in calls.items() if op not in skip}
        peers = {}
        if with_torch:
            peers = {op: _bench(f"torch {op}", f, lambda _: None)
                     for op, f in torch_calls(layer).items() if op not in skip}
        time_all([*benches.values(), *peers.values()], rounds, sample_s)
        for op, b in benches.items():
            rows.append(dict(layer=layer.name, shape=f"{layer.h}x{layer.w} {layer.cin}->"
                             f"{layer.cout}", op=op, plan=plan if op.startswith("conv") else "",
                             wdjax_ms=ms(b), torch_ms=ms(peers[op]) if op in peers else None))
        print(f"  {layer.name}: {plan}", file=sys.stderr, flush=True)
    return rows


def profile_table(rows: Sequence[dict[str, Any]]) -> str:
    """Layer by layer and op by op, with totals per op kind and overall."""
    head = f"{'layer':<8s} {'shape':<16s} {'op':<14s} {'wdjax ms':>9s} {'torch ms':>9s} " \
           f"{'torch/wdjax':>11s}  method"
    lines = [head, "-" * len(head)]
    for r in rows:
        t = r["torch_ms"]
        ratio = f"{t / r['wdjax_ms']:11.2f}" if t else ""
        method = _pass_method(r["plan"], r["op"])
        lines.append(f"{r['layer']:<8s} {r['shape']:<16s} {r['op']:<14s} {r['wdjax_ms']:9.2f} "
                     f"{t if t is not None else float('nan'):9.2f} {ratio}  {method}".rstrip())
    lines.append("-" * len(head))
    for op in dict.fromkeys([r["op"] for r in rows] + ["total"]):
        sel = [r for r in rows if op in (r["op"], "total")]
        jt = sum(r["wdjax_ms"] for r in sel)
        tt = sum(r["torch_ms"] or 0 for r in sel)
        lines.append(f"{'all':<8s} {'':<16s} {op:<14s} {jt:9.2f} {tt:9.2f} "
                     f"{tt / jt if tt else float('nan'):11.2f}")
    return "\n".join(lines)


def _pass_method(plan: str, op: str) -> str:
    """The method of `op`'s pass from a plan's text ``fwd A, dx B, dw C``."""
    if not plan:
        return ""
    methods = dict(part.split(" ", 1) for part in plan.split(", "))
    return methods[op.split()[1]]


# ------------------------------------------------------------------------- candidates
def candidate_methods(layer: Layer) -> list[Any]:
    """Every method worth timing for this layer: XLA, im2col and Winograd, whole batch or
    chunks whose transformed input fits about 4 MiB (chunked F(4x4) never won: left out)."""
    from wdjax.cpu import plan as cp

    n, h, w, c = layer.x_shape
    c = max(layer.cin, layer.cout)
    out = [cp.XLA, cp.im2col_method(), cp.im2col_method(cp.chunk_for(n, h * w * 9 * c * 4))]
    if layer.ksize == 3:
        a, t = 4, -(-h // 2) * -(-w // 2)
        out += [cp.winograd_method(2), cp.winograd_method(2, cp.chunk_for(n, a * a * t * c * 4)),
                cp.winograd_method(4)]
    return list(dict.fromkeys(m._replace(chunk=0 if m.chunk == n else m.chunk) for m in out))


def candidates(layers: Sequence[Layer], rounds: int, sample_s: float) -> list[dict[str, Any]]:
    """Rows ``{layer, pass, method, ms}`` for every candidate method of every pass."""
    import jax

    from wdjax.cpu import plan as cp

    rows = []
    for layer in layers:
        benches = []
        for m in candidate_methods(layer):
            calls = conv_pass_calls(layer, cp.Plan(m, m, m))
            benches += [(p, m, _bench(f"{layer.name} {p} {m}", f, jax.block_until_ready))
                        for p, f in calls.items()]
        time_all([b for *_, b in benches], rounds, sample_s)
        rows += [dict(layer=layer.name, shape=f"{layer.h}x{layer.w} {layer.cin}->{layer.cout}",
                      op=p, method=str(m), ms=ms(b)) for p, m, b in benches]
        print(candidate_table([r for r in rows if r["layer"] == layer.name]), flush=True)
    return rows


def candidate_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = []
    for key in dict.fromkeys((r["layer"], r["shape"], r["op"]) for r in rows):
        sel = sorted((r for r in rows if (r["layer"], r["shape"], r["op"]) == key),
                     key=lambda r: r["ms"])
        cells = "  ".join(f"{r['method']} {r['ms']:.2f}" for r in sel)
        lines.append(f"{key[0]:<8s} {key[1]:<16s} {key[2]:<9s} best {cells}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("vgg", "resnet18"), default="vgg")
    p.add_argument("--base", type=int, default=32, help="VGG width (default: %(default)s)")
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
    layers = (vgg_layers(args.base, args.batch) if args.model == "vgg"
              else resnet_layers(args.batch))
    if args.candidates:
        candidates(layers, args.rounds, args.sample_s)
        return 0
    with_torch = not args.no_torch
    if with_torch:
        import torch

        torch.set_num_threads(args.torch_threads)
    print(profile_table(profile(layers, args.rounds, args.sample_s, with_torch)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
