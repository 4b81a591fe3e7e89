"""wdjax: weight-decay research in JAX/Optax.

The map, bottom to top (a package imports only from those above it in this list):

* `wdjax.decay` -- the decay transforms, each an Optax ``GradientTransformation``;
* `wdjax.cpu` -- CPU convolution plan, Winograd and fused BatchNorm (used on CPU only);
* `wdjax.models` -- the notebook's VGG (from its layer list) and a CIFAR ResNet-18;
* `wdjax.layers` -- the layer table of any Flax model and the label trees stated on it;
* `wdjax.schemes` -- the named optimisers as table rows, built into Optax chains;
* `wdjax.data` -- CIFAR-style data from TFDS or an image folder / archive;
* `wdjax.analysis` -- dead units, norms, statistics over seeds, pictures;
* `wdjax.training` -- config, compiled steps, the training loop and its records.

`wdjax.storage` (atomic files, JSON lines, locks) sits under all of them.
"""

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
