"""CPU kernels for the VGG: stride-1 'same' odd-sized convolutions, each pass run as `conv_plan`
says (fast under `jax.vmap`), and non-overlapping max-pools; other shapes use XLA's ops."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
import sys
from importlib.metadata import entry_points

import jax
import jax.numpy as jnp
from jax import lax

from wdjax.cpu import winograd
from wdjax.cpu.plan import (
    METHOD_KINDS,
    Method,
    Plan,
    conv_plan,
    im2col_method,
    winograd_method,
)

CONV_IMPLS = ("xla", "im2col", "winograd", "hybrid")
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc mallopt parameters (malloc.h)


def tune_cpu_allocator() -> bool:
    """Keep freed memory in glibc's heap: else each VGG-32 train step page-faults ~0.5 GB of
    XLA:CPU buffers back in. Process-wide and irreversible (peak memory stays reserved); call
    before JAX's first backend, after it this does nothing. False (doing nothing) off glibc or
    unless `expects_cpu_backend`."""
    if not sys.platform.startswith("linux") or not expects_cpu_backend():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_ARENA_MAX, 1) and mallopt(_M_MMAP_MAX, 0)
    return bool(ok and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def expects_cpu_backend() -> bool:
    """Whether JAX's backend will be the CPU, without starting one: the first of
    ``JAX_PLATFORMS``, else whether no accelerator plugin (or ``libtpu``) is installed."""
    if jax.config.jax_platforms:
        return jax.config.jax_platforms.split(",")[0] == "cpu"
    return not (entry_points(group="jax_plugins") or importlib.util.find_spec("jax_plugins")
                or importlib.util.find_spec("libtpu"))


def on_cpu(platform: str | None = None) -> bool:
    """Whether a model built for `platform` ('cpu', 'cuda', 'rocm', 'tpu'; None: JAX's default
    backend at trace time) runs `wdjax.cpu`'s kernels, not the compiler's native ones."""
    return (platform or jax.default_backend()) == "cpu"


def default_conv_impl(platform: str | None = None) -> str:
    """The fastest measured formulation: hybrid on CPU (VGG train step, batch 128, 2-core EPYC:
    327 / 241 / 83 img/s against winograd / xla at base 32), XLA's conv elsewhere."""
    return "hybrid" if on_cpu(platform) else "xla"


def conv2d(x: jax.Array, kernel: jax.Array, impl: str = "xla") -> jax.Array:
    """Stride-1 'same' conv of NHWC `x` with an odd-sized HWIO `kernel` by `impl`: "xla",
    "im2col" (one matmul over the shifted views), "winograd" (3x3 by F(2x2,3x3)) or "hybrid"
    (per layer and pass, `wdjax.cpu.plan`); all but xla run 1x1 kernels as a matmul."""
    kh, kw = kernel.shape[:2]
    if impl not in CONV_IMPLS:
        raise ValueError(f"unknown conv_impl {impl!r}; allowed: {', '.join(CONV_IMPLS)}")
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"kernel size {kh}x{kw}: only odd sizes ('same' padding is "
                         "symmetric) are allowed")
    if impl == "xla":
        return _xla_conv(x, kernel)
    if impl == "winograd" and kh == kw == 3:
        return planned_conv(x, kernel, Plan(*[winograd_method(2)] * 3))
    if impl == "hybrid" and kh * kw > 1:
        return planned_conv(x, kernel, conv_plan(x.shape, kernel.shape))
    return conv_forward(x, kernel, im2col_method())


def _xla_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(x, kernel, window_strides=(1, 1), padding="SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _patches(x: jax.Array, kh: int, kw: int) -> jax.Array:
    """(N*H*W, kh*kw*C) rows of the zero-padded kh x kw neighbourhoods, ordered (i, j, c) as
    an HWIO kernel's ``reshape(kh * kw * cin, cout)``."""
    n, h, w, c = x.shape
    xp = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    cols = [xp[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)]
    return jnp.concatenate(cols, axis=-1).reshape(n * h * w, kh * kw * c)


def _one_run_at_a_time(f):
    """`f`, whose vmap runs it once per index of the mapped axis instead of batching it (a
    vmapped XLA conv with per-run kernels is a grouped conv, several times slower on CPU)."""
    g = jax.custom_batching.custom_vmap(f)

    @g.def_vmap
    def rule(axis_size: int, in_batched: list[bool], *args: jax.Array):
        outs = [g(*(a[i] if b else a for a, b in zip(args, in_batched, strict=True)))
                for i in range(axis_size)]
        return jnp.stack(outs), True

    return g


_xla_conv_per_run = _one_run_at_a_time(_xla_conv)
# The kernel gradient is linear in g; `kernel` only supplies the shape.
_xla_kernel_grad_per_run = _one_run_at_a_time(
    lambda x, g, kernel: jax.vjp(lambda k: _xla_conv(x, k), kernel)[1](g)[0])


def conv_forward(x: jax.Array, kernel: jax.Array, method: Method) -> jax.Array:
    """The 'same' conv of `x` with `kernel`, computed by `method`."""
    chunk = method.chunk or x.shape[0]
    if method.kind == "winograd":
        return winograd.conv(x, kernel, method.tile, chunk)
    if method.kind == "xla":
        return _xla_conv_per_run(x, kernel)
    kh, kw, cin, cout = kernel.shape
    flat = kernel.reshape(kh * kw * cin, cout)
    return winograd.over_chunks(lambda xc: (_patches(xc, kh, kw) @ flat).reshape(
        *xc.shape[:3], cout), (x,), chunk, reduce=False)


def conv_input_grad(g: jax.Array, kernel: jax.Array, method: Method) -> jax.Array:
    """The input gradient of the 'same' conv for output cotangent `g`, by `method`."""
    # The 'same' conv of g with the kernel flipped in space and transposed in channels.
    return conv_forward(g, jnp.flip(kernel, (0, 1)).swapaxes(2, 3), method)


def conv_kernel_grad(x: jax.Array, g: jax.Array, kernel: jax.Array, method: Method) -> jax.Array:
    """The kernel gradient of the 'same' conv of `x` for output cotangent `g`, by `method`
    (`kernel` supplies the shape and, for XLA's pass, the vmap structure)."""
    chunk = method.chunk or x.shape[0]
    if method.kind == "winograd":
        return winograd.kernel_grad(x, g, method.tile, chunk)
    if method.kind == "xla":
        return _xla_kernel_grad_per_run(x, g, kernel)
    kh, kw, _, cout = kernel.shape  # sum over examples and pixels of patches(x)^T g
    return winograd.over_chunks(lambda xc, gc: _patches(xc, kh, kw).T @ gc.reshape(-1, cout),
                                (x, g), chunk, reduce=True).reshape(kernel.shape)


def check_plan(plan: Plan, x_shape: tuple[int, ...], k_shape: tuple[int, ...]) -> None:
    """One-line ValueError unless every pass of `plan` can run on these shapes."""
    n = x_shape[0]
    for m in plan:
        if not isinstance(m, Method) or m.kind not in METHOD_KINDS:
            raise ValueError(f"conv plan {plan!r}: each pass must be a conv_plan.Method of "
                             f"kind {', '.join(METHOD_KINDS)}")
        if m.chunk < 0 or (m.chunk and n % m.chunk):
            raise ValueError(f"conv plan {plan}: chunk sizes must divide the batch of {n}")
        if m.kind == "winograd" and (tuple(k_shape[:2]) != (3, 3)
                                     or m.tile not in winograd.TRANSFORMS):
            raise ValueError(f"conv plan {plan}: winograd needs a 3x3 kernel (got "
                             f"{k_shape[0]}x{k_shape[1]}) and tile 2 or 4 (got {m.tile})")


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def planned_conv(x: jax.Array, kernel: jax.Array, plan: Plan) -> jax.Array:
    """The 'same' conv of `conv2d`, each pass run the way `plan` says (see `conv_plan`);
    under `jax.vmap` the XLA passes run once per mapped index (never a grouped conv)."""
    check_plan(plan, x.shape, kernel.shape)
    return conv_forward(x, kernel, plan.forward)


def _planned_conv_fwd(x: jax.Array, kernel: jax.Array, plan: Plan):
    return planned_conv(x, kernel, plan), (x, kernel)


def _planned_conv_bwd(plan: Plan, res: tuple[jax.Array, jax.Array], g: jax.Array):
    x, kernel = res
    return (conv_input_grad(g, kernel, plan.input_grad),
            conv_kernel_grad(x, g, kernel, plan.kernel_grad))


planned_conv.defvjp(_planned_conv_fwd, _planned_conv_bwd)


def max_pool(x: jax.Array, window: int, stride: int) -> jax.Array:
    """Max-pool NHWC `x` with a square window, no padding (PyTorch's MaxPool2d default);
    non-overlapping windows by a reshape-max, the gradient to each window's first maximum."""
    _, h, w, _ = x.shape
    if window == stride and h % window == 0 and w % window == 0:
        return _block_max_pool(x, window)
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, 1),
                             (1, stride, stride, 1), "VALID")


def _blocks(x: jax.Array, k: int) -> jax.Array:
    """View NHWC `x` as (N, H/k, k, W/k, k, C) windows."""
    n, h, w, c = x.shape
    return x.reshape(n, h // k, k, w // k, k, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _block_max_pool(x: jax.Array, k: int) -> jax.Array:
    return _blocks(x, k).max(axis=(2, 4))


def _block_max_pool_fwd(x: jax.Array, k: int) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    y = _block_max_pool(x, k)
    return y, (x, y)


def _block_max_pool_bwd(k: int, res: tuple[jax.Array, jax.Array], g: jax.Array):
    # jnp.max's gradient splits ties evenly; this one goes to the first maximum in row-major
    # order (reduce_window's), by comparisons alone: 2-6x faster than a window-min of positions.
    x, y = res
    xb, zero = _blocks(x, k), jnp.zeros((), g.dtype)
    seen = jnp.zeros(y.shape, bool)  # some earlier position of the window held the maximum
    rows = [[None] * k for _ in range(k)]
    for i in range(k):
        for j in range(k):
            hit = xb[:, :, i, :, j, :] == y
            rows[i][j] = jnp.where(hit & ~seen, g, zero)
            seen = seen | hit
    return (jnp.stack([jnp.stack(r, axis=3) for r in rows], axis=2).reshape(x.shape),)


_block_max_pool.defvjp(_block_max_pool_fwd, _block_max_pool_bwd)
