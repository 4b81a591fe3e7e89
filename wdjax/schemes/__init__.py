"""The named optimisers: `Scheme` rows (`table`) built into Optax chains for any model's layer
table, with the hyperparameters of `hparams` and the per-layer factors in the optimiser state
(``optax.inject_hyperparams``), so one compiled step serves a whole sweep."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from wdjax import decay
from wdjax.decay.trees import lookup, path_keys
from wdjax.layers import LayerTable, labels
from wdjax.schemes import hparams
from wdjax.schemes.table import ALIASES, DECAY_FORMS, SCHEMES, Scheme, get, names

__all__ = ["ALIASES", "COEFFICIENT_RULES", "DECAY_FORMS", "SCHEMES", "DecaySpec", "Scheme",
           "build", "decay_spec", "get", "initial_params", "layer_factors", "layer_table",
           "names", "resolve", "spec_from_state", "state_factors"]
PyTree = Any


class DecaySpec(NamedTuple):
    """What coupled decay a scheme adds: coefficient, kind and multiplier per leaf."""

    coefficients: PyTree  # per-leaf wd (scalar, possibly traced)
    kinds: PyTree  # per-leaf 'l1' / 'l2'
    multipliers: PyTree  # per-leaf element-wise M, or None


def layer_table(params: PyTree, layers: LayerTable | None = None,
                conf: Sequence | None = None) -> LayerTable:
    """`layers`, or the table of the VGG layer list `conf`; ValueError if neither is given."""
    if layers is None and conf is None:
        raise ValueError("a scheme needs the model's layers: pass layers=labels.trace_layers("
                         "model, variables, sample_input) or conf= (the VGG's layer list)")
    return labels.table(params, conf if layers is None else layers)


FAN_IN_UNIT = 1152  # the fan-in at which a ``fan_in`` factor is 1 (the VGG's conv2_1)

# How each coefficient rule turns the initial params and layer table into per-layer factors.
COEFFICIENT_RULES: Mapping[str, Callable[[PyTree, LayerTable, Scheme], dict[str, float]]] = {
    "uniform": lambda params, tab, scheme: {name: 1.0 for name in tab.names},
    "variance_inverse": lambda params, tab, scheme: labels.variance_inverse_factors(
        params, tab, scheme.dup),
    "fan_in": lambda params, tab, scheme: {lay.name: lay.fan_in / FAN_IN_UNIT for lay in tab},
}


def layer_factors(scheme: str | Scheme, params: PyTree, layers: LayerTable | None = None,
                  conf: Sequence | None = None) -> dict[str, float]:
    """Per-layer decay coefficient per unit of `weight_decay` (`COEFFICIENT_RULES`), measured
    on the *initial* `params` (docs/schemes.md#variance-inverse-coefficients)."""
    scheme = get(scheme)
    return COEFFICIENT_RULES[scheme.coefficients](params, layer_table(params, layers, conf), scheme)


def decay_spec(scheme: str | Scheme, *, params: PyTree, layers: LayerTable | None = None,
               conf: Sequence | None = None, factors: Mapping[str, float] | None = None,
               **hyperparams: Any) -> DecaySpec:
    """The coupled-decay trees of `scheme` for `params` (hyperparameters may be traced; `factors`
    measured on `params` when not given); leaves no layer owns get the default decay."""
    scheme, tab = get(scheme), layer_table(params, layers, conf)
    hp = {**hparams.defaults(), **hyperparams}
    factors = layer_factors(scheme, params, tab) if factors is None else factors
    l1_layers = {"none": [], "early": [layer.name for layer in tab.early()],
                 "all": tab.names}[scheme.l1_group]
    coef = {name: hp["weight_decay"] * factors.get(name, 1.0) for name in tab.names}
    coef |= {name: hp["L1_decay"] for name in l1_layers}
    for on, k, mult in ((scheme.last2, 2, "last2_mult"), (scheme.last1, 1, "last1_mult")):
        for layer in tab.last(k) if on else []:
            coef[layer.name] = coef[layer.name] * hp[mult]
    all_l1 = scheme.l1_group == "all"
    coefficients = labels.per_layer(params, tab, coef,
                                    default=hp["L1_decay"] if all_l1 else hp["weight_decay"])
    kinds = labels.kind_labels(params, tab, l1_layers, default="l1" if all_l1 else "l2")
    mult = {layer.name: labels.topographic_multiplier(lookup(params, layer.kernel).shape,
                                                      hp["topo_base"])
            for layer in tab.from_end(scheme.topographic)}
    return DecaySpec(coefficients, kinds, labels.kernel_only(params, tab, mult))


def _direction(scheme: Scheme, hp: Mapping[str, Any]) -> optax.GradientTransformation:
    """The base update's direction: the momentum buffer (SGD) or Adam's, per its blocks."""
    if scheme.base_optimizer == "sgd":
        return optax.trace(decay=hp["momentum"])
    if scheme.adam_blocks == "element":
        return optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)
    return decay.scale_by_adam_blocks(scheme.adam_blocks, b1=0.9, b2=0.999, eps=1e-8)


def _rotating(params: PyTree) -> PyTree:
    # Static flags (kernels), not the decay's sign: a traced decay is unknown at trace time
    # (`decay.rotational` gives a leaf whose decay is 0 the plain update, per step).
    return jax.tree.map(lambda p: len(p.shape) >= 2, params)


def _chain(scheme: Scheme, spec: DecaySpec, hp: Mapping[str, Any], lr_max: float | None,
           shapes: PyTree) -> optax.GradientTransformation:
    """The update of one scheme: its direction with the decay of its form, normalisation,
    the learning rate and any projection; or the rotational update (docs/equilibrium.md)."""
    if scheme.rotational != "none":
        adam = scheme.base_optimizer == "adam"
        return decay.rotational(
            _direction(scheme, hp), learning_rate=hp["lr"], weight_decay=spec.coefficients,
            momentum=0.0 if adam else hp["momentum"], b1=0.9 if adam else None,
            per_neuron=scheme.rotational == "neuron", zero_mean=scheme.zero_mean,
            update_norm_decay=scheme.update_norm_decay, rotational=_rotating(shapes))
    # hp["lr"] is the current rate (inject_hyperparams evaluates the schedule).
    before, middle, after = DECAY_FORMS[scheme.decay_form].build(*spec, hp["lr"], lr_max)
    if scheme.normalize != "none":
        ema = 0.0 if scheme.normalize == "current" else hp["norm_ema"]
        middle = [decay.normalize_updates(ema, times_weight_norm=scheme.times_weight_norm,
                                          per_unit=scheme.normalize_per_unit), *middle]
    if scheme.norm_constraint != "none":
        after = [*after, decay.constrain_norms(None, per_unit=scheme.norm_constraint == "unit")]
    return optax.chain(*before, _direction(scheme, hp), *middle,
                       optax.scale_by_learning_rate(hp["lr"]), *after)


def resolve(scheme: str | Scheme, separate_decay: bool = False) -> Scheme:
    """The scheme, with decoupled decay when `separate_decay` (coupled Adam schemes only)."""
    scheme = get(scheme)
    if not separate_decay:
        return scheme
    if scheme.base_optimizer != "adam" or scheme.decay_form not in ("coupled", "decoupled"):
        raise ValueError(f"separate_decay applies to Adam schemes with coupled or decoupled "
                         f"decay only, not {scheme.name!r} ({scheme.base_optimizer}, "
                         f"{scheme.decay_form})")
    return dataclasses.replace(scheme, decay_form="decoupled")


def initial_params(scheme: str | Scheme, params: PyTree) -> PyTree:
    """`params`, kernels centred per unit for a rotational scheme with `Scheme.zero_mean` (build
    the scheme on these; docs/equilibrium.md#the-rotational-update)."""
    scheme = get(scheme)
    if scheme.rotational == "none" or not scheme.zero_mean:
        return params
    return decay.center_units(params, _rotating(params), scheme.rotational == "neuron")


def _equilibrium_monitor(scheme: Scheme, spec: DecaySpec, hp: Mapping[str, Any],
                         tab: LayerTable) -> optax.GradientTransformation:
    """`decay.equilibrium_monitor`, predicting (docs/equilibrium.md#equilibrium-angular-update)
    for normalised L2 kernels of coupled SGD or decoupled Adam, and a rotational row's kernels."""
    adam, rotating = scheme.base_optimizer == "adam", scheme.rotational != "none"
    plain = (scheme.normalize, scheme.norm_constraint) == ("none", "none") and (
        scheme.decay_form == ("decoupled" if adam else "coupled"))
    kernels = {layer.kernel for layer in tab if rotating or layer.normalized}

    def decay_of(path, coefficient, kind):
        key = path_keys(path)
        return coefficient if (rotating or plain) and kind == "l2" and key in kernels else 0.0

    weight_decay = jax.tree_util.tree_map_with_path(decay_of, spec.coefficients, spec.kinds)
    return decay.equilibrium_monitor(hp["lr"], weight_decay, b1=0.9 if adam else None,
                                     momentum=0.0 if adam else hp["momentum"])


def build(scheme: str | Scheme, *, params: PyTree, layers: LayerTable | None = None,
          conf: Sequence | None = None, lr: float | Callable | None = None,
          max_learning_rate: float | None = None, steps: int | None = None,
          separate_decay: bool = False, monitor: bool = False,
          factors: Mapping[str, float] | None = None,
          **hyperparams: Any) -> optax.GradientTransformation:
    """The optimiser of `scheme` (a name, alias or `Scheme`) for a model.

    `params`: the *initial* parameters (`initial_params`), on which the per-layer factors are
    measured (or given as `factors`); `layers` the model's `LayerTable`, or `conf` the VGG's
    list; `lr` a float or schedule (None: the scheme's); `max_learning_rate` the ``lr_max`` of
    the independent / corrected forms (default: `lr`, or the schedule's maximum over `steps`).
    `separate_decay`: Adam's decay decoupled; `monitor`: append `decay.equilibrium_monitor`.
    `hyperparams`: the traced rows of `wdjax.schemes.hparams.TABLE`.
    """
    scheme, tab = resolve(scheme, separate_decay), layer_table(params, layers, conf)
    lr = scheme.default_lr if lr is None else lr
    if unknown := set(hyperparams) - set(hparams.TRACED):
        raise ValueError(f"unknown hyperparameters {sorted(unknown)}; known: "
                         f"{', '.join(hparams.TRACED)}")
    hp = {h: hparams.BY_NAME[h].default for h in hparams.TRACED} | hyperparams
    hparams.validate(lr=lr, **hp)
    lr_max = max_learning_rate
    if lr_max is None and not callable(lr):
        lr_max = lr
    elif lr_max is None and steps is not None:
        lr_max = float(jnp.max(jax.vmap(lr)(jnp.arange(steps))))
    if lr_max is None and DECAY_FORMS[scheme.decay_form].peak:
        raise ValueError(f"{scheme.name}'s decay form {scheme.decay_form!r} needs the "
                         "schedule's peak: pass max_learning_rate= or steps= (the run's length)")
    factors = layer_factors(scheme, params, tab) if factors is None else dict(factors)
    shapes = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)

    def factory(layer_factors, **values):
        spec = decay_spec(scheme, params=shapes, layers=tab,
                          factors=dict(zip(tab.names, layer_factors, strict=True)), **values)
        tx = _chain(scheme, spec, values, lr_max, shapes)
        return optax.chain(tx, _equilibrium_monitor(scheme, spec, values, tab)) if monitor else tx

    # inject_hyperparams reads the factory's signature. Factors in the state: seeds share one
    # compiled update under vmap, and a checkpoint restores the factors its run started with.
    factory.__signature__ = inspect.Signature([
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY)
        for name in ("lr", *hp, "layer_factors")])
    return optax.inject_hyperparams(factory)(
        lr=lr, **hp, layer_factors=np.array([factors[n] for n in tab.names], np.float64))


def state_factors(opt_state: Any, layers: LayerTable) -> dict[str, Any]:
    """The per-layer factors a built scheme's state carries (fixed at initialisation)."""
    return dict(zip(layers.names, opt_state.hyperparams["layer_factors"], strict=True))


def spec_from_state(scheme: str | Scheme, opt_state: Any, params: PyTree,
                    layers: LayerTable) -> DecaySpec:
    """The `DecaySpec` a built scheme applies now (hyperparameters and factors from its state)."""
    hp = {k: v for k, v in opt_state.hyperparams.items() if k in hparams.TRACED}
    return decay_spec(scheme, params=params, layers=layers,
                      factors=state_factors(opt_state, layers), **hp)
