"""Winograd F(2x2,3x3) and F(4x4,3x3) (`wdjax.cpu.winograd`) against direct convolution.

The transform matrices are checked against the definition of correlation in float64 NumPy;
the convolution, its input gradient and its kernel gradient against ``lax.conv`` at every
3x3 layer shape of the VGG (base 8) and of a CIFAR ResNet-18 (small batch), and under
`jax.vmap` with per-run kernels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from wdjax.cpu import ops, winograd
from wdjax.cpu import plan as cp

VGG8 = [(32, 3, 8), (32, 8, 8), (16, 8, 16), (16, 16, 16), (8, 16, 32), (8, 32, 32),
        (4, 32, 64), (4, 64, 64), (2, 64, 64)]
RESNET18 = [(32, 64, 64), (16, 128, 128), (8, 256, 256), (4, 512, 512)]
ODD = [(1, 8, 4), (3, 5, 7), (5, 4, 6)]  # 1x1 maps and sizes that are not whole tiles


@pytest.mark.parametrize("tile", [2, 4])
def test_transforms_compute_correlation(tile: int) -> None:
    """A^T [(G g) * (B^T d)] = the 'valid' correlation of d (length a) with g (length 3)."""
    tr = winograd.transform(tile)
    bt, g_mat, at = (np.array(m, np.float64) for m in (tr.bt, tr.g, tr.at))
    rng = np.random.default_rng(tile)
    for _ in range(5):
        d, g = rng.standard_normal(tr.a), rng.standard_normal(3)
        want = np.array([d[i:i + 3] @ g for i in range(tile)])
        np.testing.assert_allclose(at @ ((g_mat @ g) * (bt @ d)), want, rtol=1e-12, atol=1e-12)


def ref_conv(x: jax.Array, k: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _check(size: int, cin: int, cout: int, batch: int = 2) -> None:
    """Value, input gradient and kernel gradient by F(2x2) and F(4x4) vs lax (one jit)."""
    kx, kk, kg = jax.random.split(jax.random.key(size * 1000 + cin + cout), 3)
    x = jax.random.normal(kx, (batch, size, size, cin))
    k = jax.random.normal(kk, (3, 3, cin, cout)) * np.sqrt(2 / (9 * cin))
    g = jax.random.normal(kg, (batch, size, size, cout))

    def both(f):
        y, vjp = jax.vjp(f, x, k)
        return (y, *vjp(g))

    def by(tile):
        plan = cp.Plan(*[cp.winograd_method(tile)] * 3)
        return both(lambda x, k: ops.planned_conv(x, k, plan))

    want, *got = jax.jit(lambda: (both(ref_conv), by(2), by(4)))()
    # float32 rounding: F(2x2)'s transforms add or subtract at most 4 terms; F(4x4)'s have
    # coefficients up to 8 and 5, which amplify rounding about 10x (its error grows with
    # the tile, the known cost of larger Winograd tiles).
    for tile, tol, outs in zip((2, 4), (2e-5, 1e-4), got, strict=True):
        for name, a, b in zip(("value", "input grad", "kernel grad"), outs, want, strict=True):
            scale = float(jnp.max(jnp.abs(b)))
            err = float(jnp.max(jnp.abs(a - b)))
            assert a.shape == b.shape and err <= tol * scale, (tile, name, err / scale)


@pytest.mark.parametrize(("size", "cin", "cout"), VGG8 + ODD, ids=str)
@pytest.mark.slow
def test_matches_lax_at_vgg_shapes(size: int, cin: int, cout: int) -> None:
    _check(size, cin, cout)


@pytest.mark.parametrize(("size", "cin", "cout"), RESNET18, ids=str)
@pytest.mark.slow
def test_matches_lax_at_resnet18_shapes(size: int, cin: int, cout: int) -> None:
    _check(size, cin, cout, batch=1)


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.slow
def test_under_vmap_with_per_run_kernels(tile: int) -> None:
    """vmap over runs, each with its own kernel, equals a loop over the runs."""
    runs = 3
    x = jax.random.normal(jax.random.key(1), (runs, 2, 6, 6, 8))
    k = jax.random.normal(jax.random.key(2), (runs, 3, 3, 8, 4)) / 8.0
    plan = cp.Plan(cp.winograd_method(tile), cp.winograd_method(tile),
                   cp.winograd_method(tile, 1))

    def grads(x, k):
        return jax.grad(lambda x, k: jnp.sum(jnp.sin(ops.planned_conv(x, k, plan))),
                        (0, 1))(x, k)

    got = jax.jit(jax.vmap(grads))(x, k)
    for r in range(runs):
        want = jax.grad(lambda x, k: jnp.sum(jnp.sin(ref_conv(x, k))), (0, 1))(x[r], k[r])
        for a, b in zip((got[0][r], got[1][r]), want, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * float(jnp.abs(b).max()))


def test_impl_winograd_in_the_model_entry_point() -> None:
    """conv2d(impl="winograd") runs 3x3 kernels by Winograd and 1x1 kernels as a matmul."""
    x = jax.random.normal(jax.random.key(3), (2, 5, 5, 4))
    for shape in [(3, 3, 4, 6), (1, 1, 4, 6)]:
        k = jax.random.normal(jax.random.key(4), shape)
        np.testing.assert_allclose(ops.conv2d(x, k, "winograd"), ref_conv(x, k), rtol=0,
                                   atol=1e-5 * float(jnp.abs(ref_conv(x, k)).max()))


def test_bad_tile_is_refused() -> None:
    with pytest.raises(ValueError, match=r"output tile 3: allowed \[2, 4\]"):
        winograd.conv(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 2, 2)), tile=3)
    with pytest.raises(ValueError, match="only 3x3 kernels"):
        winograd.conv(jnp.zeros((1, 4, 4, 2)), jnp.zeros((5, 5, 2, 2)))
