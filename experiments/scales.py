"""The protocols a sweep can run at (docs/sweeps.md#scales): ``full`` is the notebook's,
``quick`` a CPU smoke run (``medium``: with three seeds), ``preview`` a `Miniature` of ``full``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax

TRAIN_IMAGES = 50_000  # CIFAR-10's training set

SCALES: dict[str, dict] = {
    "full": dict(width=32, batch_size=128, stages=10, epochs_per_stage=20,
                 train_subset=None, test_subset=None),
    "quick": dict(width=8, batch_size=128, stages=4, epochs_per_stage=1,
                  train_subset=10000, test_subset=None),
    # The notebook's 10 halving stages, each 40 steps long (5000 images, one epoch).
    "preview": dict(width=8, batch_size=128, stages=10, epochs_per_stage=1,
                    train_subset=5000, test_subset=None),
}
# medium: quick's protocol with three seeds per run (a quick run takes about 57 s on 2 cores).
SCALES["medium"] = dict(SCALES["quick"])
SEEDS: dict[str, int] = {"medium": 3, "preview": 3}  # a scale's default --seeds (others: 1)
DECAYS = ("weight_decay", "L1_decay")  # what a `Miniature` maps (multipliers follow them)


def lr_integral(protocol: Mapping[str, Any]) -> float:
    """``sum_t lr(t) / lr(0)`` over the protocol's steps: its decay integral per unit lr*wd."""
    images = protocol["train_subset"] or TRAIN_IMAGES
    stage_steps = math.ceil(images / protocol["batch_size"]) * protocol["epochs_per_stage"]
    return stage_steps * sum(0.5 ** k for k in range(protocol["stages"]))


@dataclasses.dataclass(frozen=True)
class Miniature:
    """A short protocol whose runs keep the fraction `kept` of the source's decay integral
    ``sum_t lr(t) * wd`` (docs/sweeps.md#preview-scale). With ``R`` the ratio of the source's
    `lr_integral` to the miniature's and ``g = kept * R``:

        lr' = lr * g ** lr_share,    wd' = wd * g ** (1 - lr_share)    (L1_decay as wd)

    ``lr_share = 1/2`` keeps the equilibrium norms ``~ (lr / wd) ** (1 / 4)``. Per-layer decay
    factors are measured at the source's width (`factor_width`).
    """

    source: str
    kept: float
    lr_share: float

    def gain(self, protocol: Mapping[str, Any]) -> float:
        """``g = kept * R``: the factor on ``lr * wd`` for runs at `protocol`."""
        return self.kept * lr_integral(SCALES[self.source]) / lr_integral(protocol)

    def factor_width(self, run_width: int | None) -> int:
        """The width per-layer decay factors are measured at: the run's own, else the source's."""
        return SCALES[self.source]["width"] if run_width is None else run_width

    def map_hparams(self, hparams: Mapping[str, Any], protocol: Mapping[str, Any],
                    base_lr: float) -> dict[str, Any]:
        """The hyperparameters a run uses at `protocol`; `base_lr` stands for an unset lr."""
        g = self.gain(protocol)
        lr = hparams.get("lr")
        out = dict(hparams, lr=(base_lr if lr is None else lr) * g ** self.lr_share)
        for key in DECAYS:
            if hparams.get(key) is not None:
                out[key] = hparams[key] * g ** (1 - self.lr_share)
        return out


# The only families the preview's constants were fitted on (named before the fit).
CALIBRATION_FAMILIES = ("dxp", "exp")

MINIATURES: dict[str, Miniature] = {
    "preview": Miniature(source="full", kept=0.05, lr_share=0.5),
}


def choose(scale: str | None) -> tuple[str, str]:
    """The scale to use and why: full on an accelerator, preview on CPU, unless given."""
    if scale is not None:
        return scale, "as asked"
    backend = jax.default_backend()
    if backend == "cpu":
        return "preview", "CPU only: the notebook's protocol in miniature; --scale full for its own"
    return "full", f"{backend} found"


def default_parallel() -> str:
    """vmap on accelerators; sequential on CPU, where vmapped convolutions measured slower."""
    return "sequential" if jax.default_backend() == "cpu" else "vmap"
