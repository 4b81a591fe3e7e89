"""Each named scheme's first three updates against its NumPy reference (tests/test_schemes.py).

Both sides get the same parameters and gradients at every step, so the updates agree to
float32 rounding; tests/test_schemes.py compares the parameters after 20 steps instead.
"""

import jax
import numpy as np
import optax
import pytest
from test_schemes import CONF, HP, REF_SCHEMES, RefAdam, RefSGD, flat

from wdjax import schemes
from wdjax.models import VGG, init_variables

CASES = [(name, False) for name in REF_SCHEMES] + [("Adam", True)]


@pytest.fixture(scope="module")
def params():
    return init_variables(VGG(CONF), jax.random.PRNGKey(0))["params"]


@pytest.mark.parametrize("name,separate", CASES,
                         ids=[n + ("/separate" if s else "") for n, s in CASES])
def test_first_three_updates_match_reference(params, name, separate):
    hp = dict(HP, momentum=0.9)
    lr = 1e-3 if name == "Adam" else 0.1
    # float32(0.999) makes Adam's 1 - b2 1.3e-5 off the reference's float64 0.001.
    rtol = 1e-4 if name == "Adam" else 1e-5
    p0 = flat(params)
    ref = RefAdam(name, p0, hp, separate) if name == "Adam" else RefSGD(name, p0, hp)
    tx = schemes.build(name, params=params, conf=CONF, lr=lr, separate_decay=separate, **hp)
    state, p = tx.init(params), params
    update = jax.jit(tx.update)
    rng = np.random.default_rng(0)
    for step in range(3):
        g = jax.tree.map(lambda x: rng.normal(0, 0.5, x.shape).astype(np.float32), params)
        u, state = update(g, state, p)
        before = flat(p)
        want = ref.step(before, flat(g), lr)
        p = optax.apply_updates(p, u)
        for key, got in flat(u).items():
            # The reference returns float32 parameters: its update is known to half an ulp
            # of each parameter.
            step_ref = want[key].astype(np.float64) - before[key]
            bound = rtol * np.linalg.norm(step_ref) + np.linalg.norm(np.spacing(before[key]))
            assert np.linalg.norm(got - step_ref) <= bound, (step, key)
