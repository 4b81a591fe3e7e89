"""Coupled and decoupled L2/L1 decay terms and the L1 sign-crossing clip
(docs/schemes.md#one-update-step)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from wdjax.decay.trees import KINDS, NO_PARAMS, PyTree, leaves_like
from wdjax.decay.values import StepCountState, has_schedule, init_count, tree_at


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"decay kind {kind!r} is not one of {', '.join(KINDS)}")
    return kind


def decay_term(param: jax.Array, coefficient: Any, kind: str = "l2",
               multiplier: Any = None) -> jax.Array:
    """``coefficient * p`` (L2) or ``coefficient * sign(p)`` (L1), times `multiplier` if given.

    This is the gradient of ``coef/2 * ||p||^2`` or ``coef * ||p||_1`` (the subgradient 0 at
    p = 0), i.e. what coupled decay adds to the loss gradient.
    """
    base = param if _check_kind(kind) == "l2" else jnp.sign(param)
    term = coefficient * base
    return term if multiplier is None else term * multiplier


def decay_tree(params: PyTree, coefficients: Any, kinds: Any = "l2",
               multipliers: Any = None) -> PyTree:
    """`decay_term` on every leaf of `params` (the tree that coupled decay adds)."""
    leaves, treedef = jax.tree.flatten(params)
    terms = [
        decay_term(p, c, k, m)
        for p, c, k, m in zip(
            leaves, leaves_like(params, coefficients), leaves_like(params, kinds),
            leaves_like(params, multipliers), strict=True,
        )
    ]
    return treedef.unflatten(terms)


def add_decay(coefficients: Any, kinds: Any = "l2",
              multipliers: Any = None) -> optax.GradientTransformation:
    """Coupled weight decay: ``d = g + wd_t * (p | sign(p)) * M``.

    Placed before momentum/adaptive scaling it is L2/L1 regularisation of the loss (the
    decay enters the momentum buffer, as ``torch.optim.SGD(weight_decay=...)``). Placed
    after ``optax.scale_by_adam`` and before the learning rate it is AdamW's decoupled decay.

    Args:
      coefficients: ``wd``; a scalar, or a tree of per-leaf scalars or arrays. Any of them
        may be an Optax schedule, read at this transform's own step count (``wd_t``); the
        state is then a `StepCountState`, otherwise ``optax.EmptyState``.
      kinds: ``'l2'`` or ``'l1'``, or a tree of them.
      multipliers: element-wise ``M`` (broadcastable to the leaf), a tree with ``None``
        where there is none, or ``None``.
    """
    scheduled = has_schedule(coefficients)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(NO_PARAMS)
        coefs = tree_at(coefficients, state.count) if scheduled else coefficients
        decays = decay_tree(params, coefs, kinds, multipliers)
        if scheduled:
            state = StepCountState(count=optax.safe_increment(state.count))
        return jax.tree.map(jnp.add, updates, decays), state

    init_fn = init_count if scheduled else optax.init_empty_state
    return optax.GradientTransformation(init_fn, update_fn)


def decoupled_decay(coefficients: Any, learning_rate: Any, kinds: Any = "l2",
                    multipliers: Any = None) -> optax.GradientTransformation:
    """Decoupled decay on final updates: ``u = u - lr_t * wd_t * (p | sign(p)) * M``.

    Goes *after* a whole optimiser (e.g. ``optax.chain(optax.adam(lr), decoupled_decay(wd,
    lr))``), with ``p`` the parameters before the step, as ``torch.optim.AdamW`` does.
    `learning_rate` is the factor ``lr_t`` of the decay: a float, an Optax schedule of the
    step count, or a per-leaf tree of them (`independent_decay` and `corrected_decay` are
    this transform with their factors). Any coefficient may be a float or a schedule.
    """

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(NO_PARAMS)
        decays = decay_tree(params, tree_at(coefficients, state.count), kinds, multipliers)
        rates = leaves_like(updates, tree_at(learning_rate, state.count))
        leaves, treedef = jax.tree.flatten(updates)
        out = [u - lr * d for u, d, lr in zip(leaves, jax.tree.leaves(decays), rates,
                                               strict=True)]
        return treedef.unflatten(out), StepCountState(optax.safe_increment(state.count))

    return optax.GradientTransformation(init_count, update_fn)


def clip_sign_crossing(mask: Any = True) -> optax.GradientTransformation:
    """L1 clipping: an element whose sign the step would flip lands on exactly 0.

    Works on final updates ``u`` (after the learning rate): where
    ``sign(p) * sign(p + u) == -1`` the update becomes ``-p``, so ``p + u == 0`` exactly.
    An element already at 0 has sign 0 and is never clipped. `mask` is a bool or a tree of
    bools choosing the leaves (the L1-decayed ones); it must be static.
    """

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(NO_PARAMS)
        leaves, treedef = jax.tree.flatten(updates)
        out = []
        for u, p, m in zip(leaves, jax.tree.leaves(params), leaves_like(updates, mask),
                           strict=True):
            if m:
                crossed = jnp.sign(p) * jnp.sign(p + u) < 0
                u = jnp.where(crossed, -p, u)
            out.append(u)
        return treedef.unflatten(out), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)
