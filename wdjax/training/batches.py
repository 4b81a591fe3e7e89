"""Batches and augmentation: fixed-shape index matrices on the host, preprocessing on device.

:func:`epoch_batches` and :func:`eval_batches` give ``(steps, B)`` index matrices plus a 0/1
mask, so a jitted step sees one static batch shape even for the final partial batch; the
images stay on the device and are gathered there. :func:`normalize`, :func:`random_flip` and
:func:`augment` run inside the jitted step (docs/protocol.md#data).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

MEAN: tuple[float, float, float] = (0.469, 0.481, 0.451)
STD: tuple[float, float, float] = (0.239, 0.245, 0.272)


def _padded_rows(order: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(order)
    steps = math.ceil(n / batch_size)
    idx = np.zeros(steps * batch_size, dtype=np.int32)
    mask = np.zeros(steps * batch_size, dtype=np.float32)
    idx[:n] = order
    mask[:n] = 1.0
    return idx.reshape(steps, batch_size), mask.reshape(steps, batch_size)


def _check_counts(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def epoch_batches(seed: int, epoch: int, n: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled batches for one epoch: ``(indices int32, mask float32)``, both (steps, B).

    The order is a fresh permutation of ``range(n)`` drawn from ``(seed, epoch)`` alone, so it
    is reproducible across processes and a resumed run sees the same order for epoch k
    without replaying earlier epochs. ``steps = ceil(n / B)``; the last row is padded with
    index 0 and mask 0.
    """
    _check_counts(n=n, batch_size=batch_size)
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be >= 0, got seed={seed}, epoch={epoch}")
    rng = np.random.default_rng([int(seed), int(epoch)])
    return _padded_rows(rng.permutation(n), batch_size)


def eval_batches(n: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Batches over ``range(n)`` in order, padded and masked like :func:`epoch_batches`."""
    _check_counts(n=n, batch_size=batch_size)
    return _padded_rows(np.arange(n), batch_size)


def pad_columns(idx: np.ndarray, mask: np.ndarray,
                multiple: int) -> tuple[np.ndarray, np.ndarray]:
    """`idx` and `mask` widened with masked columns (index 0, mask 0) to a multiple of `multiple`.

    A batch split over a mesh's ``data`` axis of `multiple` devices must divide by it; the
    added rows weigh nothing (the loss, the counts and BatchNorm's statistics are masked).
    A batch that already divides is returned as it is (so its flips are unchanged).
    """
    _check_counts(multiple=multiple)
    extra = -idx.shape[1] % multiple
    return np.pad(idx, ((0, 0), (0, extra))), np.pad(mask, ((0, 0), (0, extra)))


# --------------------------------------------------------------------------------------------
# On-device preprocessing (jittable)
# --------------------------------------------------------------------------------------------


def normalize(images: jax.Array) -> jax.Array:
    """uint8 ``(..., 3)`` images -> float32 ``(x / 255 - MEAN) / STD`` per channel."""
    x = jnp.asarray(images).astype(jnp.float32) / 255.0
    return (x - jnp.asarray(MEAN, jnp.float32)) / jnp.asarray(STD, jnp.float32)


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
    """Flip each NHWC image horizontally (along W) independently with probability 1/2."""
    images = jnp.asarray(images)
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


def augment(key: jax.Array, images: jax.Array) -> jax.Array:
    """Training augmentation: random horizontal flip, then :func:`normalize` (float32 out)."""
    # Flipping the uint8 batch first moves 4x fewer bytes than flipping floats.
    return normalize(random_flip(key, images))
