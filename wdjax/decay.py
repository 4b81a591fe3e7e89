"""Weight-decay transforms as Optax ``GradientTransformation``s.

All the decay math of wdjax lives here. One update of the original experiments
(REFERENCE section 4) is the chain::

    optax.chain(
        add_decay(coefficients, kinds, multipliers),   # d = g + wd * (p | sign p) * M
        optax.trace(momentum),                         # buf = momentum * buf + d; d = buf
        normalize_updates(ema_rate, weight_norm),      # d = d * ||p|| / (||d||_ema + 1e-8)
        optax.scale_by_learning_rate(lr),              # u = -lr * d
        clip_sign_crossing(l1_mask),                   # L1: a sign flip lands on exactly 0
    )

Trees (`coefficients`, `kinds`, `multipliers`, masks) either match the params tree leaf for
leaf or are a single value used for every leaf (see `wdjax.labels` for building them).
Coefficients may be Python floats, arrays, or traced values, so one compiled program can
serve a whole sweep and ``jax.vmap`` can batch runs over them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

PyTree = Any
KINDS = ("l2", "l1")
_NO_PARAMS = "this transform needs the parameters: call update(updates, state, params)"


def _leaves_like(params: PyTree, tree: PyTree) -> list:
    """Values of `tree` at the paths of `params`' leaves; a non-tree value is repeated.

    Looking values up by path (rather than flattening `tree` alongside) lets a full-size
    coefficient tree serve inside ``optax.partition`` / ``optax.masked``, whose branches see
    params with the other groups' leaves masked out. ``None`` values are kept (they mean
    "nothing here").
    """
    paths = [path for path, _ in jax.tree_util.tree_leaves_with_path(params)]
    if not isinstance(tree, Mapping | list | tuple):
        return [tree] * len(paths)
    return [_lookup(tree, path) for path in paths]


def _lookup(tree: PyTree, path: tuple) -> Any:
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            tree = tree[key.key]
        elif isinstance(key, jax.tree_util.SequenceKey):
            tree = tree[key.idx]
        else:
            tree = getattr(tree, key.name)
    return tree


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
            leaves, _leaves_like(params, coefficients), _leaves_like(params, kinds),
            _leaves_like(params, multipliers), strict=True,
        )
    ]
    return treedef.unflatten(terms)


def add_decay(coefficients: Any, kinds: Any = "l2",
              multipliers: Any = None) -> optax.GradientTransformation:
    """Coupled weight decay: ``d = g + wd * (p | sign(p)) * M``.

    Placed before momentum/adaptive scaling it is L2/L1 regularisation of the loss (the
    decay enters the momentum buffer, as ``torch.optim.SGD(weight_decay=...)``). Placed
    after ``optax.scale_by_adam`` and before the learning rate it is AdamW's decoupled decay.

    Args:
      coefficients: ``wd``; a scalar, or a tree of per-leaf scalars or arrays.
      kinds: ``'l2'`` or ``'l1'``, or a tree of them.
      multipliers: element-wise ``M`` (broadcastable to the leaf), a tree with ``None``
        where there is none, or ``None``.
    """

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(_NO_PARAMS)
        decays = decay_tree(params, coefficients, kinds, multipliers)
        return jax.tree.map(jnp.add, updates, decays), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


class DecoupledDecayState(NamedTuple):
    count: jax.Array  # steps taken, for a learning-rate schedule


def decoupled_decay(coefficients: Any, learning_rate: Any, kinds: Any = "l2",
                    multipliers: Any = None) -> optax.GradientTransformation:
    """Decoupled decay on final updates: ``u = u - lr_t * wd * (p | sign(p)) * M``.

    Goes *after* a whole optimiser (e.g. ``optax.chain(optax.adam(lr), decoupled_decay(wd,
    lr))``), with ``p`` the parameters before the step, as ``torch.optim.AdamW`` does. `lr`
    is a float or an Optax schedule of the step count.
    """

    def init_fn(params):
        del params
        return DecoupledDecayState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(_NO_PARAMS)
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        decays = decay_tree(params, coefficients, kinds, multipliers)
        updates = jax.tree.map(lambda u, d: u - lr * d, updates, decays)
        return updates, DecoupledDecayState(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)


def clip_sign_crossing(mask: Any = True) -> optax.GradientTransformation:
    """L1 clipping: an element whose sign the step would flip lands on exactly 0.

    Works on final updates ``u`` (after the learning rate): where
    ``sign(p) * sign(p + u) == -1`` the update becomes ``-p``, so ``p + u == 0`` exactly.
    An element already at 0 has sign 0 and is never clipped. `mask` is a bool or a tree of
    bools choosing the leaves (the L1-decayed ones); it must be static.
    """

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(_NO_PARAMS)
        leaves, treedef = jax.tree.flatten(updates)
        out = []
        for u, p, m in zip(leaves, jax.tree.leaves(params), _leaves_like(updates, mask),
                           strict=True):
            if m:
                crossed = jnp.sign(p) * jnp.sign(p + u) < 0
                u = jnp.where(crossed, -p, u)
            out.append(u)
        return treedef.unflatten(out), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


class NormalizeUpdatesState(NamedTuple):
    count: jax.Array  # steps taken; the EMA starts from the first norm
    norm_ema: PyTree  # per leaf: EMA of ||d|| (scalar, or one per output unit)


def _norm(x: jax.Array, per_unit: bool) -> jax.Array:
    """||x|| over the whole tensor, or per output unit (the last axis, Flax's HWIO ``O``)."""
    if per_unit and x.ndim >= 1:
        return jnp.sqrt(jnp.sum(jnp.square(x), axis=tuple(range(x.ndim - 1))))
    return jnp.sqrt(jnp.sum(jnp.square(x)))


def normalize_updates(ema_rate: Any = 0.0, weight_norm: bool = True, per_unit: bool = False,
                      eps: float = 1e-8) -> optax.GradientTransformation:
    """Layer-wise update normalisation: ``d = d * (||p|| if weight_norm else 1) / (e + eps)``.

    ``e`` is ``||d||`` at the first step, then ``e = r * e + (1 - r) * ||d||`` with
    ``r = ema_rate`` (``r = 0``: the current norm). Norms are per tensor, 1-D tensors
    included; an all-zero tensor with `weight_norm` never moves (the original's behaviour,
    unlike ``optax.scale_by_trust_ratio``, which substitutes a ratio of 1 there).
    ``per_unit=True`` keeps one norm per output channel (last axis) instead, the variant the
    original framework planned; for a 1-D tensor each element is its own unit. Goes after
    momentum; the momentum buffer itself is never rescaled.
    """

    def init_fn(params):
        norms = jax.tree.map(lambda p: jnp.zeros_like(_norm(p, per_unit)), params)
        return NormalizeUpdatesState(count=jnp.zeros([], jnp.int32), norm_ema=norms)

    def update_fn(updates, state, params=None):
        if weight_norm and params is None:
            raise ValueError(_NO_PARAMS)
        first = state.count == 0
        norms = jax.tree.map(lambda d: _norm(d, per_unit), updates)
        ema = jax.tree.map(
            lambda e, n: jnp.where(first, n, ema_rate * e + (1 - ema_rate) * n),
            state.norm_ema, norms,
        )
        if weight_norm:
            scale = jax.tree.map(lambda p, e: _norm(p, per_unit) / (e + eps), params, ema)
        else:
            scale = jax.tree.map(lambda e: 1.0 / (e + eps), ema)
        updates = jax.tree.map(lambda d, s: d * s, updates, scale)
        return updates, NormalizeUpdatesState(optax.safe_increment(state.count), ema)

    return optax.GradientTransformation(init_fn, update_fn)
