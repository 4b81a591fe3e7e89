"""The sweep families of the research notebook, transcribed (docs/sweeps.md#notebook-families).

Reported numbers come from the research notebook (see docs/protocol.md); the conventions are
those of `experiments.families` (``Reported``): accuracies as fractions, counts out of 10 000
stored as fractions, "aborted at epoch 7" runs carry the accuracy at the abort.
"""

from __future__ import annotations

from experiments.families import Family, Stopped
from experiments.families import make_family as _family

_PRE = Stopped("pre-terminated", None)
_ABORT7 = Stopped("aborted at epoch 7", 7)
_IXP2 = dict(weight_decay=1.6e-4, last1_mult=10.0)  # the ixp2 base of the topo sweeps

_EXP = _family(
    "exp",
    "SGD",
    "weight_decay",
    "Varying L2 decay strength on the VGG13-like network (SGD, L2)",
    [
        ("exp1", 0.0005, 0.8519, None, None, _PRE),
        ("exp2", 0.001, 0.8639, 50000, None, None),
        ("exp3", 0.002, 0.8816, 50000, None, None),
        ("exp4", 0.004, 0.8975, 50000, None, None),
        ("exp5", 0.008, 0.9090, 50000, None, None),
        ("exp6", 0.016, 0.9150, 49996, None, None),
        ("exp7", 0.032, 0.9101, 49993, None, None),
        ("exp8", 0.016, 0.9129, 50000, None, None),
        ("exp9", 0.016, 0.9124, 50000, None, None),
    ],
    per_run={"exp9": {"momentum": 0.9}},
)

_HXP = _family(
    "hxp",
    "SGD",
    "weight_decay",
    "exp6-based: vary weight_decay from 0.010 to 0.026 (SGD, L2)",
    [
        ("hxp1", 0.010, 0.9108, 49998, None, None),
        ("hxp2", 0.012, 0.9119, 49999, None, None),
        ("hxp3", 0.014, 0.9163, 49999, None, None),
        ("hxp4", 0.016, 0.9112, 49998, None, None),
        ("hxp5", 0.018, 0.9088, 50000, None, None),
        ("hxp6", 0.020, 0.9129, 50000, None, None),
        ("hxp7", 0.022, 0.9082, 49999, None, None),
        ("hxp8", 0.024, 0.9103, 49998, None, None),
        ("hxp9", 0.026, 0.9092, 49999, None, None),
    ],
    baseline="exp6",
)

_AXP = _family(
    "axp",
    "SGDL1",
    "L1_decay",
    "Varying L1 decay strength, some decay still in L2 (SGDL1, L2 0.016)",
    [
        ("axp1", 0.00016, 0.8734, 49967, None, None),
        ("axp2", 0.0016, 0.8078, 49007, None, None),
        ("axp3", 0.0008, 0.8479, 49501, None, None),
        ("axp4", 0.00008, 0.8542, 49994, None, None),
        ("axp5", 0.00032, 0.8717, 49908, None, None),
        ("axp6", 0.00064, 0.8628, 49894, None, None),
    ],
    fixed={"weight_decay": 0.016},
)

_BXP = _family(
    "bxp",
    "SGDL1A",
    "L1_decay",
    "Varying L1 decay strength, all decay in L1 (SGDL1A)",
    [
        ("bxp1", 0.0001, 0.8669, 49993, None, None),
        ("bxp2", 0.0002, 0.8671, 49970, None, None),
        ("bxp3", 0.0004, 0.8580, 49921, None, None),
        ("bxp4", 0.0008, 0.8344, 49569, None, None),
    ],
)

_CXP = _family(
    "cxp",
    "SGD_var_dup4",
    "weight_decay",
    "Variance-inverse proportional decay, duplicate multiplier 4",
    [
        ("cxp1", 0.000005, 0.8449, 50000, None, None),
        ("cxp2", 0.00001, 0.8488, 50000, None, None),
        ("cxp3", 0.00002, 0.8602, 50000, None, None),
        ("cxp4", 0.00004, 0.8650, 50000, None, None),
        ("cxp5", 0.00008, 0.8813, 50000, None, None),
        ("cxp6", 0.00016, 0.8805, 50000, None, None),
        ("cxp7", 0.00032, 0.8807, 50000, None, None),
        ("cxp8", 0.00064, 0.8625, 50000, None, None),
        ("cxp9", 0.00128, 0.7610, 50000, None, None),
    ],
)

_DXP = _family(
    "dxp",
    "SGD_var_dup2",
    "weight_decay",
    "Variance-inverse proportional decay, duplicate multiplier 2",
    [
        ("dxp1", 0.00002, 0.8864, 50000, None, None),
        ("dxp2", 0.00004, 0.8992, 50000, None, None),
        ("dxp3", 0.00008, 0.9118, 50000, None, None),
        ("dxp4", 0.00016, 0.9131, 50000, None, None),
        ("dxp5", 0.00032, 0.9101, 50000, None, None),
        ("dxp6", 0.00064, 0.8694, 49993, None, None),
    ],
)

_FXP = _family(
    "fxp",
    "SGD_var_dup1",
    "weight_decay",
    "Variance-inverse proportional decay, duplicate multiplier 1",
    [
        ("fxp1", 0.000005, 0.8834, 50000, None, None),
        ("fxp2", 0.00001, 0.8989, 50000, None, None),
        ("fxp3", 0.00002, 0.9077, 50000, None, None),
        ("fxp4", 0.00004, 0.9076, 50000, None, None),
        ("fxp5", 0.00008, 0.9086, 49997, None, None),
        ("fxp6", 0.00016, 0.8998, 49978, None, None),
        ("fxp7", 0.00032, 0.1000, 4848, None, None),
        ("fxp8", 0.00064, 0.1000, 6310, None, None),
    ],
)

_GXP = _family(
    "gxp",
    "SGD_var_dup2_last2_mult",
    "last2_mult",
    "dxp4-based: vary the decay of the last 2 layers",
    [
        ("gxp1", 0.1, 0.9131, 50000, None, None),
        ("gxp2", 10.0, 0.9170, 50000, None, None),
        ("gxp3", 100.0, 0.9165, 49990, None, None),
        ("gxp4", 3.0, 0.9130, 50000, None, None),
        ("gxp5", 30.0, 0.9151, 50000, None, None),
    ],
    fixed={"weight_decay": 1.6e-4},
    baseline="dxp4",
)

_IXP = _family(
    "ixp",
    "SGD_var_dup2_last1_mult",
    "last1_mult",
    "dxp4-based: vary the decay of the last (logit) layer",
    [
        ("ixp1", 3.0, 0.9147, 50000, None, None),
        ("ixp2", 10.0, 0.9188, 50000, 9202, None),
        ("ixp3", 30.0, 0.9182, 50000, None, None),
        ("ixp4", 100.0, 0.9119, 50000, None, None),
    ],
    fixed={"weight_decay": 1.6e-4},
    baseline="dxp4",
)

_JXP = _family(
    "jxp",
    "LSSGD_var_dup2_last1_mult",
    "last1_mult",
    "ixp2-based layer-specific learning rate (current-norm scaling)",
    [
        ("jxp1", 3.0, 0.8672, None, None, _ABORT7),
        ("jxp2", 10.0, 0.8666, None, None, _ABORT7),
        ("jxp3", 30.0, 0.8672, None, None, _ABORT7),
        ("jxp4", 100.0, 0.8710, None, None, _ABORT7),
    ],
    fixed={"weight_decay": 1.6e-4, "norm_ema": 0.0},
    baseline="ixp2",
)

_KXP = _family(
    "kxp",
    "LSSGD_var_dup2_last1_mult",
    "last1_mult",
    "ixp2-based layer-specific learning rate with EMA normalization",
    [
        ("kxp1", 3.0, 0.8728, None, None, _ABORT7),
        ("kxp2", 10.0, 0.8688, None, None, _ABORT7),
        ("kxp3", 100.0, 0.8716, None, None, _ABORT7),
    ],
    fixed={"weight_decay": 1.6e-4, "norm_ema": 0.98},
    baseline="ixp2",
)

_LXP = _family(
    "lxp",
    "LSSGD_var_dup2_last1_mult_nwm",
    "last1_mult",
    "ixp2-based layer-specific learning rate, EMA normalization, no weight-norm factor",
    [
        ("lxp1", 3.0, 0.8918, 50000, None, None),
        ("lxp2", 10.0, 0.8968, 50000, None, None),
        ("lxp3", 100.0, 0.8945, 50000, None, None),
    ],
    fixed={"weight_decay": 1.6e-4, "norm_ema": 0.98},
    baseline="ixp2",
)

_TOPO = _family(
    "topo",
    "SGD_topo.*",
    "optimizer",
    "Topographic weight decay based on ixp2, trying different optimizers",
    [
        ("topo.a1", "SGD_topo.a", 0.9146, 50000, None, None),
        ("topo.b1", "SGD_topo.b", 0.9125, 50000, None, None),
        ("topo.ab1", "SGD_topo.ab", 0.9127, None, None, None),
    ],
    fixed={**_IXP2, "lr": 0.1, "topo_base": 2.0},
    baseline="ixp2",
)

_TOPO_AA = _family(
    "topo.aa",
    "SGD_topo.a",
    "weight_decay",
    "Topographic weight decay based on ixp2, last1_mult 10, vary weight_decay",
    [
        ("topo.aa1", 0.00004, 0.9004, 50000, None, None),
        ("topo.aa2", 0.00008, 0.9086, 50000, None, None),
        ("topo.aa3", 0.00016, 0.9184, 50000, None, None),
        ("topo.aa4", 0.00020, 0.9127, 50000, None, None),
        ("topo.aa5", 0.00032, 0.9131, 49997, None, None),
        ("topo.aa6", 0.00064, 0.8753, 49985, None, None),
    ],
    fixed={"last1_mult": 10.0},
    baseline="ixp2",
)

_TOPO_AD = _family(
    "topo.ad",
    "SGD_topo.a",
    "last1_mult",
    "Topographic weight decay based on ixp2, weight_decay 1.6e-4, vary last1_mult",
    [
        ("topo.ad1", 2.0, 0.9176, None, None, None),
        ("topo.ad2", 5.0, 0.9172, None, None, None),
        ("topo.ad3", 10.0, 0.9141, None, None, None),
        ("topo.ad4", 20.0, 0.9161, None, None, None),
        ("topo.ad5", 40.0, 0.9144, 49998, None, None),
        ("topo.ad6", 80.0, 0.9154, 49997, None, None),
        ("topo.ad7", 160.0, 0.9176, 49996, 9191, None),
        ("topo.ad8", 320.0, 0.9189, 49995, 9194, None),
        ("topo.ad9", 640.0, 0.9160, 49996, None, None),
    ],
    fixed={"weight_decay": 1.6e-4},
    baseline="ixp2",
)

_TOPO_AC = _family(
    "topo.ac",
    "SGD_topo.a",
    "topo_base",
    "Topographic weight decay based on ixp2, weight_decay 1.6e-4, last1_mult 10, vary topo_base",
    [
        ("topo.ac1", 1.0, 0.9122, None, None, None),
        ("topo.ac2", 1.1, 0.9157, None, None, None),
        ("topo.ac3", 1.2, 0.9173, None, None, None),
        ("topo.ac4", 1.5, 0.9162, None, None, None),
        ("topo.ac5", 1.8, 0.9151, None, None, None),
        ("topo.ac6", 2.0, 0.9147, None, None, None),
        ("topo.ac7", 2.3, 0.9176, None, None, None),
        ("topo.ac8", 2.8, 0.9151, None, None, None),
        ("topo.ac9", 3.0, 0.9133, None, None, None),
        ("topo.ac10", 4.0, 0.9150, None, None, None),
        ("topo.ac11", 6.0, 0.9143, None, None, None),
    ],
    fixed=_IXP2,
    baseline="ixp2",
)


NOTEBOOK_FAMILIES: tuple[Family, ...] = (
    _EXP, _HXP, _AXP, _BXP, _CXP, _DXP, _FXP, _GXP, _IXP, _JXP, _KXP, _LXP,
    _TOPO, _TOPO_AA, _TOPO_AD, _TOPO_AC,
)
"""In the notebook's order (docs/sweeps.md#notebook-families)."""
