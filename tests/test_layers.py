"""The layer table on models this project did not write, and the scheme rules stated on it.

Every expected value is worked out here from the rules (REFERENCE section 6 and the layer
table's definitions), not by calling the code under test: depths from the pools/strides,
fan-ins from the kernel shapes, variances with NumPy, owners from the call order.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wdjax import schemes
from wdjax.layers import labels

WD, L1, LAST1, TOPO = 3e-4, 2e-5, 7.0, 1.5


class Block(nn.Module):
    """An auto-named conv + flax BatchNorm block (``Block_0/Conv_0``, ``Block_0/BatchNorm_0``)."""

    features: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(self.features, (3, 3))(x)
        return nn.relu(nn.BatchNorm(use_running_average=not train)(x))


class Nested(nn.Module):
    """Three nested blocks with 2x2 pools between them and a Dense head after global pooling."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.max_pool(Block(6)(x, train), (2, 2), (2, 2))
        x = nn.max_pool(Block(10)(x, train), (2, 2), (2, 2))
        x = Block(12)(x, train).mean(axis=(1, 2))
        return nn.Dense(5)(x)


class Residual(nn.Module):
    """Stem, one strided residual block with a 1x1 projection shortcut, a Dense head."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        bn = lambda: nn.BatchNorm(use_running_average=not train)  # noqa: E731
        x = nn.relu(bn()(nn.Conv(4, (3, 3), use_bias=False)(x)))
        y = nn.relu(bn()(nn.Conv(8, (3, 3), strides=2, use_bias=False)(x)))
        y = bn()(nn.Conv(8, (3, 3), use_bias=False)(y))
        s = bn()(nn.Conv(8, (1, 1), strides=2, use_bias=False)(x))
        return nn.Dense(3)(nn.relu(y + s).mean(axis=(1, 2)))


_CACHE: dict = {}


def _init(model, size=8):
    """Variables and layer table, once per model class."""
    key = type(model).__name__
    if key not in _CACHE:
        x = jnp.zeros((2, size, size, 3))
        variables = model.init(jax.random.PRNGKey(0), x)
        _CACHE[key] = variables, labels.trace_layers(model, variables, x)
    return _CACHE[key]


@pytest.fixture(scope="module")
def residual_grads():
    model = Residual()
    variables, tab = _init(model)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))

    def loss(p):
        out, _ = model.apply({**variables, "params": p}, x, train=True, mutable=["batch_stats"])
        return jnp.mean(out ** 2)

    return variables["params"], tab, jax.jit(jax.grad(loss))(variables["params"])


def _at(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def _flat(tree):
    return {tuple(str(k.key) for k in p): v
            for p, v in jax.tree_util.tree_leaves_with_path(tree)}


# name -> (kernel path, depth, owned leaves)
NESTED = {
    "Block_0": (("Block_0", "Conv_0", "kernel"), 0.0),
    "Block_1": (("Block_1", "Conv_0", "kernel"), 1.0),
    "Block_2": (("Block_2", "Conv_0", "kernel"), 2.0),
    "Dense_0": (("Dense_0", "kernel"), 3.0),  # after global pooling: a fully pooled 8x8 map
}
RESIDUAL = {
    "Conv_0": (("Conv_0", "kernel"), 0.0),
    "Conv_1": (("Conv_1", "kernel"), 0.0),
    "Conv_2": (("Conv_2", "kernel"), 1.0),  # after the stride-2 conv
    "Conv_3": (("Conv_3", "kernel"), 0.0),  # the projection sees the block's input
    "Dense_0": (("Dense_0", "kernel"), 3.0),
}


def test_nested_blocks_table():
    variables, tab = _init(Nested())
    assert tab.names == list(NESTED)
    for layer in tab:
        kernel_path, depth = NESTED[layer.name]
        kernel = _at(variables["params"], kernel_path)
        assert layer.kernel == kernel_path and layer.depth == depth
        assert layer.fan_in == int(np.prod(kernel.shape[:-1]))
        assert layer.kind == ("conv" if kernel.ndim == 4 else "dense")
    # A block owns its conv's kernel and bias and its BatchNorm's scale and bias.
    assert set(tab.layers[1].params) == {
        ("Block_1", "Conv_0", "kernel"), ("Block_1", "Conv_0", "bias"),
        ("Block_1", "BatchNorm_0", "scale"), ("Block_1", "BatchNorm_0", "bias")}
    assert [layer.name for layer in tab.early()] == ["Block_0", "Block_1"]
    assert [layer.name for layer in tab.last(2)] == ["Block_2", "Dense_0"]


def test_residual_block_table():
    variables, tab = _init(Residual())
    assert tab.names == list(RESIDUAL)
    for layer in tab:
        assert (layer.kernel, layer.depth) == RESIDUAL[layer.name]
    owners = tab.owners()
    # Each BatchNorm belongs to the conv called just before it, the projection's included.
    for i in range(4):
        assert owners[(f"BatchNorm_{i}", "scale")] == f"Conv_{i}"
    assert owners[("Dense_0", "bias")] == "Dense_0"
    assert all(layer.normalized for layer in tab.layers[:4]) and not tab.layers[4].normalized
    # Conv_0..Conv_3 see maps of size 8 or 4; the head is fully pooled: early = depth < 1.
    assert [layer.name for layer in tab.early()] == ["Conv_0", "Conv_1", "Conv_3"]


def _expected_coefficients(params, tab_rows, factors, l1_names=(), last1=None):
    """Per leaf: the coefficient its owning layer gets under the rules (written out)."""
    owner = {}
    for name, (kernel_path, _) in tab_rows.items():
        prefix = kernel_path[:-2] if len(kernel_path) == 3 else kernel_path[:-1]
        owner[name] = prefix
    expected = {}
    for path in _flat(params):
        layer = next((n for n, pre in owner.items() if path[:len(pre)] == pre), None)
        if layer is None:  # a BatchNorm after a bare conv: owned by the conv before it
            i = int(path[0].split("_")[1])
            layer = f"Conv_{i}"
        coef = WD * factors.get(layer, 1.0)
        if layer in l1_names:
            coef = L1
        if layer == last1:
            coef *= LAST1
        expected[path] = (coef, "l1" if layer in l1_names else "l2")
    return expected


# The rule rows: scheme -> (factor of a layer from its initial kernel and depth, L1 group is
# the early layers, last layer times last1_mult). Adding a scheme adds one row here.
RULES = {
    "SGD": (lambda k, depth: 1.0, False, False),
    "SGDL1": (lambda k, depth: 1.0, True, False),
    "SGD_var_dup2": (lambda k, depth: 2.0 ** -depth / k.var(ddof=1), False, False),
    "SGD_var_dup4": (lambda k, depth: 4.0 ** -depth / k.var(ddof=1), False, False),
    "SGD_var_dup2_last1_mult": (lambda k, depth: 2.0 ** -depth / k.var(ddof=1), False, True),
    "SGD_fanin": (lambda k, depth: np.prod(k.shape[:-1]) / 1152, False, False),
}


@pytest.mark.parametrize("model,rows", [(Nested(), NESTED), (Residual(), RESIDUAL)],
                         ids=["nested", "residual"])
@pytest.mark.parametrize("scheme", list(RULES))
def test_decay_spec_per_leaf(model, rows, scheme):
    variables, tab = _init(model)
    params = variables["params"]
    rule, early_l1, last1 = RULES[scheme]
    factors = {name: rule(np.asarray(_at(params, kernel_path), np.float64), depth)
               for name, (kernel_path, depth) in rows.items()}
    # Early: below the largest depth of the layers that still see a map (depth < the
    # fully pooled one), i.e. below the second-largest distinct depth here.
    cut = sorted({d for _, d in rows.values()})[-2]
    l1 = [n for n, (_, d) in rows.items() if d < cut] if early_l1 else []
    expected = _expected_coefficients(params, rows, factors, l1,
                                      list(rows)[-1] if last1 else None)
    spec = schemes.decay_spec(scheme, params=params, layers=tab, weight_decay=WD, L1_decay=L1,
                              last1_mult=LAST1)
    coefs, kinds = _flat(spec.coefficients), _flat(spec.kinds)
    for path, (coef, kind) in expected.items():
        np.testing.assert_allclose(float(coefs[path]), coef, rtol=1e-6, err_msg=str(path))
        assert kinds[path] == kind, path
    assert all(m is None for m in jax.tree.leaves(spec.multipliers, is_leaf=lambda m: m is None))


@pytest.mark.parametrize("model", [Nested(), Residual()], ids=["nested", "residual"])
def test_topographic_multiplier_on_the_second_to_last_layer(model):
    variables, tab = _init(model)
    params = variables["params"]
    spec = schemes.decay_spec("SGD_topo.a", params=params, layers=tab, topo_base=TOPO)
    target = tab.layers[-2]
    mults = _flat(spec.multipliers)
    kernel = _at(params, target.kernel)
    m = np.broadcast_to(np.asarray(mults[target.kernel]), kernel.shape)
    cin, cout = kernel.shape[-2:]
    # Units fill a 3x3 grid in order, ceil(n / 9) per cell; M = b ** floor(distance).
    cell = lambda n: np.stack([(np.arange(n) // -(-n // 9)) % 3,  # noqa: E731
                               (np.arange(n) // -(-n // 9)) // 3], 1)
    d = np.floor(np.linalg.norm(cell(cin)[:, None] - cell(cout)[None], axis=-1))
    np.testing.assert_allclose(m[..., :, :].reshape(-1, cin, cout)[0], TOPO ** d, rtol=1e-6)
    others = [p for p, v in mults.items() if p != target.kernel]
    assert all(mults[p] is None for p in others)


@pytest.mark.parametrize("name", schemes.names())
def test_every_scheme_steps_on_a_foreign_model(name, residual_grads):
    params, tab, grads = residual_grads
    tx = schemes.build(name, params=params, layers=tab)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    assert all(bool(jnp.isfinite(v).all()) for v in jax.tree.leaves(new))
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new),
                                                         jax.tree.leaves(params), strict=True))


class GainNorm(nn.Module):
    """A user's own normalisation layer (RMS norm with a gain), unknown to wdjax."""

    @nn.compact
    def __call__(self, x):
        gain = self.param("gain", nn.initializers.ones, (x.shape[-1],))
        return gain * x / jnp.sqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6)


class GainNormNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.BatchNorm(use_running_average=not train)(nn.Conv(4, (3, 3))(x))
        x = GainNorm()(nn.Conv(4, (3, 3))(x))
        return nn.Dense(3)(x.mean((1, 2)))


def test_norm_types_names_a_users_own_normalisation():
    model, x = GainNormNet(), jnp.ones((1, 8, 8, 3))
    variables = model.init(jax.random.key(0), x)
    gain, bn = ("GainNorm_0", "gain"), ("BatchNorm_0", "scale")
    unknown = labels.trace_layers(model, variables, x)
    assert all(gain not in layer.params for layer in unknown)
    assert bn in unknown.layers[0].params and not unknown.layers[1].normalized
    # Named as a normalisation (beside the defaults), it belongs to the conv called before it.
    known = labels.trace_layers(model, variables, x, norm_types=(*labels.NORM_TYPES, GainNorm))
    assert known.names == ["Conv_0", "Conv_1", "Dense_0"]
    assert bn in known.layers[0].params and known.layers[0].normalized
    assert gain in known.layers[1].params and known.layers[1].normalized
