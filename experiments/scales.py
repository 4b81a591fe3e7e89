"""The protocols a sweep can run at, as data.

``full`` is the notebook's (REFERENCE sections 1-3). ``quick`` is a CPU preview of the same
family: a narrower model, a class-balanced training subset, fewer and shorter stages with
the same halving shape, and the full test set. ``medium`` is quick's protocol with three
seeds by default: what 2 CPU cores afford in about 20 minutes for a family, to tell its
differences from seed noise (or to show they cannot be).
"""

from __future__ import annotations

import jax

SCALES: dict[str, dict] = {
    "full": dict(base=32, batch_size=128, stages=10, epochs_per_stage=20,
                 train_subset=None, test_subset=None),
    "quick": dict(base=8, batch_size=128, stages=4, epochs_per_stage=1,
                  train_subset=10000, test_subset=None),
}
# medium: quick's protocol with three seeds per run. Measured on 2 cores, a quick run takes
# about 57 s (4 epochs of 10 s, plus compilation and evaluation), so the 18 runs of dxp x 3
# seeds fit the 20-minute budget; a 4x larger protocol would take about 55 minutes.
SCALES["medium"] = dict(SCALES["quick"])
SEEDS: dict[str, int] = {"medium": 3}  # a scale's default --seeds (others: 1)


def choose(scale: str | None) -> tuple[str, str]:
    """The scale to use and why: full on an accelerator, quick on CPU, unless given."""
    if scale is not None:
        return scale, "as asked"
    backend = jax.default_backend()
    if backend == "cpu":
        return "quick", "CPU only; --scale full for the notebook's protocol"
    return "full", f"{backend} found"


def default_parallel() -> str:
    """vmap on accelerators; sequential on CPU, where vmapped convolutions measured slower."""
    return "sequential" if jax.default_backend() == "cpu" else "vmap"
