"""Decay variants that change *how much* or *toward what* a weight decays.

* `independent_decay`: decay that follows the schedule's shape, not the learning rate.
* `corrected_decay`: AdamC's ``lr_t^2 / lr_max`` scaling.
* `cautious_decay`: decay only where the optimiser's step already shrinks the weight.
* `add_decay_toward_init`: L2-SP, decay toward the initial weights instead of toward 0.

Every coefficient may be a scalar or a per-leaf tree (looked up by path, see
`wdjax.decay.trees.leaves_like`), traced, or an Optax schedule read at the transform's own
step count (kept in its state).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wdjax.decay.terms import decoupled_decay
from wdjax.decay.trees import NO_PARAMS, PyTree, leaves_like
from wdjax.decay.values import (
    StepCountState,
    check_values,
    init_count,
    tree_at,
    value_at,
)


def independent_decay(coefficients: Any, learning_rate: Any, peak_learning_rate: Any = None,
                      kinds: Any = "l2", multipliers: Any = None,
                      ) -> optax.GradientTransformation:
    """Independent decay: ``u = u - (lr_t / lr_0) * wd_t * (p | sign(p)) * M``.

    The decay per step follows the *shape* of the learning-rate schedule but not its size:
    ``wd`` is the fraction of ``p`` removed per step at the reference rate ``lr_0``, however
    large ``lr`` is. This is the original AdamW paper's form (Loshchilov & Hutter, ICLR 2019,
    arXiv 1711.05101, Algorithm 2: the schedule multiplier ``eta_t`` scales ``lambda * x``, the
    base rate ``alpha`` does not) and big_vision's ``decay = wd * sched(step)``. With a
    constant rate it is ``u = u - wd * p``, i.e. ``torch.optim.AdamW`` with
    ``weight_decay = wd / lr``.

    `decoupled_decay` with the factor ``lr_t / lr_0``: it goes after the learning rate
    (``optax.chain(optax.scale_by_adam(), optax.scale_by_learning_rate(lr),
    independent_decay(wd, lr))``); ``p`` is the parameters before the step.

    Args:
      coefficients: ``wd``: a scalar or a per-leaf tree; leaves may be schedules.
      learning_rate: ``lr``: a float or an Optax schedule of the step count.
      peak_learning_rate: ``lr_0``; default ``learning_rate`` at step 0, which a warmup
        schedule starting at 0 cannot use (pass its peak). Inside
        ``optax.inject_hyperparams`` the learning rate arrives as its current value, so pass
        ``lr_0`` explicitly there (the same holds for `corrected_decay`'s ``lr_max``).
      kinds, multipliers: as in `add_decay`.
    """
    reference = value_at(learning_rate, 0) if peak_learning_rate is None else peak_learning_rate
    check_values("independent_decay's reference learning rate (learning_rate at step 0, "
                 "or peak_learning_rate)", reference, allow_zero=False)

    return decoupled_decay(coefficients, lambda count: value_at(learning_rate, count) / reference,
                           kinds, multipliers)


def corrected_decay(coefficients: Any, learning_rate: Any, max_learning_rate: Any = None,
                    kinds: Any = "l2", multipliers: Any = None,
                    normalized: Any = True) -> optax.GradientTransformation:
    """Corrected decoupled decay (AdamC): ``u = u - lr_t * (lr_t / lr_max) * wd_t * p``.

    Defazio 2025, "Why Gradients Rapidly Increase Near the End of Training", arXiv
    2506.02285: for a layer followed by a normalisation the steady-state ratio
    ``||g|| / ||p||`` is set by ``wd / lr_t``, so as the schedule decays, plain decoupled decay
    (``lr_t * wd``) lets the gradient norm grow. Scaling the decay by ``lr_t^2 / lr_max``
    keeps that ratio fixed (timm's ``corrected_weight_decay``). The paper corrects only the
    normalised layers and keeps AdamW's ``lr_t * wd * p`` elsewhere: `normalized` chooses
    the leaves. At the peak rate both equal `decoupled_decay`.

    `decoupled_decay` with the factor ``lr_t^2 / lr_max`` (``lr_t`` on the other leaves):
    it goes after the optimiser's learning rate; ``p`` is the parameters before the step.

    Args:
      coefficients: ``wd``: a scalar or a per-leaf tree; leaves may be schedules.
      learning_rate: ``lr``: a float or an Optax schedule of the step count.
      max_learning_rate: ``lr_max``, the schedule's peak; required when `learning_rate`
        is a schedule (default: the constant `learning_rate`).
      kinds, multipliers: as in `add_decay`.
      normalized: a bool or a tree of bools (static): leaves with the corrected scaling;
        the others get ``lr_t * wd``.
    """
    if max_learning_rate is None:
        if callable(learning_rate):
            raise ValueError("corrected_decay needs max_learning_rate (the schedule's peak) "
                             "when learning_rate is a schedule")
        max_learning_rate = learning_rate
    check_values("corrected_decay's max_learning_rate", max_learning_rate, allow_zero=False)

    def corrected(count):
        lr = value_at(learning_rate, count)
        return lr * (lr / max_learning_rate)

    rates = jax.tree.map(lambda chosen: corrected if chosen else learning_rate, normalized)
    return decoupled_decay(coefficients, rates, kinds, multipliers)


def cautious_decay(coefficients: Any) -> optax.GradientTransformation:
    """Cautious weight decay (CWD): ``d = d + wd_t * 1[d * p >= 0] * p``, element-wise.

    Chen et al. 2025, "Cautious Weight Decay", arXiv 2510.12402, Algorithm 1:
    ``x_{t+1} = x_t - eta_t * (u_t + lambda * I(u_t * x_t >= 0) * x_t)``, entrywise, where
    ``u_t`` is the optimiser's update direction. Decay acts only on coordinates where the
    step ``-eta_t * u_t`` already moves ``x`` toward zero (``u`` and ``x`` of one sign); the
    boundary counts as aligned, as in the paper's ``>= 0``: where ``u = 0`` the decay
    applies, and where ``x = 0`` it is ``lambda * 0 = 0``.

    Works on the direction ``d`` (= ``u_t``) *before* the learning rate, in the place of
    AdamW's decay: ``optax.chain(optax.scale_by_adam(), cautious_decay(wd),
    optax.scale_by_learning_rate(lr))``, or after ``optax.trace`` for SGD with momentum.
    After the learning rate the sign test would be reversed.

    Args:
      coefficients: ``lambda``: a scalar or a per-leaf tree; leaves may be schedules.
    """

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(NO_PARAMS)
        coefs = leaves_like(updates, tree_at(coefficients, state.count))
        leaves, treedef = jax.tree.flatten(updates)
        out = [d + c * jnp.where(d * p >= 0, p, jnp.zeros_like(p))
               for d, p, c in zip(leaves, jax.tree.leaves(params), coefs, strict=True)]
        return treedef.unflatten(out), StepCountState(optax.safe_increment(state.count))

    return optax.GradientTransformation(init_count, update_fn)


class DecayTowardInitState(NamedTuple):
    count: jax.Array  # steps taken, for schedule coefficients
    initial_params: PyTree  # p0: the params given to init


def add_decay_toward_init(coefficients: Any) -> optax.GradientTransformation:
    """Coupled decay toward the initial weights (L2-SP): ``d = g + wd_t * (p - p0)``.

    The gradient of ``wd/2 * ||p - p0||^2``: Li, Grandvalet & Davoine, "Explicit Inductive
    Bias for Transfer Learning with Convolutional Networks", ICML 2018 (arXiv 1802.01483).
    ``p0`` is the params given to ``init``, kept in the state. Placed like `add_decay` (first
    for L2 in the loss, or after ``scale_by_adam`` for the decoupled form).

    Args:
      coefficients: ``wd``: a scalar or a per-leaf tree; leaves may be schedules.
    """

    def init_fn(params):
        return DecayTowardInitState(count=jnp.zeros([], jnp.int32),
                                    initial_params=jax.tree.map(jnp.asarray, params))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(NO_PARAMS)
        coefs = leaves_like(updates, tree_at(coefficients, state.count))
        leaves, treedef = jax.tree.flatten(updates)
        out = [g + c * (p - p0) for g, p, p0, c in zip(
            leaves, jax.tree.leaves(params), jax.tree.leaves(state.initial_params), coefs,
            strict=True)]
        count = optax.safe_increment(state.count)
        return treedef.unflatten(out), DecayTowardInitState(count, state.initial_params)

    return optax.GradientTransformation(init_fn, update_fn)
