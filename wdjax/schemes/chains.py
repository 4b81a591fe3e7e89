"""The named optimisers (`Scheme` rows of `wdjax.schemes.table`) built into Optax chains.

A `Scheme` says, as data, what decay goes where (coefficient rule, L1 group, last-layer
multipliers, topographic layers), in which form (coupled, decoupled, independent,
corrected, cautious, proximal, toward the initial weights), around which base update (SGD
as docs/schemes.md#one-update-step, or Adam with per-element / unit / tensor second
moments), with or without normalisation, a norm constraint or the rotational update. Its
rules are stated on a layer table (`wdjax.layers.table`), never on parameter names, so every
scheme applies to any model:

    layers = labels.trace_layers(model, variables, sample_batch, train=False)
    tx = schemes.build("SGD_var_dup2_last1_mult", params=params, layers=layers, lr=0.1)

``conf=`` (the VGG's layer list) works in place of ``layers=``. The numeric hyperparameters
(the traced rows of `wdjax.schemes.hparams.TABLE`) live in the optimiser state
(``optax.inject_hyperparams``), so one compiled step serves a whole sweep and runs can be
batched with ``jax.vmap``. A user's own `Scheme` works without registering it.
"""

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

PyTree = Any
__all__ = ["ALIASES", "DECAY_FORMS", "SCHEMES", "Scheme", "build", "decay_spec", "get",
           "initial_params", "layer_factors", "names", "resolve", "spec_from_state"]


class DecaySpec(NamedTuple):
    """What coupled decay a scheme adds: coefficient, kind and multiplier per leaf."""

    coefficients: PyTree  # per-leaf wd (scalar, possibly traced)
    kinds: PyTree  # per-leaf 'l1' / 'l2'
    multipliers: PyTree  # per-leaf element-wise M, or None


def layer_table(params: PyTree, layers: LayerTable | None = None,
                conf: Sequence | None = None) -> LayerTable:
    """`layers`, or the table of the VGG layer list `conf`; ValueError if neither is given."""
    if layers is not None:
        return layers
    if conf is not None:
        return labels.table(params, conf)
    raise ValueError("a scheme needs the model's layers: pass layers=labels.trace_layers("
                     "model, variables, sample_input) or conf= (the VGG's layer list)")


FAN_IN_UNIT = 1152
"""The fan-in at which a ``fan_in`` scheme's factor is 1 (the VGG's conv2_1: 3 * 3 * 128)."""


def _fan_in_factors(params: PyTree, tab: LayerTable, scheme: Scheme) -> dict[str, float]:
    return {layer.name: layer.fan_in / FAN_IN_UNIT for layer in tab}


# How each coefficient rule turns the initial params and layer table into per-layer factors.
COEFFICIENT_RULES: Mapping[str, Callable[[PyTree, LayerTable, Scheme], dict[str, float]]] = {
    "uniform": lambda params, tab, scheme: {name: 1.0 for name in tab.names},
    "variance_inverse": lambda params, tab, scheme: labels.variance_inverse_factors(
        params, tab, scheme.dup),
    "fan_in": _fan_in_factors,
}


def layer_factors(scheme: str | Scheme, params: PyTree, layers: LayerTable | None = None,
                  conf: Sequence | None = None) -> dict[str, float]:
    """Per-layer decay coefficient per unit of `weight_decay`, fixed at initialisation.

    The scheme's coefficient rule (`COEFFICIENT_RULES`): ``uniform`` 1; ``variance_inverse``
    ``dup ** -depth / Var(initial kernel)`` (docs/schemes.md#variance-inverse-coefficients);
    ``fan_in`` ``fan_in / FAN_IN_UNIT``. `params` must be the *initial* parameters.
    """
    scheme, tab = get(scheme), layer_table(params, layers, conf)
    return COEFFICIENT_RULES[scheme.coefficients](params, tab, scheme)


def _coefficients(scheme: Scheme, tab: LayerTable, factors: Mapping[str, float],
                  l1_layers: list[str], hp: Mapping[str, Any]) -> dict[str, Any]:
    coef = {name: hp["weight_decay"] * factors.get(name, 1.0) for name in tab.names}
    for name in l1_layers:
        coef[name] = hp["L1_decay"]
    if scheme.last2:
        for layer in tab.last(2):
            coef[layer.name] = coef[layer.name] * hp["last2_mult"]
    if scheme.last1:
        for layer in tab.last(1):
            coef[layer.name] = coef[layer.name] * hp["last1_mult"]
    return coef


def decay_spec(scheme: str | Scheme, *, params: PyTree, layers: LayerTable | None = None,
               conf: Sequence | None = None, factors: Mapping[str, float] | None = None,
               **hyperparams: Any) -> DecaySpec:
    """The coupled-decay trees of `scheme` for `params` (hyperparameter values may be traced).

    `factors` are the per-layer factors fixed at initialisation (`layer_factors`); they are
    measured on `params` when not given. Leaves no layer owns get ``weight_decay`` (L1 with
    ``L1_decay`` when the scheme's L1 group is ``all``).
    """
    scheme, tab = get(scheme), layer_table(params, layers, conf)
    hp = {**hparams.defaults(), **hyperparams}
    if factors is None:
        factors = layer_factors(scheme, params, tab)
    l1_layers = {"none": [], "early": [layer.name for layer in tab.early()],
                 "all": tab.names}[scheme.l1_group]
    all_l1 = scheme.l1_group == "all"
    coef = _coefficients(scheme, tab, factors, l1_layers, hp)
    coefficients = labels.per_layer(params, tab, coef,
                                    default=hp["L1_decay"] if all_l1 else hp["weight_decay"])
    kinds = labels.per_layer(params, tab, {name: "l1" for name in l1_layers},
                             default="l1" if all_l1 else "l2")
    mult = {}
    for layer in tab.from_end(scheme.topographic):
        shape = lookup(params, layer.kernel).shape
        mult[layer.name] = labels.topographic_multiplier(shape, hp["topo_base"])
    return DecaySpec(coefficients, kinds, labels.kernel_only(params, tab, mult))


def _direction(scheme: Scheme, hp: Mapping[str, Any]) -> optax.GradientTransformation:
    """The base update's direction: the momentum buffer (SGD) or Adam's, per its blocks."""
    if scheme.base_optimizer == "sgd":
        return optax.trace(decay=hp["momentum"])
    if scheme.adam_blocks == "element":
        return optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)
    return decay.scale_by_adam_blocks(scheme.adam_blocks, b1=0.9, b2=0.999, eps=1e-8)


def _rotational(scheme: Scheme, spec: DecaySpec, hp: Mapping[str, Any],
                shapes: PyTree) -> optax.GradientTransformation:
    """The rotational update (docs/equilibrium.md) around the scheme's direction; every leaf
    with ndim >= 2 rotates."""
    adam = scheme.base_optimizer == "adam"
    return decay.rotational(
        _direction(scheme, hp), learning_rate=hp["lr"], weight_decay=spec.coefficients,
        momentum=0.0 if adam else hp["momentum"], b1=0.9 if adam else None,
        per_neuron=scheme.rotational == "neuron", zero_mean=scheme.zero_mean,
        update_norm_decay=scheme.update_norm_decay, rotational=_rotating(shapes))


def _rotating(params: PyTree) -> PyTree:
    # Static flags (kernels), not the decay's sign: a traced decay is unknown at trace time
    # (`decay.rotational` gives a leaf whose decay is 0 the plain update, per step).
    return jax.tree.map(lambda p: len(p.shape) >= 2, params)


def _chain(scheme: Scheme, spec: DecaySpec, hp: Mapping[str, Any], lr_max: float | None,
           shapes: PyTree) -> optax.GradientTransformation:
    """The update of one scheme: its direction (SGD as docs/schemes.md#one-update-step, or
    Adam) with the decay of its form, normalisation, the learning rate and any projection
    around it."""
    if scheme.rotational != "none":
        return _rotational(scheme, spec, hp, shapes)
    # hp["lr"] is the current rate (inject_hyperparams evaluates the schedule).
    before, middle, after = DECAY_FORMS[scheme.decay_form].build(*spec, hp["lr"], lr_max)
    normalize = []
    if scheme.normalize != "none":
        ema = 0.0 if scheme.normalize == "current" else hp["norm_ema"]
        normalize = [decay.normalize_updates(ema, times_weight_norm=scheme.times_weight_norm,
                                             per_unit=scheme.normalize_per_unit)]
    constrain = ([decay.constrain_norms(None, per_unit=scheme.norm_constraint == "unit")]
                 if scheme.norm_constraint != "none" else [])
    return optax.chain(*before, _direction(scheme, hp), *normalize, *middle,
                       optax.scale_by_learning_rate(hp["lr"]), *after, *constrain)


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
    """The parameters a run of `scheme` starts from: `params`, with every kernel (ndim >= 2)
    centred per unit when the scheme says so (`Scheme.centers_init`: rotational with
    ``zero_mean``, docs/equilibrium.md#the-rotational-update). Build the scheme on the result."""
    scheme = get(scheme)
    if not scheme.centers_init:
        return params
    return decay.center_units(params, _rotating(params), scheme.rotational == "neuron")


def _equilibrium_monitor(scheme: Scheme, spec: DecaySpec, hp: Mapping[str, Any],
                         tab: LayerTable) -> optax.GradientTransformation:
    """`decay.equilibrium_monitor` with a prediction where the scheme's angular update has
    one (docs/equilibrium.md#equilibrium-angular-update): coupled SGD and decoupled Adam on
    L2 kernels followed by a normalisation (scale-invariant), and every decayed kernel of a
    rotational row (which holds it there). Elsewhere the decay given to it is 0: no
    prediction."""
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


def _peak(lr: float | Callable, steps: int | None) -> float | None:
    """``lr_max``: a constant `lr`, or a schedule's maximum over `steps` steps (None without)."""
    if not callable(lr):
        return lr
    return None if steps is None else float(jnp.max(jax.vmap(lr)(jnp.arange(steps))))


def build(scheme: str | Scheme, *, params: PyTree, layers: LayerTable | None = None,
          conf: Sequence | None = None, lr: float | Callable | None = None,
          max_learning_rate: float | None = None, steps: int | None = None,
          separate_decay: bool = False, monitor: bool = False,
          factors: Mapping[str, float] | None = None,
          **hyperparams: Any) -> optax.GradientTransformation:
    """The optimiser of `scheme` for a model with initial parameters `params`.

    Args:
      scheme: a name of `names()` (or an alias), or a `Scheme`.
      params: the *initial* parameters (`initial_params` of the model's): variance-inverse
        coefficients are measured on them once, here, and stay fixed (pass the same initial
        params again when resuming).
      layers: the model's `LayerTable` (`labels.trace_layers`); or `conf`, the VGG's list.
      lr: a float or an Optax schedule; ``None``: the scheme's default.
      max_learning_rate: ``lr_max`` of the independent and corrected decay forms (the
        schedule's peak); default a constant `lr` itself, or a schedule's maximum over
        `steps`, the run's length. Those forms need one of them with a schedule.
      separate_decay: Adam schemes: decoupled (AdamW-style) decay.
      monitor: end the chain with `decay.equilibrium_monitor` (updates unchanged; its
        measurements are read from the state with ``optax.tree.get``).
      factors: the per-layer factors (`layer_factors`) when already known, e.g. read back
        from a run's record on resume; by default measured on `params`.
      **hyperparams: the traced rows of `wdjax.schemes.hparams.TABLE` (defaults from the table);
        stored in the optimiser state, so they may differ per run under ``jax.vmap``.

    Returns:
      An ``optax.GradientTransformation`` whose ``update`` needs ``params``.
    """
    scheme, tab = resolve(scheme, separate_decay), layer_table(params, layers, conf)
    lr = scheme.default_lr if lr is None else lr
    unknown = set(hyperparams) - set(hparams.TRACED)
    if unknown:
        raise ValueError(f"unknown hyperparameters {sorted(unknown)}; known: "
                         f"{', '.join(hparams.TRACED)}")
    hp = {h: hparams.BY_NAME[h].default for h in hparams.TRACED} | hyperparams
    hparams.validate(lr=lr, **hp)
    lr_max = _peak(lr, steps) if max_learning_rate is None else max_learning_rate
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

    # inject_hyperparams reads the factory's signature to find the hyperparameters. The
    # factors live in the state too: runs from different seeds (different initial weights,
    # so different variance-inverse factors) then share one compiled update under vmap, and
    # a restored checkpoint brings back the factors its run started with.
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
    """The `DecaySpec` a built scheme is applying right now (hyperparameters and factors
    read from its state; for monitors)."""
    hp = {k: v for k, v in opt_state.hyperparams.items() if k in hparams.TRACED}
    return decay_spec(scheme, params=params, layers=layers,
                      factors=state_factors(opt_state, layers), **hp)
