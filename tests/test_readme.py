"""The README's composing example runs as written and does what it says."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_compose_example_runs():
    text = README.read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S)
                 if "decay.add_decay(coef, kinds)" in b)
    ns: dict = {}
    exec(compile(block, "README.md", "exec"), ns)
    tx, params, opt_state = ns["tx"], ns["params"], ns["opt_state"]
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, opt_state, params)
    assert all(np.all(np.isfinite(u)) for u in jax.tree.leaves(updates))
    assert ns["kinds"]["conv1_1"]["conv"]["kernel"] == "l1"
    assert ns["kinds"]["fc6"]["conv"]["kernel"] == "l2"


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    lines = [ln for ln in README.read_text().splitlines() if ln.startswith("python3 -m pip")]
    assert "experiments.sweep --name dxp" in lines[0]
    ci = (README.parent / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == lines[1]
