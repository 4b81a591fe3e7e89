"""The decay variants against NumPy written from their docstrings' math, step by step.

Each variant runs inside the chain a user would write (SGD with momentum or Adam, a varying
learning-rate schedule) for 20 steps on a small Flax-shaped tree (a 4-D conv kernel, a 2-D
dense kernel, 1-D biases), with gradients ``0.5 * p + noise_t`` so that errors propagate.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wdjax import decay

STEPS = 20
PEAK = 0.1
RNG = np.random.default_rng(0)
PARAMS = {"conv": {"kernel": RNG.normal(0, 0.5, (3, 3, 2, 4)).astype(np.float32),
                   "bias": RNG.normal(0, 0.1, 4).astype(np.float32)},
          "dense": {"kernel": RNG.normal(0, 0.5, (6, 3)).astype(np.float32),
                    "bias": RNG.normal(0, 0.1, 3).astype(np.float32)}}
NOISE = [jax.tree.map(lambda p: RNG.normal(0, 1, p.shape).astype(np.float32), PARAMS)
         for _ in range(STEPS)]
COEF = {"conv": {"kernel": 0.3, "bias": 0.1}, "dense": {"kernel": 0.5, "bias": 0.0}}
# A warmup from 0 (independent decay then needs the peak) and a step decay (it does not).
WARMUP_COSINE = optax.warmup_cosine_decay_schedule(0.0, PEAK, 5, STEPS)
STEP_DECAY = optax.piecewise_constant_schedule(PEAK, {8: 0.5, 15: 0.5})
# With Adam's usual b2 = 0.999, float32's own 1 - 0.999**t is off by 1.3e-5 relative, which
# alone breaks a 1e-5 comparison with float64; 1 - 0.99**t is off by 1e-6.
ADAM_B2 = 0.99


def lr_warmup_cosine(t):
    return PEAK * t / 5 if t < 5 else 0.5 * PEAK * (1 + math.cos(math.pi * (t - 5) / 15))


def lr_step_decay(t):
    return PEAK * (0.5 if t >= 8 else 1.0) * (0.5 if t >= 15 else 1.0)


SCHEDULES = {"warmup_cosine": (WARMUP_COSINE, lr_warmup_cosine),
             "step_decay": (STEP_DECAY, lr_step_decay)}


def flat(tree):
    return {tuple(k.key for k in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def run_optax(tx, params=PARAMS):
    """The parameters after each of 20 steps of `tx`, as flat dicts."""

    @jax.jit
    def step(p, state, noise):
        g = jax.tree.map(lambda a, n: 0.5 * a + n, p, noise)
        u, state = tx.update(g, state, p)
        return optax.apply_updates(p, u), state

    p = jax.tree.map(jnp.asarray, params)
    state = tx.init(p)
    out = []
    for t in range(STEPS):
        p, state = step(p, state, NOISE[t])
        out.append(flat(p))
    return out


def run_reference(rule, params=PARAMS):
    """The same in float64 NumPy; ``rule(key, p, g, t, memory) -> p_new`` per tensor."""
    p = {k: v.astype(np.float64) for k, v in flat(params).items()}
    p0 = dict(p)
    memory = {k: {"p0": p0[k]} for k in p}
    out = []
    for t in range(STEPS):
        noise = flat(NOISE[t])
        for k in p:
            p[k] = rule(k, p[k], 0.5 * p[k] + noise[k], t, memory[k])
        out.append(dict(p))
    return out


def assert_runs_close(got, want, rtol=1e-5):
    """Every tensor at every step within `rtol` relative (in the 2-norm of the tensor)."""
    for t, (g_step, w_step) in enumerate(zip(got, want, strict=True)):
        for k, w in w_step.items():
            err = np.linalg.norm(g_step[k] - w) / np.linalg.norm(w)
            assert err <= rtol, f"step {t} {k}: relative error {err:.2e}"


def momentum(memory, g, mu=0.9):
    memory["buf"] = mu * memory.get("buf", 0.0) + g
    return memory["buf"]


def adam(memory, g, t, b1=0.9, b2=ADAM_B2, eps=1e-8):
    memory["m"] = b1 * memory.get("m", 0.0) + (1 - b1) * g
    memory["v"] = b2 * memory.get("v", 0.0) + (1 - b2) * g * g
    m_hat, v_hat = memory["m"] / (1 - b1 ** (t + 1)), memory["v"] / (1 - b2 ** (t + 1))
    return m_hat / (np.sqrt(v_hat) + eps)


def base_direction(name):
    if name == "momentum":
        return optax.trace(0.9), lambda memory, g, t: momentum(memory, g)
    return optax.scale_by_adam(b2=ADAM_B2), adam


def coef(k):
    return COEF[k[0]][k[1]]


@pytest.mark.parametrize("schedule_name", list(SCHEDULES))
def test_schedules_match_their_numpy_form(schedule_name):
    schedule, numpy_form = SCHEDULES[schedule_name]
    for t in range(STEPS):
        np.testing.assert_allclose(float(schedule(t)), numpy_form(t), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(("base", "schedule_name", "peak"), [
    ("momentum", "warmup_cosine", PEAK), ("adam", "step_decay", None)])
def test_independent_decay_matches_reference(base, schedule_name, peak):
    schedule, lr = SCHEDULES[schedule_name]
    base_tx, base_np = base_direction(base)
    tx = optax.chain(base_tx, optax.scale_by_learning_rate(schedule),
                     decay.independent_decay(COEF, schedule, peak_learning_rate=peak))

    def rule(k, p, g, t, memory):
        return p - lr(t) * base_np(memory, g, t) - (lr(t) / PEAK) * coef(k) * p

    assert_runs_close(run_optax(tx), run_reference(rule))


def test_corrected_decay_matches_reference():
    # AdamC corrects the layers followed by a normalisation (here: the kernels) only.
    kernels = {"conv": {"kernel": True, "bias": False}, "dense": {"kernel": True, "bias": False}}
    tx = optax.chain(optax.scale_by_adam(b2=ADAM_B2),
                     optax.scale_by_learning_rate(WARMUP_COSINE),
                     decay.corrected_decay(COEF, WARMUP_COSINE, max_learning_rate=PEAK,
                                           normalized=kernels))

    def rule(k, p, g, t, memory):
        lr = lr_warmup_cosine(t)
        decay_rate = lr * lr / PEAK if k[1] == "kernel" else lr
        return p - lr * adam(memory, g, t) - decay_rate * coef(k) * p

    assert_runs_close(run_optax(tx), run_reference(rule))


@pytest.mark.parametrize("base", ["momentum", "adam"])
def test_cautious_decay_matches_reference(base):
    base_tx, base_np = base_direction(base)
    tx = optax.chain(base_tx, decay.cautious_decay(COEF),
                     optax.scale_by_learning_rate(STEP_DECAY))

    def rule(k, p, g, t, memory):
        u = base_np(memory, g, t)
        return p - lr_step_decay(t) * (u + coef(k) * (u * p >= 0) * p)

    got, want = run_optax(tx), run_reference(rule)
    assert_runs_close(got, want)
    # The mask matters: plain decoupled decay would differ.
    plain = run_reference(lambda k, p, g, t, m: p - lr_step_decay(t) * (
        base_np(m, g, t) + coef(k) * p))
    assert np.linalg.norm(got[-1][("conv", "kernel")] - plain[-1][("conv", "kernel")]) > 1e-3


def test_cautious_decay_boundary_counts_as_aligned():
    d = {"w": jnp.array([0.0, 1.0, -1.0, 2.0, 0.0, -3.0])}
    p = {"w": jnp.array([1.0, 1.0, 1.0, -1.0, 0.0, -2.0])}
    tx = decay.cautious_decay(0.5)
    out, _ = tx.update(d, tx.init(p), p)
    # u = 0: decay applies; u, p of one sign: applies; opposite signs: none; p = 0: adds 0.
    np.testing.assert_array_equal(out["w"], [0.5, 1.5, -1.0, 2.0, 0.0, -4.0])


def test_decay_toward_init_matches_reference():
    tx = optax.chain(decay.add_decay_toward_init(COEF), optax.trace(0.9),
                     optax.scale_by_learning_rate(STEP_DECAY))

    def rule(k, p, g, t, memory):
        return p - lr_step_decay(t) * momentum(memory, g + coef(k) * (p - memory["p0"]))

    assert_runs_close(run_optax(tx), run_reference(rule))


PROX_MASK = {"conv": {"kernel": True, "bias": True}, "dense": {"kernel": True, "bias": False}}
PROX_COEF = {"conv": {"kernel": 2.0, "bias": 0.5}, "dense": {"kernel": 1.5, "bias": 9.0}}


def test_proximal_l1_matches_reference():
    tx = optax.chain(optax.trace(0.9), optax.scale_by_learning_rate(STEP_DECAY),
                     decay.proximal_l1(PROX_COEF, STEP_DECAY, PROX_MASK))

    def rule(k, p, g, t, memory):
        q = p - lr_step_decay(t) * momentum(memory, g)
        if not PROX_MASK[k[0]][k[1]]:
            return q
        return np.sign(q) * np.maximum(np.abs(q) - lr_step_decay(t) * PROX_COEF[k[0]][k[1]], 0)

    got, want = run_optax(tx), run_reference(rule)
    # Exact zeros can differ between float32 and float64 only right at the threshold.
    for g_step, w_step in zip(got, want, strict=True):
        for k in w_step:
            w_step[k] = np.where((g_step[k] == 0) & (np.abs(w_step[k]) < 1e-6), 0, w_step[k])
    assert_runs_close(got, want)


def test_proximal_l1_lands_on_exact_zeros():
    sgd = optax.chain(optax.trace(0.9), optax.scale_by_learning_rate(STEP_DECAY))
    prox = decay.proximal_l1(PROX_COEF, STEP_DECAY, PROX_MASK)
    p = jax.tree.map(jnp.asarray, PARAMS)
    s_sgd, s_prox = sgd.init(p), prox.init(p)
    zeros_seen = stayed_zero = 0
    for t in range(STEPS):
        g = jax.tree.map(lambda a, n: 0.5 * a + n, p, NOISE[t])
        u, s_sgd = sgd.update(g, s_sgd, p)
        u2, s_prox = prox.update(u, s_prox, p)
        new = optax.apply_updates(p, u2)
        for k, q in flat(optax.apply_updates(p, u)).items():
            got = flat(new)[k]
            if not PROX_MASK[k[0]][k[1]]:
                np.testing.assert_array_equal(flat(u2)[k], flat(u)[k])
                continue
            threshold = np.float32(lr_step_decay(t)) * np.float32(PROX_COEF[k[0]][k[1]])
            inside = np.abs(q) <= threshold
            assert np.all(got[inside] == 0) and np.all(got[~inside] != 0), (t, k)
            stayed_zero += int(np.sum((flat(p)[k] == 0) & inside))
            zeros_seen += int(inside.sum())
        p = new
    assert zeros_seen > 50 and stayed_zero > 0


def unit_norms_np(x, per_unit=True):
    axes = tuple(range(x.ndim - 1)) if per_unit else None
    return np.sqrt(np.sum(np.square(x), axis=axes))


def test_constrain_norms_per_unit_at_init_norms_matches_reference():
    tx = optax.chain(optax.trace(0.9), optax.scale_by_learning_rate(STEP_DECAY),
                     decay.constrain_norms())

    def rule(k, p, g, t, memory):
        q = p - lr_step_decay(t) * momentum(memory, g)
        if p.ndim < 2:
            return q
        return q * unit_norms_np(memory["p0"]) / unit_norms_np(q)

    got = run_optax(tx)
    assert_runs_close(got, run_reference(rule))
    for step in got:
        for k in [("conv", "kernel"), ("dense", "kernel")]:
            r0 = unit_norms_np(flat(PARAMS)[k].astype(np.float64))
            np.testing.assert_allclose(unit_norms_np(step[k].astype(np.float64)), r0, rtol=1e-6)
    assert np.abs(got[-1][("conv", "bias")] - PARAMS["conv"]["bias"]).max() > 1e-2


def test_constrain_norms_per_tensor_to_a_given_radius():
    radius = {"conv": {"kernel": 2.0, "bias": None}, "dense": {"kernel": 3.0, "bias": 0.5}}
    mask = {"conv": {"kernel": True, "bias": False}, "dense": {"kernel": True, "bias": True}}
    tx = optax.chain(optax.scale_by_adam(b2=ADAM_B2), optax.scale_by_learning_rate(0.05),
                     decay.constrain_norms(radius, per_unit=False, mask=mask))

    def rule(k, p, g, t, memory):
        q = p - 0.05 * adam(memory, g, t)
        r = radius[k[0]][k[1]]
        return q if r is None else q * r / unit_norms_np(q, per_unit=False)

    got = run_optax(tx)
    assert_runs_close(got, run_reference(rule))
    for step in got:
        for k in [("conv", "kernel"), ("dense", "kernel"), ("dense", "bias")]:
            norm = np.linalg.norm(step[k].astype(np.float64))
            assert abs(norm - radius[k[0]][k[1]]) <= 1e-6 * radius[k[0]][k[1]]


COEF_SCHEDULE = optax.linear_schedule(0.5, 0.05, 10)
SCHEDULED = {
    "add_decay": (lambda: decay.add_decay(COEF_SCHEDULE), 1.0),
    "decoupled_decay": (lambda: decay.decoupled_decay(COEF_SCHEDULE, 2.0), -2.0),
    "independent_decay": (lambda: decay.independent_decay(COEF_SCHEDULE, STEP_DECAY), -1.0),
    "cautious_decay": (lambda: decay.cautious_decay(COEF_SCHEDULE), 1.0),
}


@pytest.mark.parametrize("name", list(SCHEDULED))
def test_schedule_coefficient_follows_the_schedule(name):
    make, sign = SCHEDULED[name]
    tx = make()
    state = tx.init(PARAMS)
    zeros = jax.tree.map(np.zeros_like, PARAMS)
    for t in range(STEPS):
        out, state = jax.jit(tx.update)(zeros, state, PARAMS)
        lr_factor = lr_step_decay(t) / PEAK if name == "independent_decay" else 1.0
        want = 0.5 + (0.05 - 0.5) * min(t, 10) / 10
        for k, u in flat(out).items():
            np.testing.assert_allclose(u, sign * lr_factor * want * flat(PARAMS)[k],
                                       rtol=1e-6, atol=1e-8)


def test_add_decay_keeps_an_empty_state_without_schedules():
    assert isinstance(decay.add_decay(COEF).init(PARAMS), optax.EmptyState)
    scheduled = decay.add_decay({**COEF, "dense": {"kernel": COEF_SCHEDULE, "bias": 0.0}})
    assert isinstance(scheduled.init(PARAMS), decay.StepCountState)


SGD = (optax.trace(0.9),)
LR = (optax.scale_by_learning_rate(STEP_DECAY),)
TRACED_CHAINS = {
    "cautious_decay": lambda wd: optax.chain(*SGD, decay.cautious_decay(wd), *LR),
    "independent_decay": lambda wd: optax.chain(
        *SGD, *LR, decay.independent_decay(wd, STEP_DECAY)),
    "proximal_l1": lambda wd: optax.chain(*SGD, *LR, decay.proximal_l1(wd, STEP_DECAY)),
    "add_decay_toward_init": lambda wd: optax.chain(decay.add_decay_toward_init(wd), *SGD, *LR),
}


@pytest.mark.parametrize("name", list(TRACED_CHAINS))
def test_vmap_over_a_traced_coefficient_equals_separate_runs(name):
    def final_params(wd):
        tx = TRACED_CHAINS[name](wd)
        p, state = PARAMS, tx.init(PARAMS)
        for t in range(5):
            g = jax.tree.map(lambda a, n: 0.5 * a + n, p, NOISE[t])
            u, state = tx.update(g, state, p)
            p = optax.apply_updates(p, u)
        return p

    grid = jnp.array([0.0, 0.1, 0.7])
    batched = flat(jax.jit(jax.vmap(final_params))(grid))
    for i, wd in enumerate(grid):
        for k, leaf in flat(jax.jit(final_params)(wd)).items():
            np.testing.assert_allclose(batched[k][i], leaf, rtol=1e-6, atol=1e-7)
    # The coefficient took effect: the runs differ.
    assert np.abs(batched[("conv", "kernel")][2] - batched[("conv", "kernel")][0]).max() > 1e-3


BAD_INPUTS = {
    "warmup from 0 without a peak": (
        lambda: decay.independent_decay(0.1, WARMUP_COSINE), "reference learning rate"),
    "negative peak": (lambda: decay.independent_decay(0.1, 0.1, peak_learning_rate=-1.0),
                      "must be finite and > 0"),
    "schedule without max": (lambda: decay.corrected_decay(0.1, STEP_DECAY),
                             "needs max_learning_rate"),
    "negative L1": (lambda: decay.proximal_l1({"w": -0.1}, 0.1), "must be finite and >= 0"),
    "zero radius": (lambda: decay.constrain_norms(radius=0.0), "radius must be finite and > 0"),
    "zero tau": (lambda: decay.weight_decay_from_tau(0.0, 0.1, 10), "tau_epochs must be"),
    "nan lr": (lambda: decay.tau_from_weight_decay(1e-3, math.nan, 10), "learning_rate must"),
    "fractional steps": (lambda: decay.tau_from_weight_decay(1e-3, 0.1, 2.5), "steps_per_epoch"),
    "bool steps": (lambda: decay.weight_decay_from_tau(1.0, 0.1, True), "steps_per_epoch"),
    "no params": (lambda: decay.cautious_decay(0.1).update(PARAMS, decay.StepCountState(0)),
                  "needs the parameters"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_give_one_line_value_errors(case):
    make, message = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=message) as error:
        make()
    assert "\n" not in str(error.value)


def test_timescale_formula_and_round_trip():
    wd = decay.weight_decay_from_tau(4.0, 0.1, 390)
    assert wd == pytest.approx(1 / (4.0 * 0.1 * 390), rel=1e-12)
    taus = np.array([0.5, 2.0, 8.0])
    back = decay.tau_from_weight_decay(decay.weight_decay_from_tau(taus, 0.05, 100), 0.05, 100)
    np.testing.assert_allclose(back, taus, rtol=1e-12)


def test_timescale_is_the_decay_e_folding_time_in_epochs():
    # With zero gradients decoupled decay shrinks p by (1 - lr * wd) per step: after tau
    # epochs, (1 - 1 / steps)**steps, about 1/e.
    lr, steps_per_epoch, tau = 0.01, 50, 2.0
    wd = decay.weight_decay_from_tau(tau, lr, steps_per_epoch)
    tx = optax.chain(optax.sgd(lr), decay.decoupled_decay(wd, lr))
    p, state = {"w": jnp.ones(3)}, tx.init({"w": jnp.ones(3)})
    for _ in range(int(tau * steps_per_epoch)):
        u, state = tx.update({"w": jnp.zeros(3)}, state, p)
        p = optax.apply_updates(p, u)
    steps = tau * steps_per_epoch
    np.testing.assert_allclose(p["w"], (1 - 1 / steps) ** steps, rtol=1e-5)
    np.testing.assert_allclose(p["w"], math.exp(-1), rtol=1e-2)
