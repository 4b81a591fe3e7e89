"""Weight-decay transforms as Optax ``GradientTransformation``s.

All the decay math of wdjax lives here. One update of the original experiments
(docs/schemes.md#one-update-step) is the chain::

    optax.chain(
        add_decay(coefficients, kinds, multipliers),   # d = g + wd * (p | sign p) * M
        optax.trace(momentum),                         # buf = momentum * buf + d; d = buf
        normalize_updates(ema_rate, times_weight_norm),  # d = d * ||p|| / (||d||_ema + 1e-8)
        optax.scale_by_learning_rate(lr),              # u = -lr * d
        clip_sign_crossing(l1_mask),                   # L1: a sign flip lands on exactly 0
    )

Trees (`coefficients`, `kinds`, `multipliers`, masks) either match the params tree leaf for
leaf or are a single value used for every leaf (see `wdjax.layers.labels` for building them).
Coefficients may be Python floats, arrays, or traced values, so one compiled program can
serve a whole sweep and ``jax.vmap`` can batch runs over them; any coefficient may also be an
Optax schedule, read at the transform's own step count.

Variants (``variants``, ``projections``): `independent_decay` (lr_t / lr_0 scaling),
`corrected_decay` (AdamC), `cautious_decay` (CWD), `add_decay_toward_init` (L2-SP),
`proximal_l1` (soft threshold) and `constrain_norms` (fixed per-unit or per-tensor norms);
``timescale`` converts between ``weight_decay`` and the timescale ``tau_epochs``.

Beyond the original experiments (docs/equilibrium.md): `rotational` wraps a direction transform
into a complete optimizer that rotates each unit by its equilibrium angle (with
`center_units` for the initial weights), `equilibrium_monitor` goes at the end of any chain
to measure angular updates against that equilibrium, and `scale_by_adam_blocks` is Adam
with one second moment per output unit or per tensor.
"""

from wdjax.decay.adam_blocks import ScaleByAdamBlocksState, scale_by_adam_blocks
from wdjax.decay.monitor import EquilibriumMonitorState, equilibrium_monitor
from wdjax.decay.normalize import NormalizeUpdatesState, normalize_updates
from wdjax.decay.projections import (
    ConstrainNormsState,
    constrain_norms,
    proximal_l1,
)
from wdjax.decay.rotational import (
    RotationalState,
    center_units,
    equilibrium_angle,
    rotational,
    rotational_leaves,
)
from wdjax.decay.terms import (
    add_decay,
    clip_sign_crossing,
    decay_term,
    decay_tree,
    decoupled_decay,
)
from wdjax.decay.timescale import tau_from_weight_decay, weight_decay_from_tau
from wdjax.decay.trees import KINDS
from wdjax.decay.values import StepCountState
from wdjax.decay.variants import (
    DecayTowardInitState,
    add_decay_toward_init,
    cautious_decay,
    corrected_decay,
    independent_decay,
)

__all__ = [
    "KINDS",
    "ConstrainNormsState",
    "DecayTowardInitState",
    "EquilibriumMonitorState",
    "NormalizeUpdatesState",
    "RotationalState",
    "ScaleByAdamBlocksState",
    "StepCountState",
    "add_decay",
    "add_decay_toward_init",
    "cautious_decay",
    "center_units",
    "clip_sign_crossing",
    "constrain_norms",
    "corrected_decay",
    "decay_term",
    "decay_tree",
    "decoupled_decay",
    "equilibrium_angle",
    "equilibrium_monitor",
    "independent_decay",
    "normalize_updates",
    "proximal_l1",
    "rotational",
    "rotational_leaves",
    "scale_by_adam_blocks",
    "tau_from_weight_decay",
    "weight_decay_from_tau",
]
