"""Batches and augmentation (docs/protocol.md#data): ``(steps, B)`` index matrices and 0/1
masks on the host, so a jitted step sees one static batch shape even for the last partial
batch; the images stay on the device, where they are gathered and preprocessed."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

MEAN: tuple[float, float, float] = (0.469, 0.481, 0.451)
STD: tuple[float, float, float] = (0.239, 0.245, 0.272)


def _padded_rows(order: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    pad = (0, -len(order) % batch_size)
    idx = np.pad(order.astype(np.int32), pad).reshape(-1, batch_size)
    return idx, np.pad(np.ones(len(order), np.float32), pad).reshape(-1, batch_size)


def _check_counts(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def epoch_batches(seed: int, epoch: int, n: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled ``(indices int32, mask float32)``, both (steps, B), last row padded with index 0
    and mask 0; the permutation depends on ``(seed, epoch)`` alone (a resumed run's is the same)."""
    _check_counts(n=n, batch_size=batch_size)
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be >= 0, got seed={seed}, epoch={epoch}")
    rng = np.random.default_rng([int(seed), int(epoch)])
    return _padded_rows(rng.permutation(n), batch_size)


def eval_batches(n: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Batches over ``range(n)`` in order, padded and masked like `epoch_batches`."""
    _check_counts(n=n, batch_size=batch_size)
    return _padded_rows(np.arange(n), batch_size)


def pad_columns(idx: np.ndarray, mask: np.ndarray, multiple: int) -> tuple[np.ndarray, np.ndarray]:
    """`idx` and `mask` widened with masked columns to a multiple of `multiple` (a batch split
    over that many devices); one that already divides is unchanged (so are its flips)."""
    _check_counts(multiple=multiple)
    extra = -idx.shape[1] % multiple
    return np.pad(idx, ((0, 0), (0, extra))), np.pad(mask, ((0, 0), (0, extra)))


def normalize(images: jax.Array) -> jax.Array:
    """uint8 ``(..., 3)`` images -> float32 ``(x / 255 - MEAN) / STD`` per channel."""
    x = jnp.asarray(images).astype(jnp.float32) / 255.0
    return (x - jnp.asarray(MEAN, jnp.float32)) / jnp.asarray(STD, jnp.float32)


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
    """Flip each NHWC image horizontally (along W) independently with probability 1/2."""
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


def augment(key: jax.Array, images: jax.Array) -> jax.Array:
    """Training augmentation: random horizontal flip, then `normalize` (float32 out)."""
    # Flipping the uint8 batch first moves 4x fewer bytes than flipping floats.
    return normalize(random_flip(key, images))
