"""Convolution and pooling kernels used by the model, in formulations chosen per backend.

The VGG only needs 'same' 3x3 and 1x1 convolutions and non-overlapping 2x2 max-pools, so
these are written for exactly that case; anything else falls back to XLA's general ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
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
    """The fastest measured formulation for a backend: im2col on CPU, XLA's conv elsewhere."""
    backend = backend or jax.default_backend()
    return "im2col" if backend == "cpu" else "xla"


def conv2d(x: jax.Array, kernel: jax.Array, impl: str = "xla") -> jax.Array:
    """Stride-1 'same' convolution of NHWC `x` with an HWIO `kernel` (odd kernel size).

    `impl="im2col"` gathers the kh*kw shifted views of the zero-padded input along the
    channel axis and does one matmul; on CPU that beats XLA's direct convolution because
    the matmul (and its transpose in the backward pass) runs as one large GEMM.
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
    """Max-pool NHWC `x` with a square window, no padding (PyTorch's MaxPool2d default)."""
    n, h, w, c = x.shape
    if window == stride and h % window == 0 and w % window == 0:
        # Non-overlapping windows: a reshape and a max, cheaper than reduce_window on CPU.
        return x.reshape(n, h // window, window, w // window, window, c).max(axis=(2, 4))
    return lax.reduce_window(
        x, -jnp.inf, lax.max, (1, window, window, 1), (1, stride, stride, 1), "VALID"
    )
