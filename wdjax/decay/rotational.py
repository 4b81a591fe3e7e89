"""Rotational updates: every unit turns by the equilibrium angle each step (docs/equilibrium.md).

Kosson, Messmer & Jaggi, "Rotational Equilibrium: How Weight Decay Balances Learning Across
Neural Networks" (ICML 2024, arXiv 2305.17212). A scale-invariant weight trained with weight
decay settles where its expected angular update ``||dw|| / ||w||`` per step is

* SGD, momentum ``m``, coupled decay:      ``sqrt(2 lr wd / (1 + m))``
* AdamW (``b1``), decoupled decay:         ``sqrt(2 lr wd (1 - b1) / (1 + b1))``

The rotational variant enforces that equilibrium from the first step instead of waiting for
it: unit norms are frozen and each unit is rotated by exactly that angle.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from wdjax.decay.trees import NO_PARAMS, PyTree, leaves_like, path_name, unit_axes, unit_norm


def equilibrium_angle(learning_rate: Any, weight_decay: Any, momentum: Any = 0.0,
                      b1: Any = None) -> jax.Array:
    """Equilibrium angular update per step (the table above); 0 where ``lr * wd <= 0``.

    ``b1=None`` means SGD (with `momentum`); a ``b1`` means an Adam-like optimizer, for which
    `momentum` is ignored. All arguments may be traced.
    """
    rate = 2 * learning_rate * weight_decay
    rate = rate / (1 + momentum) if b1 is None else rate * (1 - b1) / (1 + b1)
    return jnp.sqrt(jnp.maximum(rate, 0.0))


def _positive_or_traced(value: Any) -> bool:
    # A traced decay (one program for a sweep, or jax.vmap over runs) cannot be compared at
    # trace time; it counts as positive, so the tree of rotational leaves is the same for
    # every run of the batch. A traced 0 then gets the plain update (`rotational` chooses
    # per step).
    if isinstance(value, jax.core.Tracer):
        return True
    return bool(np.all(np.asarray(value) > 0))


def rotational_leaves(params: PyTree, weight_decay: Any, rotational: Any = None,
                      per_neuron: bool = True) -> PyTree:
    """Tree of Python bools: which leaves get the rotational update.

    `rotational` None applies the default rule (``ndim >= 2`` and decay ``> 0``, where a
    traced decay counts as ``> 0``); otherwise it is one bool or a tree of bools, which must
    be static. A rotational leaf needs ``ndim >= 2`` per neuron (its units are the last
    axis) and ``ndim >= 1`` per tensor.
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    decays = leaves_like(params, weight_decay)
    flags = ([p.ndim >= 2 and _positive_or_traced(wd) for (_, p), wd in zip(flat, decays,
                                                                             strict=True)]
             if rotational is None else leaves_like(params, rotational))
    min_ndim = 2 if per_neuron else 1
    for (path, p), flag in zip(flat, flags, strict=True):
        if not isinstance(flag, bool | np.bool_):
            raise ValueError(f"rotational flags must be Python bools, got {flag!r} at "
                             f"{path_name(path)}")
        if flag and p.ndim < min_ndim:
            raise ValueError(f"rotational leaf {path_name(path)} has ndim "
                             f"{p.ndim}; {'per-neuron' if per_neuron else 'per-tensor'} "
                             f"units need ndim >= {min_ndim}")
    return treedef.unflatten([bool(f) for f in flags])


def _unit_sum(x: jax.Array, per_neuron: bool) -> jax.Array:
    return jnp.sum(x, axis=unit_axes(x, per_neuron), keepdims=True)


def _unit_mean(x: jax.Array, per_neuron: bool) -> jax.Array:
    return jnp.mean(x, axis=unit_axes(x, per_neuron), keepdims=True)


def _nonzero(x: jax.Array) -> jax.Array:
    # A unit of norm 0 has no direction: dividing by 1 instead leaves it (and its step) 0.
    return jnp.where(x > 0, x, 1.0)


def center_units(params: PyTree, rotational: Any, per_neuron: bool = True) -> PyTree:
    """Remove each unit's mean and rescale it back to its original norm (step 1 of
    docs/equilibrium.md#the-rotational-update).

    The initial centring of `rotational` with ``zero_mean``; Optax's ``init`` cannot change
    parameters, so call this once on the initial parameters. `rotational` is one bool or a
    tree of bools (e.g. `rotational_leaves`); other leaves are returned unchanged.
    """

    def center(p, flag):
        if not flag:
            return p
        centred = p - _unit_mean(p, per_neuron)
        norm = functools.partial(unit_norm, per_unit=per_neuron, keepdims=True)
        return centred * (norm(p) / _nonzero(norm(centred)))

    leaves, treedef = jax.tree.flatten(params)
    return treedef.unflatten([center(p, f) for p, f in
                              zip(leaves, leaves_like(params, rotational), strict=True)])


class RotationalState(NamedTuple):
    count: jax.Array            # updates taken so far (t - 1)
    inner: optax.OptState       # state of the inner direction transform
    target_norm: PyTree         # per rotational leaf: the frozen unit norms n; MaskedNode elsewhere
    update_sq_norm_ema: PyTree  # per rotational leaf: e, the EMA of ||d||^2 per unit


def _rotational_step(p, d, stored_norm, ema, angle, first, t, *, per_neuron, zero_mean,
                     beta, eps):
    """One rotational update of one leaf, ``(u, n, e)``: steps 2-6 of
    docs/equilibrium.md#the-rotational-update."""

    def center(x):
        return x - _unit_mean(x, per_neuron) if zero_mean else x

    norm = jnp.where(first, unit_norm(center(p), per_neuron, keepdims=True), stored_norm)
    d = center(d)
    d = d - p * _unit_sum(d * p, per_neuron) / _nonzero(jnp.square(norm))
    ema = beta * ema + (1 - beta) * _unit_sum(jnp.square(d), per_neuron)
    rms = jnp.sqrt(ema / (1 - beta**t))
    new = p - angle * (d / (eps + rms)) * norm
    new = new * (norm / _nonzero(unit_norm(new, per_neuron, keepdims=True)))
    return new - p, norm, ema


def _leaf_step(p, d, wd, flag, n, e, lr, first, t, *, momentum, b1, **rotate):
    """One leaf's ``(u, n, e)``: the plain update (n and e stay MaskedNode), or for a
    rotational leaf the rotation, unless its decay is 0 (chosen per step: it may be traced)."""
    plain = -lr * (d if b1 is None else d + wd * p)
    if not flag:
        return plain, n, e
    u, n, e = _rotational_step(p, d, n, e, equilibrium_angle(lr, wd, momentum, b1), first, t,
                               **rotate)
    return jnp.where(wd > 0, u, plain), n, e


def rotational(inner: optax.GradientTransformation, *, learning_rate: Any, weight_decay: Any,
               momentum: Any = 0.0, b1: Any = None, per_neuron: bool = True,
               zero_mean: bool = True, update_norm_decay: Any = 0.9, eps: float = 1e-8,
               rotational: Any = None) -> optax.GradientTransformation:
    """Rotational optimizer: fixed unit norms, every step an equilibrium-angle rotation.

    A complete optimizer (learning rate and decay included); updates are ``p_new - p``. For
    a rotational leaf (`rotational_leaves`), per unit (an output neuron, the last axis of a
    Flax HWIO/IO kernel; or the whole tensor when ``per_neuron=False``):

    * ``n``: the unit norm at the first update (of the centred unit when `zero_mean`), kept;
    * ``d``: `inner`'s output for the raw gradient (no decay); centred when `zero_mean`,
      then ``d <- d - p <d, p> / n^2``;
    * ``e <- beta e + (1 - beta) ||d||^2`` from ``e = 0``; ``r = sqrt(e / (1 - beta^t))``;
    * ``p <- p - a d / (eps + r) * n``, then ``p <- p * n / ||p||``, with ``a`` =
      `equilibrium_angle` ``(lr_t, wd, momentum, b1)``.

    Other leaves get the plain update with their decay: ``-lr inner(g + wd p)`` for SGD
    (``b1=None``, coupled as torch SGD), ``-lr (inner(g) + wd p)`` with ``b1`` (AdamW). So
    does a rotational leaf whose decay is 0, as in epfml/REQ's ``rotational_sgd.py``: chosen
    per step (``jnp.where``), so a traced decay keeps one program for a whole sweep.

    `inner` (``optax.trace(momentum)``, ``optax.scale_by_adam(b1, ...)``) must match
    `momentum` / `b1`. `learning_rate`: float or schedule; `weight_decay`: scalar or per-leaf
    tree; `update_norm_decay`: ``beta`` (0: each step turns by exactly ``a``); `eps`:
    ``eps_r``; `rotational`: None (default rule), a bool or a tree of static bools. All else
    may be traced. Call `center_units` on the initial params when `zero_mean`.
    """
    step = functools.partial(_leaf_step, momentum=momentum, b1=b1, per_neuron=per_neuron,
                             zero_mean=zero_mean, beta=update_norm_decay, eps=eps)

    def init_fn(params):
        flags = rotational_leaves(params, weight_decay, rotational, per_neuron)
        zeros = jax.tree.map(lambda p, flag: jnp.zeros_like(_unit_sum(p, per_neuron)) if flag
                             else optax.MaskedNode(), params, flags)
        return RotationalState(count=jnp.zeros([], jnp.int32), inner=inner.init(params),
                               target_norm=zeros, update_sq_norm_ema=zeros)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(NO_PARAMS)
        leaves, treedef = jax.tree.flatten(params)
        flags = jax.tree.leaves(rotational_leaves(params, weight_decay, rotational,
                                                  per_neuron))
        decays = leaves_like(params, weight_decay)
        grads = [g if flag or b1 is not None else g + wd * p for g, p, wd, flag in
                 zip(jax.tree.leaves(updates), leaves, decays, flags, strict=True)]
        directions, inner_state = inner.update(treedef.unflatten(grads), state.inner, params)
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        count = optax.safe_increment(state.count)
        results = [  # (u, n, e) per leaf
            step(p, d, wd, flag, n, e, lr, state.count == 0, count)
            for p, d, wd, flag, n, e in zip(
                leaves, jax.tree.leaves(directions), decays, flags,
                treedef.flatten_up_to(state.target_norm),
                treedef.flatten_up_to(state.update_sq_norm_ema), strict=True)]
        out, norms, emas = (treedef.unflatten([r[i] for r in results]) for i in range(3))
        return out, RotationalState(count, inner_state, norms, emas)

    return optax.GradientTransformation(init_fn, update_fn)
