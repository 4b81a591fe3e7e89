"""Rotational equilibrium (Kosson, Messmer & Jaggi, ICML 2024, arXiv 2305.17212;
docs/equilibrium.md): its angle, an optimizer that rotates by it, a monitor that measures it."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from wdjax.decay.trees import PyTree, like, require_params, unit_axes, unit_norm, value_at


def equilibrium_angle(learning_rate: Any, weight_decay: Any, momentum: Any = 0.0,
                      b1: Any = None) -> jax.Array:
    """Expected angular update ``||dw|| / ||w||`` per step of a scale-invariant weight at
    equilibrium; 0 where ``lr * wd <= 0``. All arguments may be traced.

    * SGD (``b1=None``), momentum ``m``, coupled decay: ``sqrt(2 lr wd / (1 + m))``
    * AdamW (``b1``; `momentum` ignored), decoupled decay: ``sqrt(2 lr wd (1 - b1) / (1 + b1))``
    """
    rate = 2 * learning_rate * weight_decay
    rate = rate / (1 + momentum) if b1 is None else rate * (1 - b1) / (1 + b1)
    return jnp.sqrt(jnp.maximum(rate, 0.0))


def rotational_leaves(params: PyTree, weight_decay: Any, rotational: Any = None,
                      per_neuron: bool = True) -> PyTree:
    """Tree of Python bools: which leaves get the rotational update. `rotational` None:
    ``ndim >= 2`` and decay ``> 0`` (a traced decay counts as ``> 0``); else a static bool or
    tree of them. A rotational leaf needs ``ndim >= 2`` per neuron, ``ndim >= 1`` per tensor."""
    min_ndim = 2 if per_neuron else 1

    def default(p, wd):
        # A traced decay counts as positive, so a sweep in one program (or jax.vmap) has one
        # tree of rotational leaves; a traced 0 gets the plain update, chosen per step.
        traced = isinstance(wd, jax.core.Tracer)
        return p.ndim >= 2 and (traced or bool(np.all(np.asarray(wd) > 0)))

    def check(path, p, flag):
        name = jax.tree_util.keystr(path, simple=True, separator="/")
        if not isinstance(flag, bool | np.bool_):
            raise ValueError(f"rotational flags must be Python bools, got {flag!r} at {name}")
        if flag and p.ndim < min_ndim:
            raise ValueError(f"rotational leaf {name} has ndim {p.ndim}; "
                             f"{'per-neuron' if per_neuron else 'per-tensor'} units need "
                             f"ndim >= {min_ndim}")
        return bool(flag)

    flags = (like(params, rotational) if rotational is not None
             else jax.tree.map(default, params, like(params, weight_decay)))
    return jax.tree_util.tree_map_with_path(check, params, flags)


def _per_unit(reduce: Any, x: jax.Array, per_neuron: bool) -> jax.Array:
    return reduce(x, axis=unit_axes(x, per_neuron), keepdims=True)


def _nonzero(x: jax.Array) -> jax.Array:
    # A unit of norm 0 has no direction: dividing by 1 instead leaves it (and its step) 0.
    return jnp.where(x > 0, x, 1.0)


def center_units(params: PyTree, rotational: Any, per_neuron: bool = True) -> PyTree:
    """Remove each unit's mean and rescale it back to its norm, on the initial parameters: the
    centring of `rotational` with ``zero_mean`` that Optax's ``init`` cannot do
    (docs/equilibrium.md#the-rotational-update, step 1). `rotational`: a bool or tree of bools."""
    norm = functools.partial(unit_norm, per_unit=per_neuron, keepdims=True)

    def center(p, flag):
        if not flag:
            return p
        centred = p - _per_unit(jnp.mean, p, per_neuron)
        return centred * (norm(p) / _nonzero(norm(centred)))

    return jax.tree.map(center, params, like(params, rotational))


class RotationalState(NamedTuple):
    count: jax.Array            # updates taken so far (t - 1)
    inner: optax.OptState       # state of the inner direction transform
    target_norm: PyTree         # per rotational leaf: the frozen unit norms n; MaskedNode elsewhere
    update_sq_norm_ema: PyTree  # per rotational leaf: e, the EMA of ||d||^2 per unit


def _leaf_step(p, d, wd, flag, n, e, *, lr, first, t, momentum, b1, per_neuron, zero_mean,
               beta, eps):
    """One leaf's ``(u, n, e)``: the plain update (n, e stay MaskedNode), or for a rotational
    leaf with decay > 0 (chosen per step: it may be traced) steps 2-6 of
    docs/equilibrium.md#the-rotational-update."""
    plain = -lr * (d if b1 is None else d + wd * p)
    if not flag:
        return plain, n, e

    def center(x):
        return x - _per_unit(jnp.mean, x, per_neuron) if zero_mean else x

    norm = jnp.where(first, unit_norm(center(p), per_neuron, keepdims=True), n)
    d = center(d)
    d = d - p * _per_unit(jnp.sum, d * p, per_neuron) / _nonzero(jnp.square(norm))
    e = beta * e + (1 - beta) * _per_unit(jnp.sum, jnp.square(d), per_neuron)
    rms = jnp.sqrt(e / (1 - beta**t))
    new = p - equilibrium_angle(lr, wd, momentum, b1) * (d / (eps + rms)) * norm
    new = new * (norm / _nonzero(unit_norm(new, per_neuron, keepdims=True)))
    return jnp.where(wd > 0, new - p, plain), norm, e


def _map_unzip(fn: Any, n: int, tree: PyTree, *rest: PyTree) -> tuple:
    """`fn` per leaf of `tree` and `rest` (up to `tree`'s structure); its n-tuples as n trees."""
    treedef = jax.tree.structure(tree)
    results = [fn(*leaf) for leaf in zip(*map(treedef.flatten_up_to, (tree, *rest)), strict=True)]
    return tuple(treedef.unflatten([r[i] for r in results]) for i in range(n))


def rotational(inner: optax.GradientTransformation, *, learning_rate: Any, weight_decay: Any,
               momentum: Any = 0.0, b1: Any = None, per_neuron: bool = True,
               zero_mean: bool = True, update_norm_decay: Any = 0.9, eps: float = 1e-8,
               rotational: Any = None) -> optax.GradientTransformation:
    """Rotational optimizer: fixed unit norms, every step an equilibrium-angle rotation.

    A complete optimizer (lr and decay included; updates are ``p_new - p``). Per unit (output
    neuron, last axis; the whole tensor when ``per_neuron=False``) of a `rotational_leaves` leaf:

    * ``n``: the unit norm at the first update (of the centred unit when `zero_mean`), kept;
    * ``d``: `inner`'s output for the raw gradient (no decay); centred when `zero_mean`,
      then ``d <- d - p <d, p> / n^2``;
    * ``e <- beta e + (1 - beta) ||d||^2`` from ``e = 0``; ``r = sqrt(e / (1 - beta^t))``;
    * ``p <- p - a d / (eps + r) * n``, then ``p <- p * n / ||p||``, with ``a`` =
      `equilibrium_angle` ``(lr_t, wd, momentum, b1)``.

    Other leaves, and rotational ones whose decay is 0 (per step, as epfml/REQ), get the plain
    update ``-lr inner(g + wd p)`` (SGD, ``b1=None``) or ``-lr (inner(g) + wd p)`` (AdamW).
    `inner` must match `momentum` / `b1`; ``beta`` = `update_norm_decay`; `rotational` is
    static, all else may be traced. Call `center_units` on the initial params when `zero_mean`.
    """

    def init_fn(params):
        flags = rotational_leaves(params, weight_decay, rotational, per_neuron)
        zeros = jax.tree.map(lambda p, flag: jnp.zeros_like(_per_unit(jnp.sum, p, per_neuron))
                             if flag else optax.MaskedNode(), params, flags)
        return RotationalState(count=jnp.zeros([], jnp.int32), inner=inner.init(params),
                               target_norm=zeros, update_sq_norm_ema=zeros)

    def update_fn(updates, state, params=None):
        require_params(params)
        flags = rotational_leaves(params, weight_decay, rotational, per_neuron)
        decays = like(params, weight_decay)
        grads = jax.tree.map(lambda g, p, wd, flag: g if flag or b1 is not None else g + wd * p,
                             updates, params, decays, flags)
        directions, inner_state = inner.update(grads, state.inner, params)
        count = optax.safe_increment(state.count)
        leaf_step = functools.partial(
            _leaf_step, lr=value_at(learning_rate, state.count), first=state.count == 0, t=count,
            momentum=momentum, b1=b1, per_neuron=per_neuron, zero_mean=zero_mean,
            beta=update_norm_decay, eps=eps)
        out, norms, emas = _map_unzip(leaf_step, 3, params, directions, decays, flags,
                                      state.target_norm, state.update_sq_norm_ema)
        return out, RotationalState(count, inner_state, norms, emas)

    return optax.GradientTransformation(init_fn, update_fn)


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


def _measure(p, u, wd, ema, step, *, lr, t, momentum, b1, ema_decay, per_unit, tolerance):
    """One leaf's ``(angle, ema, ratio, norm, step)`` at update `t` (counting from 1)."""
    predicted = equilibrium_angle(lr, wd, momentum, b1)
    p_norm = _norm(p, per_unit)
    angle = _norm(u, per_unit) / jnp.where(p_norm > 0, p_norm, 1.0)
    # Undo the previous bias correction to continue the plain EMA, then redo it.
    raw = ema * (1 - ema_decay ** (t - 1))
    ema = (ema_decay * raw + (1 - ema_decay) * angle) / (1 - ema_decay**t)
    valid = (predicted > 0) & (p.ndim >= 2)
    ratio = jnp.where(valid, ema / jnp.where(valid, predicted, 1.0), jnp.nan)
    arrived = (step < 0) & (jnp.abs(ratio - 1) <= tolerance)
    norm = p_norm * ratio ** (0.5 if b1 is None else 1.0)
    return angle, ema, ratio, norm, jnp.where(arrived, t, step)


def equilibrium_monitor(learning_rate: Any, weight_decay: Any, *, momentum: Any = 0.0,
                        b1: Any = None, ema_decay: Any = 0.99, per_unit: bool = False,
                        tolerance: float = 0.1) -> optax.GradientTransformation:
    """Measures how far each leaf is from rotational equilibrium; updates pass unchanged.

    At the END of a chain (``u = p_new - p``); read with ``optax.tree.get(state, name)``:

    * ``angular_update``: ``||u|| / ||p||`` (0 for a zero leaf or unit);
    * ``angular_update_ema``: its EMA with rate `ema_decay`, from 0, bias-corrected;
    * ``equilibrium_ratio``: the EMA over `equilibrium_angle` ``(lr_t, wd, momentum, b1)``
      (``b1=None``: SGD with coupled decay; a ``b1``: AdamW);
    * ``equilibrium_norm``: the norm the leaf settles at if its gradient statistics stay
      (``||g|| = c / ||p||``): ``||p|| sqrt(ratio)`` for SGD, ``||p|| ratio`` for Adam;
    * ``equilibrium_step``: the first ``t`` (from 1) with ``|ratio - 1| <= tolerance``, or -1.

    Leaves of ndim < 2 or with ``lr * wd = 0`` have no prediction (NaN, step -1). `per_unit`
    (static): one value per output unit for leaves of ndim >= 2; all else may be traced.
    """
    measure = functools.partial(_measure, momentum=momentum, b1=b1, ema_decay=ema_decay,
                                per_unit=per_unit, tolerance=tolerance)

    def init_fn(params):
        zeros = jax.tree.map(lambda p: jnp.zeros_like(_norm(p, per_unit)), params)
        nans = optax.tree.full_like(zeros, jnp.nan)
        steps = optax.tree.full_like(zeros, -1, jnp.int32)
        return EquilibriumMonitorState(jnp.zeros([], jnp.int32), zeros, zeros, nans, nans, steps)

    def update_fn(updates, state, params=None):
        require_params(params)
        count = optax.safe_increment(state.count)
        leaf = functools.partial(measure, lr=value_at(learning_rate, state.count), t=count)
        fields = _map_unzip(leaf, 5, params, updates, like(params, weight_decay),
                            state.angular_update_ema, state.equilibrium_step)
        return updates, EquilibriumMonitorState(count, *fields)

    return optax.GradientTransformation(init_fn, update_fn)
