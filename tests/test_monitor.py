"""equilibrium_monitor against NumPy written from its docstring."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wdjax import decay

RNG = np.random.default_rng(2)
PARAMS = {"conv": {"kernel": RNG.normal(size=(3, 3, 2, 4)).astype(np.float32),
                   "bias": RNG.normal(size=4).astype(np.float32)},
          "fc": {"kernel": RNG.normal(size=(4, 3)).astype(np.float32)}}
DECAYS = {"conv": {"kernel": 0.01, "bias": 0.01}, "fc": {"kernel": 0.0}}


def grads(seed):
    r = np.random.default_rng(20 + seed)
    return jax.tree.map(lambda p: r.normal(size=p.shape).astype(np.float32), PARAMS)


def norm(x, per_unit):
    x = np.asarray(x, np.float64)
    if per_unit and x.ndim >= 2:
        return np.sqrt((x * x).reshape(-1, x.shape[-1]).sum(0))
    return np.sqrt((x * x).sum())


@pytest.mark.device
@pytest.mark.parametrize("per_unit", [False, True])
def test_values_match_reference_and_updates_pass_through(per_unit):
    m, r = 0.9, 0.8
    lr = optax.exponential_decay(0.1, 2, 0.5)
    sgd = optax.chain(decay.add_decay(DECAYS), optax.sgd(lr, m))
    monitor = decay.equilibrium_monitor(lr, DECAYS, momentum=m, ema_decay=r, per_unit=per_unit)
    s1, s2, params = sgd.init(PARAMS), monitor.init(PARAMS), PARAMS
    ema = {}
    for t in range(1, 5):
        u, s1 = sgd.update(grads(t), s1, params)
        out, s2 = monitor.update(u, s2, params)
        assert out is u
        pred = np.sqrt(2 * lr(t - 1) * 0.01 / (1 + m))
        for layer, leaf in [("conv", "kernel"), ("conv", "bias"), ("fc", "kernel")]:
            p, key = params[layer][leaf], (layer, leaf)
            angle = norm(u[layer][leaf], per_unit) / norm(p, per_unit)
            raw = r * ema.get(key, 0.0) + (1 - r) * angle
            ema[key] = raw
            debiased = raw / (1 - r**t)
            got = {k: np.asarray(optax.tree.get(s2, k)[layer][leaf]) for k in (
                "angular_update", "angular_update_ema", "equilibrium_ratio",
                "equilibrium_norm")}
            np.testing.assert_allclose(got["angular_update"], angle, rtol=1e-6)
            np.testing.assert_allclose(got["angular_update_ema"], debiased, rtol=1e-6)
            if key == ("conv", "kernel"):
                np.testing.assert_allclose(got["equilibrium_ratio"], debiased / pred, rtol=1e-6)
                np.testing.assert_allclose(got["equilibrium_norm"],
                                           norm(p, per_unit) * np.sqrt(debiased / pred),
                                           rtol=1e-6)
            else:  # a 1-D leaf, and a kernel without decay: no prediction
                assert np.all(np.isnan(got["equilibrium_ratio"]))
                assert np.all(np.isnan(got["equilibrium_norm"]))
                assert np.all(optax.tree.get(s2, "equilibrium_step")[layer][leaf] == -1)
            assert got["angular_update"].shape == ((4,) if per_unit and leaf == "kernel"
                                                   and layer == "conv" else
                                                   (3,) if per_unit and layer == "fc" else ())
        params = optax.apply_updates(params, u)


@pytest.mark.parametrize("ema_decay", [0.0, 0.5])
def test_equilibrium_step_is_the_first_update_within_tolerance(ema_decay):
    """Updates built to have chosen angles: the step is where the EMA first gets within 10%."""
    lr, wd = 0.1, 0.02
    pred = np.sqrt(2 * lr * wd)
    angles = pred * np.array([3.0, 2.0, 1.15, 1.05, 0.5, 1.0, 0.5, 0.5])
    ema, raw, want = [], 0.0, -1
    for t, a in enumerate(angles, start=1):
        raw = ema_decay * raw + (1 - ema_decay) * a
        ema.append(raw / (1 - ema_decay**t))
        if want < 0 and abs(ema[-1] / pred - 1) <= 0.1:
            want = t
    assert want > 0
    p = {"w": PARAMS["conv"]["kernel"]}
    direction = np.asarray(grads(0)["conv"]["kernel"])
    direction = direction / np.linalg.norm(direction) * np.linalg.norm(p["w"])
    monitor = decay.equilibrium_monitor(lr, wd, ema_decay=ema_decay)
    state, seen = monitor.init(p), []
    for a in angles:
        _, state = monitor.update({"w": jnp.asarray(a * direction, jnp.float32)}, state, p)
        seen.append(int(state.equilibrium_step["w"]))
    assert seen == [-1] * (want - 1) + [want] * (len(angles) - want + 1)
    np.testing.assert_allclose(float(state.angular_update_ema["w"]), ema[-1], rtol=1e-5)


def test_a_rotational_optimizer_is_at_equilibrium_from_its_first_step():
    lr, wd, m = 0.01, 0.005, 0.9
    tx = optax.chain(
        decay.rotational(optax.trace(m), learning_rate=lr, weight_decay=wd, momentum=m,
                         update_norm_decay=0.0),
        decay.equilibrium_monitor(lr, wd, momentum=m, ema_decay=0.9, per_unit=True),
    )
    params = decay.center_units(PARAMS, decay.rotational_leaves(PARAMS, wd))
    state = tx.init(params)
    for t in range(3):
        u, state = tx.update(grads(t), state, params)
        params = optax.apply_updates(params, u)
    ratio = optax.tree.get(state, "equilibrium_ratio")
    # ||u|| / ||p|| = 2 sin(atan(a) / 2) = a (1 - 3a^2/8 + ...), with a ~ 0.007 here.
    np.testing.assert_allclose(ratio["conv"]["kernel"], 1.0, rtol=1e-4)
    assert np.all(optax.tree.get(state, "equilibrium_step")["fc"]["kernel"] == 1)


def test_monitor_needs_params():
    monitor = decay.equilibrium_monitor(0.1, 0.01)
    with pytest.raises(ValueError, match="needs the parameters"):
        monitor.update(grads(0), monitor.init(PARAMS))
