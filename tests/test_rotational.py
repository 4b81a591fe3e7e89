"""decay.rotational against a NumPy implementation written from ROTATIONAL.md."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wdjax import decay

RNG = np.random.default_rng(0)
PARAMS = {"conv": {"kernel": RNG.normal(size=(3, 3, 4, 6)).astype(np.float32),
                   "bias": RNG.normal(0, 0.1, size=6).astype(np.float32)},
          "fc": {"kernel": RNG.normal(size=(6, 5)).astype(np.float32),
                 "bias": RNG.normal(0, 0.1, size=5).astype(np.float32)},
          "frozen": {"kernel": RNG.normal(size=(4, 3)).astype(np.float32)}}
# Per-layer coefficients (as variance-inverse ones are); frozen/kernel has none, so the
# default rule leaves it (and every 1-D leaf) to the plain update.
DECAYS = {"conv": {"kernel": 0.01, "bias": 0.01}, "fc": {"kernel": 0.002, "bias": 0.0},
          "frozen": {"kernel": 0.0}}
ROTATIONAL = {"conv": {"kernel": True, "bias": False}, "fc": {"kernel": True, "bias": False},
              "frozen": {"kernel": False}}
B2, ADAM_EPS = 0.99, 1e-8


def grads(seed):
    r = np.random.default_rng(100 + seed)
    return jax.tree.map(lambda p: r.normal(size=p.shape).astype(np.float32), PARAMS)


def units(x, per_neuron):
    """(elements per unit, units) view: columns are units."""
    return x.reshape(-1, x.shape[-1]) if per_neuron else x.reshape(-1, 1)


class Reference:
    """ROTATIONAL.md section 2 in float64, one leaf at a time, columns as units."""

    def __init__(self, lr, momentum, b1, per_neuron, zero_mean, beta, eps=1e-8):
        self.lr, self.m, self.b1 = lr, momentum, b1
        self.per_neuron, self.zero_mean, self.beta, self.eps = per_neuron, zero_mean, beta, eps
        self.t, self.state = 0, {}

    def center(self, x):
        return x - x.mean(axis=0) if self.zero_mean else x

    def direction(self, key, g):
        """The inner transform: momentum buffer, or bias-corrected Adam."""
        s = self.state.setdefault(key, {"buf": 0.0, "mu": 0.0, "nu": 0.0})
        if self.b1 is None:
            s["buf"] = self.m * s["buf"] + g
            return s["buf"]
        s["mu"] = self.b1 * s["mu"] + (1 - self.b1) * g
        s["nu"] = B2 * s["nu"] + (1 - B2) * g * g
        mhat, vhat = s["mu"] / (1 - self.b1**self.t), s["nu"] / (1 - B2**self.t)
        return mhat / (np.sqrt(vhat) + ADAM_EPS)

    def angle(self, lr, wd):
        if self.b1 is None:
            return np.sqrt(2 * lr * wd / (1 + self.m))
        return np.sqrt(2 * lr * wd * (1 - self.b1) / (1 + self.b1))

    def rotate(self, key, p, d, a):
        shape, P, D = p.shape, units(p, self.per_neuron), units(d, self.per_neuron)
        s = self.state[key]
        if self.t == 1:
            s["n"], s["e"] = np.linalg.norm(self.center(P), axis=0), 0.0
        n = s["n"]
        D = self.center(D)
        D = D - P * (D * P).sum(0) / n**2
        s["e"] = self.beta * s["e"] + (1 - self.beta) * (D * D).sum(0)
        r = np.sqrt(s["e"] / (1 - self.beta**self.t))
        new = P - a * D / (self.eps + r) * n
        new = new * n / np.linalg.norm(new, axis=0)
        return new.reshape(shape)

    def step(self, params, g, lr, decays, flags):
        self.t += 1
        out = {}
        for layer, leaves in params.items():
            out[layer] = {}
            for name, p in leaves.items():
                wd, key = decays[layer][name], (layer, name)
                if flags[layer][name]:
                    d = self.direction(key, g[layer][name])
                    out[layer][name] = self.rotate(key, p, d, self.angle(lr, wd))
                elif self.b1 is None:  # coupled, as torch SGD
                    out[layer][name] = p - lr * self.direction(key, g[layer][name] + wd * p)
                else:  # decoupled, as AdamW
                    out[layer][name] = p - lr * (self.direction(key, g[layer][name]) + wd * p)
        return out


def f64(tree):
    return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


def rel_err(a, b):
    return np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b)


CASES = [  # (inner, per_neuron, zero_mean, beta, centre first, schedule)
    ("sgd0", True, True, 0.9, False, False),
    ("sgd0.9", False, True, 0.0, True, False),
    ("sgd0.9", True, False, 0.0, False, False),
    ("sgd0", False, False, 0.9, False, True),
    ("adam", True, True, 0.9, True, True),
    ("adam", False, False, 0.0, False, False),
]


@pytest.mark.parametrize("inner_name,per_neuron,zero_mean,beta,centre,schedule", CASES)
def test_matches_reference_over_20_steps(inner_name, per_neuron, zero_mean, beta, centre,
                                         schedule):
    lr = optax.exponential_decay(0.05, 7, 0.5) if schedule else 0.05
    momentum = 0.9 if inner_name == "sgd0.9" else 0.0
    b1 = 0.9 if inner_name == "adam" else None
    inner = (optax.scale_by_adam(b1, B2, ADAM_EPS) if b1 is not None
             else optax.trace(momentum))
    tx = decay.rotational(inner, learning_rate=lr, weight_decay=DECAYS, momentum=momentum,
                          b1=b1, per_neuron=per_neuron, zero_mean=zero_mean,
                          update_norm_decay=beta)
    assert decay.rotational_leaves(PARAMS, DECAYS, per_neuron=per_neuron) == ROTATIONAL
    params = decay.center_units(PARAMS, ROTATIONAL, per_neuron) if centre else PARAMS
    ref = Reference(lr, momentum, b1, per_neuron, zero_mean, beta)
    want = f64(PARAMS)
    if centre:  # ROTATIONAL.md 2.1: mean removed per unit, original norm restored
        for layer in ("conv", "fc"):
            k = want[layer]["kernel"]
            cols = units(k, per_neuron)
            c = cols - cols.mean(0)
            c = c * np.linalg.norm(cols, axis=0) / np.linalg.norm(c, axis=0)
            want[layer]["kernel"] = c.reshape(k.shape)
    state, update = tx.init(params), jax.jit(tx.update)
    for t in range(20):
        g = grads(t)
        u, state = update(g, state, params)
        params = optax.apply_updates(params, u)
        want = ref.step(want, f64(g), lr(t) if schedule else lr, DECAYS, ROTATIONAL)
        for layer, leaves in want.items():
            for name, w in leaves.items():
                err = rel_err(params[layer][name], w)
                assert err < 1e-5, (t, layer, name, err)


def unit_norms(x):
    return np.linalg.norm(units(np.asarray(x, np.float64), True), axis=0)


def test_unit_norms_stay_fixed_and_centred():
    params = decay.center_units(PARAMS, ROTATIONAL)
    before = unit_norms(params["conv"]["kernel"])
    np.testing.assert_allclose(before, unit_norms(PARAMS["conv"]["kernel"]), rtol=1e-6)
    tx = decay.rotational(optax.trace(0.9), learning_rate=0.1, weight_decay=DECAYS,
                          momentum=0.9)
    state, update = tx.init(params), jax.jit(tx.update)
    for t in range(20):
        u, state = update(grads(t), state, params)
        params = optax.apply_updates(params, u)
    kernel = units(np.asarray(params["conv"]["kernel"], np.float64), True)
    np.testing.assert_allclose(unit_norms(params["conv"]["kernel"]), before, rtol=1e-6)
    np.testing.assert_allclose(kernel.mean(0), 0.0, atol=1e-6)


@pytest.mark.parametrize("momentum,b1", [(0.0, None), (0.9, None), (0.0, 0.9)])
def test_every_step_turns_by_the_target_angle_when_beta_is_0(momentum, b1):
    # Float32 parameters carry a relative error of ~1e-7 in each unit; the component the
    # step adds is a fraction a ~ 0.1 of the unit, so tan(angle) is good to ~1e-6: 1e-5
    # leaves a margin. (||u|| / ||p|| = 2 sin(angle / 2) differs from a by O(a^2): the
    # final renormalisation, so the angle itself is what is compared.)
    lr, wd = 0.1, 0.05 * (1 + momentum)
    a = np.sqrt(2 * lr * wd / (1 + momentum)) if b1 is None else np.sqrt(
        2 * lr * wd * (1 - b1) / (1 + b1))
    inner = optax.trace(momentum) if b1 is None else optax.scale_by_adam(b1, B2)
    tx = decay.rotational(inner, learning_rate=lr, weight_decay=wd, momentum=momentum, b1=b1,
                          update_norm_decay=0.0)
    params = decay.center_units(PARAMS, decay.rotational_leaves(PARAMS, wd))
    state, update = tx.init(params), jax.jit(tx.update)
    for t in range(5):
        u, state = update(grads(t), state, params)
        new = optax.apply_updates(params, u)
        # frozen/kernel (units of 4) is left out: Adam's first step is sign(g), and a unit
        # whose signs all agree has nothing left after centring but rounding noise, which
        # eps (1e-8) then scales to a step of part of the angle.
        for layer in ("conv", "fc"):
            P, Q = (units(np.asarray(x[layer]["kernel"], np.float64), True)
                    for x in (params, new))
            along = (P * Q).sum(0) / (P * P).sum(0)
            across = np.linalg.norm(Q - along * P, axis=0) / np.linalg.norm(P, axis=0)
            np.testing.assert_allclose(across / along, a, rtol=1e-5)
        params = new


@pytest.mark.parametrize("use_adam", [False, True])
def test_non_rotational_leaves_get_the_plain_update(use_adam):
    lr, wd, m = 0.05, 0.01, 0.9
    if use_adam:
        mine = decay.rotational(optax.scale_by_adam(0.9, B2), learning_rate=lr,
                                weight_decay=wd, b1=0.9, rotational=False)
        plain = optax.adamw(lr, 0.9, B2, weight_decay=wd)
    else:
        mine = decay.rotational(optax.trace(m), learning_rate=lr, weight_decay=wd,
                                momentum=m, rotational=False)
        plain = optax.chain(decay.add_decay(wd), optax.sgd(lr, m))
    p1 = p2 = PARAMS
    s1, s2 = mine.init(p1), plain.init(p2)
    for t in range(5):
        u1, s1 = mine.update(grads(t), s1, p1)
        u2, s2 = plain.update(grads(t), s2, p2)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), p1, p2)


def run(weight_decay, steps=5):
    tx = decay.rotational(optax.trace(0.9), learning_rate=0.05, weight_decay=weight_decay,
                          momentum=0.9)
    params, state = PARAMS, tx.init(PARAMS)
    for t in range(steps):
        u, state = tx.update(grads(t), state, params)
        params = optax.apply_updates(params, u)
    return params


def test_vmap_over_a_traced_weight_decay_equals_separate_runs():
    wds = jnp.array([0.001, 0.01, 0.1])
    batched = jax.jit(jax.vmap(run))(wds)
    for i, wd in enumerate([0.001, 0.01, 0.1]):
        alone = run(wd)
        jax.tree.map(lambda a, b, i=i: np.testing.assert_allclose(a[i], b, rtol=1e-5,
                                                                  atol=1e-7), batched, alone)


def test_traced_decay_counts_as_positive_in_the_default_rule():
    seen = []

    def flags(wd):
        seen.append(decay.rotational_leaves(PARAMS, {"conv": {"kernel": wd, "bias": wd},
                                                     "fc": {"kernel": 0.0, "bias": 0.1},
                                                     "frozen": {"kernel": wd}}))
        return wd

    jax.vmap(flags)(jnp.zeros(2))
    assert seen[0] == {"conv": {"kernel": True, "bias": False},
                       "fc": {"kernel": False, "bias": False}, "frozen": {"kernel": True}}


def test_bad_rotational_flags_are_rejected():
    with pytest.raises(ValueError, match="ndim 1; per-neuron units need ndim >= 2"):
        decay.rotational_leaves(PARAMS, 0.1, {**ROTATIONAL, "fc": {"kernel": True,
                                                                  "bias": True}})
    with pytest.raises(ValueError, match="must be Python bools"):
        decay.rotational_leaves(PARAMS, 0.1, jnp.array(True))
    tx = decay.rotational(optax.trace(0.0), learning_rate=0.1, weight_decay=0.1)
    with pytest.raises(ValueError, match="needs the parameters"):
        tx.update(grads(0), tx.init(PARAMS))


def test_works_inside_optax_partition_with_full_size_trees():
    """Decay trees shaped like all params serve a branch that sees only some leaves."""
    labels = jax.tree.map(lambda flag: "rotational" if flag else "plain", ROTATIONAL)
    kwargs = dict(learning_rate=0.05, weight_decay=DECAYS, momentum=0.9)
    split = optax.partition({"rotational": decay.rotational(optax.trace(0.9), **kwargs),
                             "plain": optax.sgd(0.05)}, labels)
    whole = decay.rotational(optax.trace(0.9), **kwargs)
    s1, s2, p1, p2 = split.init(PARAMS), whole.init(PARAMS), PARAMS, PARAMS
    for t in range(3):
        u1, s1 = split.update(grads(t), s1, p1)
        u2, s2 = whole.update(grads(t), s2, p2)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    for layer in ("conv", "fc"):
        assert rel_err(p1[layer]["kernel"], np.asarray(p2[layer]["kernel"], np.float64)) < 1e-6
