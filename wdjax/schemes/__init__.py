"""The named optimisers as data (`table`), built into Optax chains (`chains`), and the
hyperparameters they take (`hparams`)."""

from wdjax.schemes.chains import (
    COEFFICIENT_RULES,
    DecaySpec,
    build,
    decay_spec,
    initial_params,
    layer_factors,
    layer_table,
    resolve,
    spec_from_state,
    state_factors,
)
from wdjax.schemes.table import ALIASES, DECAY_FORMS, SCHEMES, Scheme, get, names

__all__ = ["ALIASES", "COEFFICIENT_RULES", "DECAY_FORMS", "SCHEMES", "DecaySpec", "Scheme",
           "build", "decay_spec", "get", "initial_params", "layer_factors", "layer_table",
           "names", "resolve", "spec_from_state", "state_factors"]
