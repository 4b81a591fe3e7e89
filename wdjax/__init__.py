"""wdjax: weight-decay research in JAX/Optax.

* `wdjax.decay` -- decay transforms (coupled/decoupled L2 and L1, L1 sign-crossing clip,
  layer-wise update normalisation), as Optax ``GradientTransformation``s;
* `wdjax.labels` -- label, coefficient and multiplier trees (which tensor gets what);
* `wdjax.schemes` -- the named optimisers of the original experiments;
* `wdjax.models` -- the declarative Flax VGG;
* `wdjax.data` (its sources in `wdjax.sources`), `wdjax.batches`, `wdjax.train`,
  `wdjax.analysis`, `wdjax.plots`, `wdjax.tensorboard` -- the training system.
"""

__version__ = "0.1.0"
