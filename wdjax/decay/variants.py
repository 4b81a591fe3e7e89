"""Decay variants: how much (independent, AdamC, cautious), toward what (L2-SP), and maps of the
parameters after the step (proximal L1, norm constraints); and the decay timescale. Coefficients:
scalars or per-leaf trees, traced, or schedules read at the transform's own step count."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wdjax.decay.terms import decoupled_decay
from wdjax.decay.trees import (
    PyTree,
    check_steps,
    check_values,
    leafwise,
    like,
    require_params,
    tree_at,
    unit_norm,
    value_at,
)


def independent_decay(coefficients: Any, learning_rate: Any, peak_learning_rate: Any = None,
                      kinds: Any = "l2", multipliers: Any = None,
                      ) -> optax.GradientTransformation:
    """Independent decay: ``u = u - (lr_t / lr_0) * wd_t * (p | sign(p)) * M``, after the lr.

    The decay follows the schedule's *shape*, not its size: the original AdamW (Loshchilov &
    Hutter, arXiv 1711.05101, Algorithm 2), big_vision's ``wd * sched(step)``. ``lr_0``
    (`peak_learning_rate`) defaults to `learning_rate` at step 0: pass it for a warmup from 0
    and inside ``optax.inject_hyperparams``.
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

    Defazio 2025 (arXiv 2506.02285; timm's ``corrected_weight_decay``): keeps the steady-state
    ``||g|| / ||p||`` behind a normalisation fixed as the schedule decays. ``lr_max``
    (`max_learning_rate`): the peak, required for a schedule. `normalized` (static bools)
    chooses the corrected leaves; the others get ``lr_t * wd``, as in the paper.
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

    Chen et al. 2025 (arXiv 2510.12402), Algorithm 1: decay only where the step already moves
    ``p`` toward zero. On the direction ``d`` *before* the learning rate:
    ``optax.chain(optax.scale_by_adam(), cautious_decay(wd), optax.scale_by_learning_rate(lr))``.
    """

    def cautious(d, p, c):
        return d + c * jnp.where(d * p >= 0, p, jnp.zeros_like(p))

    return leafwise(cautious, coefficients)


class DecayTowardInitState(NamedTuple):
    count: jax.Array  # steps taken, for schedule coefficients
    initial_params: PyTree  # p0: the params given to init


def add_decay_toward_init(coefficients: Any) -> optax.GradientTransformation:
    """Coupled decay toward the initial weights (L2-SP): ``d = g + wd_t * (p - p0)``, the
    gradient of ``wd/2 * ||p - p0||^2`` (Li, Grandvalet & Davoine, ICML 2018, arXiv 1802.01483)
    with ``p0`` the params given to ``init``. Placed like `add_decay`."""

    def init_fn(params):
        return DecayTowardInitState(count=jnp.zeros([], jnp.int32),
                                    initial_params=jax.tree.map(jnp.asarray, params))

    def update_fn(updates, state, params=None):
        require_params(params)
        coefs = like(updates, tree_at(coefficients, state.count))
        out = jax.tree.map(lambda g, p, p0, c: g + c * (p - p0), updates, params,
                           state.initial_params, coefs)
        count = optax.safe_increment(state.count)
        return out, DecayTowardInitState(count, state.initial_params)

    return optax.GradientTransformation(init_fn, update_fn)


def proximal_l1(coefficients: Any, learning_rate: Any,
                mask: Any = True) -> optax.GradientTransformation:
    """Proximal L1 (soft threshold) after the gradient step, last in a chain.

    With ``q = p + u`` the parameters after the step and ``k = lr_t * wd_t``::

        p_new = sign(q) * max(|q| - k, 0),    u' = p_new - p

    the proximal operator of ``k * ||.||_1`` (ISTA): elements with ``|q| <= k`` land on 0.
    ``wd >= 0`` may be per-leaf; `mask` (static bools) chooses the leaves.
    """
    check_values("proximal_l1 coefficients", coefficients, allow_zero=True)

    def shrink(u, p, c, lr, chosen):
        if not chosen:
            return u
        q = p + u
        return jnp.sign(q) * jnp.maximum(jnp.abs(q) - lr * c, 0) - p

    return leafwise(shrink, coefficients, learning_rate, mask)


class ConstrainNormsState(NamedTuple):
    radius: PyTree  # per leaf: the norm(s) it is held to; a scalar 0 where unconstrained


def _chosen(params: PyTree, mask: Any) -> PyTree:
    """Which leaves are constrained: `mask` looked up per leaf, or ``ndim >= 2`` by default."""
    if mask is None:
        return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)
    return jax.tree.map(bool, like(params, mask))


def constrain_norms(radius: Any = None, per_unit: Any = True,
                    mask: Any = None) -> optax.GradientTransformation:
    """Norm constraint, last in a chain: each unit or tensor is projected back to radius r.

    With ``q = p + u`` the parameters after the step::

        p_new = q * r / ||q||,    u' = p_new - p

    ``||.||`` per unit (all axes but the last) or per tensor; a unit with ``||q|| = 0`` stays.
    The sphere of Nero (arXiv 2102.07227) and Hyperball (arXiv 2606.16899, with
    ``normalize_updates(0.0, per_unit=...)`` before the learning rate). `radius` ``r``:
    ``None`` keeps each unit's norm at ``init``, or values > 0 (per leaf; scalar or per unit).
    `per_unit`, `mask`: static bools per leaf (default mask: ``ndim >= 2``, the kernels).
    """
    check_values("constrain_norms radius", radius, allow_zero=False)

    def init_fn(params):
        def init_radius(p, chosen, unit, r):
            if not chosen:  # a placeholder (checkpoints cannot hold zero-size arrays)
                return jnp.zeros((), jnp.result_type(p))
            norms = unit_norm(jnp.asarray(p), unit)
            return norms if r is None else jnp.broadcast_to(r, norms.shape)

        return ConstrainNormsState(jax.tree.map(init_radius, params, _chosen(params, mask),
                                                like(params, per_unit), like(params, radius)))

    def update_fn(updates, state, params=None):
        require_params(params)

        def project(u, p, chosen, unit, r):
            if not chosen:
                return u
            q = p + u
            norms = unit_norm(q, unit)
            return q * jnp.where(norms > 0, r / jnp.where(norms > 0, norms, 1), 1) - p

        return jax.tree.map(project, updates, params, _chosen(updates, mask),
                            like(updates, per_unit), state.radius), state

    return optax.GradientTransformation(init_fn, update_fn)


def weight_decay_from_tau(tau_epochs: Any, learning_rate: Any, steps_per_epoch: Any) -> Any:
    """``wd = 1 / (tau_epochs * lr * steps_per_epoch)``: the decay timescale in epochs (Wang &
    Aitchison, ICML 2025, arXiv 2405.13698) of ``p <- (1 - lr wd) p - lr step``, which averages
    the updates over ``1 / (lr wd)`` steps; ``lr``: the schedule's peak; concrete inputs > 0."""
    check_values("tau_epochs", tau_epochs, allow_zero=False)
    check_values("learning_rate", learning_rate, allow_zero=False)
    check_steps(steps_per_epoch)
    return 1.0 / (tau_epochs * learning_rate * steps_per_epoch)


def tau_from_weight_decay(weight_decay: Any, learning_rate: Any, steps_per_epoch: Any) -> Any:
    """``tau_epochs = 1 / (lr * wd * steps_per_epoch)`` (`weight_decay_from_tau`)."""
    check_values("weight_decay", weight_decay, allow_zero=False)
    check_values("learning_rate", learning_rate, allow_zero=False)
    check_steps(steps_per_epoch)
    return 1.0 / (learning_rate * weight_decay * steps_per_epoch)
