"""Label, coefficient and multiplier trees: *which* tensor gets *what* decay.

Every tree builder here takes the params tree and a layer table (`wdjax.layers.table.LayerTable`,
from `trace_layers` for any Flax model, or the VGG's layer list, which is converted with
`wdjax.layers.table.conf_layers`) and returns a tree shaped like params, ready for `wdjax.decay`
transforms and Optax's ``optax.partition`` / ``optax.masked``. All parameters a layer owns
(kernel, bias, its normalisation's scale and shift) share its label, as the original grouped
them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from wdjax.decay.trees import lookup, path_keys, path_name
from wdjax.layers.table import LayerTable, conf_layers, trace_layers

PyTree = Any
Layers = LayerTable | Sequence  # a table, or the VGG's layer list

__all__ = [
    "early_layers", "kernel_only", "kind_labels", "last_layers", "layer_labels", "per_layer",
    "sample_variance", "table", "topographic_distance", "topographic_multiplier",
    "trace_layers", "unit_cells", "variance_inverse_coefficients", "variance_inverse_factors",
]


def table(params: PyTree, layers: Layers) -> LayerTable:
    """`layers` as a `LayerTable` (a VGG layer list is converted against `params`)."""
    return layers if isinstance(layers, LayerTable) else conf_layers(layers, params)


def layer_labels(params: PyTree, layers: Layers) -> PyTree:
    """Each leaf labelled with the name of the layer owning it (``None`` if none does)."""
    owners = table(params, layers).owners()
    return jax.tree_util.tree_map_with_path(lambda p, _: owners.get(path_keys(p)), params)


def per_layer(params: PyTree, layers: Layers, values: Mapping[str, Any],
              default: Any = None) -> PyTree:
    """Spread one value per layer onto every leaf that layer owns.

    Leaves of layers missing from `values`, and leaves no layer owns, get `default`; with no
    default that is an error, so a typo in a layer name cannot silently drop a coefficient.
    """
    tab = table(params, layers)
    unknown = set(values) - set(tab.names)
    if unknown:
        raise ValueError(f"unknown layers {sorted(unknown)}; the model has {tab.names}")
    owners = tab.owners()

    def value(path, _):
        layer = owners.get(path_keys(path))
        if layer not in values and default is None:
            raise ValueError(f"no value for parameter {path_name(path)} (layer "
                             f"{layer}) and no default")
        return values.get(layer, default)

    return jax.tree_util.tree_map_with_path(value, params)


def kernel_only(params: PyTree, layers: Layers, values: Mapping[str, Any],
                default: Any = None) -> PyTree:
    """Like `per_layer`, but only the kernel of a listed layer gets its value.

    Other leaves get `default` (``None`` means "no multiplier" for `wdjax.decay`).
    """
    kernels = {layer.kernel: layer.name for layer in table(params, layers)}
    return jax.tree_util.tree_map_with_path(
        lambda p, _: values.get(kernels.get(path_keys(p)), default), params)


def kind_labels(params: PyTree, layers: Layers, l1_layers: Sequence[str] = ()) -> PyTree:
    """``'l1'`` for every parameter of the layers in `l1_layers`, ``'l2'`` elsewhere."""
    return per_layer(params, layers, {name: "l1" for name in l1_layers}, default="l2")


def early_layers(params: PyTree, layers: Layers) -> list[str]:
    """The early layers (the original's L1 group for ``SGDL1``): `LayerTable.early`."""
    return [layer.name for layer in table(params, layers).early()]


def last_layers(params: PyTree, layers: Layers, k: int) -> list[str]:
    """The last `k` layers in call order (``k=1``: logit; ``k=2``: fc6 and logit)."""
    return [layer.name for layer in table(params, layers).last(k)]


def sample_variance(x: Any) -> float:
    """Variance with the N-1 denominator (PyTorch's default ``Tensor.var()``)."""
    return float(np.var(np.asarray(x, dtype=np.float64), ddof=1))


def variance_inverse_factors(params: PyTree, layers: Layers,
                             dup_mult: float) -> dict[str, float]:
    """Per layer ``dup_mult ** -depth / Var(kernel)``: the coefficient per unit of base decay.

    ``Var`` is the N-1 sample variance of the layer's kernel in `params`, which must be the
    parameters *at initialisation*; the depth counts the halvings of the spatial size before
    the layer, so for the VGG this divides by `dup_mult` at every pool
    (docs/schemes.md#variance-inverse-coefficients).
    """
    if not dup_mult > 0:
        raise ValueError(f"dup_mult must be > 0, got {dup_mult}")
    tab = table(params, layers)
    out = {}
    for layer in tab:
        out[layer.name] = (float(dup_mult) ** -layer.depth
                           / sample_variance(lookup(params, layer.kernel)))
    return out


def variance_inverse_coefficients(params: PyTree, layers: Layers, base_decay: float,
                                  dup_mult: float) -> PyTree:
    """Coefficient tree ``base_decay * s / Var(kernel)``, shared by all of a layer's leaves."""
    factors = variance_inverse_factors(params, layers, dup_mult)
    return per_layer(params, layers, {k: base_decay * v for k, v in factors.items()},
                     default=base_decay)


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
    """Element-wise decay multiplier ``base ** distance`` for an HWIO or IO kernel.

    For grid 3 this is ``mults[distance]`` with ``mults = [1, b, b**2]``
    (docs/schemes.md#topographic-multiplier). The result has shape
    ``(1, ..., 1, C_in, C_out)`` with the kernel's rank: it is the same at every spatial
    position, so it broadcasts against the kernel instead of being stored kh*kw times.
    `base` may be a traced value.
    """
    *lead, cin, cout = kernel_shape
    distance = topographic_distance(cin, cout, grid).astype(np.float32)
    return base ** distance.reshape((1,) * len(lead) + distance.shape)
