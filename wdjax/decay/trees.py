"""Tree plumbing shared by the decay transforms: per-leaf values looked up by path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

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
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            tree = tree[key.key]
        elif isinstance(key, jax.tree_util.SequenceKey):
            tree = tree[key.idx]
        else:
            tree = getattr(tree, key.name)
    return tree
