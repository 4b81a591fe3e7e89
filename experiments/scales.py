"""The protocols a sweep can run at, as data.

``full`` is the notebook's (REFERENCE sections 1-3). ``quick`` is a CPU preview of the same
family: a narrower model, a class-balanced training subset, fewer and shorter stages with
the same halving shape, and the full test set. ``medium`` is four times quick's work per run,
with three seeds by default: the CPU scale at which a family's differences can be told from
seed noise (or shown not to be).
"""

from __future__ import annotations

import jax

SCALES: dict[str, dict] = {
    "full": dict(base=32, batch_size=128, stages=10, epochs_per_stage=20,
                 train_subset=None, test_subset=None),
    "quick": dict(base=8, batch_size=128, stages=4, epochs_per_stage=1,
                  train_subset=10000, test_subset=None),
    "medium": dict(base=8, batch_size=128, stages=4, epochs_per_stage=2,
                   train_subset=20000, test_subset=None),
}
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
