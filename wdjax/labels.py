"""Label, coefficient and multiplier trees: *which* tensor gets *what* decay.

Every function here returns a pytree shaped like the params tree (or a per-layer dict that
`per_layer` spreads onto it), so the results feed `wdjax.decay` transforms and Optax's
``optax.partition`` / ``optax.masked`` directly. Layers are the params tree's top-level keys
(``conv1_1`` ... ``logit``); all parameters of a layer (kernel, bias, BN scale and shift)
share its label, as the original grouped them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from wdjax.models import Conf, layer_kind, weight_layers

PyTree = Any


def layer_labels(params: PyTree) -> PyTree:
    """Each leaf labelled with its layer name (its top-level key)."""
    return {layer: jax.tree.map(lambda _, name=layer: name, sub) for layer, sub in params.items()}


def per_layer(params: PyTree, values: Mapping[str, Any], default: Any = None) -> PyTree:
    """Spread one value per layer onto every leaf of that layer.

    Layers missing from `values` get `default`; a missing layer with no default is an error,
    so a typo in a layer name cannot silently drop a coefficient.
    """
    unknown = set(values) - set(params)
    if unknown:
        raise ValueError(f"unknown layers {sorted(unknown)}; params have {sorted(params)}")
    out = {}
    for layer, sub in params.items():
        if layer not in values and default is None:
            raise ValueError(f"no value for layer {layer!r} and no default")
        value = values.get(layer, default)
        out[layer] = jax.tree.map(lambda _, v=value: v, sub)
    return out


def kernel_only(params: PyTree, values: Mapping[str, Any], default: Any = None) -> PyTree:
    """Like `per_layer`, but only the conv kernel of a listed layer gets its value.

    Other leaves get `default` (``None`` means "no multiplier" for `wdjax.decay`).
    """
    out = {}
    for layer, sub in params.items():
        out[layer] = {
            mod: {leaf: (values[layer] if mod == "conv" and leaf == "kernel" and layer in values
                         else default) for leaf in leaves}
            for mod, leaves in sub.items()
        }
    return out


def kind_labels(params: PyTree, l1_layers: set[str] | list[str] = ()) -> PyTree:
    """``'l1'`` for every parameter of the layers in `l1_layers`, ``'l2'`` elsewhere."""
    return per_layer(params, {layer: "l1" for layer in l1_layers}, default="l2")


def early_layers(conf: Conf) -> list[str]:
    """Weight layers before the last conv block (the original's L1 group for ``SGDL1``).

    The last conv block is what follows the second-to-last pool; for the default VGG that
    leaves conv1_1 .. conv4_2 here, and conv5_*, fc6, logit outside.
    """
    pools = [i for i, (name, _) in enumerate(conf) if layer_kind(name) == "pool"]
    if len(pools) < 2:
        return []
    cut = pools[-2]
    return [name for name in weight_layers(conf[:cut])]


def last_layers(conf: Conf, k: int) -> list[str]:
    """The last `k` weight layers (``k=1``: logit; ``k=2``: fc6 and logit)."""
    return weight_layers(conf)[-k:] if k > 0 else []


def sample_variance(x: Any) -> float:
    """Variance with the N-1 denominator (PyTorch's default ``Tensor.var()``)."""
    return float(np.var(np.asarray(x, dtype=np.float64), ddof=1))


def variance_inverse_factors(params: PyTree, conf: Conf, dup_mult: float) -> dict[str, float]:
    """Per-layer ``s / Var(kernel)``: the variance-inverse coefficient per unit of base decay.

    Walking `conf` in order, ``s`` starts at 1 and is divided by `dup_mult` at every pool
    (REFERENCE section 6); ``Var`` is the N-1 sample variance of the layer's kernel in
    `params`, which must be the parameters *at initialisation*.
    """
    if not dup_mult > 0:
        raise ValueError(f"dup_mult must be > 0, got {dup_mult}")
    s, factors = 1.0, {}
    for name, _ in conf:
        kind = layer_kind(name)
        if kind == "pool":
            s /= dup_mult
        elif kind in ("conv", "fc", "logit"):
            factors[name] = s / sample_variance(params[name]["conv"]["kernel"])
    return factors


def variance_inverse_coefficients(
    params: PyTree, conf: Conf, base_decay: float, dup_mult: float
) -> PyTree:
    """Coefficient tree ``base_decay * s / Var(kernel)``, shared by all of a layer's leaves."""
    factors = variance_inverse_factors(params, conf, dup_mult)
    return per_layer(params, {k: base_decay * v for k, v in factors.items()})


def unit_cells(units: int, grid: int) -> np.ndarray:
    """(units, 2) integer grid coordinates ``(x, y)`` of each unit on a `grid` x `grid` map.

    Units fill cells in order, ``ceil(units / grid**2)`` per cell; cell ``c`` sits at
    ``(c mod grid, c // grid)``.
    """
    per_cell = math.ceil(units / grid**2)
    cell = np.arange(units) // per_cell
    return np.stack([cell % grid, cell // grid], axis=1)


def topographic_distance(in_units: int, out_units: int, grid: int = 3) -> np.ndarray:
    """(in_units, out_units) ``floor`` of the Euclidean distance between units' grid cells."""
    diff = unit_cells(in_units, grid)[:, None, :] - unit_cells(out_units, grid)[None, :, :]
    return np.floor(np.sqrt((diff**2).sum(-1))).astype(np.int32)


def topographic_multiplier(kernel_shape: tuple[int, ...], base: Any, grid: int = 3) -> Any:
    """Element-wise decay multiplier ``base ** distance`` for an HWIO kernel.

    For grid 3 this is ``mults[distance]`` with ``mults = [1, b, b**2]`` (REFERENCE
    section 8). The result has shape ``(1, 1, C_in, C_out)``: it is the same at every
    spatial position, so it broadcasts against the kernel instead of being stored
    kh*kw times. `base` may be a traced value (one compiled program serves a sweep).
    """
    *_, cin, cout = kernel_shape
    distance = topographic_distance(cin, cout, grid).astype(np.float32)
    return base ** distance[None, None]


def tree_from_fn(params: PyTree, fn: Callable[[str, tuple, Any], Any]) -> PyTree:
    """Build a tree by calling ``fn(layer, path, leaf)`` on every leaf (an escape hatch)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: fn(path[0].key, tuple(p.key for p in path[1:]), leaf), params
    )
