"""Families beyond the notebook: its open questions and the newer decay variants as sweeps.

Their notebook column is empty (``Reported`` all None): these are new experiments. Each is
anchored on a notebook run (its ``baseline``), whose settings it reuses:

* ``wxp``: the decay variants (`wdjax.schemes.table`'s later rows) against SGD_var_dup2 at
  dxp4's settings (weight_decay 1.6e-4, lr 0.1); the Adam-based variants at lr 1e-3 and
  AdamW's usual weight_decay 0.05 (at 1.6e-4 their decoupled decay would be ~0).
* ``txp``: width transfer of the decay timescale (Wang & Aitchison 2025): SGD at widths
  base 8, 16 and 32 over one ``tau_epochs`` grid; the picture draws accuracy vs tau, one
  line per width (``Family.lines_by``). Each width is one vmapped group.
* ``rxp``: rotational updates against the notebook's normalised updates at ixp2's settings
  (weight_decay 1.6e-4, last1_mult 10, norm_ema 0.98); the table reports dead units at
  1e-9 and 1e-5.
* ``axp2``: Adam with element / unit / layer second moments, each coupled and decoupled.
"""

from __future__ import annotations

from experiments.families import Family
from experiments.families import make_family as _family
from wdjax import schemes

_DXP4 = dict(weight_decay=1.6e-4, lr=0.1)
_IXP2 = dict(weight_decay=1.6e-4, last1_mult=10.0, lr=0.1, norm_ema=0.98)
_ADAMW = dict(lr=1e-3, weight_decay=0.05)
TXP_WIDTHS = (8, 16, 32)
TXP_TAUS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


def _new(name: str, value: float | str) -> tuple:
    """A table row with no notebook numbers."""
    return (name, value, None, None, None, None)


_WXP_SCHEMES = ("SGD_var_dup2", "SGDW_indep", "SGD_cautious", "SGD_sp", "SGDprox1",
                "SGD_hyperball", "RSGD_hyperball", "AdamW", "AdamC", "AdamW_cautious")
_WXP = _family(
    "wxp",
    "SGD_var_dup2 vs variants",
    "optimizer",
    "Decay variants (independent, cautious, L2-SP, proximal L1, hyperball, AdamW/AdamC) "
    "against SGD_var_dup2 at dxp4's settings",
    [_new(f"wxp{i}", s) for i, s in enumerate(_WXP_SCHEMES, 1)],
    fixed=_DXP4,
    per_run={f"wxp{i}": _ADAMW for i, s in enumerate(_WXP_SCHEMES, 1)
             if schemes.get(s).base == "adam"},
    baseline="dxp4",
)

_TXP = _family(
    "txp",
    "SGD",
    "tau_epochs",
    "Width transfer of the decay timescale: SGD at base 8, 16, 32 over one tau_epochs grid",
    [_new(f"txp{w}.{i}", tau) for w in TXP_WIDTHS for i, tau in enumerate(TXP_TAUS, 1)],
    fixed={"lr": 0.1},
    per_run={f"txp{w}.{i}": {"base": w} for w in TXP_WIDTHS
             for i in range(1, len(TXP_TAUS) + 1)},
    lines_by="base",
)

_RXP = _family(
    "rxp",
    "SGD_var_dup2 vs rotational",
    "optimizer",
    "Rotational updates (per neuron, per tensor) against plain and EMA-normalised updates "
    "at ixp2's settings; dead units at 1e-9 and 1e-5",
    [_new("rxp1", "SGD_var_dup2"), _new("rxp2", "LSSGD_var_dup2_last1_mult"),
     _new("rxp3", "RSGD_var_dup2"), _new("rxp4", "RSGD_var_dup2_tensor")],
    fixed=_IXP2,
    baseline="ixp2",
)

_AXP2 = _family(
    "axp2",
    "Adam (element / unit / layer)",
    "optimizer",
    "Adam with per-element, per-unit and per-layer second moments, coupled and decoupled "
    "decay (lr 1e-3, weight_decay 5e-4 for all)",
    [_new(f"axp2.{i}", s) for i, s in enumerate(
        ("Adam", "AdamW", "AdamU", "AdamWU", "AdamL", "AdamWL"), 1)],
    fixed={"lr": 1e-3},
)

BEYOND_FAMILIES: tuple[Family, ...] = (_WXP, _TXP, _RXP, _AXP2)
"""The families beyond the notebook, after its own in the registry."""
