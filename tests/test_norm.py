"""Training-mode BatchNorm (`wdjax.cpu.batchnorm`, `wdjax.models.vgg.BatchNorm`) against NumPy.

The reference is the textbook two-pass formula in float64, and its gradients are central
finite differences of that reference, so neither shares code or algebra with the one-pass
statistics and the hand-written VJP under test.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wdjax import models
from wdjax.cpu import batchnorm

EPS = 1e-5


def np_batch_norm(x, scale, bias, mask):
    """(y, mean, biased var): PyTorch's training BatchNorm over the rows with mask 1."""
    w = np.ones(x.shape[0]) if mask is None else np.asarray(mask, np.float64)
    rows = x[w > 0].reshape(-1, x.shape[-1])
    mean, var = rows.mean(0), rows.var(0)
    return (x - mean) / np.sqrt(var + EPS) * scale + bias, mean, var


def np_grads(x, scale, bias, mask, gy, h=1e-6):
    """d/d(x, scale, bias) of sum(gy * y), by central differences in float64."""
    out = []
    for which in range(3):
        args = [x.copy(), scale.copy(), bias.copy()]
        grad = np.zeros_like(args[which])
        for i in np.ndindex(grad.shape):
            vals = []
            for step in (h, -h):
                a = [v.copy() for v in args]
                a[which][i] += step
                vals.append(np.sum(gy * np_batch_norm(*a, mask)[0]))
            grad[i] = (vals[0] - vals[1]) / (2 * h)
        out.append(grad)
    return out


def _case(seed: int, shape=(5, 2, 3, 4), offset: float = 0.7):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * rng.uniform(0.5, 2, shape[-1]) + offset
    scale = rng.uniform(0.5, 1.5, shape[-1])
    bias = rng.standard_normal(shape[-1])
    gy = rng.standard_normal(shape)
    return x, scale, bias, gy


MASKS = [None, np.array([1, 1, 0, 1, 0], np.float32), np.array([0, 1, 1, 1, 1], np.float32)]


@pytest.mark.device
@pytest.mark.parametrize("mask", MASKS, ids=["unmasked", "padded-middle", "padded-first"])
def test_values_and_gradients_match_numpy(mask) -> None:
    x, scale, bias, gy = _case(0)
    want_y, want_mean, want_var = np_batch_norm(x, scale, bias, mask)
    want_grads = np_grads(x, scale, bias, mask, gy)
    args = [jnp.asarray(v, jnp.float32) for v in (x, scale, bias)]
    m = None if mask is None else jnp.asarray(mask)
    (y, mean, var), vjp = jax.vjp(lambda *a: batchnorm.batch_norm_train(*a, m, EPS), *args)
    got_grads = vjp((jnp.asarray(gy, jnp.float32), jnp.zeros_like(mean), jnp.zeros_like(var)))
    np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, want_var, rtol=1e-5, atol=1e-6)
    for got, want in zip(got_grads, want_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_gradients_of_the_statistics_match_numpy() -> None:
    """The returned mean and var are differentiable too (with padded rows)."""
    x, scale, bias, _ = _case(1)
    mask = MASKS[1]
    rng = np.random.default_rng(2)
    cm, cv = rng.standard_normal(4), rng.standard_normal(4)

    def np_stat_loss(xv):
        _, mean, var = np_batch_norm(xv, scale, bias, mask)
        return np.sum(cm * mean) + np.sum(cv * var)

    want = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        hi, lo = x.copy(), x.copy()
        hi[i] += 1e-6
        lo[i] -= 1e-6
        want[i] = (np_stat_loss(hi) - np_stat_loss(lo)) / 2e-6
    def stat_loss(xv):
        _, mean, var = batchnorm.batch_norm_train(xv, jnp.asarray(scale, jnp.float32),
                                             jnp.asarray(bias, jnp.float32),
                                             jnp.asarray(mask), EPS)
        return jnp.sum(jnp.asarray(cm, jnp.float32) * mean + jnp.asarray(cv, jnp.float32) * var)

    got = jax.grad(stat_loss)(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("offset", [1e2, 1e3])
def test_one_pass_variance_survives_a_large_mean(offset: float) -> None:
    """The shifted sums keep var accurate where E[x^2] - E[x]^2 would cancel in float32."""
    x, scale, bias, _ = _case(3, shape=(64, 4, 4, 8), offset=offset)
    _, want_mean, want_var = np_batch_norm(x, scale, bias, None)
    xf = jnp.asarray(x, jnp.float32)
    _, mean, var = batchnorm.batch_norm_train(xf, jnp.asarray(scale, jnp.float32),
                                         jnp.asarray(bias, jnp.float32), None, EPS)
    np.testing.assert_allclose(var, want_var, rtol=1e-4)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-6)
    # The check can fail: unshifted one-pass sums lose the variance at this offset.
    flat = xf.reshape(-1, 8)
    naive = jnp.mean(flat * flat, 0) - jnp.mean(flat, 0) ** 2
    assert np.max(np.abs(np.asarray(naive) / want_var - 1)) > 1e-3


def test_module_updates_running_stats_like_pytorch() -> None:
    """Biased var normalises, unbiased var enters the running average, momentum 0.9."""
    x, _, _, _ = _case(4, shape=(6, 3, 3, 5))
    mask = np.array([1, 1, 1, 1, 0, 0], np.float32)
    bn = models.BatchNorm()
    variables = bn.init(jax.random.key(0), jnp.zeros((1, 3, 3, 5)), train=False)
    y, new = bn.apply(variables, jnp.asarray(x, jnp.float32), True, jnp.asarray(mask),
                      mutable=["batch_stats"])
    want_y, mean, var = np_batch_norm(x, np.ones(5), np.zeros(5), mask)
    n = 4 * 9
    np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new["batch_stats"]["mean"], 0.1 * mean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(new["batch_stats"]["var"], 0.9 + 0.1 * var * n / (n - 1),
                               rtol=1e-5)
    # Evaluation normalises with the running statistics.
    ev = bn.apply({**variables, **new}, jnp.asarray(x, jnp.float32), False)
    ra_mean, ra_var = (np.asarray(new["batch_stats"][k], np.float64) for k in ("mean", "var"))
    np.testing.assert_allclose(ev, (x - ra_mean) / np.sqrt(ra_var + EPS), rtol=1e-5, atol=1e-5)


@pytest.mark.device
def test_under_vmap_equals_a_loop() -> None:
    x, scale, bias, _ = _case(5)
    xs = jnp.asarray(np.stack([x, 2 * x + 1]), jnp.float32)
    mask = jnp.asarray(MASKS[1])

    def loss(xv):
        y, _, _ = batchnorm.batch_norm_train(xv, jnp.asarray(scale, jnp.float32),
                                        jnp.asarray(bias, jnp.float32), mask, EPS)
        return jnp.sum(jnp.sin(y))

    got = jax.vmap(jax.grad(loss))(xs)
    for r in range(2):
        np.testing.assert_allclose(got[r], jax.grad(loss)(xs[r]), rtol=1e-6, atol=1e-6)
