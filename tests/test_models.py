"""The VGG: conf format, initialisation, BatchNorm semantics, scale invariance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wdjax.models import VGG, init_variables, layer_kind, vgg_conf, weight_layers


def test_default_conf_is_the_notebook_list():
    conf = vgg_conf(32)
    assert conf[0] == ("input", (3, None))
    assert [n for n, _ in conf if layer_kind(n) == "pool"] == [f"pool{i}" for i in range(1, 6)]
    widths = {n: info[0] for n, info in conf}
    assert widths["conv1_1"] == 32 and widths["conv3_2"] == 128 and widths["conv5_2"] == 256
    assert widths["fc6"] == 256 and widths["logit"] == 10
    assert conf[-1] == ("flatter", (None, None))
    assert weight_layers(conf)[-3:] == ["conv5_2", "fc6", "logit"]


@pytest.mark.slow
def test_params_tree_is_keyed_by_layer_and_initialised_as_reference():
    conf = vgg_conf(16)
    v = init_variables(VGG(conf), jax.random.PRNGKey(3))
    p = v["params"]
    assert list(p) == weight_layers(conf)
    assert set(p["conv2_1"]) == {"conv", "bn"} and set(p["logit"]) == {"conv"}
    k = np.asarray(p["conv4_1"]["conv"]["kernel"])
    assert k.shape == (3, 3, 64, 128)
    # Normal(0, 2 / (k*k*C_in)), not truncated: the variance and the tails both show it.
    assert np.var(k) == pytest.approx(2 / (9 * 64), rel=0.03)
    assert np.abs(k).max() > 2.2 * np.sqrt(2 / (9 * 64))
    for layer in p:
        assert np.all(np.asarray(p[layer]["conv"]["bias"]) == 0)
    assert np.all(np.asarray(p["fc6"]["bn"]["scale"]) == 1)
    assert np.all(np.asarray(v["batch_stats"]["fc6"]["bn"]["var"]) == 1)


@pytest.mark.slow
def test_init_variance_per_layer_is_he_not_glorot():
    """Every kernel has variance 2 / fan_in (He), with a bound that excludes Glorot's
    2 / (fan_in + fan_out): pooled over 16 initialisations, each layer's mean square is
    within 5 standard errors of He's value, and 5 standard errors are less than half the
    distance to Glorot's (the test checks that too, so it could tell them apart)."""
    conf = vgg_conf(4)
    model = VGG(conf, conv_impl="xla")
    keys = jax.random.split(jax.random.PRNGKey(3), 16)
    init = jax.jit(jax.vmap(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False)))
    params = init(keys)["params"]
    for name in weight_layers(conf):
        k = np.asarray(params[name]["conv"]["kernel"], np.float64)
        kh, kw, cin, cout = k.shape[1:]
        he, glorot = 2 / (kh * kw * cin), 2 / (kh * kw * (cin + cout))
        bound = 5 * he * np.sqrt(2 / k.size)  # 5 standard errors of a normal's mean square
        assert bound < (he - glorot) / 2, name
        assert abs(np.mean(k**2) - he) < bound, (name, np.mean(k**2), he, glorot)


@pytest.mark.slow
def test_other_confs_build():
    conf = [("input", (3, None)), ("conv1", (6, 0.5)), ("pool1", (2, 2)), ("drop1", (None, 0.3)),
            ("conv2", (5, None)), ("pool2", (2, 2)), ("fc3", (7, None)), ("logit", (4, None)),
            ("flatter", (None, None))]
    model = VGG(conf)
    v = init_variables(model, jax.random.PRNGKey(0), (4, 4, 3))  # two pools: 4 -> 1
    x = jnp.ones((2, 4, 4, 3))
    out, _ = model.apply(v, x, train=True, mutable=["batch_stats"],
                         rngs={"dropout": jax.random.PRNGKey(1)})
    assert out.shape == (2, 4)
    assert model.apply(v, x, train=False).shape == (2, 4)


def jitted_apply(model):
    """`model.apply`, compiled once per shape: op by op, each small op compiles alone."""
    return jax.jit(model.apply, static_argnames=("train", "mutable"))


@pytest.mark.device
@pytest.mark.slow
def test_batchnorm_train_updates_running_stats_eval_uses_them():
    conf = vgg_conf(4)
    model = VGG(conf)
    apply = jitted_apply(model)
    v = init_variables(model, jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (16, 32, 32, 3)) * 2 + 1
    _, new = apply(v, x, train=True, mutable=("batch_stats",))
    # conv1_1's BN input is conv(x) + 0 bias: check against the formula with unbiased var.
    k = v["params"]["conv1_1"]["conv"]["kernel"]
    h = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = np.asarray(h, np.float64).reshape(-1, 4)
    st = new["batch_stats"]["conv1_1"]["bn"]
    np.testing.assert_allclose(st["mean"], 0.1 * h.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(st["var"], 0.9 + 0.1 * h.var(0, ddof=1), rtol=1e-4)
    # Evaluation: outputs do not depend on the rest of the batch, stats are not touched.
    full = apply(v, x, train=False)
    single = apply(v, x[:1], train=False)
    np.testing.assert_allclose(full[:1], single, rtol=1e-5, atol=1e-5)  # logits ~10
    _, untouched = apply(v, x, train=False, mutable=("batch_stats",))
    jax.tree.map(np.testing.assert_array_equal, untouched["batch_stats"], v["batch_stats"])


@pytest.mark.device
@pytest.mark.slow
def test_mask_makes_a_padded_batch_equal_the_real_one():
    model = VGG(vgg_conf(4))
    apply = jitted_apply(model)
    v = init_variables(model, jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (10, 32, 32, 3))
    pad = jnp.concatenate([x[:7], jnp.zeros((3, 32, 32, 3)) + 5.0])
    mask = jnp.array([1.0] * 7 + [0.0] * 3)
    real, s_real = apply(v, x[:7], train=True, mutable=("batch_stats",))
    padded, s_pad = apply(v, pad, train=True, mask=mask, mutable=("batch_stats",))
    np.testing.assert_allclose(padded[:7], real, rtol=1e-4, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 s_pad, s_real)


@pytest.mark.parametrize("layer", ["conv1_1", "conv3_2", "fc6"])
@pytest.mark.slow
def test_batchnorm_makes_the_kernel_scale_invariant(layer):
    """Scaling a kernel that feeds BN (its bias too) leaves the logits unchanged.

    This is why L2 decay on such layers only changes the effective learning rate (the
    notebook's observation): the loss sees the kernel's direction, not its norm.
    """
    model = VGG(vgg_conf(8))
    apply = jitted_apply(model)
    v = init_variables(model, jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 32, 32, 3))
    scaled = jax.tree.map(lambda a: a, v)
    scaled["params"][layer]["conv"] = jax.tree.map(lambda a: a * 7.5,
                                                   v["params"][layer]["conv"])
    a = apply(v, x, train=True, mutable=("batch_stats",))[0]
    b = apply(scaled, x, train=True, mutable=("batch_stats",))[0]
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    # ... while the logit layer, with no BN after it, is not invariant.
    scaled["params"]["logit"]["conv"] = jax.tree.map(lambda a: a * 7.5,
                                                     v["params"]["logit"]["conv"])
    c = apply(scaled, x, train=True, mutable=("batch_stats",))[0]
    assert np.abs(np.asarray(c) - np.asarray(a)).max() > 1e-2


def numpy_conv(x, k):
    """Stride-1 'same' cross-correlation of NHWC `x` with HWIO `k`, in float64 NumPy."""
    x, k = np.asarray(x, np.float64), np.asarray(k, np.float64)
    kh, kw = k.shape[:2]
    n, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    out = np.zeros((n, h, w, k.shape[-1]))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("nhwc,co->nhwo", xp[:, i:i + h, j:j + w], k[i, j])
    return out


@pytest.mark.device
@pytest.mark.parametrize("impl", ["xla", "im2col", "hybrid"])
@pytest.mark.slow
def test_conv_impls_compute_the_same_model(impl):
    from wdjax.cpu import ops

    # Each formulation against an independent convolution (3x3 and 1x1, odd sizes) ...
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (2, 7, 5, 3)))
    for shape in ((3, 3, 3, 4), (1, 1, 3, 4)):
        k = np.asarray(jax.random.normal(jax.random.PRNGKey(3), shape))
        np.testing.assert_allclose(np.asarray(ops.conv2d(jnp.asarray(x), jnp.asarray(k), impl)),
                                   numpy_conv(x, k), rtol=0, atol=1e-4)
    if impl == "xla":
        return
    # ... and the whole model (values and gradients) against XLA's.
    conf = vgg_conf(8)
    v = init_variables(VGG(conf), jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32, 3))

    def loss(p, impl):
        out, _ = VGG(conf, conv_impl=impl).apply({"params": p, "batch_stats": v["batch_stats"]},
                                                 x, train=True, mutable=["batch_stats"])
        return jnp.sum(out**2)

    # Jitted: op by op, every small op of the model would compile on its own.
    value_and_grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    ref_l, ref_g = value_and_grad(v["params"], "xla")
    got_l, got_g = value_and_grad(v["params"], impl)
    assert float(got_l) == pytest.approx(float(ref_l), rel=1e-4)
    # Summation order differs between formulations: compare each tensor as a whole. Conv
    # biases feeding BN have a true gradient of 0, so their values are float noise (~1e-5).
    for a, b in zip(jax.tree.leaves(got_g), jax.tree.leaves(ref_g), strict=True):
        assert np.linalg.norm(a - b) <= 1e-4 * np.linalg.norm(b) + 1e-4
