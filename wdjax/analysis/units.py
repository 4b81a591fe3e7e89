"""Dead units, tensor norms and topographic grouping: pure functions of parameter, gradient
and state trees (a live state, a restored checkpoint, or inside a jitted step)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from wdjax import decay
from wdjax.decay.trees import lookup, path_keys, path_name
from wdjax.layers import labels

PyTree = Any
DEAD_THRESHOLDS = (1e-20, 1e-9, 1e-5)


def model_utilization(params: PyTree, layers: Any,
                      threshold: float = 1e-20) -> dict[str, tuple[int, int]]:
    """Dead input units per weight layer: ``{layer: (dead, total)}``; input unit ``j`` is dead
    when the mean ``|W|`` over every axis but the input one is below `threshold`
    (docs/protocol.md#dead-units). `layers`: a `LayerTable` or the VGG's layer list."""
    out = {}
    for layer in labels.table(params, layers):
        kernel = np.abs(np.asarray(lookup(params, layer.kernel)))
        s = kernel.mean(axis=tuple(i for i in range(kernel.ndim) if i != kernel.ndim - 2))
        out[layer.name] = (int((s < threshold).sum()), int(s.size))
    return out


def picture_layers(layers: Any) -> list[str]:
    """The layers whose outputs are drawn: the first at each depth, and the last (for the VGG
    the original's conv1_1, conv2_1, ..., conv5_1, fc6, logit)."""
    first: dict[float, str] = {}
    for layer in layers:
        first.setdefault(layer.depth, layer.name)
    names, last = list(first.values()), layers.layers[-1].name
    return names if last in names else [*names, last]


def unit_outputs(model: Any, variables: PyTree, images: jax.Array, names: list[str],
                 preprocess: Any, batch: int = 1000) -> dict[str, np.ndarray]:
    """Flattened outputs of the modules at paths `names` over `images`, in evaluation mode."""
    wanted = set(names)

    @jax.jit
    def capture(x):
        _, inter = model.apply(variables, preprocess(x), train=False,
                               capture_intermediates=lambda m, _: "/".join(m.path) in wanted)
        leaves = jax.tree_util.tree_leaves_with_path(inter["intermediates"])
        keyed = [(path_keys(path), leaf) for path, leaf in leaves]
        return {"/".join(k[:k.index("__call__")]): leaf for k, leaf in keyed if "__call__" in k}

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
    """Norms of each tensor with 2+ dims (docs/protocol.md#what-is-measured): ``param``,
    ``grad``, ``momentum`` (0 without a buffer or at momentum 0), ``decay`` (coupled, from `spec`
    or None), ``grad_on_decay`` (<decay, g> / ||decay||) and ``update``."""
    zeros = jax.tree.map(jnp.zeros_like, params)
    trace = optax.tree_utils.tree_get(opt_state, "trace", zeros)
    decays = zeros if spec is None else decay.decay_tree(params, *spec)
    # A run without momentum has no buffer to report (per run: the value may be traced).
    hyper = getattr(opt_state, "hyperparams", None) or {}
    has_buffer = jnp.asarray(hyper.get("momentum", 1.0)) != 0
    out = {}
    leaves = map(jax.tree.leaves, (grads, updates, trace, decays))
    for (path, p), g, u, b, d in zip(jax.tree_util.tree_leaves_with_path(params), *leaves,
                                     strict=True):
        if p.ndim >= 2:
            dn = jnp.linalg.norm(d)
            out[path_name(path)] = dict(
                param=jnp.linalg.norm(p), grad=jnp.linalg.norm(g),
                momentum=jnp.where(has_buffer, jnp.linalg.norm(b), 0.0), decay=dn,
                grad_on_decay=jnp.where(dn > 0, jnp.vdot(d, g) / jnp.where(dn > 0, dn, 1), 0.0),
                update=jnp.linalg.norm(u))
    return out


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
    Spearman's rho of cell distance (`labels.unit_cells`) and mean |W| per (output, input) cell
    against `permutations` shuffles of the units: ``p = (1 + #{null rho <= rho}) / (1 + n)``."""
    from scipy import stats  # imported here: slow to import, and only this function needs it

    kernel = np.asarray(kernel, np.float64)
    if kernel.ndim < 2 or grid < 1 or permutations < 1:
        raise ValueError(f"need a kernel of ndim >= 2 (got {kernel.ndim}), grid >= 1 (got "
                         f"{grid}) and permutations >= 1 (got {permutations})")
    magnitude = np.abs(kernel).reshape(-1, *kernel.shape[-2:]).mean(0)
    in_cells, out_cells = (labels.unit_cells(n, grid) @ [1, grid] for n in kernel.shape[-2:])
    xy = labels.unit_cells(grid**2, grid)
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
