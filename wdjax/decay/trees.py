"""Plumbing shared by the decay transforms: per-leaf values looked up by path, schedules read at
a step, checks on concrete inputs (a traced value is checked by whoever made it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

PyTree = Any
KINDS = ("l2", "l1")


def require_params(params: PyTree) -> None:
    if params is None:
        raise ValueError("this transform needs the parameters: call update(updates, state, params)")


def like(params: PyTree, tree: PyTree) -> PyTree:
    """The values of `tree` at the paths of `params`' leaves, in `params`' structure; a non-tree
    value is repeated, ``None`` kept. By path, so a full-size tree also serves inside
    ``optax.partition`` / ``optax.masked``, whose branches see other groups' leaves masked out."""
    if not isinstance(tree, Mapping | list | tuple):
        return jax.tree.map(lambda _: tree, params)
    return jax.tree_util.tree_map_with_path(lambda path, _: lookup(tree, path), params)


def lookup(tree: PyTree, path: tuple) -> Any:
    """The subtree of `tree` at `path`: JAX key entries, or plain keys (``("conv1", "kernel")``)."""
    for key in path:
        tree = (getattr(tree, key.name) if isinstance(key, jax.tree_util.GetAttrKey)
                else tree[getattr(key, "key", getattr(key, "idx", key))])
    return tree


def path_keys(path: tuple) -> tuple[str, ...]:
    """A tree path (JAX key entries) as strings: ``("conv1_1", "conv", "kernel")``."""
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def path_name(path: tuple) -> str:
    """A tree path as one string: ``"conv1_1/conv/kernel"``."""
    return "/".join(path_keys(path))


def unit_axes(x: jax.Array, per_unit: bool) -> tuple[int, ...]:
    """The axes of one unit: all but the last (output units of Flax kernels), or all."""
    return tuple(range(x.ndim - 1)) if per_unit else tuple(range(x.ndim))


def unit_norm(x: jax.Array, per_unit: bool, keepdims: bool = False) -> jax.Array:
    """``||x||`` per unit (`unit_axes`), or of the whole tensor."""
    return jnp.sqrt(jnp.sum(jnp.square(x), axis=unit_axes(x, per_unit), keepdims=keepdims))


class StepCountState(NamedTuple):
    count: jax.Array  # steps taken: the argument of the transform's schedules


def value_at(value: Any, count: Any) -> Any:
    """`value` at step `count`: a schedule is called, anything else returned as it is."""
    return value(count) if callable(value) else value


def tree_at(tree: PyTree, count: Any) -> PyTree:
    """`tree` with every schedule leaf replaced by its value at step `count`."""
    return jax.tree.map(lambda leaf: value_at(leaf, count), tree)


def concrete(value: Any) -> np.ndarray | None:
    """`value` as a float64 array, or ``None`` when it is traced or a schedule."""
    if value is None or callable(value) or isinstance(value, jax.core.Tracer):
        return None
    return np.asarray(value, np.float64)


def check_values(name: str, tree: PyTree, *, allow_zero: bool) -> None:
    """One-line ValueError unless every concrete leaf of `tree` is finite and > 0 (>= 0)."""
    for leaf in jax.tree.leaves(tree):
        array = concrete(leaf)
        if array is not None and not (np.all(np.isfinite(array))
                                      and np.all(array >= 0 if allow_zero else array > 0)):
            allowed = "finite and >= 0" if allow_zero else "finite and > 0"
            shown = array.item() if array.size == 1 else f"an array with min {array.min()}"
            raise ValueError(f"{name} must be {allowed}, got {shown}")


def check_steps(steps_per_epoch: Any) -> None:
    """One-line ValueError unless a concrete `steps_per_epoch` is a whole number >= 1."""
    a = concrete(steps_per_epoch)
    if a is not None and (isinstance(steps_per_epoch, bool) or not np.all(
            np.isfinite(a) & (a >= 1) & (a == np.round(a)))):
        raise ValueError(f"steps_per_epoch must be a positive integer, got {steps_per_epoch!r}")


def leafwise(fn: Any, *hyper: PyTree, counted: bool = True) -> optax.GradientTransformation:
    """A transform whose update is ``fn(u, p, *h)`` per leaf, each of `hyper` looked up at the
    leaf's path. `counted`: schedules in `hyper` are read at a step count kept in a
    `StepCountState`; otherwise the state is ``optax.EmptyState``."""

    def init_fn(params):
        del params
        return StepCountState(count=jnp.zeros([], jnp.int32)) if counted else optax.EmptyState()

    def update_fn(updates, state, params=None):
        require_params(params)
        values = [tree_at(h, state.count) if counted else h for h in hyper]
        out = jax.tree.map(fn, updates, params, *(like(updates, v) for v in values))
        return out, StepCountState(optax.safe_increment(state.count)) if counted else state

    return optax.GradientTransformation(init_fn, update_fn)
