"""The weight-decay timescale, in epochs (Wang & Aitchison, ICML 2025, arXiv 2405.13698).

Decoupled decay ``p <- (1 - lr * wd) * p - lr * step`` makes ``p`` an exponential moving
average of the recent updates with timescale ``1 / (lr * wd)`` iterations. Measured in
epochs, ``tau_epochs = 1 / (lr * wd * steps_per_epoch)``; Wang & Aitchison ("How to set
AdamW's weight decay as you scale model and dataset size") find the best ``tau_epochs``
roughly constant across model and dataset sizes, so it is the number to sweep and transfer.

``lr * wd`` is the fraction of ``p`` removed per step: AdamW's (``torch.optim.AdamW``)
``lr`` and ``weight_decay``, or plain SGD's coupled L2 (without momentum). With a schedule,
quote ``lr`` at the rate the timescale is meant for (its peak). Inputs may be numbers or
arrays (a sweep grid), checked when concrete: every value finite and > 0.
"""

from __future__ import annotations

from typing import Any

from wdjax.decay.values import check_steps, check_values


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
