"""Angular updates against their rotational-equilibrium prediction, as an Optax monitor."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wdjax.decay.rotational import equilibrium_angle
from wdjax.decay.trees import NO_PARAMS, PyTree, leaves_like, unit_norm


class EquilibriumMonitorState(NamedTuple):
    """Per leaf: a scalar, or one value per output unit (``per_unit``, leaves of ndim >= 2)."""

    count: jax.Array           # updates seen
    angular_update: PyTree     # ||u|| / ||p|| of the last update (0 where ||p|| = 0)
    angular_update_ema: PyTree  # its bias-corrected EMA
    equilibrium_ratio: PyTree  # angular_update_ema / equilibrium angle (NaN: no prediction)
    equilibrium_norm: PyTree   # predicted ||p|| at equilibrium (NaN: no prediction)
    equilibrium_step: PyTree   # first update t (from 1) with |ratio - 1| <= tolerance; -1


def _norm(x: jax.Array, per_unit: bool) -> jax.Array:
    """||x|| of the leaf, or one per output unit (last axis) for leaves of ndim >= 2."""
    return unit_norm(x, per_unit and x.ndim >= 2)


def _measure(p, u, ema, step, predicted, t, *, ema_decay, per_unit, tolerance, exponent):
    """One leaf's ``(angle, ema, ratio, norm, step)`` at update `t` (counting from 1)."""
    p_norm = _norm(p, per_unit)
    angle = _norm(u, per_unit) / jnp.where(p_norm > 0, p_norm, 1.0)
    # Undo the previous bias correction to continue the plain EMA, then redo it.
    raw = ema * (1 - ema_decay ** (t - 1))
    ema = (ema_decay * raw + (1 - ema_decay) * angle) / (1 - ema_decay**t)
    valid = (predicted > 0) & (p.ndim >= 2)
    ratio = jnp.where(valid, ema / jnp.where(valid, predicted, 1.0), jnp.nan)
    arrived = (step < 0) & (jnp.abs(ratio - 1) <= tolerance)
    return angle, ema, ratio, p_norm * ratio**exponent, jnp.where(arrived, t, step)


def equilibrium_monitor(learning_rate: Any, weight_decay: Any, *, momentum: Any = 0.0,
                        b1: Any = None, ema_decay: Any = 0.99, per_unit: bool = False,
                        tolerance: float = 0.1) -> optax.GradientTransformation:
    """Measures how far each leaf is from rotational equilibrium; updates pass unchanged.

    Goes at the END of a chain, so it sees the final updates ``u = p_new - p`` and the
    parameters ``p`` before the step. Like ``optax.monitor``, it keeps its measurements in
    its state (`EquilibriumMonitorState`), read with ``optax.tree.get(state, name)``:

    * ``angular_update``: ``||u|| / ||p||`` (0 for a zero leaf or unit: no direction);
    * ``angular_update_ema``: its EMA with rate `ema_decay`, from 0 with bias correction
      (``optax.measure_with_ema``'s convention);
    * ``equilibrium_ratio``: the EMA over `equilibrium_angle` ``(lr_t, wd, momentum, b1)``
      (Kosson et al. 2024; ``b1=None`` means SGD with `momentum`, coupled decay; a ``b1``
      means AdamW);
    * ``equilibrium_norm``: the norm the leaf settles at, if its gradient statistics stay as
      they are. For a scale-invariant weight the gradient is orthogonal to ``p`` and
      ``||g|| = c / ||p||``. With SGD the angular update is ``lr ||g|| / ||p|| = lr c /
      ||p||^2``, so the norm at which it equals the prediction is ``||p|| sqrt(ratio)``.
      Adam's step size does not depend on ``||g||`` (``||u|| ~ lr C``), the angle is
      ``lr C / ||p||``, and the norm is ``||p|| * ratio``;
    * ``equilibrium_step``: the first update ``t`` (counting from 1) at which
      ``|ratio - 1| <= tolerance``, -1 until then.

    Leaves of ndim < 2 and leaves whose decay (or learning rate) is 0 have no prediction:
    their ratio and norm are NaN and their step stays -1. `learning_rate` is a float or an
    Optax schedule of the step count; `weight_decay` a scalar or a per-leaf tree. With
    `per_unit`, leaves of ndim >= 2 get one value per output unit (the last axis); other
    leaves stay one value. All hyperparameters but `per_unit` may be traced.
    """
    measure = functools.partial(_measure, ema_decay=ema_decay, per_unit=per_unit,
                                tolerance=tolerance, exponent=0.5 if b1 is None else 1.0)

    def init_fn(params):
        zeros = jax.tree.map(lambda p: jnp.zeros_like(_norm(p, per_unit)), params)
        nans = jax.tree.map(lambda z: jnp.full_like(z, jnp.nan), zeros)
        steps = jax.tree.map(lambda z: jnp.full(z.shape, -1, jnp.int32), zeros)
        return EquilibriumMonitorState(jnp.zeros([], jnp.int32), zeros, zeros, nans, nans,
                                       steps)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(NO_PARAMS)
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        count = optax.safe_increment(state.count)
        leaves, treedef = jax.tree.flatten(params)
        measures = [
            measure(p, u, ema, step, equilibrium_angle(lr, wd, momentum, b1), count)
            for p, u, wd, ema, step in zip(
                leaves, jax.tree.leaves(updates), leaves_like(params, weight_decay),
                jax.tree.leaves(state.angular_update_ema),
                jax.tree.leaves(state.equilibrium_step), strict=True)]
        fields = (treedef.unflatten([m[i] for m in measures]) for i in range(5))
        return updates, EquilibriumMonitorState(count, *fields)

    return optax.GradientTransformation(init_fn, update_fn)
