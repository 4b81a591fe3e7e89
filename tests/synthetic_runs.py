"""Hand-written run records (config.json, metrics.jsonl, summary.json) for report tests.

Only the fields the readers use are written, with `wdjax.storage`, as a trainer would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from experiments import scales
from wdjax import storage

LAYERS = {"conv1_1": 512, "fc6": 1024, "logit": 2048}  # layer -> input units


def write_seed(d: Path, final: float, best: float | None = None, *, scale: str = "quick",
               curve: Mapping[int, float] | None = None, dead: Mapping[str, int] | None = None,
               train_correct: int = 5084, diverged: bool = False, finished: bool = True,
               coefficient: float = 1e-4) -> Path:
    """One seed's records in `d`: test accuracy per epoch in `curve` (last epoch = final)."""
    d.mkdir(parents=True, exist_ok=True)
    curve = dict(curve or {1: final / 2, 2: final})
    last = max(curve)
    curve[last] = final
    storage.write_json(d / "config.json", dict(
        config=dict(name=d.name, **scales.SCALES[scale]),
        layers={k: dict(coefficient=coefficient * (i + 1)) for i, k in enumerate(LAYERS)}))
    storage.rewrite_jsonl(d / "metrics.jsonl", [dict(epoch=e, test_accuracy=curve[e])
                                                for e in sorted(curve)])
    if finished:
        dead = dict(dead or {})
        storage.write_json(d / "summary.json", dict(
            final_test_accuracy=final, best_test_accuracy=max(final, best or final),
            final_train_correct=train_correct, train_total=10000, best_epoch=last,
            diverged=dict(step=3) if diverged else None,
            dead_units={"1e-09": {k: [dead.get(k, 0), n] for k, n in LAYERS.items()}}))
    return d


def write_run(run_dir: Path, finals: Sequence[float], bests: Sequence[float] | None = None,
              **kwargs) -> Path:
    """A run of len(finals) seeds in ``run_dir/seed<k>/``; a single value writes no seed dirs."""
    bests = list(bests) if bests is not None else [None] * len(finals)
    if len(finals) == 1:
        write_seed(run_dir, finals[0], bests[0], **kwargs)
        return run_dir
    for k, (final, best) in enumerate(zip(finals, bests, strict=True)):
        write_seed(storage.seed_dir(run_dir, k), final, best, **kwargs)
    return run_dir
