"""The sweep families as data (docs/sweeps.md): each `Family` sweeps a named scheme over one
hyperparameter or run setting, with the notebook's reported numbers per run where it has them."""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping, Sequence
from typing import Any

from wdjax import schemes
from wdjax.schemes import hparams
from wdjax.training.config import Config

NOTEBOOK_LR = 0.1  # the original script's learning rate, which every notebook run used
# The original command line's defaults (docs/protocol.md#defaults).
HPARAM_DEFAULTS = types.MappingProxyType({**hparams.defaults(), "lr": NOTEBOOK_LR})
# Run settings other than hyperparameters that a family may fix or vary (``width``, ...).
CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(Config)) - set(hparams.NAMES) - {
    "name", "optimizer"}
LOG_SCALE_MIN_RATIO = 8.0  # max/min of the varied values from which plots use a log axis
NOTEBOOK_EPOCHS = 200  # 10 stages of 20 epochs (docs/protocol.md)


@dataclasses.dataclass(frozen=True)
class Reported:
    """The notebook's numbers for one run; ``epoch`` is when ``test_accuracy`` was taken."""

    test_accuracy: float | None = None
    train_correct: int | None = None
    best_test_correct: int | None = None
    note: str | None = None
    epoch: int | None = NOTEBOOK_EPOCHS


@dataclasses.dataclass(frozen=True)
class Run:
    """One run: scheme, hyperparameters, `Config` settings, reported numbers, 1-based place."""

    name: str
    optimizer: str
    hparams: Mapping[str, float | None] = dataclasses.field(hash=False)
    reported: Reported
    varies: str
    position: int
    settings: Mapping[str, Any] = dataclasses.field(hash=False)

    @property
    def value(self) -> float:
        """The varied value; the run's position when the family varies the optimizer."""
        return float(self.position if self.varies == "optimizer"
                     else self.settings.get(self.varies, self.hparams.get(self.varies)))

    @property
    def label(self) -> str:
        """The varied value as text: the optimizer's name, or the number in short form."""
        return self.optimizer if self.varies == "optimizer" else f"{self.value:g}"


@dataclasses.dataclass(frozen=True)
class Family:
    """One sweep; `lines_by`: a run setting drawn as one accuracy line per value."""

    name: str
    optimizer: str
    varies: str
    description: str
    runs: tuple[Run, ...]
    baseline: str | None = None
    lines_by: str | None = None

    @property
    def log_scale(self) -> bool:
        """Whether the varied values span `LOG_SCALE_MIN_RATIO` or more (for plot axes)."""
        values = [run.value for run in self.runs]
        return (self.varies != "optimizer" and min(values) > 0
                and max(values) / min(values) >= LOG_SCALE_MIN_RATIO)

    @property
    def run_names(self) -> tuple[str, ...]:
        return tuple(run.name for run in self.runs)


def make_family(name: str, optimizer: str, varies: str, description: str, rows: Sequence[Any],
                fixed: Mapping[str, Any] | None = None,
                per_run: Mapping[str, Mapping[str, Any]] | None = None,
                baseline: str | None = None, lines_by: str | None = None,
                names: Sequence[str] | None = None) -> Family:
    """A family from its rows, each the varied value or ``(value, *Reported fields)``; values are
    defaults < `fixed` < `per_run`, keyed by hyperparameter (stored as floats) or `CONFIG_FIELDS`
    setting; runs are named `names`, by default ``<name>1, <name>2, ...``."""
    per_run = dict(per_run or {})
    allowed = set(HPARAM_DEFAULTS) | CONFIG_FIELDS
    unknown = ({*(fixed or {}), *(k for v in per_run.values() for k in v)}
               | ({varies} - {"optimizer"})) - allowed
    if unknown:
        raise ValueError(f"family {name!r}: unknown hyperparameters or settings "
                         f"{sorted(unknown)}; allowed: {', '.join(sorted(allowed))}")
    if lines_by is not None and lines_by not in CONFIG_FIELDS:
        raise ValueError(f"family {name!r}: lines_by must be a run setting, one of "
                         f"{', '.join(sorted(CONFIG_FIELDS))}, got {lines_by!r}")
    names = names or [f"{name}{i}" for i in range(1, len(rows) + 1)]
    runs = []
    for position, (run_name, row) in enumerate(zip(names, rows, strict=True), 1):
        value, *reported = row if isinstance(row, tuple) else (row,)
        values = {**(fixed or {}), **per_run.pop(run_name, {})}
        if varies != "optimizer":
            values[varies] = value
        hp = {**HPARAM_DEFAULTS, **{k: v for k, v in values.items() if k in HPARAM_DEFAULTS}}
        runs.append(Run(
            run_name, str(value) if varies == "optimizer" else optimizer,
            types.MappingProxyType({k: None if v is None else float(v) for k, v in hp.items()}),
            Reported(*reported), varies, position,
            types.MappingProxyType({k: v for k, v in values.items() if k not in hp})))
    if per_run:
        raise ValueError(f"family {name!r}: overrides for unknown runs {sorted(per_run)}")
    return Family(name, optimizer, varies, description, tuple(runs), baseline, lines_by)


_f = make_family
# Rows' ends for runs the notebook stopped early: no counts, its remark, the epoch of its number.
_PRE = (None, None, "pre-terminated", None)
_ABORT7 = (None, None, "aborted at epoch 7", 7)
_WD16 = {"weight_decay": 1.6e-4}
_IXP2 = dict(weight_decay=1.6e-4, last1_mult=10.0)  # the base of the topo sweeps
_AT_IXP2 = dict(weight_decay=1.6e-4, last1_mult=10.0, lr=0.1, norm_ema=0.98)
_ADAMW = dict(lr=1e-3, weight_decay=0.05)  # AdamW's usual: at 1.6e-4 its decay would be ~0
_WXP = ("SGD_var_dup2", "SGDW_indep", "SGD_cautious", "SGD_sp", "SGDprox1", "SGD_hyperball",
        "RSGD_hyperball", "AdamW", "AdamC", "AdamW_cautious")
TXP_WIDTHS = (8, 16, 32)
TXP_TAUS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
_TXP = [(f"txp{w}.{i}", w) for w in TXP_WIDTHS for i in range(1, len(TXP_TAUS) + 1)]

NOTEBOOK_FAMILIES: tuple[Family, ...] = (  # in the notebook's order; runs in numbering order
    _f("exp", "SGD", "weight_decay",
       "Varying L2 decay strength on the VGG13-like network (SGD, L2)",
       [(0.0005, 0.8519, *_PRE), (0.001, 0.8639, 50000), (0.002, 0.8816, 50000),
        (0.004, 0.8975, 50000), (0.008, 0.9090, 50000), (0.016, 0.9150, 49996),
        (0.032, 0.9101, 49993), (0.016, 0.9129, 50000), (0.016, 0.9124, 50000)],
       per_run={"exp9": {"momentum": 0.9}}),
    _f("hxp", "SGD", "weight_decay", "exp6-based: vary weight_decay from 0.010 to 0.026 (SGD, L2)",
       [(0.01, 0.9108, 49998), (0.012, 0.9119, 49999), (0.014, 0.9163, 49999),
        (0.016, 0.9112, 49998), (0.018, 0.9088, 50000), (0.02, 0.9129, 50000),
        (0.022, 0.9082, 49999), (0.024, 0.9103, 49998), (0.026, 0.9092, 49999)], baseline="exp6"),
    _f("axp", "SGDL1", "L1_decay",
       "Varying L1 decay strength, some decay still in L2 (SGDL1, L2 0.016)",
       [(0.00016, 0.8734, 49967), (0.0016, 0.8078, 49007), (0.0008, 0.8479, 49501),
        (8e-5, 0.8542, 49994), (0.00032, 0.8717, 49908), (0.00064, 0.8628, 49894)],
       fixed={"weight_decay": 0.016}),
    _f("bxp", "SGDL1A", "L1_decay", "Varying L1 decay strength, all decay in L1 (SGDL1A)",
       [(0.0001, 0.8669, 49993), (0.0002, 0.8671, 49970), (0.0004, 0.8580, 49921),
        (0.0008, 0.8344, 49569)]),
    _f("cxp", "SGD_var_dup4", "weight_decay",
       "Variance-inverse proportional decay, duplicate multiplier 4",
       [(5e-6, 0.8449, 50000), (1e-5, 0.8488, 50000), (2e-5, 0.8602, 50000),
        (4e-5, 0.8650, 50000), (8e-5, 0.8813, 50000), (0.00016, 0.8805, 50000),
        (0.00032, 0.8807, 50000), (0.00064, 0.8625, 50000), (0.00128, 0.7610, 50000)]),
    _f("dxp", "SGD_var_dup2", "weight_decay",
       "Variance-inverse proportional decay, duplicate multiplier 2",
       [(2e-5, 0.8864, 50000), (4e-5, 0.8992, 50000), (8e-5, 0.9118, 50000),
        (0.00016, 0.9131, 50000), (0.00032, 0.9101, 50000), (0.00064, 0.8694, 49993)]),
    _f("fxp", "SGD_var_dup1", "weight_decay",
       "Variance-inverse proportional decay, duplicate multiplier 1",
       [(5e-6, 0.8834, 50000), (1e-5, 0.8989, 50000), (2e-5, 0.9077, 50000),
        (4e-5, 0.9076, 50000), (8e-5, 0.9086, 49997), (0.00016, 0.8998, 49978),
        (0.00032, 0.1000, 4848), (0.00064, 0.1000, 6310)]),
    _f("gxp", "SGD_var_dup2_last2_mult", "last2_mult",
       "dxp4-based: vary the decay of the last 2 layers",
       [(0.1, 0.9131, 50000), (10.0, 0.9170, 50000), (100.0, 0.9165, 49990), (3.0, 0.9130, 50000),
        (30.0, 0.9151, 50000)], fixed=_WD16, baseline="dxp4"),
    _f("ixp", "SGD_var_dup2_last1_mult", "last1_mult",
       "dxp4-based: vary the decay of the last (logit) layer",
       [(3.0, 0.9147, 50000), (10.0, 0.9188, 50000, 9202), (30.0, 0.9182, 50000),
        (100.0, 0.9119, 50000)], fixed=_WD16, baseline="dxp4"),
    _f("jxp", "LSSGD_var_dup2_last1_mult", "last1_mult",
       "ixp2-based layer-specific learning rate (current-norm scaling)",
       [(3.0, 0.8672, *_ABORT7), (10.0, 0.8666, *_ABORT7),
        (30.0, 0.8672, *_ABORT7), (100.0, 0.8710, *_ABORT7)],
       fixed={**_WD16, "norm_ema": 0.0}, baseline="ixp2"),
    _f("kxp", "LSSGD_var_dup2_last1_mult", "last1_mult",
       "ixp2-based layer-specific learning rate with EMA normalization",
       [(3.0, 0.8728, *_ABORT7), (10.0, 0.8688, *_ABORT7), (100.0, 0.8716, *_ABORT7)],
       fixed={**_WD16, "norm_ema": 0.98}, baseline="ixp2"),
    _f("lxp", "LSSGD_var_dup2_last1_mult_nwm", "last1_mult",
       "ixp2-based layer-specific learning rate, EMA normalization, no weight-norm factor",
       [(3.0, 0.8918, 50000), (10.0, 0.8968, 50000), (100.0, 0.8945, 50000)],
       fixed={**_WD16, "norm_ema": 0.98}, baseline="ixp2"),
    _f("topo", "SGD_topo.*", "optimizer",
       "Topographic weight decay based on ixp2, trying different optimizers",
       [("SGD_topo.a", 0.9146, 50000), ("SGD_topo.b", 0.9125, 50000), ("SGD_topo.ab", 0.9127)],
       names=("topo.a1", "topo.b1", "topo.ab1"), fixed={**_IXP2, "lr": 0.1, "topo_base": 2.0},
       baseline="ixp2"),
    _f("topo.aa", "SGD_topo.a", "weight_decay",
       "Topographic weight decay based on ixp2, last1_mult 10, vary weight_decay",
       [(4e-5, 0.9004, 50000), (8e-5, 0.9086, 50000), (0.00016, 0.9184, 50000),
        (0.0002, 0.9127, 50000), (0.00032, 0.9131, 49997), (0.00064, 0.8753, 49985)],
       fixed={"last1_mult": 10.0}, baseline="ixp2"),
    _f("topo.ad", "SGD_topo.a", "last1_mult",
       "Topographic weight decay based on ixp2, weight_decay 1.6e-4, vary last1_mult",
       [(2.0, 0.9176), (5.0, 0.9172), (10.0, 0.9141), (20.0, 0.9161), (40.0, 0.9144, 49998),
        (80.0, 0.9154, 49997), (160.0, 0.9176, 49996, 9191), (320.0, 0.9189, 49995, 9194),
        (640.0, 0.9160, 49996)], fixed=_WD16, baseline="ixp2"),
    _f("topo.ac", "SGD_topo.a", "topo_base", "Topographic weight decay based on ixp2, "
       "weight_decay 1.6e-4, last1_mult 10, vary topo_base",
       [(1.0, 0.9122), (1.1, 0.9157), (1.2, 0.9173), (1.5, 0.9162), (1.8, 0.9151), (2.0, 0.9147),
        (2.3, 0.9176), (2.8, 0.9151), (3.0, 0.9133), (4.0, 0.9150), (6.0, 0.9143)],
       fixed=_IXP2, baseline="ixp2"),
)

BEYOND_FAMILIES: tuple[Family, ...] = (  # new experiments: no notebook numbers
    _f("wxp", "SGD_var_dup2 vs variants", "optimizer",
       "Decay variants (independent, cautious, L2-SP, proximal L1, hyperball, AdamW/AdamC) "
       "against SGD_var_dup2 at dxp4's settings", _WXP, fixed={**_WD16, "lr": 0.1},
       per_run={f"wxp{i}": _ADAMW for i, s in enumerate(_WXP, 1)
                if schemes.get(s).base_optimizer == "adam"}, baseline="dxp4"),
    _f("txp", "SGD", "tau_epochs",
       "Width transfer of the decay timescale: SGD at width 8, 16, 32 over one tau_epochs grid",
       TXP_TAUS * len(TXP_WIDTHS), fixed={"lr": 0.1}, lines_by="width",
       names=[name for name, _ in _TXP], per_run={name: {"width": w} for name, w in _TXP}),
    _f("rxp", "SGD_var_dup2 vs rotational", "optimizer",
       "Rotational updates (per neuron, per tensor) against plain and EMA-normalised updates "
       "at ixp2's settings; dead units at 1e-9 and 1e-5",
       ["SGD_var_dup2", "LSSGD_var_dup2_last1_mult", "RSGD_var_dup2", "RSGD_var_dup2_tensor"],
       fixed=_AT_IXP2, baseline="ixp2"),
    _f("axp2", "Adam (element / unit / layer)", "optimizer",
       "Adam with per-element, per-unit and per-layer second moments, coupled and decoupled "
       "decay (lr 1e-3, weight_decay 5e-4 for all)",
       ["Adam", "AdamW", "AdamU", "AdamWU", "AdamL", "AdamWL"], fixed={"lr": 1e-3},
       names=[f"axp2.{i}" for i in range(1, 7)]),
)

FAMILIES: Mapping[str, Family] = types.MappingProxyType(
    {fam.name: fam for fam in (*NOTEBOOK_FAMILIES, *BEYOND_FAMILIES)})
FAMILY_OF: Mapping[str, Family] = types.MappingProxyType(  # the family of every run, by name
    {run.name: fam for fam in FAMILIES.values() for run in fam.runs})


def all_runs() -> dict[str, Run]:
    """Every run by name, in family order."""
    return {run.name: run for fam in FAMILIES.values() for run in fam.runs}


def _check() -> None:
    """Run names are unique (across families too), hyperparameters finite, baselines runs."""
    names = [run.name for fam in FAMILIES.values() for run in fam.runs]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"runs named more than once: {', '.join(twice)}")
    for fam in FAMILIES.values():
        if not all(math.isfinite(v) for r in fam.runs for v in r.hparams.values() if v is not None):
            raise ValueError(f"family {fam.name!r} has a non-finite hyperparameter")
        if fam.baseline is not None and fam.baseline not in names:
            raise ValueError(f"family {fam.name!r}: baseline {fam.baseline!r} is not a run")


_check()


def get_family(name: str) -> Family:
    """The family called `name`; ValueError listing the valid names otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; valid: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def select_runs(family: Family, names: Sequence[str] | str | None) -> tuple[Run, ...]:
    """`family`'s runs named in `names` (None: all), in family order; ValueError if unknown."""
    if names is None:
        return family.runs
    names = [names] if isinstance(names, str) else list(names)
    for i, name in enumerate(names):
        if name not in family.run_names:
            raise ValueError(f"unknown run {name!r} in family {family.name!r}; valid: "
                             f"{', '.join(family.run_names)}")
        if name in names[:i]:
            raise ValueError(f"duplicate run {name!r} in selection for family {family.name!r}")
    return tuple(run for run in family.runs if run.name in names)
