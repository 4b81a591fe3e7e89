"""Layer-wise (or per-unit) normalised updates (docs/schemes.md#layer-specific-normalisation)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wdjax.decay.trees import NO_PARAMS, PyTree, unit_norm


class NormalizeUpdatesState(NamedTuple):
    count: jax.Array  # steps taken; the EMA starts from the first norm
    norm_ema: PyTree  # per leaf: EMA of ||d|| (scalar, or one per output unit)


def normalize_updates(ema_rate: Any = 0.0, times_weight_norm: bool = True,
                      per_unit: bool = False, eps: float = 1e-8) -> optax.GradientTransformation:
    """Layer-wise update normalisation: ``d = d * w / (e + eps)``, ``w = ||p||`` (1 without
    `times_weight_norm`).

    ``e`` is ``||d||`` at the first step, then ``e = r * e + (1 - r) * ||d||`` with
    ``r = ema_rate`` (``r = 0``: the current norm). Norms are per tensor, 1-D tensors
    included; an all-zero tensor with `times_weight_norm` never moves (the original's behaviour,
    unlike ``optax.scale_by_trust_ratio``, which substitutes a ratio of 1 there).
    ``per_unit=True`` keeps one norm per output channel (last axis) instead, the variant the
    original framework planned; for a 1-D tensor each element is its own unit. Goes after
    momentum; the momentum buffer itself is never rescaled.
    """

    def init_fn(params):
        norms = jax.tree.map(lambda p: jnp.zeros_like(unit_norm(p, per_unit)), params)
        return NormalizeUpdatesState(count=jnp.zeros([], jnp.int32), norm_ema=norms)

    def update_fn(updates, state, params=None):
        if times_weight_norm and params is None:
            raise ValueError(NO_PARAMS)
        first = state.count == 0
        norms = jax.tree.map(lambda d: unit_norm(d, per_unit), updates)
        ema = jax.tree.map(
            lambda e, n: jnp.where(first, n, ema_rate * e + (1 - ema_rate) * n),
            state.norm_ema, norms,
        )
        if times_weight_norm:
            scale = jax.tree.map(lambda p, e: unit_norm(p, per_unit) / (e + eps), params, ema)
        else:
            scale = jax.tree.map(lambda e: 1.0 / (e + eps), ema)
        updates = jax.tree.map(lambda d, s: d * s, updates, scale)
        return updates, NormalizeUpdatesState(optax.safe_increment(state.count), ema)

    return optax.GradientTransformation(init_fn, update_fn)
