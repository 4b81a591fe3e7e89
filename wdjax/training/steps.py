"""The compiled pieces of a run: state, schedule, train (with monitors) and eval steps,
built once per group of runs that share all but their traced hyperparameters (`programs`)."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from wdjax import schemes, storage
from wdjax.analysis import units
from wdjax.cpu import ops, tune
from wdjax.layers import LayerTable, labels
from wdjax.models import VGG, init_variables, vgg_conf
from wdjax.models.resnet import ResNet18
from wdjax.training import batches, parallel
from wdjax.training.config import PRECISIONS, Config

PyTree = Any


def lr_schedule(lr: float, steps_per_epoch: int, epochs_per_stage: int) -> optax.Schedule:
    """``lr * 0.5 ** stage``: halved after every `epochs_per_stage` epochs
    (docs/protocol.md#schedule-and-base-optimiser)."""
    stage_steps = steps_per_epoch * epochs_per_stage
    return lambda count: lr * 0.5 ** (count // stage_steps)


class TrainState(struct.PyTreeNode):
    step: jax.Array
    params: PyTree
    batch_stats: PyTree
    opt_state: PyTree


def make_model(cfg: Config, num_classes: int, in_channels: int,
               platform: str | None = None) -> nn.Module:
    """The notebook VGG at ``width`` or ResNet-18 at ``2 * width``, built for `platform`
    (None: JAX's default backend) and computing in the dtype of ``cfg.precision``."""
    dtype = jnp.dtype(PRECISIONS[cfg.precision])
    if cfg.model == "resnet18":
        return ResNet18(num_classes, width=2 * cfg.width, platform=platform, dtype=dtype)
    return VGG(vgg_conf(cfg.width, num_classes, in_channels), conv_impl=cfg.conv_impl,
               platform=platform, dtype=dtype)


def model_layers(model: nn.Module, variables: PyTree, image_shape: Sequence[int]) -> LayerTable:
    """The model's layer table (from the VGG's layer list, or traced for any other model)."""
    if isinstance(model, VGG):
        return labels.table(variables["params"], model.conf)
    return labels.trace_layers(model, variables, jnp.zeros((1, *image_shape)), train=False)


def _cross_entropy(logits: jax.Array, y: jax.Array, mask: jax.Array) -> jax.Array:
    # float32 at any compute dtype: the loss, and so every gradient, is a float32 sum.
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y) * mask


def train_step(state: TrainState, x: jax.Array, y: jax.Array, mask: jax.Array,
               key: jax.Array, last: bool | jax.Array = False, *, model: nn.Module,
               tx: optax.GradientTransformation,
               spec_fn: Callable | None = None) -> tuple[TrainState, dict]:
    """One optimiser step on the (augmented, normalised) batch `x`; padded rows have mask 0.
    With `spec_fn` (optimiser state -> `DecaySpec`), ``metrics["tensors"]`` holds the step's
    `units.tensor_monitors` when `last` is true, else zeros (not computed: ``lax.cond``)."""
    count = mask.sum()

    def loss_fn(params):
        logits, new_vars = model.apply({"params": params, "batch_stats": state.batch_stats}, x,
                                       train=True, mask=mask, mutable=["batch_stats"],
                                       rngs={"dropout": key})
        return _cross_entropy(logits, y, mask).sum() / count, (logits, new_vars["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(loss=loss, correct=((logits.argmax(-1) == y) * mask).sum(),
                   sq_param=units.sq_norms(state.params), sq_update=units.sq_norms(updates))
    if spec_fn is not None:
        def monitors():
            return units.tensor_monitors(state.params, grads, updates, opt_state,
                                         spec_fn(state.opt_state))

        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(monitors))
        metrics["tensors"] = jax.lax.cond(last, monitors, lambda: zeros)
    return TrainState(state.step + 1, params, batch_stats, opt_state), metrics


def eval_step(params: PyTree, batch_stats: PyTree, x: jax.Array, y: jax.Array,
              mask: jax.Array, *, model: nn.Module) -> tuple[jax.Array, jax.Array]:
    """Correct count and summed loss on the normalised batch `x`, in evaluation mode."""
    logits = model.apply({"params": params, "batch_stats": batch_stats}, x, train=False)
    return ((logits.argmax(-1) == y) * mask).sum(), _cross_entropy(logits, y, mask).sum()


def stack(trees: Sequence[PyTree]) -> PyTree:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree: PyTree, k: int) -> list[PyTree]:
    return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(k)]


def optimizer(cfg: Config, params: PyTree, layers: LayerTable, lr: optax.Schedule,
              factors: Mapping[str, float] | None = None) -> optax.GradientTransformation:
    """The run's optimiser: the scheme of `cfg` with its traced hyperparameters and the
    equilibrium monitor; `factors`: see `schemes.build`; `lr` peaks at `Config.base_lr`."""
    return schemes.build(cfg.optimizer, params=params, layers=layers, lr=lr,
                         max_learning_rate=cfg.base_lr, separate_decay=cfg.separate_decay,
                         monitor=True, factors=factors, **cfg.hparams())


class Programs(NamedTuple):
    """The model and the compiled steps shared by every run with the same `shared_key`."""

    model: nn.Module
    layers: LayerTable
    params0: PyTree  # a template (seed 0): shapes, and the layer table's source
    batch_stats0: PyTree
    schedule: optax.Schedule
    image_shape: tuple
    num_classes: int
    step: Callable
    eval: Callable
    unstack: Callable
    mesh: parallel.Mesh


def _vmapped(f: Callable, k_runs: int, n_run_args: int, n_shared: int) -> Callable:
    """`f` over stacked runs (the first `n_run_args` arguments) sharing the rest."""
    axes = (0,) * n_run_args + (None,) * n_shared
    return jax.vmap(f, in_axes=axes) if k_runs > 1 else f


@functools.lru_cache(maxsize=4)
def _programs(shared: tuple, k_runs: int, image_shape: tuple, num_classes: int,
              n_train: int, mesh: parallel.Mesh, per_run_data: bool,
              platform: str | None, conv_tune: bool | None) -> Programs:
    del conv_tune  # read when the CPU convs are traced (`wdjax.cpu.tune`); here a cache key
    cfg = Config(**dict(shared))
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    schedule = lr_schedule(cfg.base_lr, steps_per_epoch, cfg.epochs_per_stage)
    model = make_model(cfg, num_classes, image_shape[-1], platform)
    # A template for shapes and the layer table; each run's own initial weights (from its
    # seed) and the factors measured on them enter through its state (`initial_states`).
    variables = init_variables(model, jax.random.PRNGKey(0), image_shape)
    params0 = schemes.initial_params(cfg.optimizer, variables["params"])
    layers = model_layers(model, variables, image_shape)
    tx = optimizer(cfg, params0, layers, schedule)

    def spec_fn(opt_state):
        return schemes.spec_from_state(cfg.optimizer, opt_state, params0, layers)

    one_step = functools.partial(train_step, model=model, tx=tx, spec_fn=spec_fn)
    rep, split = parallel.replicated(mesh), parallel.rows_sharding(mesh, 1)

    def batch(images, labels_, idx, mask, i):
        """Row i of the epoch's index matrix, gathered on device and split over `data`."""
        x = jax.lax.with_sharding_constraint(images[idx[i]], split)
        return x, labels_[idx[i]], jax.lax.with_sharding_constraint(mask[i], split)

    def augmented(images, labels_, idx, mask, epoch, i, key):
        x, y, m = batch(images, labels_, idx, mask, i)
        # The flip depends on the seed, epoch and step only: resumed runs, vmapped runs and
        # sequential runs all see the same batches.
        key = jax.random.fold_in(jax.random.fold_in(key, epoch), i)
        return batches.augment(jax.random.fold_in(key, 0), x), y, m, jax.random.fold_in(key, 1)

    def step(state, images, labels_, idx, mask, epoch, i, key):
        last = i == steps_per_epoch - 1  # the epoch's monitors are this step's values
        if per_run_data:  # each run its own seed: its own batch order and flips
            return jax.vmap(lambda s, ix, k: one_step(
                s, *augmented(images, labels_, ix, mask, epoch, i, k), last))(state, idx, key)
        return _vmapped(one_step, k_runs, 1, 5)(
            state, *augmented(images, labels_, idx, mask, epoch, i, key), last)

    def evaluate(params, batch_stats, images, labels_, idx, mask, i):
        x, y, m = batch(images, labels_, idx, mask, i)
        one = functools.partial(eval_step, model=model)
        return _vmapped(one, k_runs, 2, 3)(params, batch_stats, batches.normalize(x), y, m)

    runs = parallel.run_sharding(mesh, k_runs > 1)
    return Programs(model, layers, params0, variables["batch_stats"], schedule, image_shape,
                    num_classes, step=jax.jit(step, out_shardings=(runs, rep), donate_argnums=0),
                    eval=jax.jit(evaluate, out_shardings=rep),
                    unstack=jax.jit(lambda s: unstack(s, k_runs), out_shardings=rep), mesh=mesh)


def programs(configs: Sequence[Config], image_shape: Sequence[int], num_classes: int,
             n_train: int, mesh: parallel.Mesh, platform: str | None = None) -> Programs:
    """Compiled steps for a group of runs (cached for later groups that share them); another
    `platform` than the default backend's gives programs to lower for it, not run. Whether CPU
    conv plans are tuned (``$WDJAX_CONV_TUNE``) is part of the key: it changes the trace."""
    return _programs(configs[0].shared_key(), len(configs), tuple(image_shape), num_classes,
                     n_train, mesh, per_run_data(configs), platform,
                     tune.enabled() if ops.on_cpu(platform) else None)


def per_run_data(configs: Sequence[Config]) -> bool:
    """Whether the runs draw their own batches and flips (they have different seeds)."""
    return len({c.seed for c in configs}) > 1


FACTOR_TOLERANCE = 1e-6  # relative: recomputed factors further from recorded ones fail


class Start(NamedTuple):
    """A run's starting point: its initial variables and per-layer decay factors."""

    variables: PyTree
    factors: dict[str, float]


def measured_factors(cfg: Config, params: PyTree, prog: Programs) -> dict[str, float]:
    """A run's per-layer decay factors, measured on its initial `params`, or with
    ``cfg.factor_width`` on the same seed's model at that width (docs/sweeps.md#preview-scale)."""
    if (cfg.factor_width in (None, cfg.width)
            or schemes.get(cfg.optimizer).coefficients == "uniform"):
        return schemes.layer_factors(cfg.optimizer, params, prog.layers)
    # XLA's convolution: initial values do not depend on the plan, and nothing is tuned.
    source = dataclasses.replace(cfg, width=cfg.factor_width, conv_impl="xla")
    model = make_model(source, prog.num_classes, prog.image_shape[-1])
    variables = init_variables(model, jax.random.PRNGKey(cfg.seed), prog.image_shape)
    source_params = schemes.initial_params(cfg.optimizer, variables["params"])
    return schemes.layer_factors(cfg.optimizer, source_params,
                                 model_layers(model, variables, prog.image_shape))


def starts(configs: Sequence[Config], prog: Programs,
           recorded: Sequence[Mapping[str, float] | None] | None = None) -> list[Start]:
    """Each run's initial variables (from its seed) and factors: measured, or when it resumes
    those its record holds (`recorded`, per run; fixed at initialisation:
    docs/schemes.md#variance-inverse-coefficients). RunError when the two differ by more than
    `FACTOR_TOLERANCE` (e.g. after a change in JAX's random numbers)."""
    by_seed = {s: init_variables(prog.model, jax.random.PRNGKey(s), prog.image_shape)
               for s in {c.seed for c in configs}}
    out = []
    for c, rec in zip(configs, recorded or [None] * len(configs), strict=True):
        # Rotational schemes start from centred kernels: docs/equilibrium.md#the-rotational-update
        v = dict(by_seed[c.seed], params=schemes.initial_params(c.optimizer,
                                                                by_seed[c.seed]["params"]))
        measured = measured_factors(c, v["params"], prog)
        differ = [] if rec is None else [
            name for name in sorted(set(measured) | set(rec)) if not math.isclose(
                measured.get(name, math.nan), rec.get(name, math.nan), rel_tol=FACTOR_TOLERANCE)]
        if differ:
            raise storage.RunError(
                f"run {c.name!r}: decay factors recomputed from seed {c.seed} differ from the "
                f"recorded ones ({len(differ)} layer(s), e.g. {differ[0]}: recorded "
                f"{rec.get(differ[0])}, now {measured.get(differ[0])}); resume with the JAX "
                "version that started the run, or delete its checkpoints to start it over")
        out.append(Start(v, dict(measured if rec is None else rec)))
    return out


def initial_states(configs: Sequence[Config], prog: Programs,
                   run_starts: Sequence[Start]) -> list[TrainState]:
    """Each run's first state: its weights and its own optimiser's state initialised on them."""
    states = []
    for c, st in zip(configs, run_starts, strict=True):
        params = st.variables["params"]
        tx = optimizer(c, params, prog.layers, prog.schedule, st.factors)
        states.append(TrainState(jnp.zeros([], jnp.int32), params, st.variables["batch_stats"],
                                 tx.init(params)))
    return states
