"""The analyses the original experiments relied on: dead units, norms, angular updates.

Everything here is a pure function of parameter / gradient / state trees, so it can be
used on a live training state, on a restored checkpoint or inside a jitted step.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from wdjax import decay
from wdjax.decay.trees import lookup, path_keys, path_name
from wdjax.layers.labels import unit_cells

PyTree = Any
DEAD_THRESHOLDS = (1e-20, 1e-9, 1e-5)


def model_utilization(params: PyTree, layers: Any,
                      threshold: float = 1e-20) -> dict[str, tuple[int, int]]:
    """Dead input units per weight layer: ``{layer: (dead, total)}`` (docs/protocol.md#dead-units).

    For a kernel ``W`` (Flax HWIO or IO; PyTorch's ``W[out, in, kh, kw]``), ``s[j]`` is the
    mean of ``|W|`` over every axis but the input one; input unit ``j`` is dead when
    ``s[j] < threshold``. `layers` is the model's layer table (`wdjax.layers.table`) or the VGG's
    layer list.
    """
    from wdjax.layers import labels

    out = {}
    for layer in labels.table(params, layers):
        kernel = np.abs(np.asarray(lookup(params, layer.kernel)))
        s = kernel.mean(axis=tuple(i for i in range(kernel.ndim) if i != kernel.ndim - 2))
        out[layer.name] = (int((s < threshold).sum()), int(s.size))
    return out


def picture_layers(layers: Any) -> list[str]:
    """The layers whose outputs are drawn: the first at each depth, and the last.

    For the VGG that is the original's list: conv1_1, conv2_1, ..., conv5_1, fc6, logit.
    """
    names, depths = [], set()
    for layer in layers:
        if layer.depth not in depths:
            depths.add(layer.depth)
            names.append(layer.name)
    last = layers.layers[-1].name
    return names if last in names else [*names, last]


def unit_outputs(model: Any, variables: PyTree, images: jax.Array, names: list[str],
                 preprocess: Any, batch: int = 1000) -> dict[str, np.ndarray]:
    """Flattened outputs of the modules at paths `names` over `images`, in evaluation mode."""
    wanted = set(names)

    @jax.jit
    def capture(x):
        _, inter = model.apply(variables, preprocess(x), train=False,
                               capture_intermediates=lambda m, _: "/".join(m.path) in wanted)
        found = {}
        for path, leaf in jax.tree_util.tree_leaves_with_path(inter["intermediates"]):
            keys = list(path_keys(path))
            if "__call__" in keys:
                found["/".join(keys[:keys.index("__call__")])] = leaf
        return found

    outs: dict[str, list] = {}
    for i in range(0, len(images), batch):
        for k, v in jax.device_get(capture(images[i:i + batch])).items():
            outs.setdefault(k, []).append(np.asarray(v).reshape(-1))
    return {k: np.concatenate(outs[k]) for k in names if k in outs}


def sq_norms(tree: PyTree) -> jax.Array:
    """Squared L2 norm of every leaf, as one vector (leaf order of ``jax.tree.leaves``)."""
    return jnp.stack([jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)])


def tensor_monitors(params: PyTree, grads: PyTree, updates: PyTree, opt_state: Any,
                    spec: Any) -> dict[str, dict[str, jax.Array]]:
    """Per-tensor monitors (docs/protocol.md#what-is-measured) for tensors with 2+ dims.

    ``param``: ||p||; ``grad``: ||g|| (raw loss gradient); ``momentum``: ||momentum buffer||
    in `opt_state` (0 when the scheme keeps none, and 0 when its ``momentum`` hyperparameter
    is 0: `optax.trace` keeps a buffer equal to the update then, where the original had none);
    ``decay``: ||decay|| (what coupled decay adds);
    ``grad_on_decay``: <decay, g> / ||decay|| (the projection of g on the decay direction);
    ``update``: ||p_new - p|| (= lr * ||d||, after any L1 clip).
    `spec` is the scheme's `wdjax.schemes.chains.DecaySpec` or ``None`` (no coupled decay).
    """
    trace = optax.tree_utils.tree_get(opt_state, "trace")
    decays = (decay.decay_tree(params, *spec) if spec is not None
              else jax.tree.map(jnp.zeros_like, params))
    if trace is None:
        trace = jax.tree.map(jnp.zeros_like, params)
    # A run without momentum has no buffer to report (per run: the value may be traced).
    hyper = getattr(opt_state, "hyperparams", None) or {}
    has_buffer = jnp.asarray(hyper.get("momentum", 1.0)) != 0
    out = {}
    flat = jax.tree_util.tree_leaves_with_path(params)
    for (path, p), g, u, b, d in zip(flat, jax.tree.leaves(grads), jax.tree.leaves(updates),
                                     jax.tree.leaves(trace), jax.tree.leaves(decays),
                                     strict=True):
        if p.ndim < 2:
            continue
        dn = jnp.linalg.norm(d)
        out[path_name(path)] = dict(
            param=jnp.linalg.norm(p), grad=jnp.linalg.norm(g),
            momentum=jnp.where(has_buffer, jnp.linalg.norm(b), 0.0),
            decay=dn, grad_on_decay=jnp.where(dn > 0, jnp.vdot(d, g) / jnp.where(dn > 0, dn, 1),
                                              0.0),
            update=jnp.linalg.norm(u),
        )
    return out


# ------------------------------------------------------------------ topographic grouping
class TopographicGrouping(NamedTuple):
    """What `topographic_grouping` measures on one kernel (cells numbered ``x + grid * y``)."""

    cell_map: np.ndarray  # (grid^2, grid^2): mean |W| from input cell (column) to output cell (row)
    distance: np.ndarray  # (grid^2, grid^2): Euclidean distance between the two cells
    spearman: float       # Spearman rho between distance and cell_map over the cell pairs
    null: np.ndarray      # (permutations,): the same rho with the units permuted at random
    p_value: float        # one-sided permutation p-value of "rho is this negative by chance"


def _cell_mean(magnitude: np.ndarray, in_cells: np.ndarray, out_cells: np.ndarray,
               cells: int) -> np.ndarray:
    """Mean of ``magnitude[in, out]`` per (output cell, input cell); NaN for empty cells."""
    to_in, to_out = np.eye(cells)[in_cells], np.eye(cells)[out_cells]
    sums = to_out.T @ magnitude.T @ to_in
    counts = np.outer(to_out.sum(0), to_in.sum(0))
    return np.divide(sums, counts, out=np.full_like(sums, np.nan), where=counts > 0)


def topographic_grouping(kernel: Any, grid: int = 3, permutations: int = 100,
                         seed: int = 0) -> TopographicGrouping:
    """Does |W| fall with the grid distance between the units it connects, beyond chance?

    `kernel` is Flax HWIO or IO; its input and output units sit on a `grid` x `grid` map as
    `wdjax.layers.labels.unit_cells` places them (docs/schemes.md#topographic-multiplier).
    ``|W|`` is averaged over the spatial axes, then over each (output cell, input cell) pair
    of units. The statistic is Spearman's rho between the cells' distance and that mean over
    the pairs with units;
    grouping makes it negative. The null distribution permutes the input units and the
    output units at random (`permutations` times, NumPy generator `seed`), and the p-value
    is ``(1 + #{null rho <= rho}) / (1 + permutations)``: its least value is
    ``1 / (1 + permutations)``.
    """
    from scipy import stats  # imported here: slow to import, and only this function needs it

    kernel = np.asarray(kernel, np.float64)
    if kernel.ndim < 2 or grid < 1 or permutations < 1:
        raise ValueError(f"need a kernel of ndim >= 2 (got {kernel.ndim}), grid >= 1 (got "
                         f"{grid}) and permutations >= 1 (got {permutations})")
    magnitude = np.abs(kernel).reshape(-1, *kernel.shape[-2:]).mean(0)
    in_cells, out_cells = (unit_cells(n, grid) @ np.array([1, grid]) for n in kernel.shape[-2:])
    xy = np.stack([np.arange(grid**2) % grid, np.arange(grid**2) // grid], axis=1)
    distance = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))

    def rho(cell_map):
        used = ~np.isnan(cell_map)
        return float(stats.spearmanr(distance[used], cell_map[used]).statistic)

    cell_map = _cell_mean(magnitude, in_cells, out_cells, grid**2)
    rng = np.random.default_rng(seed)
    null = np.array([rho(_cell_mean(magnitude, rng.permutation(in_cells),
                                    rng.permutation(out_cells), grid**2))
                     for _ in range(permutations)])
    observed = rho(cell_map)
    p_value = (1 + int(np.sum(null <= observed))) / (1 + permutations)
    return TopographicGrouping(cell_map, distance, observed, null, p_value)
