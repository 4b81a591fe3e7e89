"""Hyperparameter values of the decay transforms: schedules read at a step, checks on inputs.

A learning rate or coefficient is a Python number, an array, a traced value (so ``jax.vmap``
can batch runs over it) or an Optax schedule (a callable of the step count). Checks look only
at concrete values: a traced value is checked by whoever made it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from wdjax.decay.trees import PyTree


class StepCountState(NamedTuple):
    count: jax.Array  # steps taken: the argument of the transform's schedules


def init_count(params: PyTree) -> StepCountState:
    del params
    return StepCountState(count=jnp.zeros([], jnp.int32))


def has_schedule(tree: PyTree) -> bool:
    """Whether any leaf of `tree` (or `tree` itself) is a schedule."""
    return any(callable(leaf) for leaf in jax.tree.leaves(tree))


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
        if array is None:
            continue
        finite = bool(np.all(np.isfinite(array)))
        if not finite or not np.all(array >= 0 if allow_zero else array > 0):
            allowed = "finite and >= 0" if allow_zero else "finite and > 0"
            shown = array.item() if array.size == 1 else f"an array with min {array.min()}"
            raise ValueError(f"{name} must be {allowed}, got {shown}")


def check_steps(steps_per_epoch: Any) -> None:
    """One-line ValueError unless a concrete `steps_per_epoch` is a whole number >= 1."""
    array = concrete(steps_per_epoch)
    if array is None:
        return
    whole = bool(np.all(np.isfinite(array)) and np.all(array == np.round(array)))
    if isinstance(steps_per_epoch, bool) or not (whole and np.all(array >= 1)):
        raise ValueError(f"steps_per_epoch must be a positive integer, got {steps_per_epoch!r}")
