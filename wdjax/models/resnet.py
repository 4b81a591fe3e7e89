"""A CIFAR ResNet-18 (He et al. 2016, 3x3 stem): four stages of two basic blocks of widths w, 2w,
4w, 8w (``w = width``), 1x1 projection shortcuts, bias-free convs, He-normal kernels, wdjax's
`BatchNorm`, `platform` / `dtype` as for the VGG. Modules are auto-named (``BasicBlock_3/Conv_1``):
`wdjax.layers.labels.trace_layers` finds them."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wdjax.models.vgg import BatchNorm, kernel_init


def _conv(features: int, size: int, stride: int, dtype: Any) -> nn.Conv:
    return nn.Conv(features, (size, size), strides=(stride, stride), padding="SAME",
                   use_bias=False, kernel_init=kernel_init, dtype=dtype)


class BasicBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the (projected) shortcut, -> ReLU."""

    features: int
    stride: int = 1
    platform: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, mask: jax.Array | None) -> jax.Array:
        def conv_bn(x, size, stride):
            y = _conv(self.features, size, stride, self.dtype)(x)
            return BatchNorm(platform=self.platform, dtype=self.dtype)(y, train, mask)

        y = conv_bn(nn.relu(conv_bn(x, 3, self.stride)), 3, 1)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = conv_bn(x, 1, self.stride)
        return nn.relu(x + y)


class ResNet18(nn.Module):
    """``ResNet18(num_classes=10, width=64).apply(vars, x, train=...)`` -> (N, classes)."""

    num_classes: int = 10
    width: int = 64
    platform: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, mask: jax.Array | None = None) -> jax.Array:
        bn = BatchNorm(platform=self.platform, dtype=self.dtype)
        x = nn.relu(bn(_conv(self.width, 3, 1, self.dtype)(x), train, mask))
        for mult in (1, 2, 4, 8):
            for block in range(2):  # the first block of stages 2-4 strided
                x = BasicBlock(self.width * mult, 2 if mult > 1 and block == 0 else 1,
                               self.platform, self.dtype)(x, train, mask)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, kernel_init=kernel_init, dtype=self.dtype)(x)
