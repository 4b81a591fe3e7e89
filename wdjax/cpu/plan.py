"""How each pass of each conv layer runs on CPU: a `Plan` of `Method`s, picked by the measured
`RULES` or timed on the machine at hand (`wdjax.cpu.tune`)."""

from __future__ import annotations

from typing import NamedTuple

METHOD_KINDS = ("xla", "im2col", "winograd")
PASSES = ("forward", "input_grad", "kernel_grad")


class Method(NamedTuple):
    """How one pass runs: XLA's conv, im2col + matmul, or Winograd F(tile x tile, 3x3), on
    `chunk` examples at a time (0: the whole batch) so that its buffers stay in cache."""

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
    and c_in * c_out >= `min_channel_product`; `chunk_budget` (bytes, 0: none) sizes chunks."""

    pass_: str
    min_pixels: int
    max_pixels: int
    min_channel_product: int
    method: Method
    chunk_budget: int = 0


_ANY = 1 << 30
# First matching row wins. Measured by `python -m benchmarks.profile --candidates` (VGG bases
# 8, 16, 32, ResNet-18 shapes) at batch 128 on a 2-core AMD EPYC (Zen 5); README has tables.
RULES: tuple[Rule, ...] = (
    # 2x2 and 1x1 maps: XLA's conv is 10-25x slower than a matmul, but 10-20% faster for dw.
    *(Rule(p, 1, 4, 1, im2col_method()) for p in ("forward", "input_grad")),
    Rule("kernel_grad", 1, 4, 1, XLA),
    # Wide enough layers: Winograd beats XLA's conv 1.2-2x (dw 2-10x); F(4x4)'s fewer
    # multiplies pay for its costlier transforms on maps from 16x16 and very wide 8x8 layers.
    *(Rule(p, lo, hi, c, winograd_method(t)) for p in ("forward", "input_grad")
      for lo, hi, c, t in ((256, _ANY, 512, 4), (64, 255, 1 << 16, 4), (16, 255, 512, 2))),
    # The kernel gradient's F(4x4) wins at every map size from 4x4 up.
    Rule("kernel_grad", 16, _ANY, 256, winograd_method(4)),
    # Narrow layers (RGB input, base-8 widths): XLA's conv, but chunked im2col is 1.3-4x
    # faster for the kernel gradient on big maps.
    Rule("kernel_grad", 256, _ANY, 1, im2col_method(), 4 << 20),
)


def conv_plan(x_shape: tuple[int, ...], k_shape: tuple[int, ...],
              rules: tuple[Rule, ...] | None = None, *, tune: bool | None = None) -> Plan:
    """The methods of one conv layer's passes on CPU: with tuning on (`tune`; None: unless
    ``$WDJAX_CONV_TUNE`` is ``0``) and no `rules`, `wdjax.cpu.tune.tuned_plan`; else the first
    matching row of `rules` (default `RULES`; Winograd only for 3x3); no match: XLA's conv,
    im2col on maps of 4 pixels or fewer (where XLA's is pathological)."""
    if rules is None:
        from wdjax.cpu import tune as tuning  # it times the passes of ops, which imports us

        if tuning.enabled() if tune is None else tune:
            return tuning.tuned_plan(x_shape, k_shape)
    n, h, w, _ = x_shape
    kh, kw, cin, cout = k_shape

    def method(pass_: str) -> Method:
        for r in RULES if rules is None else rules:
            if (r.pass_ == pass_ and r.min_pixels <= h * w <= r.max_pixels
                    and cin * cout >= r.min_channel_product
                    and ((kh, kw) == (3, 3) or r.method.kind != "winograd")):
                if r.chunk_budget:  # patch bytes per example: kh*kw*cin*h*w float32s
                    return r.method._replace(chunk=chunk_for(n, kh * kw * cin * h * w * 4,
                                                             r.chunk_budget))
                return r.method
        return XLA if h * w > 4 else im2col_method()

    return Plan(*map(method, PASSES))
