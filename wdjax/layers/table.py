"""The layer table: which weight layers a model has, in call order, and what each owns.

Decay schemes state their rules on this table (the last k layers, the early layers, a
layer's depth and fan-in), never on parameter names, so they apply to any model:

* `trace_layers` builds it for any Flax linen model from one abstract trace
  (``jax.eval_shape`` under ``flax.linen.intercept_methods``: no FLOPs);
* `conf_layers` builds it from the notebook VGG's layer list (the same table);
* a `LayerTable` can also be written by hand for any pytree (Equinox, Haiku, NNX state).

A weight layer is a module owning a ``kernel``. It owns the parameters of the largest
enclosing module that holds no other kernel (its bias, and for the VGG its BatchNorm), plus
those of every normalisation module called after it and before the next weight layer: this
is how the original grouped BatchNorm with its conv.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax

from wdjax.decay.trees import lookup, path_keys

PyTree = Any
Path = tuple[str, ...]
NORM_TYPES: tuple[type, ...] = (nn.BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


@dataclasses.dataclass(frozen=True)
class Layer:
    """One weight layer.

    ``depth`` is ``log2(model input spatial size / this layer's input spatial size)``
    (spatial size: the geometric mean of the spatial axes; none counts as 1), so each 2x2
    pool or stride-2 conv before a layer adds 1. ``normalized`` says a normalisation module
    follows it, which makes its kernel scale-invariant.
    """

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
        """Layers whose depth is below the largest depth of any layer that still sees a map.

        A layer "sees a map" when its input's spatial size is above 1, i.e. its depth is
        below the depth of a fully pooled input. For the VGG: conv1_1 .. conv4_2.
        """
        full = max(layer.depth for layer in self.layers)
        seeing = [layer.depth for layer in self.layers if layer.depth < full]
        cut = max(seeing, default=-math.inf)
        return [layer for layer in self.layers if layer.depth < cut]

    def owners(self) -> dict[Path, str]:
        """``{parameter path: layer name}`` for every owned parameter."""
        return {path: layer.name for layer in self.layers for path in layer.params}


def _leaf_paths(tree: PyTree) -> list[Path]:
    return [path_keys(path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)]


def _spatial_size(shape: Sequence[int]) -> float:
    spatial = list(shape[1:-1])
    return math.prod(spatial) ** (1 / len(spatial)) if spatial else 1.0


def _layer_name(kernel_module: Path, kernel_modules: list[Path]) -> Path:
    """The outermost enclosing module holding no other kernel (the module itself at least)."""
    for cut in range(len(kernel_module) + 1):
        prefix = kernel_module[:cut]
        if cut and sum(m[:cut] == prefix for m in kernel_modules) == 1:
            return prefix
    return kernel_module


def trace_layers(model: nn.Module, variables: PyTree, sample_input: Any,
                 norm_types: tuple[type, ...] = NORM_TYPES, **apply_kwargs: Any) -> LayerTable:
    """The `LayerTable` of a Flax linen model, from one abstract trace (no FLOPs).

    `sample_input` fixes the input shape (NHWC images, or (N, features)); `apply_kwargs`
    go to ``model.apply`` (e.g. ``train=False``). Modules of `norm_types` (and subclasses;
    wdjax's own BatchNorm is one) count as normalisation modules.
    """
    from wdjax.models import BatchNorm

    norm_types = (*norm_types, BatchNorm)
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
    params = variables["params"]
    return _table_from_calls(params, calls, _spatial_size(sample_input.shape))


def _table_from_calls(params: PyTree, calls: list, input_size: float) -> LayerTable:
    seen: set[Path] = set()
    ordered = []
    for path, role, shape in calls:
        if role and path not in seen:  # a shared module counts once, at its first call
            seen.add(path)
            ordered.append((path, role, shape))
    kernel_modules = [p for p, role, _ in ordered if role == "weight"]
    leaves = _leaf_paths(params)
    names = {m: _layer_name(m, kernel_modules) for m in kernel_modules}
    taken: set[Path] = set()
    layers: list[dict] = []
    for path, role, shape in ordered:
        if role == "weight":
            prefix = names[path]
            own = [leaf for leaf in leaves if leaf[:len(prefix)] == prefix]
            kernel = lookup(params, (*path, "kernel"))
            layers.append(dict(
                name="/".join(prefix), kernel=(*path, "kernel"),
                kind="conv" if kernel.ndim > 2 else "dense",
                fan_in=math.prod(kernel.shape[:-1]),
                depth=math.log2(input_size / _spatial_size(shape)), params=own,
                normalized=False))
            taken.update(own)
        elif role == "norm" and layers:
            extra = [leaf for leaf in leaves if leaf[:len(path)] == path and leaf not in taken]
            layers[-1]["params"] = layers[-1]["params"] + extra
            layers[-1]["normalized"] = True
            taken.update(extra)
    return LayerTable(tuple(Layer(**{**d, "params": tuple(d["params"])}) for d in layers))


def conf_layers(conf: Sequence[tuple[str, tuple[Any, Any]]], params: PyTree) -> LayerTable:
    """The `LayerTable` of the notebook VGG from its layer list (equals `trace_layers`')."""
    from wdjax.models import layer_kind

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
