"""Every scheme hyperparameter's name, default, range and help, once: the source of the
`Config` fields, the CLI flags, the registry defaults, the validation and the docs table."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax


@dataclasses.dataclass(frozen=True)
class HParam:
    """One hyperparameter: a finite number in ``[low, high)`` (bounds open or closed)."""

    name: str
    default: float | None
    help: str
    low: float = 0.0
    high: float = math.inf
    low_open: bool = False
    high_open: bool = True
    short: str | None = None  # the original script's short flag, e.g. ``-wd``
    traced: bool = True  # lives in the optimiser state; may differ within a vmapped group
    sets: str | None = None  # another unit for that row: given instead of it, converted

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def interval(self) -> str:
        lo, hi = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{lo}{self.low:g}, {self.high:g}{hi}"

    def check(self, value: Any) -> None:
        """ValueError (one line) unless `value` is in range; traced values pass unchecked."""
        if isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            if value is None or callable(value) or isinstance(value, jax.core.Tracer):
                return  # unset, a schedule, or traced: checked by whoever made it
            raise ValueError(f"{self.name} must be a number in {self.interval()}, got {value!r}")
        x = float(value)
        above = x > self.low if self.low_open else x >= self.low
        below = x < self.high if self.high_open else x <= self.high
        if not (math.isfinite(x) and above and below):
            raise ValueError(f"{self.name} must be a finite number in {self.interval()}, "
                             f"got {value}")


TABLE: tuple[HParam, ...] = (
    HParam("lr", None, "base learning rate, halved after every stage (default: the scheme's, "
           "0.1; Adam 0.001)", low_open=True, short="-lr", traced=False),
    HParam("momentum", 0.0, "momentum of the SGD buffer (dampening 0, no Nesterov)", high=1.0),
    HParam("weight_decay", 5e-4, "L2 coefficient, or the base decay of the variance-inverse "
           "schemes", short="-wd"),
    HParam("L1_decay", 5e-6, "L1 coefficient of the L1 groups", short="-L1"),
    HParam("last1_mult", 1.0, "decay multiplier of the last weight layer"),
    HParam("last2_mult", 1.0, "decay multiplier of the last two weight layers"),
    HParam("topo_base", 2.0, "topographic multiplier base b: M = b ** distance", low_open=True),
    HParam("norm_ema", 0.98, "EMA rate of the update norm in layer-wise normalisation "
           "(0: the current norm)", high=1.0),
    HParam("tau_epochs", None, "weight-decay timescale in epochs, instead of weight_decay: "
           "weight_decay = 1 / (tau_epochs * lr * steps_per_epoch), lr the base rate "
           "(Wang & Aitchison 2025)", low_open=True, traced=False, sets="weight_decay"),
)

BY_NAME: Mapping[str, HParam] = {h.name: h for h in TABLE}
NAMES: tuple[str, ...] = tuple(BY_NAME)
TRACED: tuple[str, ...] = tuple(h.name for h in TABLE if h.traced)
# Rows that only set a traced row (in another unit): runs differing in them train together.
SETS_TRACED: tuple[str, ...] = tuple(h.name for h in TABLE if h.sets in TRACED)


def defaults() -> dict[str, float | None]:
    """``{name: default}`` for every row (``lr``'s ``None`` means the scheme's own)."""
    return {h.name: h.default for h in TABLE}


def validate(**values: Any) -> None:
    """ValueError naming the first value out of range (or unknown name) and what is allowed."""
    for name, value in values.items():
        if name not in BY_NAME:
            raise ValueError(f"unknown hyperparameter {name!r}; known: {', '.join(NAMES)}")
        BY_NAME[name].check(value)


def markdown() -> str:
    """The README's hyperparameter table."""
    rows = ["| hyperparameter | flag | default | range | what |", "|---|---|---|---|---|"]
    for h in TABLE:
        flags = f"`{h.flag}`" + (f" (`{h.short}`)" if h.short else "")
        default = f"{h.default:g}" if h.default is not None else ("unset" if h.sets else "scheme's")
        rows.append(f"| `{h.name}` | {flags} | {default} | {h.interval()} | {h.help} |")
    return "\n".join(rows) + "\n"
