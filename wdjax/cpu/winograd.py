"""Winograd minimal filtering for stride-1 'same' 3x3 convolutions (NHWC input, HWIO kernel).

F(m x m, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016)
computes each m x m output tile from an a x a input tile, a = m + 2, as

    Y = A^T [ (G w G^T) * (B^T d B) ] A        (* elementwise, per input/output channel pair)

so a layer becomes three steps: a fixed linear transform of the input tiles (V = B^T d B),
a*a independent matmuls over channels (M[t] = V[t] @ U[t], with U = G w G^T), and a fixed
output transform. Per output pixel and channel pair that is a*a / m^2 multiplies instead of
9: 4 for F(2x2,3x3) (2.25x fewer), 2.25 for F(4x4,3x3) (4x fewer). On CPU the matmuls run
at XLA's dot speed, which is about twice its convolution speed on the same cores.

The transforms are written as explicit sums of shifted strided views (their matrices are
small and sparse), so XLA fuses each into one elementwise pass. Maps of any size work: the
input is zero-padded to whole tiles and the output cropped.

The kernel gradient has the same structure transposed: dU[t] = V[t]^T @ (A g A^T)[t], then
dw = G^T dU G. The input gradient of a 'same' conv is the 'same' conv of the output
gradient with the flipped, channel-transposed kernel, so the forward serves it.
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


class Transform(NamedTuple):
    """The matrices of F(m x m, 3x3): input tile a = m + 2; bt (a, a), g (a, 3), at (m, a)."""

    m: int
    bt: tuple[tuple[float, ...], ...]
    g: tuple[tuple[float, ...], ...]
    at: tuple[tuple[float, ...], ...]

    @property
    def a(self) -> int:
        return self.m + 2


def _f(*xs) -> tuple[float, ...]:
    return tuple(float(Fraction(x)) for x in xs)


# Interpolation points 0, 1, -1 (and infinity).
F2 = Transform(
    m=2,
    bt=(_f(1, 0, -1, 0), _f(0, 1, 1, 0), _f(0, -1, 1, 0), _f(0, 1, 0, -1)),
    g=(_f(1, 0, 0), _f("1/2", "1/2", "1/2"), _f("1/2", "-1/2", "1/2"), _f(0, 0, 1)),
    at=(_f(1, 1, 1, 0), _f(0, 1, -1, -1)),
)
# Interpolation points 0, 1, -1, 2, -2 (and infinity): the usual float32-safe choice.
F4 = Transform(
    m=4,
    bt=(_f(4, 0, -5, 0, 1, 0), _f(0, -4, -4, 1, 1, 0), _f(0, 4, -4, -1, 1, 0),
        _f(0, -2, -1, 2, 1, 0), _f(0, 2, -1, -2, 1, 0), _f(0, 4, 0, -5, 0, 1)),
    g=(_f("1/4", 0, 0), _f("-1/6", "-1/6", "-1/6"), _f("-1/6", "1/6", "-1/6"),
       _f("1/24", "1/12", "1/6"), _f("1/24", "-1/12", "1/6"), _f(0, 0, 1)),
    at=(_f(1, 1, 1, 1, 1, 0), _f(0, 1, -1, 2, -2, 0), _f(0, 1, 1, 4, 4, 0),
        _f(0, 1, -1, 8, -8, 1)),
)
TRANSFORMS = {2: F2, 4: F4}


def transform(tile: int) -> Transform:
    """F(tile x tile, 3x3); `tile` is 2 or 4."""
    if tile not in TRANSFORMS:
        raise ValueError(f"Winograd output tile {tile!r}: allowed {sorted(TRANSFORMS)}")
    return TRANSFORMS[tile]


def _combine(matrix, parts: list[jax.Array]) -> list[jax.Array]:
    """[sum_k matrix[i][k] * parts[k] for each row i], zero terms skipped, +-1 as add/sub."""
    out = []
    for row in matrix:
        acc = None
        for c, p in zip(row, parts, strict=True):
            if c == 0:
                continue
            if acc is None:
                acc = p if c == 1 else (-p if c == -1 else c * p)
            elif c in (1, -1):
                acc = acc + p if c == 1 else acc - p
            else:
                acc = acc + c * p
        out.append(acc if acc is not None else jnp.zeros_like(parts[0]))
    return out


def _tiles(size: int, m: int) -> int:
    return -(-size // m)


def _strided(x: jax.Array, axis: int, start: int, count: int, step: int) -> jax.Array:
    """`count` entries of `x` along `axis` from `start`, every `step`-th."""
    return lax.slice_in_dim(x, start, start + step * (count - 1) + 1, step, axis)


def input_tiles(x: jax.Array, tr: Transform) -> jax.Array:
    """V = B^T d B for every a x a input tile d: shape (a*a, N*Th*Tw, C).

    Tiles start every m pixels of the input zero-padded by 1 on top/left and to whole
    tiles on the bottom/right.
    """
    n, h, w, c = x.shape
    m, a = tr.m, tr.a
    th, tw = _tiles(h, m), _tiles(w, m)
    xp = jnp.pad(x, ((0, 0), (1, m * th + 1 - h), (1, m * tw + 1 - w), (0, 0)))
    rows = _combine(tr.bt, [_strided(xp, 1, k, th, m) for k in range(a)])
    tiles = [v for r in rows for v in _combine(tr.bt, [_strided(r, 2, k, tw, m)
                                                       for k in range(a)])]
    return jnp.stack(tiles).reshape(a * a, n * th * tw, c)


def kernel_tiles(kernel: jax.Array, tr: Transform) -> jax.Array:
    """U = G w G^T for a (3, 3, C, K) kernel: shape (a*a, C, K)."""
    g = jnp.asarray(tr.g, kernel.dtype)
    u = jnp.einsum("si,ijck,tj->stck", g, kernel, g, precision=lax.Precision.HIGHEST)
    return u.reshape(tr.a * tr.a, *kernel.shape[2:])


def output_from_tiles(mt: jax.Array, tr: Transform, shape: tuple[int, ...]) -> jax.Array:
    """Y = A^T M A for tiles M (a*a, N*Th*Tw, K), interleaved and cropped to `shape`."""
    n, h, w, k = shape
    m, a = tr.m, tr.a
    th, tw = _tiles(h, m), _tiles(w, m)
    parts = list(mt.reshape(a, a, n, th, tw, k))
    rows = _combine(tr.at, parts)  # m entries, each (a, N, Th, Tw, K): combined over rows
    out = [_combine(tr.at, list(r)) for r in rows]  # out[o][p]: output pixel (o, p) of tiles
    y = jnp.stack([jnp.stack(r, axis=3) for r in out], axis=2)  # (N, Th, m, Tw, m, K)
    return y.reshape(n, m * th, m * tw, k)[:, :h, :w]


def output_grad_tiles(g: jax.Array, tr: Transform) -> jax.Array:
    """A g A^T per output tile of the cotangent `g` (N, H, W, K): shape (a*a, N*Th*Tw, K).

    The transpose of `output_from_tiles` (crop -> zero-pad, interleave -> strided views).
    """
    n, h, w, k = g.shape
    m, a = tr.m, tr.a
    th, tw = _tiles(h, m), _tiles(w, m)
    gp = jnp.pad(g, ((0, 0), (0, m * th - h), (0, m * tw - w), (0, 0)))
    a_mat = tuple(zip(*tr.at, strict=True))  # A = (A^T)^T: (a, m)
    rows = _combine(a_mat, [_strided(gp, 1, o, th, m) for o in range(m)])
    tiles = [v for r in rows for v in _combine(a_mat, [_strided(r, 2, p, tw, m)
                                                       for p in range(m)])]
    return jnp.stack(tiles).reshape(a * a, n * th * tw, k)


def over_chunks(f, xs: tuple[jax.Array, ...], chunk: int, reduce: bool) -> jax.Array:
    """`f` on `chunk` examples at a time: outputs concatenated, or summed if `reduce`."""
    n = xs[0].shape[0]
    if chunk >= n:
        return f(*xs)
    split = tuple(x.reshape(n // chunk, chunk, *x.shape[1:]) for x in xs)
    if reduce:
        first = jax.eval_shape(f, *(s[0] for s in split))
        acc, _ = lax.scan(lambda acc, c: (acc + f(*c), None),
                          jnp.zeros(first.shape, first.dtype), split)
        return acc
    out = lax.map(lambda c: f(*c), split)
    return out.reshape(n, *out.shape[2:])


def conv(x: jax.Array, kernel: jax.Array, tile: int = 2, chunk: int | None = None) -> jax.Array:
    """Stride-1 'same' 3x3 convolution by F(tile x tile, 3x3), `chunk` examples at a time.

    Why chunks: the transformed input is a*a/m^2 times the input (4x for F(2x2), 2.25x for
    F(4x4)); on few examples at a time it stays in cache between transform and matmul.
    """
    tr = transform(tile)
    if kernel.shape[:2] != (3, 3):
        raise ValueError(f"Winograd kernel {kernel.shape[:2]}: only 3x3 kernels are allowed")
    u = kernel_tiles(kernel, tr)

    def one(xc: jax.Array) -> jax.Array:
        mt = jnp.einsum("tpc,tck->tpk", input_tiles(xc, tr), u)
        return output_from_tiles(mt, tr, (*xc.shape[:3], kernel.shape[3]))

    return over_chunks(one, (x,), chunk or x.shape[0], reduce=False)


def kernel_grad(x: jax.Array, g: jax.Array, tile: int = 2,
                chunk: int | None = None) -> jax.Array:
    """d/dw of sum(g * conv(x, w)) for a 3x3 'same' conv: G^T [sum_tiles V^T (A g A^T)] G."""
    tr = transform(tile)

    def one(xc: jax.Array, gc: jax.Array) -> jax.Array:
        return jnp.einsum("tpc,tpk->tck", input_tiles(xc, tr), output_grad_tiles(gc, tr))

    du = over_chunks(one, (x, g), chunk or x.shape[0], reduce=True)
    gm = jnp.asarray(tr.g, du.dtype)
    du = du.reshape(tr.a, tr.a, *du.shape[1:])
    return jnp.einsum("si,stck,tj->ijck", gm, du, gm, precision=lax.Precision.HIGHEST)
