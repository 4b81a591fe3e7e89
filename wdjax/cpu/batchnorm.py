"""Training-mode BatchNorm in few memory passes, with a hand-written gradient. Per channel, over
all axes but the last, with per-example weights w (the padded-row mask): ``mean = sum w x / n``,
``var = sum w (x - mean)^2 / n`` (biased), ``y = (x - mean) a + bias``, ``a = scale / sqrt(var +
eps)``; backward, one reduction pass and one elementwise pass:
``dx = a dy - w a / n (sum dy + xhat sum dy xhat) + w (dmean + 2 dvar (x - mean)) / n``.
Every row is normalised; only rows with w = 1 feed the statistics. The sums are shifted by the
first row, so that float32 var = E[(x-s)^2] - E[x-s]^2 does not cancel when |mean| >> std."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax


def _weights(mask: jax.Array | None, x: jax.Array) -> jax.Array | None:
    return None if mask is None else mask.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)


def _sum(v: jax.Array, w: jax.Array | None) -> jax.Array:
    return (v if w is None else v * w).sum(tuple(range(v.ndim - 1)))


def count(x: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Values per channel that feed the statistics: weighted rows x spatial positions."""
    per_example = math.prod(x.shape[1:-1])
    rows = x.shape[0] if mask is None else mask.astype(jnp.float32).sum()
    return jnp.asarray(rows * per_example, jnp.float32)


def _statistics(x: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """(mean, biased var) of the weighted rows, from one pass over shifted sums."""
    w = _weights(mask, x)
    shift = lax.stop_gradient(x[(0,) * (x.ndim - 1)])
    xs = (x - shift).astype(jnp.float32)
    n = count(x, mask)  # both sums read x once: XLA fuses sibling reductions
    m1, m2 = _sum(xs, w) / n, _sum(xs * xs, w) / n
    var = jnp.maximum(m2 - m1 * m1, 0.0)
    return (shift + m1).astype(x.dtype), var.astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array,
                     mask: jax.Array | None, epsilon: float = 1e-5,
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(y, mean, biased var) of training-mode BatchNorm over all axes but the last; `mask` (N,)
    of 0/1 (None: every row counts) drops padded examples from the statistics."""
    return _fwd(x, scale, bias, mask, epsilon)[0]


def _fwd(x, scale, bias, mask, epsilon):
    mean, var = _statistics(x, mask)
    rstd = lax.rsqrt(var + epsilon)
    y = (x - mean) * (scale * rstd) + bias
    return (y, mean, var), (x, scale, mask, mean, rstd)


def _bwd(epsilon, res, cotangents):
    x, scale, mask, mean, rstd = res
    dy, dmean, dvar = cotangents
    w = _weights(mask, x)
    n = count(x, mask)
    xc = x - mean
    # One pass over (dy, x) for both sums, over every row (padded rows' outputs also use them).
    sum_dy = _sum(dy, None)
    sum_dy_xhat = _sum(dy * xc, None) * rstd
    a = scale * rstd
    # dx = a dy + w (c1 xc + c0): one elementwise pass.
    c1 = (-a * rstd * sum_dy_xhat + 2 * dvar) / n
    c0 = (dmean - a * sum_dy) / n
    stats = xc * c1 + c0
    dx = a * dy + (stats if w is None else w * stats)
    return dx, sum_dy_xhat, sum_dy, None


batch_norm_train.defvjp(_fwd, _bwd)
