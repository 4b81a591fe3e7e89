"""The individual transforms against NumPy written from their docstrings' math."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wdjax import decay

RNG = np.random.default_rng(0)
PARAMS = {"a": {"kernel": RNG.normal(size=(3, 3, 4, 5)).astype(np.float32),
                "bias": np.zeros(5, np.float32)},
          "b": {"kernel": RNG.normal(size=(1, 1, 5, 2)).astype(np.float32),
                "scale": RNG.normal(size=2).astype(np.float32)}}


def grads(seed):
    r = np.random.default_rng(seed)
    return jax.tree.map(lambda p: r.normal(size=p.shape).astype(np.float32), PARAMS)


def test_add_decay_per_leaf_scalars_arrays_kinds_and_multipliers():
    coef = {"a": {"kernel": 0.1, "bias": 0.2},
            "b": {"kernel": np.full((1, 1, 5, 2), 0.3, np.float32), "scale": 0.0}}
    kinds = {"a": {"kernel": "l1", "bias": "l2"}, "b": {"kernel": "l2", "scale": "l1"}}
    mult = {"a": {"kernel": None, "bias": None},
            "b": {"kernel": np.arange(10, dtype=np.float32).reshape(1, 1, 5, 2), "scale": None}}
    g = grads(1)
    out, _ = jax.jit(decay.add_decay(coef, kinds, mult).update)(g, optax.EmptyState(), PARAMS)
    p = PARAMS
    np.testing.assert_allclose(out["a"]["kernel"], g["a"]["kernel"] + 0.1 * np.sign(
        p["a"]["kernel"]), rtol=1e-6)
    np.testing.assert_allclose(out["a"]["bias"], g["a"]["bias"], rtol=1e-6)
    np.testing.assert_allclose(out["b"]["kernel"], g["b"]["kernel"] + 0.3 * p["b"]["kernel"]
                               * mult["b"]["kernel"], rtol=1e-6)
    np.testing.assert_array_equal(out["b"]["scale"], g["b"]["scale"])


def test_add_decay_rejects_unknown_kind():
    with pytest.raises(ValueError, match="not one of l2, l1"):
        decay.add_decay(0.1, "l3").update(grads(0), optax.EmptyState(), PARAMS)


@pytest.mark.device
@pytest.mark.parametrize("per_unit", [False, True])
@pytest.mark.parametrize("times_weight_norm", [True, False])
def test_normalize_updates_matches_reference(per_unit, times_weight_norm):
    r, eps = 0.9, 1e-8
    tx = decay.normalize_updates(r, times_weight_norm=times_weight_norm, per_unit=per_unit)
    state = tx.init(PARAMS)
    ema = {}

    def norm(x):
        x = np.asarray(x, np.float64)
        if per_unit:
            return np.sqrt((x**2).reshape(-1, x.shape[-1]).sum(0))
        return np.sqrt((x**2).sum())

    for t in range(4):
        g = grads(t)
        out, state = tx.update(g, state, PARAMS)
        for layer in PARAMS:
            for leaf, d in g[layer].items():
                n = norm(d)
                key = (layer, leaf)
                ema[key] = n if t == 0 else r * ema[key] + (1 - r) * n
                w = norm(PARAMS[layer][leaf]) if times_weight_norm else 1.0
                want = np.asarray(d, np.float64) * (w / (ema[key] + eps))
                np.testing.assert_allclose(out[layer][leaf], want, rtol=2e-5, atol=1e-7)
    # The zero bias never moves with the weight-norm factor (unlike scale_by_trust_ratio).
    assert (np.all(out["a"]["bias"] == 0)) == times_weight_norm


def test_decoupled_decay_matches_adamw():
    lr, wd = 1e-2, 0.1
    mine = optax.chain(optax.adam(lr), decay.decoupled_decay(wd, lr))
    ref = optax.adamw(lr, weight_decay=wd)
    s1, s2, p1, p2 = mine.init(PARAMS), ref.init(PARAMS), PARAMS, PARAMS
    for t in range(5):
        u1, s1 = mine.update(grads(t), s1, p1)
        u2, s2 = ref.update(grads(t), s2, p2)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), p1, p2)


def test_decoupled_decay_follows_a_schedule():
    sched = optax.piecewise_constant_schedule(1.0, {1: 0.5})
    tx = decay.decoupled_decay(0.1, sched)
    state = tx.init(PARAMS)
    zero = jax.tree.map(jnp.zeros_like, PARAMS)
    u0, state = tx.update(zero, state, PARAMS)
    u1, state = tx.update(zero, state, PARAMS)
    k = PARAMS["a"]["kernel"]
    np.testing.assert_allclose(u0["a"]["kernel"], -0.1 * k, rtol=1e-6)
    np.testing.assert_allclose(u1["a"]["kernel"], -0.05 * k, rtol=1e-6)


def test_clip_sign_crossing_lands_on_exact_zero_and_respects_mask():
    p = {"x": np.array([1.0, -1.0, 0.5, 0.0, -0.2], np.float32),
         "y": np.array([1.0, -1.0], np.float32)}
    u = {"x": np.array([-1.5, 0.5, -0.1, 0.3, 0.4], np.float32),
         "y": np.array([-3.0, 3.0], np.float32)}
    out, _ = decay.clip_sign_crossing({"x": True, "y": False}).update(u, optax.EmptyState(), p)
    new = optax.apply_updates(p, out)
    np.testing.assert_array_equal(new["x"], np.array([0.0, -0.5, 0.4, 0.3, 0.0], np.float32))
    np.testing.assert_array_equal(new["y"], np.array([-2.0, 2.0], np.float32))


def test_transforms_need_params():
    for tx in (decay.add_decay(0.1), decay.clip_sign_crossing(),
               decay.decoupled_decay(0.1, 0.1), decay.normalize_updates()):
        with pytest.raises(ValueError, match="needs the parameters"):
            tx.update(grads(0), tx.init(PARAMS))


def test_full_trees_work_inside_optax_partition():
    """Coefficient and kind trees shaped like all params serve inside a partition branch."""
    labels_tree = {"a": {"kernel": "l1", "bias": "l2"}, "b": {"kernel": "l2", "scale": "l2"}}
    coef = jax.tree.map(lambda k: 0.1 if k == "l1" else 0.01, labels_tree)
    tx = optax.partition({
        "l1": decay.add_decay(coef, labels_tree),
        "l2": optax.chain(decay.add_decay(coef, labels_tree), decay.normalize_updates()),
    }, labels_tree)
    g = grads(3)
    out, _ = tx.update(g, tx.init(PARAMS), PARAMS)
    np.testing.assert_allclose(out["a"]["kernel"], g["a"]["kernel"] + 0.1 * np.sign(
        PARAMS["a"]["kernel"]), rtol=1e-6)
    d = g["b"]["kernel"] + 0.01 * PARAMS["b"]["kernel"]
    want = d * np.linalg.norm(PARAMS["b"]["kernel"]) / (np.linalg.norm(d) + 1e-8)
    np.testing.assert_allclose(out["b"]["kernel"], want, rtol=1e-5)
