"""Weight-decay transforms as Optax ``GradientTransformation``s: all the decay math of wdjax.
One update of the original experiments (docs/schemes.md#one-update-step) chains `add_decay`,
``optax.trace``, `normalize_updates`, ``optax.scale_by_learning_rate``, `clip_sign_crossing`.
Hyperparameters: one value or trees by path (`wdjax.layers.labels`), traced or schedules."""

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
    tau_from_weight_decay,
    weight_decay_from_tau,
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
