"""The scheme table: every named optimiser as one `Scheme` row of data, for `schemes.build`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax

from wdjax import decay


class DecayForm(NamedTuple):
    """Where a decay form's transforms go (`build`: coefficients, kinds, multipliers, lr_t,
    lr_max -> the transforms before the direction, before the lr and after it), what it takes."""

    build: Callable[[Any, Any, Any, Any, Any], tuple[list, list, list]]
    l1: bool = False  # takes L1 groups
    multipliers: bool = False  # takes element-wise (topographic) multipliers
    peak: bool = False  # needs lr_max, the schedule's peak


def _clip(kinds: Any) -> list:
    """L1 leaves: a step that would flip a sign lands on 0 (`decay.clip_sign_crossing`)."""
    l1 = jax.tree.map(lambda k: k == "l1", kinds)
    return [decay.clip_sign_crossing(l1)] if any(jax.tree.leaves(l1)) else []


def _proximal(coef: Any, kinds: Any, mult: Any, lr: Any, lr_max: Any) -> tuple:
    l1 = jax.tree.map(lambda k: k == "l1", kinds)
    l2 = jax.tree.map(lambda c, is_l1: 0.0 if is_l1 else c, coef, l1)
    return [decay.add_decay(l2, "l2", mult)], [], [decay.proximal_l1(coef, lr, mask=l1)]


# Where the decay term enters (``d`` the direction, ``u`` the update, ``wd`` a leaf's
# coefficient). Adding a form: its transform in `wdjax.decay`, one row here, and its test.
DECAY_FORMS: Mapping[str, DecayForm] = {
    # d = g + wd p  (L2 in the loss; torch SGD / Adam)
    "coupled": DecayForm(lambda c, k, m, lr, lr_max: ([decay.add_decay(c, k, m)], [], _clip(k)),
                         l1=True, multipliers=True),
    # u = -lr_t (d + wd p)  (AdamW, torch.optim.AdamW; SGDW)
    "decoupled": DecayForm(lambda c, k, m, lr, lr_max: ([], [decay.add_decay(c, k, m)],
                                                         _clip(k)), l1=True, multipliers=True),
    # u = -lr_t d - (lr_t / lr_max) wd p  (Loshchilov & Hutter 2019, Alg. 2)
    "independent": DecayForm(lambda c, k, m, lr, lr_max: (
        [], [], [decay.independent_decay(c, lr, lr_max, k, m)]), multipliers=True, peak=True),
    # u = -lr_t d - lr_t^2 / lr_max wd p  (AdamC, Defazio 2025)
    "corrected": DecayForm(lambda c, k, m, lr, lr_max: (
        [], [], [decay.corrected_decay(c, lr, lr_max, k, m)]), multipliers=True, peak=True),
    # u = -lr_t (d + wd 1[d p >= 0] p)  (CWD, Chen et al. 2025)
    "cautious": DecayForm(lambda c, k, m, lr, lr_max: ([], [decay.cautious_decay(c)], [])),
    # L1 group: p <- soft_threshold(p + u, lr_t L1_decay); the others coupled L2
    "proximal": DecayForm(_proximal, l1=True, multipliers=True),
    # d = g + wd (p - p0)  (L2-SP, Li et al. 2018)
    "toward_init": DecayForm(lambda c, k, m, lr, lr_max: (
        [decay.add_decay_toward_init(c)], [], [])),
}
_CHOICES = dict(base_optimizer=("sgd", "adam"), coefficients=("uniform", "variance_inverse",
                "fan_in"), l1_group=("none", "early", "all"), normalize=("none", "current", "ema"),
                decay_form=tuple(DECAY_FORMS), adam_blocks=("element", "unit", "layer"),
                norm_constraint=("none", "unit", "tensor"), rotational=("none", "neuron", "tensor"))


@dataclasses.dataclass(frozen=True)
class Scheme:
    """One named optimiser as data (the fields are the whole of its behaviour)."""

    name: str
    base_optimizer: str = "sgd"  # "sgd": docs/schemes.md#one-update-step; "adam" (0.9, 0.999)
    coefficients: str = "uniform"  # per-layer rule: `wdjax.schemes.COEFFICIENT_RULES`
    dup: float = 2.0  # variance_inverse: the divisor per halving of the map
    l1_group: str = "none"  # "early" / "all": those layers get L1 with L1_decay
    last1: bool = False  # the last layer's coefficient times last1_mult
    last2: bool = False  # the last two layers' coefficients times last2_mult
    topographic: tuple[int, ...] = ()  # layers (from the end, -1 last) with M = b ** dist
    normalize: str = "none"  # "current" / "ema": layer-wise normalised updates (norm_ema)
    times_weight_norm: bool = True  # normalize: times ||p||
    normalize_per_unit: bool = False  # normalize: one norm per output unit, not per tensor
    decay_form: str = "coupled"  # where the decay enters (DECAY_FORMS above)
    adam_blocks: str = "element"  # adam: one second moment per element / unit / tensor
    norm_constraint: str = "none"  # "unit" / "tensor": kernels held at their initial norms
    rotational: str = "none"  # "neuron" / "tensor": rotational update (docs/equilibrium.md)
    zero_mean: bool = True  # rotational: centre units (and the initial kernels, once)
    update_norm_decay: float = 0.9  # rotational: beta of the update-norm EMA
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
        for problem in self._conflicts():
            raise ValueError(f"scheme {self.name!r}: {problem}")

    def _conflicts(self) -> list[str]:
        """The combinations no chain implements, as one-line reasons."""
        form, adam = self.decay_form, self.base_optimizer == "adam"
        out = []
        if form == "proximal" and self.l1_group == "none":
            out.append("decay_form 'proximal' needs l1_group early or all")
        for what, field, needed in (("L1 groups", "l1", self.l1_group != "none"),
                                    ("topographic multipliers", "multipliers", self.topographic)):
            takes = [f for f, row in DECAY_FORMS.items() if getattr(row, field)]
            if needed and form not in takes:
                out.append(f"{what} need decay_form one of {', '.join(takes)}, not {form!r}")
        if self.normalize != "none" and adam:
            out.append("normalize applies to base_optimizer sgd only")
        if self.adam_blocks != "element" and not adam:
            out.append("adam_blocks applies to base_optimizer adam only")
        wanted = "decoupled" if adam else "coupled"
        if self.rotational != "none" and (
                form, self.normalize, self.norm_constraint, self.adam_blocks, self.l1_group,
                self.topographic) != (wanted, "none", "none", "element", "none", ()):
            out.append(f"rotational schemes take decay_form {wanted!r} (base_optimizer "
                       f"{self.base_optimizer}), L2 without topographic multipliers, and no "
                       f"normalize, norm_constraint or adam_blocks")
        return out


_VAR = dict(coefficients="variance_inverse")
_LAST1 = dict(_VAR, last1=True)
_ADAM = dict(base_optimizer="adam", default_lr=1e-3)
SCHEMES: tuple[Scheme, ...] = (
    Scheme("SGD", description="L2 weight_decay everywhere"),
    Scheme("SGDL1", l1_group="early", description="L1 on the early layers, L2 on the rest"),
    Scheme("SGDL1A", l1_group="all", description="L1 L1_decay everywhere"),
    Scheme("SGD_var_dup4", **_VAR, dup=4.0, description="per layer wd * 4 ** -depth / Var(W0)"),
    Scheme("SGD_var_dup2", **_VAR, description="per layer wd * 2 ** -depth / Var(W0)"),
    Scheme("SGD_var_dup1", **_VAR, dup=1.0, description="per layer wd / Var(W0)"),
    Scheme("SGD_var_dup2_last2_mult", **_VAR, last2=True, description="last two * last2_mult"),
    Scheme("SGD_var_dup2_last1_mult", **_LAST1, description="dup2, the last layer * last1_mult"),
    Scheme("SGD_topo.a", **_LAST1, topographic=(-2,), description="last1 + topographic on -2"),
    Scheme("SGD_topo.b", **_LAST1, topographic=(-3,), description="last1 + topographic on -3"),
    Scheme("SGD_topo.ab", **_LAST1, topographic=(-3, -2), description="last1 + topographic, both"),
    Scheme("LSSGD_var_dup2_last1_mult", **_LAST1, normalize="ema",
           description="last1 + layer-wise updates ||p|| / EMA ||d||"),
    Scheme("LSSGD_var_dup2_last1_mult_nwm", **_LAST1, normalize="ema", times_weight_norm=False,
           description="the same without the ||p|| factor"),
    Scheme("SGD_fanin", coefficients="fan_in", description="per layer wd * fan_in / 1152"),
    Scheme("Adam", **_ADAM, description="Adam + L2 in the gradient (decoupled: separate_decay)"),
    # Beyond the notebook: the decay forms (wdjax.decay variants) as rows.
    Scheme("SGDW_indep", decay_form="independent", description="decay (lr_t / lr_max) wd p"),
    Scheme("AdamW", **_ADAM, decay_form="decoupled", description="torch.optim.AdamW"),
    Scheme("AdamC", **_ADAM, decay_form="corrected", description="decay lr_t^2 / lr_max wd p"),
    Scheme("SGD_cautious", decay_form="cautious", description="decay where it shrinks p"),
    Scheme("AdamW_cautious", **_ADAM, decay_form="cautious", description="AdamW, cautious decay"),
    Scheme("SGDprox1", l1_group="early", decay_form="proximal", description="L1 as soft threshold"),
    Scheme("SGDprox1A", l1_group="all", decay_form="proximal", description="all-L1 soft threshold"),
    Scheme("SGD_sp", decay_form="toward_init", description="L2-SP: weight_decay * (p - p0)"),
    Scheme("SGD_hyperball", norm_constraint="unit", description="units at initial norm"),
    Scheme("RSGD_hyperball", normalize="current", normalize_per_unit=True, norm_constraint="unit",
           description="per-unit step lr * ||p_unit||, units kept at their initial norm"),
    Scheme("RSGD_var_dup2", **_VAR, rotational="neuron", description="rotational, per neuron"),
    Scheme("RSGD_var_dup2_tensor", **_VAR, rotational="tensor", description="rotational, tensor"),
    Scheme("RotAdamW", **_ADAM, decay_form="decoupled", rotational="neuron",
           description="rotational AdamW per output neuron"),
    Scheme("AdamU", **_ADAM, adam_blocks="unit", description="Adam, a second moment per unit"),
    Scheme("AdamL", **_ADAM, adam_blocks="layer", description="Adam, a second moment per tensor"),
    Scheme("AdamWU", **_ADAM, adam_blocks="unit", decay_form="decoupled",
           description="AdamU with decoupled decay"),
    Scheme("AdamWL", **_ADAM, adam_blocks="layer", decay_form="decoupled",
           description="AdamL with decoupled decay"),
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
