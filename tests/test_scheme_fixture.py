"""The named schemes give bit-identical updates to those recorded before the scheme table.

`tests/fixtures/scheme_steps.json` was written by `tests/fixtures/make_scheme_steps.py`
from the name-parsing implementation; the table-driven one must reproduce every bit. The
normalised (LSSGD) updates reduce ``||d||`` over a tensor, whose float sum XLA:CPU orders by
the CPU's vector width, so for them the file holds the old code's hashes from each CPU kind
it was run on (both recorded at commit 77e8989); the update must equal one of them.
"""

import json
import sys
from pathlib import Path

import jax

from wdjax import schemes
from wdjax.models import VGG, init_variables, vgg_conf

FIXTURES = Path(__file__).with_name("fixtures")
sys.path.insert(0, str(FIXTURES))
import make_scheme_steps  # noqa: E402


def test_schemes_bit_identical_to_recorded_updates():
    conf = vgg_conf(4)
    params = init_variables(VGG(conf), jax.random.PRNGKey(0))["params"]

    def build(name, separate):
        return schemes.build(name, params=params, conf=conf, separate_decay=separate,
                             **make_scheme_steps.HP)

    want = json.loads((FIXTURES / "scheme_steps.json").read_text())
    got = make_scheme_steps.scheme_steps(build, params)
    assert got.keys() == want.keys()
    for case in want:
        assert got[case] in want[case], case
