"""A CIFAR ResNet-18 (He et al. 2016, the 3x3-stem CIFAR variant) in Flax linen.

3x3 stem conv -> BN -> ReLU; four stages of two basic blocks with widths w, 2w, 4w, 8w
(``w = width``, 64 in the paper), the first block of stages 2-4 strided; a 1x1 projection
conv + BN on the shortcut where shape changes; global average pooling; a Dense head. Convs
have no bias (BN follows); kernels ~ Normal(0, 2 / fan_in) as in the VGG. BatchNorm is
wdjax's (PyTorch semantics, aware of padded rows), so the trainer drives it like the VGG.
Modules are auto-named (``BasicBlock_3/Conv_1``): `wdjax.layers.table.trace_layers` finds them.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from wdjax.models.vgg import BatchNorm, kernel_init


def _conv(features: int, size: int, stride: int) -> nn.Conv:
    return nn.Conv(features, (size, size), strides=(stride, stride), padding="SAME",
                   use_bias=False, kernel_init=kernel_init)


class BasicBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the (projected) shortcut, -> ReLU."""

    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, mask: jax.Array | None) -> jax.Array:
        y = nn.relu(BatchNorm()(_conv(self.features, 3, self.stride)(x), train, mask))
        y = BatchNorm()(_conv(self.features, 3, 1)(y), train, mask)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = BatchNorm()(_conv(self.features, 1, self.stride)(x), train, mask)
        return nn.relu(x + y)


class ResNet18(nn.Module):
    """``ResNet18(num_classes=10, width=64).apply(vars, x, train=...)`` -> (N, classes)."""

    num_classes: int = 10
    width: int = 64

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, mask: jax.Array | None = None) -> jax.Array:
        x = nn.relu(BatchNorm()(_conv(self.width, 3, 1)(x), train, mask))
        for stage, mult in enumerate((1, 2, 4, 8)):
            for block in range(2):
                stride = 2 if stage > 0 and block == 0 else 1
                x = BasicBlock(self.width * mult, stride)(x, train, mask)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, kernel_init=kernel_init)(x)
