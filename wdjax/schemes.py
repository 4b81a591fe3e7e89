"""The named optimisers as a table of `Scheme` rows, built into Optax chains for any model.

A `Scheme` says, as data, what decay goes where (coefficient rule, L1 group, last-layer
multipliers, topographic layers) around which base update (SGD as REFERENCE section 4, or
Adam), with or without layer-wise normalisation. Its rules are stated on a layer table
(`wdjax.layers`), never on parameter names, so every scheme applies to any model:

    layers = labels.trace_layers(model, variables, sample_batch, train=False)
    tx = schemes.build("SGD_var_dup2_last1_mult", params=params, layers=layers, lr=0.1)

``conf=`` (the VGG's layer list) works in place of ``layers=``. The numeric hyperparameters
(the traced rows of `wdjax.hparams.TABLE`) live in the optimiser state
(``optax.inject_hyperparams``), so one compiled step serves a whole sweep and runs can be
batched with ``jax.vmap``. A user's own `Scheme` works without registering it.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import optax

from wdjax import decay, hparams, labels
from wdjax.layers import LayerTable

PyTree = Any
_CHOICES = dict(base=("sgd", "adam"), coefficients=("uniform", "variance_inverse", "fan_in"),
                l1_group=("none", "early", "all"), normalize=("none", "current", "ema"))


@dataclasses.dataclass(frozen=True)
class Scheme:
    """One named optimiser as data (the fields are the whole of its behaviour)."""

    name: str
    base: str = "sgd"  # "sgd": REFERENCE section 4; "adam": Adam (0.9, 0.999, 1e-8)
    coefficients: str = "uniform"  # "variance_inverse": wd * dup ** -depth / Var(W0);
    #                                "fan_in": wd * fan_in / FAN_IN_REFERENCE
    dup: float = 2.0  # variance_inverse: the divisor per halving of the map
    l1_group: str = "none"  # "early" / "all": those layers get L1 with L1_decay
    last1: bool = False  # the last layer's coefficient times last1_mult
    last2: bool = False  # the last two layers' coefficients times last2_mult
    topographic: tuple[int, ...] = ()  # layers (from the end, -1 last) with M = b ** dist
    normalize: str = "none"  # "current" / "ema": layer-wise normalised updates (norm_ema)
    weight_norm: bool = True  # normalize: times ||p||
    decoupled: bool = False  # adam: decay after the Adam step (AdamW), not in the gradient
    default_lr: float = 0.1
    description: str = ""

    def __post_init__(self) -> None:
        for field, allowed in _CHOICES.items():
            if getattr(self, field) not in allowed:
                raise ValueError(f"scheme {self.name!r}: {field} must be one of "
                                 f"{', '.join(allowed)}, got {getattr(self, field)!r}")
        if any(not isinstance(i, int) or i >= 0 for i in self.topographic):
            raise ValueError(f"scheme {self.name!r}: topographic positions count from the "
                             f"end (-1 = last layer), got {self.topographic}")


_VAR2 = dict(coefficients="variance_inverse", dup=2.0)
SCHEMES: tuple[Scheme, ...] = (
    Scheme("SGD", description="L2 weight_decay everywhere"),
    Scheme("SGDL1", l1_group="early",
           description="L1 L1_decay on the early layers, L2 weight_decay on the rest"),
    Scheme("SGDL1A", l1_group="all", description="L1 L1_decay everywhere"),
    Scheme("SGD_var_dup4", coefficients="variance_inverse", dup=4.0,
           description="per layer weight_decay * 4 ** -depth / Var(W0)"),
    Scheme("SGD_var_dup2", **_VAR2, description="per layer weight_decay * 2 ** -depth / Var(W0)"),
    Scheme("SGD_var_dup1", coefficients="variance_inverse", dup=1.0,
           description="per layer weight_decay / Var(W0)"),
    Scheme("SGD_var_dup2_last2_mult", **_VAR2, last2=True,
           description="dup2, the last two layers times last2_mult"),
    Scheme("SGD_var_dup2_last1_mult", **_VAR2, last1=True,
           description="dup2, the last layer times last1_mult"),
    Scheme("SGD_topo.a", **_VAR2, last1=True, topographic=(-2,),
           description="last1_mult scheme + topographic multiplier on the 2nd-to-last layer"),
    Scheme("SGD_topo.b", **_VAR2, last1=True, topographic=(-3,),
           description="last1_mult scheme + topographic multiplier on the 3rd-to-last layer"),
    Scheme("SGD_topo.ab", **_VAR2, last1=True, topographic=(-3, -2),
           description="last1_mult scheme + topographic multipliers on both"),
    Scheme("LSSGD_var_dup2_last1_mult", **_VAR2, last1=True, normalize="ema",
           description="last1_mult scheme + layer-wise updates ||p|| / EMA ||d||"),
    Scheme("LSSGD_var_dup2_last1_mult_nwm", **_VAR2, last1=True, normalize="ema",
           weight_norm=False, description="same without the ||p|| factor"),
    Scheme("SGD_fanin", coefficients="fan_in",
           description="per layer weight_decay * fan_in / 1152 (conv2_1's fan-in)"),
    Scheme("Adam", base="adam", default_lr=1e-3,
           description="Adam + L2 in the gradient (decoupled with separate_decay)"),
)
ALIASES: Mapping[str, str] = {"SGD1A": "SGDL1A", "SGD_var_dup": "SGD_var_dup4"}
_BY_NAME = {s.name: s for s in SCHEMES}


def names() -> tuple[str, ...]:
    """The table's scheme names (aliases: ``SGD1A`` -> ``SGDL1A``, ``SGD_var_dup`` -> dup4)."""
    return tuple(_BY_NAME)


def get(scheme: str | Scheme) -> Scheme:
    """The `Scheme` for a name or alias (or the scheme itself); ValueError listing choices."""
    if isinstance(scheme, Scheme):
        return scheme
    found = _BY_NAME.get(ALIASES.get(scheme, scheme))
    if found is None:
        raise ValueError(f"unknown optimizer {scheme!r}; valid: {', '.join(_BY_NAME)} "
                         f"(aliases: {', '.join(ALIASES)})")
    return found


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


FAN_IN_REFERENCE = 1152
"""The fan-in at which a ``fan_in`` scheme's factor is 1 (the VGG's conv2_1: 3 * 3 * 128)."""


def _fan_in_factors(params: PyTree, tab: LayerTable, scheme: Scheme) -> dict[str, float]:
    return {layer.name: layer.fan_in / FAN_IN_REFERENCE for layer in tab}


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
    ``dup ** -depth / Var(initial kernel)`` (REFERENCE section 6); ``fan_in``
    ``fan_in / FAN_IN_REFERENCE``. `params` must be the *initial* parameters.
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
        kernel = params
        for key in layer.kernel:
            kernel = kernel[key]
        mult[layer.name] = labels.topographic_multiplier(kernel.shape, hp["topo_base"])
    return DecaySpec(coefficients, kinds, labels.kernel_only(params, tab, mult))


def _chain(scheme: Scheme, spec: DecaySpec, hp: Mapping[str, Any],
           decoupled: bool) -> optax.GradientTransformation:
    """The update of one scheme: REFERENCE section 4 (SGD) or Adam, around `spec`."""
    lr = hp["lr"]
    if scheme.base == "adam":
        adam = optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)
        if decoupled:
            return optax.chain(adam, decay.add_decay(*spec), optax.scale_by_learning_rate(lr))
        return optax.chain(decay.add_decay(*spec), adam, optax.scale_by_learning_rate(lr))
    l1_mask = jax.tree.map(lambda k: k == "l1", spec.kinds)
    ema = 0.0 if scheme.normalize == "current" else hp["norm_ema"]
    return optax.chain(
        decay.add_decay(*spec),
        optax.trace(decay=hp["momentum"]),
        *([decay.normalize_updates(ema, weight_norm=scheme.weight_norm)]
          if scheme.normalize != "none" else []),
        optax.scale_by_learning_rate(lr),
        *([decay.clip_sign_crossing(l1_mask)] if any(jax.tree.leaves(l1_mask)) else []),
    )


def build(scheme: str | Scheme, *, params: PyTree, layers: LayerTable | None = None,
          conf: Sequence | None = None, lr: float | Callable | None = None,
          separate_decay: bool = False, factors: Mapping[str, float] | None = None,
          **hyperparams: Any) -> optax.GradientTransformation:
    """The optimiser of `scheme` for a model with initial parameters `params`.

    Args:
      scheme: a name of `names()` (or an alias), or a `Scheme`.
      params: the *initial* parameters: variance-inverse coefficients are measured on them
        once, here, and stay fixed (pass the same initial params again when resuming).
      layers: the model's `LayerTable` (`labels.trace_layers`); or `conf`, the VGG's list.
      lr: a float or an Optax schedule; ``None``: the scheme's default.
      separate_decay: Adam schemes: decoupled (AdamW-style) decay.
      factors: the per-layer factors (`layer_factors`) when already known, e.g. read back
        from a run's record on resume; by default measured on `params`.
      **hyperparams: the traced rows of `wdjax.hparams.TABLE` (defaults from the table);
        stored in the optimiser state, so they may differ per run under ``jax.vmap``.

    Returns:
      An ``optax.GradientTransformation`` whose ``update`` needs ``params``.
    """
    scheme, tab = get(scheme), layer_table(params, layers, conf)
    lr = scheme.default_lr if lr is None else lr
    unknown = set(hyperparams) - set(hparams.TRACED)
    if unknown:
        raise ValueError(f"unknown hyperparameters {sorted(unknown)}; known: "
                         f"{', '.join(hparams.TRACED)}")
    hp = {h: hparams.BY_NAME[h].default for h in hparams.TRACED} | hyperparams
    hparams.validate(lr=lr, **hp)
    factors = layer_factors(scheme, params, tab) if factors is None else dict(factors)
    shapes = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
    decoupled = scheme.decoupled or separate_decay

    def factory(**values):
        spec = decay_spec(scheme, params=shapes, layers=tab, factors=factors, **values)
        return _chain(scheme, spec, values, decoupled)

    # inject_hyperparams reads the factory's signature to find the hyperparameters.
    factory.__signature__ = inspect.Signature([
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY) for name in ("lr", *hp)])
    return optax.inject_hyperparams(factory)(lr=lr, **hp)


def spec_from_state(scheme: str | Scheme, opt_state: Any, params: PyTree,
                    layers: LayerTable, factors: Mapping[str, float]) -> DecaySpec:
    """The `DecaySpec` a built scheme is applying right now (for monitors)."""
    hp = {k: v for k, v in opt_state.hyperparams.items() if k in hparams.TRACED}
    return decay_spec(scheme, params=params, layers=layers, factors=factors, **hp)
