"""Steps that map the parameters after the gradient step: proximal L1 and norm constraints.

Both go *last* in a chain, on final updates ``u`` (after the learning rate): they compute
the new parameters ``q = p + u`` mapped somewhere, and return ``u' = new - p``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wdjax.decay.trees import NO_PARAMS, PyTree, leaves_like, unit_norm
from wdjax.decay.values import StepCountState, check_values, init_count, tree_at, value_at


def proximal_l1(coefficients: Any, learning_rate: Any,
                mask: Any = True) -> optax.GradientTransformation:
    """Proximal L1 (soft threshold) after the gradient step.

    With ``q = p + u`` the parameters after the step and ``k = lr_t * wd_t``::

        p_new = sign(q) * max(|q| - k, 0),    u' = p_new - p

    the proximal operator of ``k * ||.||_1`` (ISTA: Daubechies, Defrise & De Mol 2004;
    forward-backward splitting, Duchi & Singer 2009). Elements with ``|q| <= k`` land on
    exactly 0 (``p + u' == 0`` in floating point), and an element at 0 stays there until the
    gradient step moves it by more than ``k``. It replaces coupled L1 (``wd * sign(p)`` in
    the gradient) and `clip_sign_crossing` with the textbook update.

    Args:
      coefficients: ``wd``: a scalar or a per-leaf tree of values >= 0; leaves may be
        schedules.
      learning_rate: ``lr``: a float or an Optax schedule of the step count (the rate the
        chain's ``scale_by_learning_rate`` uses).
      mask: a bool or a tree of bools choosing the leaves that get the threshold; static.
    """
    check_values("proximal_l1 coefficients", coefficients, allow_zero=True)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(NO_PARAMS)
        lr = value_at(learning_rate, state.count)
        coefs = leaves_like(updates, tree_at(coefficients, state.count))
        leaves, treedef = jax.tree.flatten(updates)
        out = []
        for u, p, c, chosen in zip(leaves, jax.tree.leaves(params), coefs,
                                   leaves_like(updates, mask), strict=True):
            if chosen:
                q = p + u
                shrunk = jnp.sign(q) * jnp.maximum(jnp.abs(q) - lr * c, 0)
                u = shrunk - p
            out.append(u)
        return treedef.unflatten(out), StepCountState(optax.safe_increment(state.count))

    return optax.GradientTransformation(init_count, update_fn)


class ConstrainNormsState(NamedTuple):
    radius: PyTree  # per leaf: the norm(s) it is held to; a scalar 0 where unconstrained


def _chosen(params: PyTree, mask: Any) -> list[bool]:
    """Which leaves are constrained: `mask` looked up per leaf, or ``ndim >= 2`` by default."""
    if mask is None:
        return [jnp.ndim(p) >= 2 for p in jax.tree.leaves(params)]
    return [bool(m) for m in leaves_like(params, mask)]


def constrain_norms(radius: Any = None, per_unit: Any = True,
                    mask: Any = None) -> optax.GradientTransformation:
    """Norm constraint: after the step, each unit or tensor is projected back to radius r.

    With ``q = p + u`` the parameters after the step::

        p_new = q * r / ||q||,    u' = p_new - p

    ``||.||`` is per unit (over all axes but the last: one norm per output channel of a Flax
    HWIO conv or IO dense kernel) or per tensor. This keeps weights on a fixed sphere, the
    constraint of Nero (Liu et al. 2021, "Learning by Turning", arXiv 2102.07227, which also
    centres each unit; not done here) and of Hyperball (Wen et al. 2026, arXiv 2606.16899,
    which also fixes the update's norm to ``lr * r``: put ``normalize_updates(0.0,
    per_unit=...)`` before the learning rate for that). On the sphere weight decay is a
    first-order no-op and the learning rate alone sets the angular step. A unit whose
    ``||q||`` is 0 is left where it is.

    Args:
      radius: ``r``: ``None`` keeps each unit at its norm at ``init`` (kept in the state);
        otherwise a value > 0 or a per-leaf tree of them (scalars, or one per unit).
      per_unit: a bool or a tree of bools (static): per-unit norms, or one per tensor.
      mask: a bool or a tree of bools (static) choosing the constrained leaves; default the
        leaves with ``ndim >= 2`` (kernels, not biases or norm scales).
    """
    check_values("constrain_norms radius", radius, allow_zero=False)

    def init_fn(params):
        radii = []
        for p, chosen, unit, r in zip(jax.tree.leaves(params), _chosen(params, mask),
                                      leaves_like(params, per_unit),
                                      leaves_like(params, radius), strict=True):
            if not chosen:  # a placeholder (checkpoints cannot hold zero-size arrays)
                radii.append(jnp.zeros((), jnp.result_type(p)))
                continue
            norms = unit_norm(jnp.asarray(p), unit)
            radii.append(norms if r is None else jnp.broadcast_to(r, norms.shape))
        return ConstrainNormsState(jax.tree.structure(params).unflatten(radii))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(NO_PARAMS)
        leaves, treedef = jax.tree.flatten(updates)
        out = []
        for u, p, chosen, unit, r in zip(leaves, jax.tree.leaves(params),
                                         _chosen(updates, mask), leaves_like(updates, per_unit),
                                         jax.tree.leaves(state.radius), strict=True):
            if chosen:
                q = p + u
                norms = unit_norm(q, unit)
                scale = jnp.where(norms > 0, r / jnp.where(norms > 0, norms, 1), 1)
                u = q * scale - p
            out.append(u)
        return treedef.unflatten(out), state

    return optax.GradientTransformation(init_fn, update_fn)
