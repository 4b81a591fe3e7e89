"""The transforms of the schemes' update step (docs/schemes.md#one-update-step): coupled and
decoupled L2/L1 decay, layer-wise normalised updates, the L1 sign-crossing clip, and Adam with
one second moment per block (docs/schemes.md#adam-blocks)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wdjax.decay.trees import KINDS, PyTree, leafwise, like, require_params, unit_axes, unit_norm

GRANULARITIES = ("element", "unit", "layer")


def decay_term(param: jax.Array, coefficient: Any, kind: str = "l2",
               multiplier: Any = None) -> jax.Array:
    """``coefficient * p`` (L2) or ``coefficient * sign(p)`` (L1), times `multiplier` if given:
    the gradient of ``coef/2 * ||p||^2`` or ``coef * ||p||_1`` (subgradient 0 at p = 0)."""
    if kind not in KINDS:
        raise ValueError(f"decay kind {kind!r} is not one of {', '.join(KINDS)}")
    term = coefficient * (param if kind == "l2" else jnp.sign(param))
    return term if multiplier is None else term * multiplier


def decay_tree(params: PyTree, coefficients: Any, kinds: Any = "l2",
               multipliers: Any = None) -> PyTree:
    """`decay_term` on every leaf of `params` (the tree that coupled decay adds)."""
    return jax.tree.map(decay_term, params, like(params, coefficients), like(params, kinds),
                        like(params, multipliers))


def add_decay(coefficients: Any, kinds: Any = "l2",
              multipliers: Any = None) -> optax.GradientTransformation:
    """Coupled weight decay: ``d = g + wd_t * (p | sign(p)) * M``.

    Before momentum / Adam: L2/L1 in the loss (``torch.optim.SGD(weight_decay=...)``); after
    ``optax.scale_by_adam``, before the lr: AdamW's decay. ``wd``: scalars or per-leaf trees,
    schedules read at this transform's count (state `StepCountState`, else
    ``optax.EmptyState``); `kinds`: ``'l2'`` / ``'l1'`` or a tree; ``M``: element-wise, or None.
    """

    def add(g, p, coefficient, kind, multiplier):
        return jnp.add(g, decay_term(p, coefficient, kind, multiplier))

    scheduled = any(callable(leaf) for leaf in jax.tree.leaves(coefficients))
    return leafwise(add, coefficients, kinds, multipliers, counted=scheduled)


def decoupled_decay(coefficients: Any, learning_rate: Any, kinds: Any = "l2",
                    multipliers: Any = None) -> optax.GradientTransformation:
    """Decoupled decay on final updates: ``u = u - lr_t * wd_t * (p | sign(p)) * M``, as
    ``torch.optim.AdamW``, after a whole optimiser (``optax.chain(optax.adam(lr),
    decoupled_decay(wd, lr))``). `learning_rate`, coefficients: floats, schedules or trees."""

    def decay(u, p, coefficient, lr, kind, multiplier):
        return u - lr * decay_term(p, coefficient, kind, multiplier)

    return leafwise(decay, coefficients, learning_rate, kinds, multipliers)


def clip_sign_crossing(mask: Any = True) -> optax.GradientTransformation:
    """L1 clipping on final updates ``u``: where ``sign(p) * sign(p + u) == -1`` the update
    becomes ``-p``, so ``p + u == 0`` exactly (an element at 0 is never clipped). `mask`: a
    static bool or tree of bools choosing the (L1-decayed) leaves."""

    def clip(u, p, chosen):
        return jnp.where(jnp.sign(p) * jnp.sign(p + u) < 0, -p, u) if chosen else u

    return leafwise(clip, mask, counted=False)


class NormalizeUpdatesState(NamedTuple):
    count: jax.Array  # steps taken; the EMA starts from the first norm
    norm_ema: PyTree  # per leaf: EMA of ||d|| (scalar, or one per output unit)


def normalize_updates(ema_rate: Any = 0.0, times_weight_norm: bool = True,
                      per_unit: bool = False, eps: float = 1e-8) -> optax.GradientTransformation:
    """Layer-wise update normalisation (docs/schemes.md#layer-specific-normalisation):
    ``d = d * w / (e + eps)``, ``w = ||p||`` (1 without `times_weight_norm`).

    ``e = ||d||`` at the first step, then ``e = r * e + (1 - r) * ||d||``, ``r = ema_rate``.
    Norms per tensor, or per output channel (last axis) with `per_unit`. An all-zero tensor
    with `times_weight_norm` never moves. Goes after momentum; the buffer is never rescaled.
    """

    def init_fn(params):
        norms = jax.tree.map(lambda p: jnp.zeros_like(unit_norm(p, per_unit)), params)
        return NormalizeUpdatesState(count=jnp.zeros([], jnp.int32), norm_ema=norms)

    def update_fn(updates, state, params=None):
        if times_weight_norm:
            require_params(params)
        first = state.count == 0
        norms = jax.tree.map(lambda d: unit_norm(d, per_unit), updates)
        ema = jax.tree.map(lambda e, n: jnp.where(first, n, ema_rate * e + (1 - ema_rate) * n),
                           state.norm_ema, norms)
        weights = (jax.tree.map(lambda p: unit_norm(p, per_unit), params) if times_weight_norm
                   else jax.tree.map(lambda e: 1.0, ema))
        updates = jax.tree.map(lambda d, w, e: d * (w / (e + eps)), updates, weights, ema)
        return updates, NormalizeUpdatesState(optax.safe_increment(state.count), ema)

    return optax.GradientTransformation(init_fn, update_fn)


class ScaleByAdamBlocksState(NamedTuple):
    count: jax.Array  # steps taken
    mu: PyTree        # first moment, one per element
    nu: PyTree        # second moment, one per block (kept broadcastable to its leaf)


def scale_by_adam_blocks(granularity: str = "unit", b1: Any = 0.9, b2: Any = 0.999,
                         eps: Any = 1e-8) -> optax.GradientTransformation:
    """Adam whose second moment is shared by a block of elements.

    ``mu <- b1 mu + (1 - b1) g`` per element; ``nu <- b2 nu + (1 - b2) mean_block(g^2)`` per
    block; ``d = mu_hat / (sqrt(nu_hat) + eps)`` with ``mu_hat = mu / (1 - b1^t)``,
    ``nu_hat = nu / (1 - b2^t)``: ``optax.scale_by_adam`` for ``"element"``.

    A block: one output unit (``"unit"``, the last axis; a 1-D leaf gets plain Adam), the
    tensor (``"layer"``) or one element. `b1`, `b2`, `eps` may be traced.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity {granularity!r} is not one of "
                         f"{', '.join(GRANULARITIES)}")

    def mean_square(g):
        axes = () if granularity == "element" else unit_axes(g, granularity == "unit")
        # A one-element block's mean is g**2 itself: skipping the reduction keeps "element"
        # bit-for-bit optax.scale_by_adam.
        return jnp.mean(jnp.square(g), axis=axes, keepdims=True) if axes else g**2

    def init_fn(params):
        mu = jax.tree.map(jnp.zeros_like, params)
        nu = jax.tree.map(lambda p: jnp.zeros_like(mean_square(p)), params)
        return ScaleByAdamBlocksState(count=jnp.zeros([], jnp.int32), mu=mu, nu=nu)

    def update_fn(updates, state, params=None):
        del params
        mu = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, updates, state.mu)
        nu = jax.tree.map(lambda g, v: (1 - b2) * mean_square(g) + b2 * v, updates, state.nu)
        count = optax.safe_increment(state.count)
        mu_hat = optax.tree.bias_correction(mu, b1, count)
        nu_hat = optax.tree.bias_correction(nu, b2, count)
        updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu_hat, nu_hat)
        return updates, ScaleByAdamBlocksState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)
