"""The layer table (weight layers in call order, each owning its module's parameters and those
of the normalisations after it) and the trees stated on it: which tensor gets what decay."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from wdjax.decay.trees import lookup, path_keys, path_name
from wdjax.models import BatchNorm, layer_kind

PyTree = Any
Path = tuple[str, ...]
NORM_TYPES: tuple[type, ...] = (nn.BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, BatchNorm)


@dataclasses.dataclass(frozen=True)
class Layer:
    """One weight layer. ``depth``: log2(model input / layer input spatial size), 1 per 2x2
    pool; ``normalized``: a normalisation module follows it (its kernel is scale-invariant)."""

    name: str
    kernel: Path
    kind: str  # "conv" | "dense"
    fan_in: int
    depth: float
    params: tuple[Path, ...]
    normalized: bool = False


@dataclasses.dataclass(frozen=True)
class LayerTable:
    """Weight layers in call order; the rules schemes use are stated here."""

    layers: tuple[Layer, ...]

    def __iter__(self):
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def last(self, k: int) -> list[Layer]:
        """The last `k` layers in call order."""
        return list(self.layers[-k:]) if k > 0 else []

    def from_end(self, positions: Sequence[int]) -> list[Layer]:
        """Layers at negative positions (-1: the last), skipping those the model lacks."""
        return [self.layers[i] for i in positions if -len(self.layers) <= i < 0]

    def early(self) -> list[Layer]:
        """Layers whose depth is below the largest depth of any layer that still sees a map
        (input spatial size above 1). For the VGG: conv1_1 .. conv4_2."""
        full = max(layer.depth for layer in self.layers)
        cut = max((lay.depth for lay in self.layers if lay.depth < full), default=-math.inf)
        return [layer for layer in self.layers if layer.depth < cut]

    def owners(self) -> dict[Path, str]:
        """``{parameter path: layer name}`` for every owned parameter."""
        return {path: layer.name for layer in self.layers for path in layer.params}


def _leaf_paths(tree: PyTree) -> list[Path]:
    return [path_keys(path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)]


def _spatial_size(shape: Sequence[int]) -> float:
    spatial = list(shape[1:-1])
    return math.prod(spatial) ** (1 / len(spatial)) if spatial else 1.0


def trace_layers(model: nn.Module, variables: PyTree, sample_input: Any,
                 norm_types: tuple[type, ...] = NORM_TYPES, **apply_kwargs: Any) -> LayerTable:
    """The `LayerTable` of a Flax linen model from one abstract trace (no FLOPs); `apply_kwargs`
    go to ``model.apply``; modules of `norm_types` (your own norm layers too) are normalisations."""
    calls: list[tuple[Path, str, tuple]] = []  # (module path, role, input shape)

    def record(next_fun, args, kwargs, context):
        module = context.module
        index = len(calls)
        calls.append((tuple(module.path), "", ()))
        out = next_fun(*args, **kwargs)
        own = module.variables.get("params", {}) if module.scope is not None else {}
        if context.method_name == "__call__" and args and hasattr(args[0], "shape"):
            role = ("weight" if "kernel" in own and not isinstance(own["kernel"], dict)
                    else "norm" if isinstance(module, norm_types) else "")
            calls[index] = (tuple(module.path), role, tuple(args[0].shape))
        return out

    with nn.intercept_methods(record):
        jax.eval_shape(lambda v, x: model.apply(v, x, **apply_kwargs), variables, sample_input)
    ordered: dict[Path, tuple] = {}
    for path, role, shape in calls:
        if role:  # a shared module counts once, at its first call
            ordered.setdefault(path, (role, shape))
    kernel_modules = [p for p, (role, _) in ordered.items() if role == "weight"]
    params, input_size = variables["params"], _spatial_size(sample_input.shape)
    leaves, taken, layers = _leaf_paths(params), set(), []
    for path, (role, shape) in ordered.items():
        if role == "weight":  # named after the outermost enclosing module with no other kernel
            prefix = next((path[:cut] for cut in range(1, len(path) + 1)
                           if sum(m[:cut] == path[:cut] for m in kernel_modules) == 1), path)
            own = tuple(leaf for leaf in leaves if leaf[:len(prefix)] == prefix)
            kernel = lookup(params, (*path, "kernel"))
            layers.append(Layer("/".join(prefix), (*path, "kernel"),
                                "conv" if kernel.ndim > 2 else "dense",
                                math.prod(kernel.shape[:-1]),
                                math.log2(input_size / _spatial_size(shape)), own))
            taken.update(own)
        elif role == "norm" and layers:
            own = tuple(leaf for leaf in leaves if leaf[:len(path)] == path and leaf not in taken)
            layers[-1] = dataclasses.replace(layers[-1], params=layers[-1].params + own,
                                             normalized=True)
            taken.update(own)
    return LayerTable(tuple(layers))


def conf_layers(conf: Sequence[tuple[str, tuple[Any, Any]]], params: PyTree) -> LayerTable:
    """The `LayerTable` of the notebook VGG from its layer list (equals `trace_layers`')."""
    pools, layers = 0, []
    for name, _ in conf:
        kind = layer_kind(name)
        if kind == "pool":
            pools += 1
        elif kind in ("conv", "fc", "logit"):
            kernel = params[name]["conv"]["kernel"]
            own = tuple((name, *p) for p in _leaf_paths(params[name]))
            layers.append(Layer(name, (name, "conv", "kernel"), "conv",
                                math.prod(kernel.shape[:-1]), float(pools), own,
                                normalized=kind != "logit"))
    return LayerTable(tuple(layers))


Layers = LayerTable | Sequence  # a table, or the VGG's layer list


def table(params: PyTree, layers: Layers) -> LayerTable:
    """`layers` as a `LayerTable` (a VGG layer list is converted against `params`)."""
    return layers if isinstance(layers, LayerTable) else conf_layers(layers, params)


def layer_labels(params: PyTree, layers: Layers) -> PyTree:
    """Each leaf labelled with the name of the layer owning it (``None`` if none does)."""
    owners = table(params, layers).owners()
    return jax.tree_util.tree_map_with_path(lambda p, _: owners.get(path_keys(p)), params)


def per_layer(params: PyTree, layers: Layers, values: Mapping[str, Any],
              default: Any = None) -> PyTree:
    """Spread one value per layer onto every leaf that layer owns; other leaves get `default`
    (without one that is an error, so a typo in a layer name cannot drop a coefficient)."""
    tab = table(params, layers)
    if unknown := set(values) - set(tab.names):
        raise ValueError(f"unknown layers {sorted(unknown)}; the model has {tab.names}")
    owners = tab.owners()

    def value(path, _):
        layer = owners.get(path_keys(path))
        if layer not in values and default is None:
            raise ValueError(f"no value for parameter {path_name(path)} (layer {layer}) and "
                             "no default")
        return values.get(layer, default)

    return jax.tree_util.tree_map_with_path(value, params)


def kernel_only(params: PyTree, layers: Layers, values: Mapping[str, Any]) -> PyTree:
    """Like `per_layer`, but only a listed layer's kernel gets its value (``None`` elsewhere:
    no multiplier for `wdjax.decay`)."""
    kernels = {layer.kernel: layer.name for layer in table(params, layers)}
    return jax.tree_util.tree_map_with_path(lambda p, _: values.get(kernels.get(path_keys(p))),
                                            params)


def kind_labels(params: PyTree, layers: Layers, l1_layers: Sequence[str] = (),
                default: str = "l2") -> PyTree:
    """``'l1'`` for every parameter of the layers in `l1_layers`, `default` elsewhere."""
    return per_layer(params, layers, {name: "l1" for name in l1_layers}, default=default)


def variance_inverse_factors(params: PyTree, layers: Layers, dup_mult: float) -> dict[str, float]:
    """Per layer ``dup_mult ** -depth / Var(kernel)`` on the *initial* `params`, with the N-1
    variance as PyTorch's (docs/schemes.md#variance-inverse-coefficients)."""
    if not dup_mult > 0:
        raise ValueError(f"dup_mult must be > 0, got {dup_mult}")
    return {layer.name: float(dup_mult) ** -layer.depth
            / float(np.var(np.asarray(lookup(params, layer.kernel), np.float64), ddof=1))
            for layer in table(params, layers)}


def variance_inverse_coefficients(params: PyTree, layers: Layers, base_decay: float,
                                  dup_mult: float) -> PyTree:
    """Coefficient tree ``base_decay * s / Var(kernel)``, shared by all of a layer's leaves."""
    factors = variance_inverse_factors(params, layers, dup_mult)
    return per_layer(params, layers, {k: base_decay * v for k, v in factors.items()},
                     default=base_decay)


def unit_cells(units: int, grid: int) -> np.ndarray:
    """(units, 2) cells ``(x, y)`` of each unit on a `grid` x `grid` map, filled in order,
    ``ceil(units / grid**2)`` per cell; cell ``c`` sits at ``(c mod grid, c // grid)``."""
    cell = np.arange(units) // math.ceil(units / grid**2)
    return np.stack([cell % grid, cell // grid], axis=1)


def topographic_distance(in_units: int, out_units: int, grid: int = 3) -> np.ndarray:
    """(in_units, out_units) ``floor`` of the Euclidean distance between units' grid cells."""
    diff = unit_cells(in_units, grid)[:, None, :] - unit_cells(out_units, grid)[None, :, :]
    return np.floor(np.sqrt((diff**2).sum(-1))).astype(np.int32)


def topographic_multiplier(kernel_shape: tuple[int, ...], base: Any, grid: int = 3) -> Any:
    """Element-wise multiplier ``base ** distance`` (docs/schemes.md#topographic-multiplier)
    for an HWIO or IO kernel, shaped ``(1, ..., 1, C_in, C_out)`` to broadcast against it."""
    *lead, cin, cout = kernel_shape
    distance = topographic_distance(cin, cout, grid).astype(np.float32)
    return base ** distance.reshape((1,) * len(lead) + distance.shape)
