"""Adam with one second moment per block: per output unit, per tensor, or per element."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wdjax.decay.trees import PyTree

GRANULARITIES = ("element", "unit", "layer")


class ScaleByAdamBlocksState(NamedTuple):
    count: jax.Array  # steps taken
    mu: PyTree        # first moment, one per element
    nu: PyTree        # second moment, one per block (kept broadcastable to its leaf)


def _block_axes(x: jax.Array, granularity: str) -> tuple[int, ...]:
    """Axes one block spans: none (element), all but the last (unit), or all (layer)."""
    if granularity == "element":
        return ()
    if granularity == "unit":
        return tuple(range(x.ndim - 1))
    return tuple(range(x.ndim))


def _block_mean_square(g: jax.Array, granularity: str) -> jax.Array:
    axes = _block_axes(g, granularity)
    # A one-element block's mean is g**2 itself; skipping the reduction keeps "element"
    # bit-for-bit equal to optax.scale_by_adam.
    return jnp.mean(jnp.square(g), axis=axes, keepdims=True) if axes else g**2


def scale_by_adam_blocks(granularity: str = "unit", b1: Any = 0.9, b2: Any = 0.999,
                         eps: Any = 1e-8) -> optax.GradientTransformation:
    """Adam whose second moment is shared by a block of elements.

    ``mu <- b1 mu + (1 - b1) g`` per element; ``nu <- b2 nu + (1 - b2) mean_block(g^2)`` per
    block; ``d = mu_hat / (sqrt(nu_hat) + eps)`` with both bias corrections
    (``mu_hat = mu / (1 - b1^t)``, ``nu_hat = nu / (1 - b2^t)``), as in
    ``optax.scale_by_adam`` (Kingma & Ba, 2015), whose update this is for ``"element"``.

    A block is, per `granularity`:
      * ``"unit"``: one output unit, i.e. one index of the last axis (Flax HWIO/IO kernels);
        a 1-D leaf (bias, BN scale) has one element per unit, so it gets plain Adam;
      * ``"layer"``: the whole tensor (1-D leaves included);
      * ``"element"``: every element on its own (plain Adam).
    A per-block step size keeps the direction of the momentum within the block, unlike
    element-wise Adam. `b1`, `b2`, `eps` may be traced. Compose decay around it as around
    ``optax.scale_by_adam``: ``add_decay`` before (coupled), after (decoupled).
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity {granularity!r} is not one of "
                         f"{', '.join(GRANULARITIES)}")

    def init_fn(params):
        mu = jax.tree.map(jnp.zeros_like, params)
        nu = jax.tree.map(lambda p: jnp.zeros_like(_block_mean_square(p, granularity)), params)
        return ScaleByAdamBlocksState(count=jnp.zeros([], jnp.int32), mu=mu, nu=nu)

    def update_fn(updates, state, params=None):
        del params
        mu = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, updates, state.mu)
        nu = jax.tree.map(lambda g, v: (1 - b2) * _block_mean_square(g, granularity) + b2 * v,
                          updates, state.nu)
        count = optax.safe_increment(state.count)
        mu_hat = optax.tree.bias_correction(mu, b1, count)
        nu_hat = optax.tree.bias_correction(nu, b2, count)
        updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu_hat, nu_hat)
        return updates, ScaleByAdamBlocksState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)
