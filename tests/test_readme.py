"""The README's examples run as written and do what they say; its tables match the code."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from wdjax import hparams, schemes

README = Path(__file__).resolve().parents[1] / "README.md"


def _block(marker: str) -> str:
    return next(b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
                if marker in b)


def test_readme_compose_example_runs_on_a_foreign_model():
    ns: dict = {}
    exec(compile(_block("decay.add_decay(coef, kinds)"), "README.md", "exec"), ns)
    tx, params, opt_state = ns["tx"], ns["params"], ns["opt_state"]
    assert ns["layers"].names == ["Conv_0", "Conv_1", "Dense_0"]
    assert ns["early"] == ["Conv_0"]  # Conv_1 sees 16x16, the head is fully pooled
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, opt_state, params)
    assert all(np.all(np.isfinite(u)) for u in jax.tree.leaves(updates))
    assert ns["kinds"]["Conv_0"]["kernel"] == "l1"
    assert ns["kinds"]["BatchNorm_0"]["scale"] == "l1"  # owned by Conv_0
    assert ns["kinds"]["Dense_0"]["kernel"] == "l2"
    ns2 = dict(ns)
    exec(compile(_block("tx_mine = schemes.build(mine"), "README.md", "exec"), ns2)
    updates, _ = ns2["tx_mine"].update(grads, ns2["tx_mine"].init(params), params)
    assert all(np.all(np.isfinite(u)) for u in jax.tree.leaves(updates))


def test_readme_add_a_scheme_row_is_the_table_row():
    ns: dict = {}
    exec(compile(_block('row = Scheme("SGD_fanin"'), "README.md", "exec"), ns)
    assert ns["row"] == schemes.get("SGD_fanin")
    assert '"SGD_fanin": (lambda k, depth: np.prod(k.shape[:-1]) / 1152' in (
        README.parent / "tests" / "test_layers.py").read_text()
    assert '"SGD_fanin": dict(rule="fan_in")' in (
        README.parent / "tests" / "test_schemes.py").read_text()


def test_readme_hyperparameter_table_is_the_table():
    assert hparams.markdown() in README.read_text()


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    lines = [ln for ln in README.read_text().splitlines() if ln.startswith("python3 -m pip")]
    assert "experiments.sweep --name dxp" in lines[0]
    ci = (README.parent / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == lines[1]
