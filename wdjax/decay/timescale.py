"""The weight-decay timescale in epochs (Wang & Aitchison, ICML 2025, arXiv 2405.13698).

Decoupled decay ``p <- (1 - lr * wd) * p - lr * step`` averages the recent updates over
``1 / (lr * wd)`` iterations: ``tau_epochs = 1 / (lr * wd * steps_per_epoch)``, found roughly
constant across model and dataset sizes, so the number to sweep and transfer. ``lr`` is the
peak rate of a schedule. Concrete inputs must be finite and > 0.
"""

from __future__ import annotations

from typing import Any

from wdjax.decay.trees import check_steps, check_values


def weight_decay_from_tau(tau_epochs: Any, learning_rate: Any, steps_per_epoch: Any) -> Any:
    """``wd = 1 / (tau_epochs * lr * steps_per_epoch)``."""
    check_values("tau_epochs", tau_epochs, allow_zero=False)
    check_values("learning_rate", learning_rate, allow_zero=False)
    check_steps(steps_per_epoch)
    return 1.0 / (tau_epochs * learning_rate * steps_per_epoch)


def tau_from_weight_decay(weight_decay: Any, learning_rate: Any, steps_per_epoch: Any) -> Any:
    """``tau_epochs = 1 / (lr * wd * steps_per_epoch)``."""
    check_values("weight_decay", weight_decay, allow_zero=False)
    check_values("learning_rate", learning_rate, allow_zero=False)
    check_steps(steps_per_epoch)
    return 1.0 / (learning_rate * weight_decay * steps_per_epoch)
