"""Every conv/pool formulation in `wdjax.cpu.ops` must compute XLA's reference function.

Why: formulations are picked per backend for speed only, so a model must train identically
whichever one runs; forward values and both gradients are checked against
``lax.conv_general_dilated`` / ``lax.reduce_window``.
"""

from __future__ import annotations

import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from wdjax.cpu import ops
from wdjax.cpu import plan as cp

CONV_CASES = [
    # (kernel size, spatial size, c_in, c_out): 3 input channels like the first layer, the
    # 8x8/16-channel maps hybrid sends to XLA's conv, the 2x2 maps it sends to im2col.
    (3, 8, 3, 8),
    (3, 8, 16, 24),
    (3, 4, 24, 16),
    (3, 2, 16, 32),
    (1, 4, 16, 8),
    (1, 1, 32, 10),
]


def ref_conv(x: jax.Array, k: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def ref_pool(x: jax.Array, window: int, stride: int) -> jax.Array:
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, 1),
                             (1, stride, stride, 1), "VALID")


def value_and_grads(f, x: jax.Array, *args) -> tuple[jax.Array, ...]:
    """Output and the VJP of a fixed random cotangent w.r.t. every argument (one jit: fast)."""

    @jax.jit
    def run(*a):
        y, vjp = jax.vjp(f, *a)
        return (y, *vjp(jax.random.normal(jax.random.key(7), y.shape, y.dtype)))

    return run(x, *args)


def assert_close(got, want, rtol: float = 2e-5) -> None:
    # float32 sums of up to 9*32 terms in a different order: error relative to the scale.
    scale = float(jnp.max(jnp.abs(want))) + 1e-6
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("impl", ops.CONV_IMPLS)
@pytest.mark.parametrize(("ksize", "size", "cin", "cout"), CONV_CASES)
@pytest.mark.slow
def test_conv_matches_lax(impl: str, ksize: int, size: int, cin: int, cout: int) -> None:
    kx, kk = jax.random.split(jax.random.key(ksize * 1000 + size * 100 + cin))
    x = jax.random.normal(kx, (3, size, size, cin))
    k = jax.random.normal(kk, (ksize, ksize, cin, cout)) / np.sqrt(ksize * ksize * cin)
    got = value_and_grads(lambda x, k: ops.conv2d(x, k, impl), x, k)
    want = value_and_grads(ref_conv, x, k)
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape
        assert_close(a, b)


def test_conv_jit_matches_lax() -> None:
    """Under jit (as in training) too, for every impl at once."""
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 16))
    k = jax.random.normal(jax.random.key(1), (3, 3, 16, 16)) / 12.0

    @jax.jit
    def grads(x, k):
        return [jax.grad(lambda x, k, i=i: jnp.sum(jnp.sin(ops.conv2d(x, k, i))), (0, 1))(x, k)
                for i in ops.CONV_IMPLS]

    want = jax.grad(lambda x, k: jnp.sum(jnp.sin(ref_conv(x, k))), (0, 1))(x, k)
    for got in grads(x, k):
        for a, b in zip(got, want, strict=True):
            assert_close(a, b)


def test_unknown_conv_impl_raises() -> None:
    with pytest.raises(ValueError, match="unknown conv_impl"):
        ops.conv2d(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 2, 2)), "fft")


def test_default_conv_impl() -> None:
    assert ops.default_conv_impl("cpu") == "hybrid"
    assert ops.default_conv_impl("gpu") == "xla"
    assert ops.default_conv_impl() in ops.CONV_IMPLS


def _pool_input() -> jax.Array:
    """Post-ReLU-like input: many all-zero windows plus explicit positive ties."""
    x = jax.nn.relu(jax.random.normal(jax.random.key(3), (2, 8, 8, 4)))
    x = x.at[0, 0, 0, 0].set(5.0).at[0, 1, 1, 0].set(5.0)  # tie on the diagonal
    x = x.at[1, 2, 2, 1].set(4.0).at[1, 2, 3, 1].set(4.0).at[1, 3, 2, 1].set(4.0)
    return x.at[0, 4:6, 4:6, 2].set(1.5)  # a four-way tie


@pytest.mark.parametrize(("window", "stride"), [(2, 2), (4, 4), (3, 2), (2, 1)])
def test_max_pool_matches_reduce_window(window: int, stride: int) -> None:
    """Values, and gradients with ties sent to the first max, as reduce_window does."""
    x = _pool_input()
    got = value_and_grads(lambda x: ops.max_pool(x, window, stride), x)
    want = value_and_grads(lambda x: ref_pool(x, window, stride), x)
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_max_pool_grad_under_jit() -> None:
    x = _pool_input()
    f = jax.jit(jax.grad(lambda x: jnp.sum(ops.max_pool(x, 2, 2) ** 2)))
    want = jax.grad(lambda x: jnp.sum(ref_pool(x, 2, 2) ** 2))(x)
    np.testing.assert_array_equal(np.asarray(f(x)), np.asarray(want))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_tune_cpu_allocator_runs() -> None:
    """In a child process, since the setting is process-wide and irreversible."""
    code = "from wdjax.cpu import ops; print(ops.tune_cpu_allocator())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() in ("True", "False")


W2, W4 = cp.winograd_method(2), cp.winograd_method(4)
PLANS = [cp.Plan(cp.XLA, cp.XLA, cp.XLA), cp.Plan(*[cp.im2col_method(4)] * 3),
         cp.Plan(cp.im2col_method(1), cp.im2col_method(2), cp.im2col_method()),
         cp.Plan(cp.im2col_method(2), cp.XLA, cp.im2col_method(1)),
         cp.Plan(W2, W4, cp.winograd_method(2, 2)), cp.Plan(cp.winograd_method(4, 1), cp.XLA, W4),
         cp.Plan(cp.XLA, cp.winograd_method(2, 2), cp.im2col_method(2))]


@pytest.mark.parametrize("plan", PLANS, ids=str)
def test_planned_conv_every_method_matches_lax(plan: cp.Plan) -> None:
    """Each pass (forward, input gradient, kernel gradient) by XLA, chunked im2col or
    Winograd (whole batch or chunks)."""
    x = jax.random.normal(jax.random.key(11), (4, 6, 6, 5))
    k = jax.random.normal(jax.random.key(12), (3, 3, 5, 7)) / np.sqrt(45)
    got = value_and_grads(lambda x, k: ops.planned_conv(x, k, plan), x, k)
    want = value_and_grads(ref_conv, x, k)
    for a, b in zip(got, want, strict=True):
        assert_close(a, b)


@pytest.mark.parametrize(("plan", "k_shape", "needle"), [
    (cp.Plan(cp.XLA, cp.im2col_method(3), cp.XLA), (3, 3, 2, 2), "divide the batch of 4"),
    (cp.Plan(cp.im2col_method(-1), cp.XLA, cp.XLA), (3, 3, 2, 2), "divide the batch of 4"),
    (("xla", "xla", "xla"), (3, 3, 2, 2), "conv_plan.Method of kind xla, im2col, winograd"),
    (cp.Plan(cp.Method("fast"), cp.XLA, cp.XLA), (3, 3, 2, 2), "of kind xla, im2col"),
    (cp.Plan(W2, cp.XLA, cp.XLA), (5, 5, 2, 2), "winograd needs a 3x3 kernel"),
    (cp.Plan(cp.winograd_method(3), cp.XLA, cp.XLA), (3, 3, 2, 2), "tile 2 or 4 (got 3)"),
])
def test_planned_conv_rejects_bad_plans(plan, k_shape, needle: str) -> None:
    with pytest.raises(ValueError, match=re.escape(needle)):
        ops.planned_conv(jnp.zeros((4, 4, 4, 2)), jnp.zeros(k_shape), plan)


def test_conv_plan_follows_the_rule_table() -> None:
    """The first matching row of RULES decides; valid chunks within the patch budget."""
    assert cp.conv_plan((128, 2, 2, 256), (3, 3, 256, 256)) == (
        cp.im2col_method(), cp.im2col_method(), cp.XLA)
    fwd, dx, dw = cp.conv_plan((128, 32, 32, 3), (3, 3, 3, 32))
    assert fwd == dx == cp.XLA and dw.kind == "im2col" and dw.chunk > 1
    assert cp.conv_plan((128, 32, 32, 32), (3, 3, 32, 32)) == (W4, W4, W4)
    assert cp.conv_plan((128, 8, 8, 64), (3, 3, 64, 128)) == (W2, W2, W4)
    assert cp.conv_plan((128, 8, 8, 256), (3, 3, 256, 256)) == (W4, W4, W4)
    assert cp.conv_plan((128, 32, 32, 16), (3, 3, 16, 16)) == (cp.XLA, cp.XLA, W4)
    # Winograd rows never apply to other kernel sizes.
    assert cp.conv_plan((128, 32, 32, 32), (5, 5, 32, 32))[0] == cp.XLA
    for shape in [(128, 32, 32, 3), (96, 32, 32, 8), (7, 16, 16, 4)]:
        chunk = cp.conv_plan(shape, (3, 3, shape[-1], 4))[2].chunk
        n, h, w, c = shape
        assert n % chunk == 0
        assert chunk == 1 or chunk * h * w * 9 * c * 4 <= 4 << 20
    # A custom table is honoured (the rules are data).
    mine = (cp.Rule("forward", 1, 1 << 30, 1, W2),)
    assert cp.conv_plan((8, 32, 32, 3), (3, 3, 3, 8), mine) == (W2, cp.XLA, cp.XLA)


def test_plan_text_names_every_pass() -> None:
    plan = cp.Plan(cp.XLA, cp.winograd_method(4, 16), cp.im2col_method(8))
    assert str(plan) == "fwd xla, dx winograd4/16, dw im2col/8"


def _grouped_convs(hlo: str) -> set[str]:
    return {g for g in re.findall(r"feature_group_count = (\d+)", hlo) if g != "1"}


@pytest.mark.parametrize("shared_kernel", [False, True])
@pytest.mark.slow
def test_hybrid_conv_under_vmap(shared_kernel: bool) -> None:
    """vmap over runs (a vmapped sweep) equals a loop over runs and makes no grouped conv."""
    runs, shape = 3, (2, 8, 8, 16)  # 8x8x16: hybrid runs forward and dx through XLA
    x = jax.random.normal(jax.random.key(5), (runs, *shape))
    k = jax.random.normal(jax.random.key(6), (runs, 3, 3, 16, 16)) / 12.0
    if shared_kernel:
        k = k[0]
    assert cp.XLA in cp.conv_plan(shape, (3, 3, 16, 16))

    def grads(x, k):
        return jax.grad(lambda x, k: jnp.sum(jnp.sin(ops.conv2d(x, k, "hybrid"))), (0, 1))(x, k)

    in_axes = (0, None if shared_kernel else 0)
    batched = jax.jit(jax.vmap(grads, in_axes))
    got = batched(x, k)
    loop = [jax.grad(lambda x, k: jnp.sum(jnp.sin(ref_conv(x, k))), (0, 1))(
        x[r], k if shared_kernel else k[r]) for r in range(runs)]
    assert_close(got[0], jnp.stack([g[0] for g in loop]))
    want_k = sum(g[1] for g in loop) if shared_kernel else jnp.stack([g[1] for g in loop])
    assert_close(got[1].sum(0) if shared_kernel else got[1], want_k)
    assert not _grouped_convs(batched.lower(x, k).as_text())
    if not shared_kernel:  # the check can fail: plain vmapped XLA convs are grouped
        plain = jax.vmap(lambda x, k: ops.conv2d(x, k, "xla"))
        assert _grouped_convs(jax.jit(plain).lower(x, k).as_text())


def test_even_kernel_raises() -> None:
    with pytest.raises(ValueError, match="only odd sizes"):
        ops.conv2d(jnp.zeros((1, 4, 4, 2)), jnp.zeros((2, 2, 2, 2)), "hybrid")
