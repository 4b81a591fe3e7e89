"""Convolution and pooling kernels used by the model, in formulations chosen per backend.

The VGG only needs 'same' 3x3 and 1x1 convolutions and non-overlapping 2x2 max-pools, so
these are written for exactly that case; anything else falls back to XLA's general ops.
`tune_cpu_allocator` removes XLA:CPU's per-step page-fault cost; call it at program start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

import jax
import jax.numpy as jnp
from jax import lax

CONV_IMPLS = ("xla", "im2col", "hybrid")


# glibc mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def tune_cpu_allocator() -> bool:
    """Keep freed memory in glibc's main heap so XLA:CPU steps stop re-faulting their buffers.

    Why: XLA:CPU mallocs each step's activations and temporaries afresh. glibc serves large
    blocks with new mmaps or from per-thread arenas that it trims on free, so every step
    page-faults its whole working set back in (~134k faults, ~0.5 GB, per VGG-32 train step
    measured on a 2-core VM: more time than the convolutions). One arena, no mmap and no
    trimming make steady-state steps fault-free. Process-wide and irreversible: peak memory
    stays reserved. Returns False (doing nothing) off glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_ARENA_MAX, 1) and mallopt(_M_MMAP_MAX, 0)
    return bool(ok and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def default_conv_impl(backend: str | None = None) -> str:
    """The fastest measured formulation for a backend: hybrid on CPU, XLA's conv elsewhere.

    CPU VGG train step, batch 128 (benchmarks/step_speed.py): hybrid beat im2col and xla at
    base 32 and 16; accelerators have native convolutions.
    """
    backend = backend or jax.default_backend()
    return "hybrid" if backend == "cpu" else "xla"


def conv2d(x: jax.Array, kernel: jax.Array, impl: str = "xla") -> jax.Array:
    """Stride-1 'same' convolution of NHWC `x` with an HWIO `kernel` (odd kernel size).

    `impl="im2col"` gathers the kh*kw shifted views of the zero-padded input along the
    channel axis and does one matmul; on CPU that beats XLA's direct convolution on small
    maps or few input channels, where XLA's conv is slow (pathologically so on 2x2 maps).
    `impl="hybrid"` picks per layer: XLA's conv for big maps, whose patch buffer would cost
    more memory traffic than the GEMM saves, im2col for the rest. 1x1 kernels are a matmul.
    """
    kh, kw, cin, cout = kernel.shape
    if impl == "hybrid":
        impl = "xla" if _prefer_xla(x.shape, kernel.shape) else "im2col"
    if impl == "xla":
        return lax.conv_general_dilated(
            x, kernel, window_strides=(1, 1), padding="SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
    if impl != "im2col":
        raise ValueError(f"unknown conv_impl {impl!r}; allowed: {', '.join(CONV_IMPLS)}")
    n, h, w, _ = x.shape
    if kh == kw == 1:
        return (x.reshape(-1, cin) @ kernel.reshape(cin, cout)).reshape(n, h, w, cout)
    ph, pw = kh // 2, kw // 2
    xp = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    # Order (i, j, c) matches kernel.reshape(kh * kw * cin, cout) for HWIO kernels.
    patches = jnp.concatenate(
        [xp[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)], axis=-1
    )
    out = patches.reshape(-1, kh * kw * cin) @ kernel.reshape(kh * kw * cin, cout)
    return out.reshape(n, h, w, cout)


def _prefer_xla(x_shape: tuple[int, ...], k_shape: tuple[int, ...]) -> bool:
    """Whether XLA's own conv beats im2col on CPU for this layer (measured on the VGG).

    XLA:CPU's direct conv needs no patch buffer, which wins on big feature maps; it is poor
    with few input channels and pathological once the map is barely larger than the kernel.
    """
    _, h, w, _ = x_shape
    kh, kw, cin, _ = k_shape
    return kh * kw > 1 and h * w >= 64 and cin >= 16


def max_pool(x: jax.Array, window: int, stride: int) -> jax.Array:
    """Max-pool NHWC `x` with a square window, no padding (PyTorch's MaxPool2d default).

    Non-overlapping windows use a reshape-max whose gradient goes to the first maximum of
    each window in row-major order, exactly like ``reduce_window``'s (select-and-scatter)
    gradient and PyTorch's; other windows fall back to ``reduce_window``.
    """
    _, h, w, _ = x.shape
    if window == stride and h % window == 0 and w % window == 0:
        return _block_max_pool(x, window)
    return lax.reduce_window(
        x, -jnp.inf, lax.max, (1, window, window, 1), (1, stride, stride, 1), "VALID"
    )


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
    # A custom rule because jnp.max's own gradient splits ties evenly and costs an extra
    # window-sum pass; here one fused mask picks the first maximum (reduce_window's choice).
    x, y = res
    xb = _blocks(x, k)
    pos = (jnp.arange(k)[:, None] * k + jnp.arange(k)[None, :]).reshape(1, 1, k, 1, k, 1)
    first = jnp.where(xb == y[:, :, None, :, None], pos, k * k).min(axis=(2, 4), keepdims=True)
    dx = jnp.where(pos == first, g[:, :, None, :, None], jnp.zeros((), g.dtype))
    return (dx.reshape(x.shape),)


_block_max_pool.defvjp(_block_max_pool_fwd, _block_max_pool_bwd)
