"""How each pass of each convolution layer runs on CPU: the measured rules, as data.

A `Plan` names a `Method` for each of a conv layer's three passes (forward, input gradient,
kernel gradient). `conv_plan` picks them from the layer's shape by the rules in `RULES`,
which come from per-layer, per-pass timings (`python -m benchmarks.profile --candidates`),
or, tuned (`wdjax.cpu.tune`), from timing them on the machine at hand.
"""

from __future__ import annotations

from typing import NamedTuple

METHOD_KINDS = ("xla", "im2col", "winograd")
PASSES = ("forward", "input_grad", "kernel_grad")


class Method(NamedTuple):
    """How one pass runs: XLA's conv, im2col + matmul, or Winograd F(tile x tile, 3x3).

    `chunk` is how many examples im2col / Winograd process at a time (0: the whole batch),
    so that their transformed input (9x the input for im2col, 4x / 2.25x for Winograd with
    tile 2 / 4) stays in cache between transform and matmul.
    """

    kind: str
    chunk: int = 0
    tile: int = 0

    def __str__(self) -> str:
        name = f"winograd{self.tile}" if self.kind == "winograd" else self.kind
        return name + (f"/{self.chunk}" if self.chunk and self.kind != "xla" else "")


XLA = Method("xla")


def im2col_method(chunk: int = 0) -> Method:
    return Method("im2col", chunk)


def winograd_method(tile: int, chunk: int = 0) -> Method:
    return Method("winograd", chunk, tile)


class Plan(NamedTuple):
    """The methods of a conv layer's forward, input-gradient and kernel-gradient passes."""

    forward: Method
    input_grad: Method
    kernel_grad: Method

    def __str__(self) -> str:
        return f"fwd {self.forward}, dx {self.input_grad}, dw {self.kernel_grad}"


def chunk_for(n: int, bytes_per_example: int, budget: int = 4 << 20) -> int:
    """The largest divisor of `n` whose examples' buffers fit in `budget` bytes."""
    fits = max(1, budget // max(bytes_per_example, 1))
    return max(d for d in range(1, n + 1) if n % d == 0 and d <= fits)


class Rule(NamedTuple):
    """Run `pass_` of a layer by `method` when its map has `min_pixels`..`max_pixels` pixels
    (h * w) and c_in * c_out is at least `min_channel_product`.

    `chunk_budget` (bytes, 0: whole batch) sizes im2col's chunks of examples so that their
    patch buffer (9x the input) stays in cache.
    """

    pass_: str
    min_pixels: int
    max_pixels: int
    min_channel_product: int
    method: Method
    chunk_budget: int = 0


_ANY = 1 << 30
# First matching row wins; a pass that no row matches runs through XLA's conv. Measured
# with `python -m benchmarks.profile --candidates` (VGG bases 8, 16, 32 and the ResNet-18
# shapes) at batch 128 on a 2-core AMD EPYC (Zen 5); the README lists the tables.
RULES: tuple[Rule, ...] = (
    # 2x2 and 1x1 maps: a 3x3 conv is a small dense matmul; XLA's conv is 10-25x slower
    # forward and backward to the input, but 10-20% faster for the kernel gradient.
    Rule("forward", 1, 4, 1, im2col_method()),
    Rule("input_grad", 1, 4, 1, im2col_method()),
    Rule("kernel_grad", 1, 4, 1, XLA),
    # Wide enough layers: Winograd's matmuls beat XLA's conv 1.2-2x (the kernel gradient
    # 2-10x). F(4x4) on 16x16 maps and larger and on very wide 8x8 layers, where its 4x
    # fewer multiplies pay for its costlier transforms; F(2x2) on the other 4x4 and 8x8
    # maps (F(4x4) pads a 4x4 map to one 6x6 tile; at 8x8 with <= 128 channels the two
    # are within 10%).
    Rule("forward", 256, _ANY, 512, winograd_method(4)),
    Rule("forward", 64, 255, 1 << 16, winograd_method(4)),
    Rule("forward", 16, 255, 512, winograd_method(2)),
    Rule("input_grad", 256, _ANY, 512, winograd_method(4)),
    Rule("input_grad", 64, 255, 1 << 16, winograd_method(4)),
    Rule("input_grad", 16, 255, 512, winograd_method(2)),
    # The kernel gradient's F(4x4) wins at every map size from 4x4 up.
    Rule("kernel_grad", 16, _ANY, 256, winograd_method(4)),
    # Narrow layers (the RGB input, base-8 widths): XLA's conv, except for the kernel
    # gradient on big maps, where chunked im2col is 1.3-4x faster.
    Rule("kernel_grad", 256, _ANY, 1, im2col_method(), 4 << 20),
)


def conv_plan(x_shape: tuple[int, ...], k_shape: tuple[int, ...],
              rules: tuple[Rule, ...] | None = None, *, tune: bool | None = None) -> Plan:
    """(forward, input-gradient, kernel-gradient) methods for one conv layer on CPU.

    With tuning on (`tune`; None: unless ``$WDJAX_CONV_TUNE`` is ``0``) and no `rules`
    given, each pass's fastest method on this machine, timed on first use and cached
    (`wdjax.cpu.tune.tuned_plan`). Otherwise the first matching row of `rules` (default
    `RULES`): only 3x3 layers are planned by rules; other odd kernel sizes run through
    XLA's conv except on maps of 4 pixels or fewer (im2col: XLA's conv is pathological there).
    """
    if rules is None:
        from wdjax.cpu import tune as tuning  # it times the passes of ops, which imports us

        if tuning.enabled() if tune is None else tune:
            return tuning.tuned_plan(x_shape, k_shape)
    n, h, w, _ = x_shape
    kh, kw, cin, cout = k_shape
    rules = RULES if rules is None else rules
    return Plan(*(_method(p, n, h * w, kh * kw * cin * h * w * 4, cin * cout,
                          (kh, kw) == (3, 3), rules) for p in PASSES))


def _method(pass_: str, n: int, pixels: int, patch_bytes: int, channel_product: int,
            three_by_three: bool, rules: tuple[Rule, ...]) -> Method:
    for r in rules:
        if (r.pass_ == pass_ and r.min_pixels <= pixels <= r.max_pixels
                and channel_product >= r.min_channel_product
                and (three_by_three or r.method.kind != "winograd")):
            if r.chunk_budget:
                return r.method._replace(chunk=chunk_for(n, patch_bytes, r.chunk_budget))
            return r.method
    return XLA if pixels > 4 else im2col_method()
