"""The named optimisers of the original experiments (REFERENCE section 5), as Optax chains.

``build(name, params=..., conf=..., lr=...)`` returns an ``optax.GradientTransformation``
whose numeric hyperparameters live in its state (``optax.inject_hyperparams``), so one
compiled step serves a whole sweep and runs can be batched with ``jax.vmap`` by stacking
their optimiser states. Which tensor gets which decay is `decay_spec`; the transforms are
in `wdjax.decay`; the label trees in `wdjax.labels`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax

from wdjax import decay, labels
from wdjax.models import Conf

PyTree = Any

HYPERPARAMS = ("lr", "momentum", "weight_decay", "L1_decay", "last1_mult", "last2_mult",
               "topo_base", "norm_ema")

_NAMES = (
    "SGD", "SGDL1", "SGDL1A", "SGD_var_dup4", "SGD_var_dup2", "SGD_var_dup1",
    "SGD_var_dup2_last2_mult", "SGD_var_dup2_last1_mult",
    "SGD_topo.a", "SGD_topo.b", "SGD_topo.ab",
    "LSSGD_var_dup2_last1_mult", "LSSGD_var_dup2_last1_mult_nwm", "Adam",
)
ALIASES = {"SGD1A": "SGDL1A", "SGD_var_dup": "SGD_var_dup4"}

DEFAULT_LR = {"Adam": 1e-3}  # the original forced Adam's lr to 0.001; 0.1 for the rest


def names() -> tuple[str, ...]:
    """The canonical scheme names (aliases: ``SGD1A`` -> ``SGDL1A``, ``SGD_var_dup`` -> dup4)."""
    return _NAMES


def canonical_name(name: str) -> str:
    """`name` resolved through the aliases; ValueError listing the choices if unknown."""
    name = ALIASES.get(name, name)
    if name not in _NAMES:
        raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(_NAMES)} "
                         f"(aliases: {', '.join(ALIASES)})")
    return name


def default_lr(name: str) -> float:
    return DEFAULT_LR.get(canonical_name(name), 0.1)


class DecaySpec(NamedTuple):
    """What coupled decay a scheme adds: coefficient, kind and multiplier per leaf."""

    coefficients: PyTree  # per-leaf wd (scalar, possibly traced)
    kinds: PyTree         # per-leaf 'l1' / 'l2'
    multipliers: PyTree   # per-leaf element-wise M, or None


def _dup_mult(name: str) -> int | None:
    for m in (4, 2, 1):
        if f"var_dup{m}" in name:
            return m
    return None


def layer_factors(name: str, params: PyTree, conf: Conf) -> dict[str, float]:
    """Per-layer decay coefficient per unit of `weight_decay`, fixed at initialisation.

    For the variance-inverse schemes this is ``s / Var(initial kernel)`` (REFERENCE
    section 6); otherwise 1 for every layer. `params` must be the *initial* parameters.
    """
    name = canonical_name(name)
    dup = _dup_mult(name) or (2 if "topo" in name else None)
    if dup is None:
        return {layer: 1.0 for layer in params}
    return labels.variance_inverse_factors(params, conf, dup)


def decay_spec(name: str, *, params: PyTree, conf: Conf, factors: dict[str, float],
               weight_decay: Any, L1_decay: Any, last1_mult: Any = 1.0,
               last2_mult: Any = 1.0, topo_base: Any = 2.0) -> DecaySpec:
    """The coupled-decay trees of scheme `name` (values may be traced)."""
    name = canonical_name(name)
    layers = list(params)
    weights = [w for w in labels.weight_layers(conf) if w in params]
    coef = {layer: weight_decay * factors.get(layer, 1.0) for layer in layers}
    l1_layers: list[str] = []
    if name == "SGDL1":
        l1_layers = labels.early_layers(conf)
    elif name in ("SGDL1A",):
        l1_layers = layers
    for layer in l1_layers:
        coef[layer] = L1_decay
    if name.endswith("last2_mult"):
        for layer in weights[-2:]:
            coef[layer] = coef[layer] * last2_mult
    if "last1_mult" in name or "topo" in name:
        coef[weights[-1]] = coef[weights[-1]] * last1_mult
    topo_layers = {"SGD_topo.a": weights[-2:-1], "SGD_topo.b": weights[-3:-2],
                   "SGD_topo.ab": weights[-3:-1]}.get(name, [])
    multipliers = None
    if topo_layers:
        mult = {layer: labels.topographic_multiplier(params[layer]["conv"]["kernel"].shape,
                                                     topo_base) for layer in topo_layers}
        multipliers = labels.kernel_only(params, mult)
    return DecaySpec(labels.per_layer(params, coef), labels.kind_labels(params, l1_layers),
                     multipliers)


def _check(name: str, value: Any, low: float, high: float = math.inf,
           low_open: bool = False, high_open: bool = True) -> None:
    if isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer):
        value = float(value)
    if not isinstance(value, int | float):
        return  # traced values are checked by whoever made them
    ok = math.isfinite(value) and (value > low if low_open else value >= low) and (
        value < high if high_open else value <= high)
    if not ok:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(f"{name} must be a finite number in {lo}{low}, {high}{hi}, got {value}")


def validate_hyperparams(**hp: Any) -> None:
    """ValueError naming the first bad hyperparameter and its allowed range."""
    if not callable(hp.get("lr")):
        _check("lr", hp.get("lr"), 0.0, low_open=True)
    for key in ("weight_decay", "L1_decay", "last1_mult", "last2_mult"):
        if key in hp:
            _check(key, hp[key], 0.0)
    if "topo_base" in hp:
        _check("topo_base", hp["topo_base"], 0.0, low_open=True)
    for key in ("momentum", "norm_ema"):
        if key in hp:
            _check(key, hp[key], 0.0, 1.0)


def _sgd_chain(name: str, spec: DecaySpec, lr: Any, momentum: Any,
               norm_ema: Any) -> optax.GradientTransformation:
    """The SGD-family update of REFERENCE section 4 for one scheme."""
    l1_mask = jax.tree.map(lambda k: k == "l1", spec.kinds)
    has_l1 = any(jax.tree.leaves(l1_mask))
    return optax.chain(
        decay.add_decay(*spec),
        optax.trace(decay=momentum),
        *([decay.normalize_updates(norm_ema, weight_norm=not name.endswith("_nwm"))]
          if name.startswith("LSSGD") else []),
        optax.scale_by_learning_rate(lr),
        *([decay.clip_sign_crossing(l1_mask)] if has_l1 else []),
    )


def build(
    name: str, *, params: PyTree, conf: Conf, lr: float | Callable | None = None,
    momentum: float = 0.0, weight_decay: float = 5e-4, L1_decay: float = 5e-6,
    last1_mult: float = 1.0, last2_mult: float = 1.0, topo_base: float = 2.0,
    norm_ema: float = 0.98, separate_decay: bool = False,
) -> optax.GradientTransformation:
    """The named optimiser `name` for a model with initial parameters `params`.

    Args:
      name: one of `names()` (or an alias).
      params: the *initial* parameters: variance-inverse coefficients are measured on them
        once, here, and stay fixed (pass the initial params again when resuming).
      conf: the model's layer list (pool positions and layer order matter).
      lr: a float or an Optax schedule; ``None`` -> 0.1 (Adam: 0.001).
      momentum, weight_decay, L1_decay, last1_mult, last2_mult, topo_base, norm_ema:
        REFERENCE section 5; stored in the optimiser state (``state.hyperparams``) so they
        can differ per run under ``jax.vmap`` without recompiling.
      separate_decay: Adam only; decoupled (AdamW-style) instead of L2 in the gradient.

    Returns:
      An ``optax.GradientTransformation`` whose ``update`` needs ``params``.
    """
    name = canonical_name(name)
    lr = default_lr(name) if lr is None else lr
    hp = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, L1_decay=L1_decay,
              last1_mult=last1_mult, last2_mult=last2_mult, topo_base=topo_base,
              norm_ema=norm_ema)
    validate_hyperparams(**hp)
    factors = layer_factors(name, params, conf)
    shapes = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)

    def factory(lr, momentum, weight_decay, L1_decay, last1_mult, last2_mult, topo_base,
                norm_ema):
        spec = decay_spec(name, params=shapes, conf=conf, factors=factors,
                          weight_decay=weight_decay, L1_decay=L1_decay,
                          last1_mult=last1_mult, last2_mult=last2_mult, topo_base=topo_base)
        if name != "Adam":
            return _sgd_chain(name, spec, lr, momentum, norm_ema)
        adam = optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)
        if separate_decay:
            return optax.chain(adam, decay.add_decay(*spec), optax.scale_by_learning_rate(lr))
        return optax.chain(decay.add_decay(*spec), adam, optax.scale_by_learning_rate(lr))

    return optax.inject_hyperparams(factory)(**hp)


def hyperparams(opt_state: Any) -> dict[str, jax.Array]:
    """The current hyperparameters stored in a state made by `build` (lr after schedule)."""
    return dict(opt_state.hyperparams)


def spec_from_state(name: str, opt_state: Any, params: PyTree, conf: Conf,
                    factors: dict[str, float]) -> DecaySpec:
    """The `DecaySpec` a built scheme is applying right now (for monitors)."""
    hp = opt_state.hyperparams
    return decay_spec(name, params=params, conf=conf, factors=factors,
                      weight_decay=hp["weight_decay"], L1_decay=hp["L1_decay"],
                      last1_mult=hp["last1_mult"], last2_mult=hp["last2_mult"],
                      topo_base=hp["topo_base"])
