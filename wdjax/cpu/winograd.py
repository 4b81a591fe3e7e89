"""Winograd F(m x m, 3x3) for stride-1 'same' 3x3 convolutions (NHWC, HWIO), Lavin & Gray (2016):
an m x m output tile from an a x a input tile d (a = m + 2) is ``Y = A^T [(G w G^T) * (B^T d B)] A``
(4 or 2.25 multiplies per output instead of 9), the transforms sums of strided views of the map
zero-padded to whole tiles. The kernel gradient is ``dw = G^T [sum_tiles V^T (A g A^T)] G``."""

from __future__ import annotations

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


# Interpolation points 0, 1, -1 (and infinity).
F2 = Transform(m=2, bt=((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
               g=((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1)),
               at=((1, 1, 1, 0), (0, 1, -1, -1)))
# Interpolation points 0, 1, -1, 2, -2 (and infinity): the usual float32-safe choice.
F4 = Transform(
    m=4,
    bt=((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
        (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)),
    g=((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
       (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1)),
    at=((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1)),
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
    for row in matrix:  # no row of the transforms is all zeros
        acc = None
        for c, p in zip(row, parts, strict=True):
            if c and acc is None:
                acc = p if c == 1 else -p if c == -1 else c * p
            elif c:
                acc = acc + p if c == 1 else acc - p if c == -1 else acc + c * p
        out.append(acc)
    return out


def _tiles(size: int, m: int) -> int:
    return -(-size // m)


def _strided(x: jax.Array, axis: int, start: int, count: int, step: int) -> jax.Array:
    return lax.slice_in_dim(x, start, start + step * (count - 1) + 1, step, axis)


def tile_transform(x: jax.Array, matrix, m: int, pad: int) -> jax.Array:
    """``matrix d matrix^T`` for every tile d of `x` (N, H, W, C), the tiles starting every m
    pixels of `x` zero-padded by `pad` on top/left and to whole tiles on the bottom/right:
    shape (rows^2, N*Th*Tw, C) for a `matrix` of shape (rows, tile side)."""
    n, h, w, c = x.shape
    th, tw, size = _tiles(h, m), _tiles(w, m), len(matrix[0])
    xp = jnp.pad(x, ((0, 0), (pad, m * th + size - m - pad - h),
                     (pad, m * tw + size - m - pad - w), (0, 0)))
    rows = _combine(matrix, [_strided(xp, 1, k, th, m) for k in range(size)])
    tiles = [v for r in rows for v in _combine(matrix, [_strided(r, 2, k, tw, m)
                                                        for k in range(size)])]
    return jnp.stack(tiles).reshape(len(matrix) ** 2, n * th * tw, c)


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
    """Stride-1 'same' 3x3 convolution by F(tile x tile, 3x3), `chunk` examples at a time (so
    that the transformed input, 4x / 2.25x the input, stays in cache until its matmul)."""
    tr = transform(tile)
    if kernel.shape[:2] != (3, 3):
        raise ValueError(f"Winograd kernel {kernel.shape[:2]}: only 3x3 kernels are allowed")
    u = kernel_tiles(kernel, tr)

    def one(xc: jax.Array) -> jax.Array:
        mt = jnp.einsum("tpc,tck->tpk", tile_transform(xc, tr.bt, tr.m, 1), u)  # V = B^T d B
        return output_from_tiles(mt, tr, (*xc.shape[:3], kernel.shape[3]))

    return over_chunks(one, (x,), chunk or x.shape[0], reduce=False)


def kernel_grad(x: jax.Array, g: jax.Array, tile: int = 2, chunk: int | None = None) -> jax.Array:
    """d/dw of sum(g * conv(x, w)) for a 3x3 'same' conv: G^T [sum_tiles V^T (A g A^T)] G."""
    tr = transform(tile)
    a_mat = tuple(zip(*tr.at, strict=True))  # A = (A^T)^T; A g A^T transposes the output step

    def one(xc: jax.Array, gc: jax.Array) -> jax.Array:
        return jnp.einsum("tpc,tpk->tck", tile_transform(xc, tr.bt, tr.m, 1),
                          tile_transform(gc, a_mat, tr.m, 0))

    du = over_chunks(one, (x, g), chunk or x.shape[0], reduce=True)
    gm = jnp.asarray(tr.g, du.dtype)
    du = du.reshape(tr.a, tr.a, *du.shape[1:])
    return jnp.einsum("si,stck,tj->ijck", gm, du, gm, precision=lax.Precision.HIGHEST)
