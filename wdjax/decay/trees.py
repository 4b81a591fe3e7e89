"""Tree plumbing shared by the decay transforms: per-leaf values looked up by path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any
KINDS = ("l2", "l1")
NO_PARAMS = "this transform needs the parameters: call update(updates, state, params)"


def leaves_like(params: PyTree, tree: PyTree) -> list:
    """Values of `tree` at the paths of `params`' leaves; a non-tree value is repeated.

    Looking values up by path (rather than flattening `tree` alongside) lets a full-size
    coefficient tree serve inside ``optax.partition`` / ``optax.masked``, whose branches see
    params with the other groups' leaves masked out. ``None`` values are kept (they mean
    "nothing here").
    """
    paths = [path for path, _ in jax.tree_util.tree_leaves_with_path(params)]
    if not isinstance(tree, Mapping | list | tuple):
        return [tree] * len(paths)
    return [lookup(tree, path) for path in paths]


def lookup(tree: PyTree, path: tuple) -> Any:
    """The subtree of `tree` at `path`: JAX key entries, or plain keys (``("conv1", "kernel")``)."""
    for key in path:
        if isinstance(key, jax.tree_util.GetAttrKey):
            tree = getattr(tree, key.name)
        else:
            tree = tree[getattr(key, "key", getattr(key, "idx", key))]
    return tree


def path_keys(path: tuple) -> tuple[str, ...]:
    """A tree path (JAX key entries) as strings: ``("conv1_1", "conv", "kernel")``."""
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def path_name(path: tuple) -> str:
    """A tree path as one string: ``"conv1_1/conv/kernel"``."""
    return "/".join(path_keys(path))


def unit_axes(x: jax.Array, per_unit: bool) -> tuple[int, ...]:
    """The axes of one unit: all but the last (an output unit of a Flax HWIO/IO kernel; each
    element of a 1-D leaf), or all (the tensor)."""
    return tuple(range(x.ndim - 1)) if per_unit else tuple(range(x.ndim))


def unit_norm(x: jax.Array, per_unit: bool, keepdims: bool = False) -> jax.Array:
    """``||x||`` per unit (`unit_axes`), or of the whole tensor."""
    return jnp.sqrt(jnp.sum(jnp.square(x), axis=unit_axes(x, per_unit), keepdims=keepdims))
