"""The VGG-like network of the original experiments, built from its declarative layer list of
``(name, info)`` pairs; the name's prefix gives the layer kind (docs/protocol.md#model). The
params tree has one key per conv/fc/logit layer, ``{'conv': {'kernel', 'bias'}, 'bn': {'scale',
'bias'}}`` (``logit`` has no ``bn``), so label trees are written by layer name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wdjax.cpu import batchnorm, ops

Conf = Sequence[tuple[str, tuple[Any, Any]]]

LAYER_KINDS = ("input", "conv", "fc", "pool", "drop", "logit", "flatter")


def layer_kind(name: str) -> str:
    """The kind of a conf entry, from its name's prefix."""
    for kind in LAYER_KINDS:
        if name.startswith(kind):
            return kind
    raise ValueError(f"layer name {name!r} has no known kind; allowed prefixes: "
                     f"{', '.join(LAYER_KINDS)}")


def weight_layers(conf: Conf) -> list[str]:
    """Names of the layers that own a kernel (conv, fc, logit), in order."""
    return [name for name, _ in conf if layer_kind(name) in ("conv", "fc", "logit")]


def vgg_conf(width: int = 32, num_classes: int = 10, in_channels: int = 3) -> list:
    """The notebook's default VGG13-like layer list, with width `width`."""
    if width < 1 or num_classes < 1:
        raise ValueError(f"width and num_classes must be >= 1, got {width}, {num_classes}")
    conf: list = [("input", (in_channels, None))]
    for block, mult in enumerate((1, 2, 4, 8, 8), start=1):
        conf += [(f"conv{block}_{i}", (mult * width, None)) for i in (1, 2)]
        conf.append((f"pool{block}", (2, 2)))
    conf += [("fc6", (8 * width, None)), ("logit", (num_classes, None)), ("flatter", (None, None))]
    return conf


# Normal(0, 2 / fan_in) with fan_in = kh * kw * C_in: He initialisation, not truncated.
kernel_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def pointwise(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A 1x1 conv of NHWC `x` as a matmul, on every platform: vmapped over runs, XLA's 1x1 conv
    is a grouped conv that its SPMD partitioner (jax 0.10) miscompiles when the run axis is
    sharded (tests/test_parallel.py)."""
    n, h, w, cin = x.shape
    cout = kernel.shape[-1]  # explicit sizes: a map pooled down to 0 pixels stays valid
    return (x.reshape(n * h * w, cin) @ kernel.reshape(cin, cout)).reshape(n, h, w, cout)


class Conv(nn.Module):
    """Stride-1 'same' conv with bias by `wdjax.cpu.ops.conv2d`'s `impl` (1x1: `pointwise`),
    computed in `dtype` from float32 parameters, as flax's ``nn.Conv``."""

    features: int
    kernel_size: int
    impl: str
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", kernel_init, (k, k, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        if k == 1:
            return pointwise(x, kernel) + bias
        return ops.conv2d(x, kernel, self.impl) + bias


def _batch_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, mask: jax.Array | None,
                epsilon: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`batchnorm.batch_norm_train` as flax computes it (plain reductions, autodiff's
    gradient), for an accelerator's compiler to fuse."""
    axes, shape = tuple(range(x.ndim - 1)), (-1,) + (1,) * (x.ndim - 1)
    w = (jnp.ones(x.shape[0]) if mask is None else mask).astype(x.dtype).reshape(shape)
    n = batchnorm.count(x, mask)
    mean = (w * x).sum(axes) / n
    var = (w * jnp.square(x - mean)).sum(axes) / n
    return (x - mean) * (scale * jax.lax.rsqrt(var + epsilon)) + bias, mean, var


class BatchNorm(nn.Module):
    """``torch.nn.BatchNorm2d``: normalise by the biased batch variance, ``running = 0.9 *
    running + 0.1 * batch`` with the unbiased one; `mask` (N,) of 0/1 drops padded examples.
    Trains by `wdjax.cpu.batchnorm` on CPU (`ops.on_cpu`); float32 statistics, output `dtype`."""

    momentum: float = 0.9
    epsilon: float = 1e-5
    platform: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, mask: jax.Array | None = None) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
        x = x.astype(jnp.float32)
        if not train:
            a = scale * jax.lax.rsqrt(ra_var.value + self.epsilon)
            return ((x - ra_mean.value) * a + bias).astype(self.dtype)
        norm = batchnorm.batch_norm_train if ops.on_cpu(self.platform) else _batch_norm
        y, mean, var = norm(x, scale, bias, mask, self.epsilon)
        if not self.is_initializing():
            count, m = batchnorm.count(x, mask), self.momentum
            unbiased = var * count / jnp.maximum(count - 1, 1)
            ra_mean.value = m * ra_mean.value + (1 - m) * mean
            ra_var.value = m * ra_var.value + (1 - m) * unbiased
        return y.astype(self.dtype)


class ConvLayer(nn.Module):
    """One conv/fc/logit entry: conv -> [BN -> ReLU] -> [dropout]. The conv is flax's
    ``nn.Conv`` for impl 'xla' (same parameters), else `Conv`; 1x1 kernels always `Conv`."""

    features: int
    kernel_size: int
    batch_norm: bool
    dropout: float | None
    impl: str
    platform: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, mask: jax.Array | None) -> jax.Array:
        k = self.kernel_size
        if self.impl == "xla" and k > 1:
            x = nn.Conv(self.features, (k, k), padding="SAME", kernel_init=kernel_init,
                        dtype=self.dtype, name="conv")(x)
        else:
            x = Conv(self.features, k, self.impl, self.dtype, name="conv")(x)
        if self.batch_norm:
            bn = BatchNorm(platform=self.platform, dtype=self.dtype, name="bn")
            x = nn.relu(bn(x, train, mask))
        if self.dropout:
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return x


class VGG(nn.Module):
    """``VGG(vgg_conf(32)).apply(vars, x, train=...)`` -> (N, classes), for `platform`
    (`ops.on_cpu`), convs by `conv_impl` (None: `wdjax.cpu.ops.default_conv_impl`), all
    computing the same function, in compute `dtype` (bfloat16: mixed precision); parameters
    stay float32."""

    conf: Conf
    conv_impl: str | None = None
    platform: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, mask: jax.Array | None = None) -> jax.Array:
        cpu = ops.on_cpu(self.platform)
        impl = self.conv_impl or ops.default_conv_impl(self.platform)
        for name, (a, b) in self.conf:
            kind = layer_kind(name)
            if kind == "input":
                if a is not None and x.shape[-1] != a:
                    raise ValueError(f"input has {x.shape[-1]} channels, conf expects {a}")
            elif kind in ("conv", "fc", "logit"):
                x = ConvLayer(features=a, kernel_size=3 if kind == "conv" else 1,
                              batch_norm=kind != "logit", dropout=b, impl=impl,
                              platform=self.platform, dtype=self.dtype, name=name)(x, train, mask)
            elif kind == "pool":
                x = ops.max_pool(x, a, b) if cpu else nn.max_pool(x, (a, a), (b, b))
            elif kind == "drop":
                x = nn.Dropout(b, deterministic=not train)(x)
            elif kind == "flatter":
                x = x.reshape(x.shape[0], -1)
        return x


def init_variables(model: VGG, key: jax.Array, image_shape=(32, 32, 3)) -> dict:
    """``{'params', 'batch_stats'}`` for `model`, initialised from `key`."""
    # Jitted: op-by-op initialisation dispatches (and compiles) every op separately.
    return jax.jit(model.init, static_argnames="train")(
        key, jnp.zeros((1, *image_shape), jnp.float32), train=False)
