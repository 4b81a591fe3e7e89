"""The scheme rows beyond the notebook (decay forms, projections, block Adam, rotational)
against NumPy implementations written from each form's formula, over 20 steps of a schedule.

The per-row reference table below says, independently of `wdjax.schemes.table`, what each
row should do; the coefficients come from `test_schemes.ref_groups` (NumPy only).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_schemes import CONF, HP, flat, ref_groups

from wdjax import decay, schemes
from wdjax.models import VGG, init_variables

# name -> (base, form, groups of, blocks, unit-normalised, projected to initial unit norms)
ROWS = {
    "SGDW_indep": ("sgd", "independent", "SGD", "element", False, False),
    "AdamW": ("adam", "decoupled", "SGD", "element", False, False),
    "AdamC": ("adam", "corrected", "SGD", "element", False, False),
    "SGD_cautious": ("sgd", "cautious", "SGD", "element", False, False),
    "AdamW_cautious": ("adam", "cautious", "SGD", "element", False, False),
    "SGDprox1": ("sgd", "proximal", "SGDL1", "element", False, False),
    "SGDprox1A": ("sgd", "proximal", "SGDL1A", "element", False, False),
    "SGD_sp": ("sgd", "toward_init", "SGD", "element", False, False),
    "SGD_hyperball": ("sgd", "coupled", "SGD", "element", False, True),
    "RSGD_hyperball": ("sgd", "coupled", "SGD", "element", True, True),
    "AdamU": ("adam", "coupled", "SGD", "unit", False, False),
    "AdamL": ("adam", "coupled", "SGD", "layer", False, False),
    "AdamWU": ("adam", "decoupled", "SGD", "unit", False, False),
    "AdamWL": ("adam", "decoupled", "SGD", "layer", False, False),
}
# name -> (base, per_neuron, groups of): composed by hand from decay.rotational.
ROTATIONAL = {"RSGD_var_dup2": ("sgd", True, "SGD_var_dup2"),
              "RSGD_var_dup2_tensor": ("sgd", False, "SGD_var_dup2"),
              "RotAdamW": ("adam", True, "SGD")}
STEPS, MOMENTUM = 20, 0.9


@pytest.fixture(scope="module")
def params():
    return init_variables(VGG(CONF), jax.random.PRNGKey(0))["params"]


def schedule(lr0):
    return lambda count: lr0 * 0.5 ** (count // 5)


def unit_norm(x):
    """Norm per output unit (all axes but the last); a 1-D leaf: each element alone."""
    return np.sqrt(np.sum(np.square(x), axis=tuple(range(x.ndim - 1)), keepdims=True))


class RefForms:
    """Momentum SGD or Adam (per element / unit / tensor second moment) with each form."""

    def __init__(self, name, p0, hp, lr0):
        self.base, self.form, of, self.blocks, self.unit_normalize, self.project = ROWS[name]
        self.groups, self.hp, self.lr0, self.p0 = ref_groups(of, p0, hp), hp, lr0, p0
        self.radius = {k: unit_norm(v) for k, v in p0.items() if v.ndim >= 2}
        self.s, self.t = {}, 0

    def direction(self, key, d):
        s = self.s.setdefault(key, dict(buf=np.zeros_like(d), m=np.zeros_like(d), v=0.0))
        if self.base == "sgd":
            s["buf"] = self.hp["momentum"] * s["buf"] + d
            return s["buf"]
        axes = {"element": (), "unit": tuple(range(d.ndim - 1)),
                "layer": tuple(range(d.ndim))}[self.blocks]
        s["m"] = 0.9 * s["m"] + 0.1 * d
        s["v"] = 0.999 * s["v"] + 0.001 * np.mean(d * d, axis=axes, keepdims=True)
        mh, vh = s["m"] / (1 - 0.9**self.t), s["v"] / (1 - 0.999**self.t)
        return mh / (np.sqrt(vh) + 1e-8)

    def leaf(self, key, x, g, lr):
        wd, kind, _ = self.groups[key]
        form = self.form
        d = {"coupled": g + wd * x, "toward_init": g + wd * (x - self.p0[key]),
             "proximal": g + (wd * x if kind == "l2" else 0)}.get(form, g)
        d = self.direction(key, d)
        if self.unit_normalize:
            d = d * unit_norm(x) / (unit_norm(d) + 1e-8)
        if form == "decoupled":
            d = d + wd * x
        if form == "cautious":
            d = d + wd * x * (d * x >= 0)
        q = x - lr * d
        if form == "independent":
            q = q - lr / self.lr0 * wd * x
        if form == "corrected":
            q = q - lr * lr / self.lr0 * wd * x
        if form == "proximal" and kind == "l1":
            q = np.sign(q) * np.maximum(np.abs(q) - lr * wd, 0)
        if self.project and key in self.radius:
            q = q * self.radius[key] / unit_norm(q)
        return q.astype(np.float32)

    def step(self, p, g, lr):
        self.t += 1
        return {key: self.leaf(key, p[key], grad, lr) for key, grad in g.items()}


def run(tx, params, steps, stepper=None, seed=0):
    """(jax params, reference params) after `steps` steps on the same random gradients."""
    state, update = tx.init(params), jax.jit(tx.update)
    rng, p, p_ref = np.random.default_rng(seed), params, flat(params)
    for t in range(steps):
        g = jax.tree.map(lambda x: rng.normal(0, 0.5, x.shape).astype(np.float32), params)
        u, state = update(g, state, p)
        p = optax.apply_updates(p, u)
        if stepper is not None:
            p_ref = stepper(p_ref, flat(g), t)
    return flat(p), p_ref


def assert_close(got, want, rtol=1e-5):
    for key in want:
        err = np.linalg.norm(got[key] - want[key]) / max(np.linalg.norm(want[key]), 1e-12)
        assert err < rtol, (key, err)


@pytest.mark.parametrize("name", list(ROWS))
def test_row_matches_reference(params, name):
    lr0 = 0.1 if ROWS[name][0] == "sgd" else 1e-3
    sched, hp = schedule(lr0), dict(HP, momentum=MOMENTUM)
    if ROWS[name][1] == "proximal":  # a threshold lr_t * L1_decay that some elements meet
        hp["L1_decay"] = 0.3
    ref = RefForms(name, flat(params), hp, lr0)
    tx = schemes.build(name, params=params, conf=CONF, lr=sched, steps=STEPS, **hp)
    got, want = run(tx, params, STEPS, lambda p, g, t: ref.step(p, g, sched(t)))
    assert_close(got, want)
    if ROWS[name][1] == "proximal":  # the soft threshold puts the same elements on 0
        zeros = [np.array_equal(got[k] == 0, want[k] == 0) for k in want]
        assert all(zeros) and sum(int((v == 0).sum()) for v in got.values()) > 0
    if ROWS[name][5]:  # unit norms held at their initial values
        for key, r in ref.radius.items():
            np.testing.assert_allclose(unit_norm(got[key]), r, rtol=1e-6)


@pytest.mark.parametrize("name", list(ROTATIONAL))
def test_rotational_row_is_decay_rotational_composed_by_hand(params, name):
    base, per_neuron, of = ROTATIONAL[name]
    lr0 = 0.1 if base == "sgd" else 1e-3
    sched, hp = schedule(lr0), dict(HP, momentum=MOMENTUM)
    flags = jax.tree.map(lambda p: p.ndim >= 2, params)
    start = decay.center_units(params, flags, per_neuron)
    # The scheme's own starting point is those centred kernels.
    jax.tree.map(np.testing.assert_array_equal, schemes.initial_params(name, params), start)
    groups = ref_groups(of, flat(start), hp)
    coef = jax.tree_util.tree_map_with_path(
        lambda path, _: groups[tuple(k.key for k in path)][0], params)
    inner = optax.trace(MOMENTUM) if base == "sgd" else optax.scale_by_adam(0.9, 0.999, 1e-8)
    hand = decay.rotational(inner, learning_rate=sched, weight_decay=coef,
                            momentum=MOMENTUM if base == "sgd" else 0.0,
                            b1=None if base == "sgd" else 0.9, per_neuron=per_neuron,
                            rotational=flags)
    tx = schemes.build(name, params=start, conf=CONF, lr=sched, **hp)
    got, _ = run(tx, start, STEPS)
    want, _ = run(hand, start, STEPS)
    assert_close(got, want)
    kernel = ("conv3_1", "conv", "kernel")
    norm = unit_norm if per_neuron else (lambda x: np.linalg.norm(x))
    np.testing.assert_allclose(norm(got[kernel]), norm(flat(start)[kernel]), rtol=1e-5)


def test_every_row_is_checked_by_a_reference():
    from test_schemes import CASES

    checked = {n for n, _ in CASES} | set(ROWS) | set(ROTATIONAL) | {"Adam"}
    assert checked == set(schemes.names())


def test_adamw_row_equals_adam_with_separate_decay(params):
    a = schemes.build("AdamW", params=params, conf=CONF, weight_decay=1e-2)
    b = schemes.build("Adam", params=params, conf=CONF, weight_decay=1e-2, separate_decay=True)
    got, _ = run(a, params, 3)
    want, _ = run(b, params, 3)
    assert_close(got, want, rtol=1e-7)


def test_initial_params_unchanged_unless_the_row_centres(params):
    assert schemes.initial_params("SGD_var_dup2", params) is params
    centred = flat(schemes.initial_params("RSGD_var_dup2", params))
    k = centred[("conv2_1", "conv", "kernel")]
    np.testing.assert_allclose(k.reshape(-1, k.shape[-1]).mean(0), 0, atol=1e-6)


@pytest.mark.parametrize("fields,needle", [
    (dict(decay_form="proximal"), "l1_group"),
    (dict(decay_form="cautious", l1_group="early"), "L1 groups"),
    (dict(decay_form="toward_init", topographic=(-2,)), "topographic"),
    (dict(rotational="neuron", normalize="ema"), "rotational"),
    (dict(adam_blocks="unit"), "adam_blocks"),
    (dict(decay_form="weird"), "decay_form must be one of"),
])
def test_conflicting_fields_raise_one_line(fields, needle):
    with pytest.raises(ValueError) as err:
        schemes.Scheme("mine", **fields)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_separate_decay_only_on_coupled_adam():
    with pytest.raises(ValueError, match="separate_decay"):
        schemes.resolve("AdamC", separate_decay=True)
    assert schemes.resolve("AdamU", separate_decay=True).decay_form == "decoupled"


def test_adamw_row_is_torch_adamw(params):
    """The AdamW row's torch semantics: ``torch.optim.AdamW(lr, weight_decay=wd)``."""
    torch = pytest.importorskip("torch", reason="torch is the AdamW peer")
    lr, wd = 1e-3, 0.05
    tx = schemes.build("AdamW", params=params, conf=CONF, lr=lr, weight_decay=wd)
    got, _ = run(tx, params, STEPS)
    start = flat(params)
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in start.items()}
    opt = torch.optim.AdamW(list(tensors.values()), lr=lr, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=wd)
    rng = np.random.default_rng(0)  # the same gradients as `run`
    for _ in range(STEPS):
        grads = flat(jax.tree.map(lambda x: rng.normal(0, 0.5, x.shape).astype(np.float32),
                                  params))
        for k, t in tensors.items():
            t.grad = torch.from_numpy(grads[k])
        opt.step()
    assert_close(got, {k: t.detach().numpy() for k, t in tensors.items()})


@pytest.mark.slow
def test_every_scheme_state_survives_a_checkpoint(params, tmp_path):
    """Each row's optimiser state (as the trainer builds it, with the equilibrium monitor;
    an update keeps the structure init gives) saves and restores through the trainer's
    checkpoints: e.g. no zero-size placeholder arrays, which Orbax refuses."""
    from wdjax.training import checkpoint

    states = {name: schemes.build(name, params=params, conf=CONF, monitor=True).init(params)
              for name in schemes.names()}
    manager = checkpoint.Manager(tmp_path / "checkpoints")
    manager.save(1, states, {})
    manager.wait()
    restored, _ = manager.restore(1, states)
    manager.close()
    for a, b in zip(jax.tree.leaves(states), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_rotational_row_at_decay_0_moves_as_optax_sgd(params):
    """A sweep point with decay 0 (traced: one vmapped program with a decayed point) gets
    the plain update, as epfml/REQ's rotational_sgd.py: exactly ``optax.sgd``."""
    start = schemes.initial_params("RSGD_var_dup2", params)
    txs = [schemes.build("RSGD_var_dup2", params=start, conf=CONF, lr=0.1, momentum=MOMENTUM,
                         weight_decay=wd) for wd in (0.0, 1.6e-3)]
    states = jax.tree.map(lambda *xs: jnp.stack(xs), *[tx.init(start) for tx in txs])
    update = jax.jit(jax.vmap(txs[0].update, in_axes=(None, 0, None)))
    sgd = optax.sgd(0.1, momentum=MOMENTUM)
    sgd_state, sgd_update = sgd.init(start), jax.jit(sgd.update)
    rng, p = np.random.default_rng(0), start
    for _ in range(5):
        g = jax.tree.map(lambda x: rng.normal(0, 0.5, x.shape).astype(np.float32), start)
        u, states = update(g, states, p)
        want, sgd_state = sgd_update(g, sgd_state, p)
        for got, ref in zip(jax.tree.leaves(u), jax.tree.leaves(want), strict=True):
            np.testing.assert_array_equal(got[0], ref)
            if ref.ndim >= 2:  # the decayed point rotates its kernels instead
                assert not np.allclose(got[1], ref)
        p = optax.apply_updates(p, want)


def test_adamc_peak_is_the_schedule_maximum(params):
    """Under warm-up plus cosine, AdamC's ``lr_max`` is the schedule's peak (its maximum over
    the run, or given), not ``lr(0)``: the row equals `corrected_decay` given the peak."""
    peak, wd = 1e-3, 0.05
    sched = optax.warmup_cosine_decay_schedule(1e-4, peak, 5, STEPS)
    want = optax.chain(optax.scale_by_adam(0.9, 0.999, 1e-8), optax.scale_by_learning_rate(sched),
                       decay.corrected_decay(wd, sched, peak))
    want, _ = run(want, params, STEPS)
    for given in (dict(steps=STEPS), dict(max_learning_rate=peak)):
        tx = schemes.build("AdamC", params=params, conf=CONF, lr=sched, weight_decay=wd, **given)
        assert_close(run(tx, params, STEPS)[0], want, rtol=1e-6)
    lr0 = schemes.build("AdamC", params=params, conf=CONF, lr=sched, weight_decay=wd,
                        max_learning_rate=float(sched(0)))
    with pytest.raises(AssertionError):  # the old lr(0) is another optimiser
        assert_close(run(lr0, params, STEPS)[0], want, rtol=1e-4)
    with pytest.raises(ValueError, match="max_learning_rate= or steps="):
        schemes.build("AdamC", params=params, conf=CONF, lr=sched)
