"""wdjax: weight-decay research in JAX/Optax. Packages, bottom to top (each imports only from
those before it): storage, decay (the Optax transforms), cpu, models, layers (layer tables, label
trees), schemes (named optimisers), data, analysis, training."""

from wdjax import analysis, cpu, data, decay, layers, models, schemes, storage, training
from wdjax.decay import (
    add_decay,
    add_decay_toward_init,
    cautious_decay,
    center_units,
    clip_sign_crossing,
    constrain_norms,
    corrected_decay,
    decay_tree,
    decoupled_decay,
    equilibrium_angle,
    equilibrium_monitor,
    independent_decay,
    normalize_updates,
    proximal_l1,
    rotational,
    scale_by_adam_blocks,
    tau_from_weight_decay,
    weight_decay_from_tau,
)
from wdjax.layers import Layer, LayerTable, trace_layers
from wdjax.layers.labels import (
    kernel_only,
    layer_labels,
    per_layer,
    topographic_multiplier,
    variance_inverse_coefficients,
)
from wdjax.models import VGG, ResNet18, init_variables, vgg_conf
from wdjax.schemes import SCHEMES, Scheme, build, decay_spec
from wdjax.training.config import Config
from wdjax.training.train import train

__version__ = "0.1.0"

__all__ = [
    "SCHEMES", "VGG", "Config", "Layer", "LayerTable", "ResNet18", "Scheme", "add_decay",
    "add_decay_toward_init", "analysis", "build", "cautious_decay", "center_units",
    "clip_sign_crossing", "constrain_norms", "corrected_decay", "cpu", "data", "decay",
    "decay_spec", "decay_tree", "decoupled_decay", "equilibrium_angle", "equilibrium_monitor",
    "independent_decay", "init_variables", "kernel_only", "layer_labels", "layers", "models",
    "normalize_updates", "per_layer", "proximal_l1", "rotational", "scale_by_adam_blocks",
    "schemes", "storage", "tau_from_weight_decay", "topographic_multiplier", "trace_layers",
    "train", "training", "variance_inverse_coefficients", "vgg_conf", "weight_decay_from_tau",
]
