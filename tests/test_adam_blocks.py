"""scale_by_adam_blocks: element blocks are optax's Adam; unit/layer blocks match NumPy."""

import jax
import numpy as np
import optax
import pytest

from wdjax import decay

RNG = np.random.default_rng(1)
PARAMS = {"conv": {"kernel": RNG.normal(size=(3, 3, 2, 4)).astype(np.float32),
                   "bias": RNG.normal(size=4).astype(np.float32)},
          "fc": {"kernel": RNG.normal(size=(4, 3)).astype(np.float32)}}


def grads(seed):
    r = np.random.default_rng(10 + seed)
    # Leaves and units on different scales, so a shared second moment differs from Adam's.
    return jax.tree.map(lambda p: (r.normal(size=p.shape) * np.geomspace(0.01, 1, p.shape[-1])
                                   ).astype(np.float32), PARAMS)


def test_element_blocks_equal_optax_scale_by_adam_exactly():
    mine = decay.scale_by_adam_blocks("element", b1=0.8, b2=0.95, eps=1e-6)
    ref = optax.scale_by_adam(b1=0.8, b2=0.95, eps=1e-6)
    s1, s2 = mine.init(PARAMS), ref.init(PARAMS)
    for t in range(4):
        u1, s1 = jax.jit(mine.update)(grads(t), s1)
        u2, s2 = jax.jit(ref.update)(grads(t), s2)
        jax.tree.map(np.testing.assert_array_equal, u1, u2)


def block_mean_square(g, granularity):
    if granularity == "unit" and g.ndim >= 2:
        return (g * g).reshape(-1, g.shape[-1]).mean(0)  # one per last-axis index
    if granularity == "layer":
        return np.mean(g * g)
    return g * g  # a 1-D leaf's unit is one element


@pytest.mark.parametrize("granularity", ["unit", "layer"])
def test_unit_and_layer_blocks_match_reference(granularity):
    b1, b2, eps = 0.9, 0.99, 1e-8
    tx = decay.scale_by_adam_blocks(granularity, b1, b2, eps)
    state = tx.init(PARAMS)
    mu = jax.tree.map(lambda p: np.zeros(p.shape), PARAMS)
    nu = jax.tree.map(lambda p: 0.0, PARAMS)
    for t in range(1, 5):
        g = jax.tree.map(lambda x: np.asarray(x, np.float64), grads(t))
        out, state = tx.update(grads(t), state)
        mu = jax.tree.map(lambda m, x: b1 * m + (1 - b1) * x, mu, g)
        nu = jax.tree.map(lambda v, x: b2 * v + (1 - b2) * block_mean_square(x, granularity),
                          nu, g)
        want = jax.tree.map(lambda m, v, t=t: m / (1 - b1**t) / (np.sqrt(v / (1 - b2**t)) + eps),
                            mu, nu)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                     out, want)
    # The state holds one second moment per block.
    shapes = jax.tree.map(np.shape, state.nu)
    kernel = (1, 1, 1, 4) if granularity == "unit" else (1, 1, 1, 1)
    assert shapes["conv"]["kernel"] == kernel
    assert shapes["conv"]["bias"] == ((4,) if granularity == "unit" else (1,))


def test_unknown_granularity_is_rejected():
    with pytest.raises(ValueError, match="not one of element, unit, layer"):
        decay.scale_by_adam_blocks("neuron")
