"""Weight-decay transforms as Optax ``GradientTransformation``s: all the decay math of wdjax.

One update of the original experiments (docs/schemes.md#one-update-step) is the chain::

    optax.chain(
        add_decay(coefficients, kinds, multipliers),   # d = g + wd * (p | sign p) * M
        optax.trace(momentum),                         # buf = momentum * buf + d; d = buf
        normalize_updates(ema_rate, times_weight_norm),  # d = d * ||p|| / (||d||_ema + 1e-8)
        optax.scale_by_learning_rate(lr),              # u = -lr * d
        clip_sign_crossing(l1_mask),                   # L1: a sign flip lands on exactly 0
    )

Hyperparameter trees match the params leaf for leaf or are one value for all
(`wdjax.layers.labels` builds them); values may be traced or Optax schedules. Modules: ``terms``
(the chain's transforms), ``variants``, ``equilibrium`` (docs/equilibrium.md), ``timescale``.
"""

from wdjax.decay.equilibrium import (
    EquilibriumMonitorState,
    RotationalState,
    center_units,
    equilibrium_angle,
    equilibrium_monitor,
    rotational,
    rotational_leaves,
)
from wdjax.decay.terms import (
    NormalizeUpdatesState,
    ScaleByAdamBlocksState,
    add_decay,
    clip_sign_crossing,
    decay_term,
    decay_tree,
    decoupled_decay,
    normalize_updates,
    scale_by_adam_blocks,
)
from wdjax.decay.timescale import tau_from_weight_decay, weight_decay_from_tau
from wdjax.decay.trees import KINDS, StepCountState
from wdjax.decay.variants import (
    ConstrainNormsState,
    DecayTowardInitState,
    add_decay_toward_init,
    cautious_decay,
    constrain_norms,
    corrected_decay,
    independent_decay,
    proximal_l1,
)

__all__ = [
    "KINDS", "ConstrainNormsState", "DecayTowardInitState", "EquilibriumMonitorState",
    "NormalizeUpdatesState", "RotationalState", "ScaleByAdamBlocksState", "StepCountState",
    "add_decay", "add_decay_toward_init", "cautious_decay", "center_units", "clip_sign_crossing",
    "constrain_norms", "corrected_decay", "decay_term", "decay_tree", "decoupled_decay",
    "equilibrium_angle", "equilibrium_monitor", "independent_decay", "normalize_updates",
    "proximal_l1", "rotational", "rotational_leaves", "scale_by_adam_blocks",
    "tau_from_weight_decay", "weight_decay_from_tau",
]
