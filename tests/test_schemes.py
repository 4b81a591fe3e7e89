"""Every named optimiser against an independent NumPy implementation of REFERENCE section 4.

The reference below re-derives groups, coefficients, multipliers and the update rule from
the REFERENCE text alone; it never calls wdjax's transforms or label helpers.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wdjax import schemes
from wdjax.models import VGG, init_variables, vgg_conf

BASE = 4
CONF = vgg_conf(BASE)
LAYERS = ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv4_1",
          "conv4_2", "conv5_1", "conv5_2", "fc6", "logit"]
POOLS_BEFORE = {"conv1_1": 0, "conv1_2": 0, "conv2_1": 1, "conv2_2": 1, "conv3_1": 2,
                "conv3_2": 2, "conv4_1": 3, "conv4_2": 3, "conv5_1": 4, "conv5_2": 4,
                "fc6": 5, "logit": 5}


@pytest.fixture(scope="module")
def params():
    return init_variables(VGG(CONF), jax.random.PRNGKey(0))["params"]


def flat(tree):
    return {tuple(k.key for k in path): np.asarray(leaf, np.float32)
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


# ---------------------------------------------------------------- reference (NumPy only)
def ref_topo(kernel_hwio_shape, b, grid=3):
    """M[i, j] per REFERENCE section 8, built with explicit loops in OIHW, returned as HWIO."""
    kh, kw, cin, cout = kernel_hwio_shape

    def cell(unit, units):
        per = math.ceil(units / grid**2)
        c = unit // per
        return c % grid, c // grid

    mults = [b**d for d in range(grid * 2)]
    m = np.zeros((cout, cin, kh, kw), np.float32)
    for i in range(cout):
        xi, yi = cell(i, cout)
        for j in range(cin):
            xj, yj = cell(j, cin)
            m[i, j] = mults[int(math.floor(math.sqrt((xi - xj) ** 2 + (yi - yj) ** 2)))]
    return m.transpose(2, 3, 1, 0)


# Each named scheme's decay, written out from REFERENCE sections 5-8 (not read from the
# scheme table): a scheme missing here fails with KeyError instead of getting a guess.
_VAR2 = dict(rule="variance_inverse", dup=2)
REF_SCHEMES = {
    "SGD": dict(rule="uniform"),
    "SGDL1": dict(rule="l1_early"),
    "SGDL1A": dict(rule="l1_all"),
    "SGD_var_dup4": dict(rule="variance_inverse", dup=4),
    "SGD_var_dup2": _VAR2,
    "SGD_var_dup1": dict(rule="variance_inverse", dup=1),
    "SGD_var_dup2_last2_mult": dict(_VAR2, last2=True),
    "SGD_var_dup2_last1_mult": dict(_VAR2, last1=True),
    "SGD_topo.a": dict(_VAR2, last1=True, topo=["fc6"]),
    "SGD_topo.b": dict(_VAR2, last1=True, topo=["conv5_2"]),
    "SGD_topo.ab": dict(_VAR2, last1=True, topo=["fc6", "conv5_2"]),
    "LSSGD_var_dup2_last1_mult": dict(_VAR2, last1=True, normalize="weight_norm"),
    "LSSGD_var_dup2_last1_mult_nwm": dict(_VAR2, last1=True, normalize="unit"),
    "SGD_fanin": dict(rule="fan_in"),
    "Adam": dict(rule="uniform"),
}


def ref_layer_coefficients(rule, p0, hp):
    """{layer: (coefficient, kind)} of one coefficient rule."""
    wd, l1 = hp["weight_decay"], hp["L1_decay"]
    if rule["rule"] == "variance_inverse":
        out = {}
        for layer in LAYERS:
            var = np.var(p0[(layer, "conv", "kernel")].astype(np.float64), ddof=1)
            out[layer] = (wd / var / rule["dup"] ** POOLS_BEFORE[layer], "l2")
        return out
    if rule["rule"] == "fan_in":  # wd * fan_in / 1152 (conv2_1's 3 * 3 * 128)
        return {layer: (wd * np.prod(p0[(layer, "conv", "kernel")].shape[:-1]) / 1152, "l2")
                for layer in LAYERS}
    if rule["rule"] == "l1_early":
        return {layer: (l1, "l1") if layer < "conv5" else (wd, "l2") for layer in LAYERS}
    if rule["rule"] == "l1_all":
        return {layer: (l1, "l1") for layer in LAYERS}
    return {layer: (wd, "l2") for layer in LAYERS}


def ref_groups(name, p0, hp):
    """{leaf key: (wd, kind, multiplier or None)} for scheme `name`."""
    rule = REF_SCHEMES[name]
    coef = ref_layer_coefficients(rule, p0, hp)
    if rule.get("last2"):
        for layer in ("fc6", "logit"):
            coef[layer] = (coef[layer][0] * hp["last2_mult"], "l2")
    if rule.get("last1"):
        coef["logit"] = (coef["logit"][0] * hp["last1_mult"], "l2")
    out = {}
    for key in p0:
        c, kind = coef[key[0]]
        mult = None
        if key[0] in rule.get("topo", []) and key[1:] == ("conv", "kernel"):
            mult = ref_topo(p0[key].shape, hp["topo_base"])
        out[key] = (c, kind, mult)
    return out


class RefSGD:
    """REFERENCE section 4, literally, one tensor at a time."""

    def __init__(self, name, p0, hp):
        self.groups, self.hp, self.name = ref_groups(name, p0, hp), hp, name
        self.buf, self.ema, self.t = {}, {}, 0

    def step(self, p, g, lr):
        new = {}
        for key, grad in g.items():
            wd, kind, mult = self.groups[key]
            x = p[key]
            d = grad.copy()
            if wd != 0:
                dec = wd * x if kind == "l2" else wd * np.sign(x)
                if mult is not None:
                    dec = dec * mult
                d = d + dec
            m = self.hp["momentum"]
            if m != 0:
                self.buf[key] = d if self.t == 0 else m * self.buf[key] + d
                d = self.buf[key]
            normalize = REF_SCHEMES[self.name].get("normalize")
            if normalize:
                nd = np.linalg.norm(d.astype(np.float64))
                r = self.hp["norm_ema"]
                self.ema[key] = nd if self.t == 0 else r * self.ema[key] + (1 - r) * nd
                w = 1.0 if normalize == "unit" else np.linalg.norm(x.astype(np.float64))
                d = d * np.float32(w / (self.ema[key] + 1e-8))
            pn = (x - lr * d).astype(np.float32)
            if kind == "l1":
                pn[np.sign(x) * np.sign(pn) == -1] = 0.0
            new[key] = pn
        self.t += 1
        return new


class RefAdam:
    def __init__(self, name, p0, hp, separate):
        self.groups, self.sep = ref_groups(name, p0, hp), separate
        self.m = {k: np.zeros_like(v) for k, v in p0.items()}
        self.v = {k: np.zeros_like(v) for k, v in p0.items()}
        self.t = 0

    def step(self, p, g, lr):
        self.t += 1
        new = {}
        for key, grad in g.items():
            wd = self.groups[key][0]
            x = p[key]
            d = grad if self.sep else grad + wd * x
            self.m[key] = 0.9 * self.m[key] + 0.1 * d
            self.v[key] = 0.999 * self.v[key] + 0.001 * d * d
            mh = self.m[key] / (1 - 0.9**self.t)
            vh = self.v[key] / (1 - 0.999**self.t)
            upd = mh / (np.sqrt(vh) + 1e-8)
            if self.sep:
                upd = upd + wd * x
            new[key] = (x - lr * upd).astype(np.float32)
        return new


# ---------------------------------------------------------------- the comparison
HP = dict(weight_decay=1.6e-3, L1_decay=2e-3, last1_mult=10.0, last2_mult=3.0,
          topo_base=2.0, norm_ema=0.9)
# The notebook's SGD rows (the other rows: tests/test_schemes_forms.py).
NOTEBOOK_SGD = [s.name for s in schemes.SCHEMES if s.base_optimizer == "sgd" and s.decay_form ==
                "coupled" and s.norm_constraint == s.rotational == "none"]
CASES = [(n, m) for n in NOTEBOOK_SGD for m in (0.0, 0.9)]


def run_both(name, params, momentum, steps=20, lr=0.1, separate=False, seed=0):
    hp = dict(HP, momentum=momentum)
    p0 = flat(params)
    ref = RefAdam(name, p0, hp, separate) if name == "Adam" else RefSGD(name, p0, hp)
    tx = schemes.build(name, params=params, conf=CONF, lr=lr, separate_decay=separate, **hp)
    state = tx.init(params)
    update = jax.jit(tx.update)
    rng = np.random.default_rng(seed)
    p_jax, p_ref = params, p0
    for _ in range(steps):
        g = jax.tree.map(lambda x: rng.normal(0, 0.5, x.shape).astype(np.float32), params)
        u, state = update(g, state, p_jax)
        p_jax = optax.apply_updates(p_jax, u)
        p_ref = ref.step(p_ref, flat(g), lr)
    return flat(p_jax), p_ref


@pytest.mark.device
@pytest.mark.parametrize("name,momentum", CASES)
def test_named_optimizer_matches_reference(params, name, momentum):
    got, want = run_both(name, params, momentum)
    for key in want:
        err = np.linalg.norm(got[key] - want[key]) / max(np.linalg.norm(want[key]), 1e-12)
        assert err < 1e-5, (key, err)
        if REF_SCHEMES[name]["rule"] in ("l1_early", "l1_all"):  # exactly the same zeros
            np.testing.assert_array_equal(got[key] == 0, want[key] == 0, err_msg=str(key))


@pytest.mark.parametrize("separate", [False, True])
def test_adam_matches_reference(params, separate):
    got, want = run_both("Adam", params, 0.0, lr=1e-3, separate=separate)
    for key in want:
        err = np.linalg.norm(got[key] - want[key]) / max(np.linalg.norm(want[key]), 1e-12)
        assert err < 1e-5, (key, err)


def test_l1_clip_really_fires(params):
    """The L1 comparison above is only meaningful if elements do land on 0."""
    got, _ = run_both("SGDL1A", params, 0.0)
    zeros = sum(int((v == 0).sum()) for k, v in got.items() if k[-1] == "kernel")
    assert zeros > 0


def test_normalization_leaves_zero_tensors_still(params):
    got, _ = run_both("LSSGD_var_dup2_last1_mult", params, 0.0, steps=3)
    assert np.all(got[("conv1_1", "conv", "bias")] == 0)  # ||p|| = 0: never moves
    got, _ = run_both("LSSGD_var_dup2_last1_mult_nwm", params, 0.0, steps=3)
    assert np.any(got[("conv1_1", "conv", "bias")] != 0)


@pytest.mark.parametrize("topo", ["SGD_topo.a", "SGD_topo.b", "SGD_topo.ab"])
def test_topo_base_one_equals_base_scheme(params, topo):
    def run(name):
        tx = schemes.build(name, params=params, conf=CONF, weight_decay=1e-3, last1_mult=10.0,
                           topo_base=1.0)
        state, p = tx.init(params), params
        for i in range(3):
            g = jax.tree.map(lambda x, i=i: jnp.full_like(x, 0.01 * (i + 1)), params)
            u, state = tx.update(g, state, p)
            p = optax.apply_updates(p, u)
        return p

    a, b = run(topo), run("SGD_var_dup2_last1_mult")
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_variance_inverse_factors_match_reference_table():
    """Theory values of REFERENCE section 6 (base 32, dup 2), averaged over 8 inits.

    One init's sample variance of conv1_1's 864 weights has ~5% noise by itself, so the
    table's theory values are compared with the mean over seeds.
    """
    table = dict(conv1_1=13.5, conv1_2=144, conv2_1=72, conv2_2=144, conv3_1=72, conv3_2=144,
                 conv4_1=72, conv4_2=144, conv5_1=72, conv5_2=72, fc6=4, logit=4)
    conf = vgg_conf(32)
    model = VGG(conf)
    runs = [schemes.layer_factors("SGD_var_dup2", init_variables(model, jax.random.PRNGKey(s))
                                  ["params"], conf) for s in range(8)]
    for layer, want in table.items():
        got = np.mean([r[layer] for r in runs])
        assert abs(got / want - 1) < 0.05, (layer, got, want)


def test_factors_use_n_minus_1_variance(params):
    f = schemes.layer_factors("SGD_var_dup4", params, CONF)
    k = np.asarray(params["conv3_1"]["conv"]["kernel"], np.float64)
    assert f["conv3_1"] == pytest.approx(1 / np.var(k, ddof=1) / 16, rel=1e-9)


def test_aliases_and_names():
    assert schemes.get("SGD1A").name == "SGDL1A"
    assert schemes.get("SGD_var_dup").name == "SGD_var_dup4"
    assert len(set(schemes.names())) == len(schemes.names()) >= 15


@pytest.mark.parametrize("kwargs,needle", [
    (dict(name="SGD_nope"), "valid: SGD,"),
    (dict(weight_decay=-1.0), "weight_decay"),
    (dict(weight_decay=float("nan")), "weight_decay"),
    (dict(L1_decay=float("inf")), "L1_decay"),
    (dict(topo_base=0.0), "topo_base"),
    (dict(norm_ema=1.0), "norm_ema"),
    (dict(momentum=-0.1), "momentum"),
    (dict(momentum=1.0), "momentum"),
    (dict(lr=0.0), "lr"),
])
def test_bad_values_raise_one_line(params, kwargs, needle):
    kwargs = dict(dict(name="SGD"), **kwargs)
    with pytest.raises(ValueError) as err:
        schemes.build(kwargs.pop("name"), params=params, conf=CONF, **kwargs)
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.device
def test_vmap_over_hyperparameter_equals_separate_runs(params):
    """One compiled update serves runs that differ in weight_decay and last1_mult."""
    name = "SGD_topo.a"
    settings = [dict(weight_decay=1e-4, last1_mult=3.0, topo_base=1.5),
                dict(weight_decay=4e-4, last1_mult=10.0, topo_base=2.0),
                dict(weight_decay=1.6e-3, last1_mult=30.0, topo_base=3.0)]
    txs = [schemes.build(name, params=params, conf=CONF, momentum=0.9, **s) for s in settings]
    grads = [jax.tree.map(lambda x, i=i: jnp.sin(x * (i + 2.0)), params) for i in range(4)]

    def run(tx, state, p):
        for g in grads:
            u, state = tx.update(g, state, p)
            p = optax.apply_updates(p, u)
        return p

    separate = [jax.jit(run, static_argnums=0)(tx, tx.init(params), params) for tx in txs]
    states = jax.tree.map(lambda *xs: jnp.stack(xs), *[tx.init(params) for tx in txs])
    stacked = jax.tree.map(lambda x: jnp.stack([x] * 3), params)
    batched = jax.jit(jax.vmap(lambda s, p: run(txs[0], s, p)))(states, stacked)
    for i, want in enumerate(separate):
        jax.tree.map(lambda a, b, i=i: np.testing.assert_allclose(a[i], b, rtol=1e-6,
                                                                    atol=1e-7),
                     batched, want)


@pytest.mark.parametrize("cin,cout,grid", [(5, 7, 3), (9, 9, 3), (20, 12, 3), (6, 16, 4)])
def test_topographic_multiplier_entry_by_entry(cin, cout, grid):
    from wdjax.layers import labels

    got = np.broadcast_to(labels.topographic_multiplier((3, 3, cin, cout), 2.0, grid),
                          (3, 3, cin, cout))
    np.testing.assert_array_equal(got, ref_topo((3, 3, cin, cout), 2.0, grid))
    assert set(np.unique(got)) <= {2.0**d for d in range(2 * grid)}


def test_topographic_multiplier_small_layer_by_hand():
    """C_in = C_out = 9 on a 3x3 grid: one unit per cell, cells (i mod 3, i // 3)."""
    from wdjax.layers import labels

    m = np.asarray(labels.topographic_multiplier((1, 1, 9, 9), 3.0))[0, 0]
    assert m[0, 0] == 1 and m[0, 1] == 3 and m[0, 4] == 3  # dist 0, 1, floor(sqrt 2) = 1
    assert m[0, 2] == 9 and m[0, 8] == 9 and m[2, 6] == 9  # dist 2, floor(sqrt 8) = 2
    np.testing.assert_array_equal(m, m.T)
