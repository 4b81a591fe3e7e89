"""Independent decay with a constant rate against its torch peer, ``torch.optim.AdamW``.

torch's AdamW shrinks ``p <- p - lr * wd_torch * p`` before its Adam step, from the same
``p``; `independent_decay` with a constant rate removes ``wd * p`` per step, so the two agree
when ``wd = lr * wd_torch``.
"""

import jax
import numpy as np
import optax
import pytest

from wdjax import decay

torch = pytest.importorskip("torch", reason="torch is the AdamW peer (pip install '.[bench]')")

STEPS = 20
RNG = np.random.default_rng(1)
SHAPES = {"conv_kernel": (3, 3, 2, 4), "conv_bias": (4,), "dense_kernel": (6, 3),
          "dense_bias": (3,)}
PARAMS = {k: RNG.normal(0, 0.5, s).astype(np.float32) for k, s in SHAPES.items()}
NOISE = [{k: RNG.normal(0, 1, s).astype(np.float32) for k, s in SHAPES.items()}
         for _ in range(STEPS)]
BETAS = (0.9, 0.999)  # torch's defaults


def run_optax(tx):
    @jax.jit
    def step(p, state, noise):
        g = jax.tree.map(lambda a, n: 0.5 * a + n, p, noise)
        u, state = tx.update(g, state, p)
        return optax.apply_updates(p, u), state

    p, state, out = PARAMS, tx.init(PARAMS), []
    for t in range(STEPS):
        p, state = step(p, state, NOISE[t])
        out.append(p)
    return out


def run_torch(lr, wd_torch):
    tensors = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in PARAMS.items()}
    peer = torch.optim.AdamW(list(tensors.values()), lr=lr, betas=BETAS, eps=1e-8,
                             weight_decay=wd_torch)
    out = []
    for t in range(STEPS):
        for k, tensor in tensors.items():
            tensor.grad = 0.5 * tensor.detach() + torch.from_numpy(NOISE[t][k])
        peer.step()
        out.append({k: tensor.detach().numpy().astype(np.float64) for k, tensor in
                    tensors.items()})
    return out


def relative_error(got, want):
    return max(np.linalg.norm(np.asarray(got[k]) - w) / np.linalg.norm(w)
               for k, w in want.items())


def test_independent_decay_with_constant_rate_matches_torch_adamw():
    lr, wd_torch = 1e-2, 0.1
    adam = optax.chain(optax.scale_by_adam(*BETAS, eps=1e-8), optax.scale_by_learning_rate(lr))
    mine = run_optax(optax.chain(adam, decay.independent_decay(lr * wd_torch, lr)))
    peer = run_torch(lr, wd_torch)
    worst = max(relative_error(g, w) for g, w in zip(mine, peer, strict=True))
    assert worst <= 1e-5, f"relative error {worst:.2e}"
    # The decay is visible at this tolerance: plain Adam parts from the peer.
    assert relative_error(run_optax(adam)[-1], peer[-1]) > 1e-3
