"""The preview scale's rule: the notebook's hyperparameters mapped as scales.py documents."""

import json
import math

import jax
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from experiments import registry, scales, sweep
from wdjax.models import VGG, init_variables, vgg_conf
from wdjax.training.config import Config


def test_lr_integral_counts_the_halving_stages():
    full = 391 * 20 * sum(0.5 ** k for k in range(10))  # 50 000 / 128 -> 391 steps an epoch
    assert scales.lr_integral(scales.SCALES["full"]) == pytest.approx(full)
    preview = 40 * 1 * sum(0.5 ** k for k in range(10))  # 5000 / 128 -> 40 steps an epoch
    assert scales.lr_integral(scales.SCALES["preview"]) == pytest.approx(preview)


@pytest.mark.parametrize("kept, share", [(0.2, 0.5), (0.05, 0.0), (0.1, 1.0)])
def test_rule_keeps_the_stated_fraction_of_the_decay_integral(kept, share):
    rule = scales.Miniature(source="full", kept=kept, lr_share=share)
    preview = scales.SCALES["preview"]
    notebook = dict(lr=0.1, weight_decay=1.6e-4, L1_decay=5e-6, last1_mult=10.0, momentum=0.0)
    used = rule.map_hparams(notebook, preview, base_lr=0.1)
    ratio = scales.lr_integral(scales.SCALES["full"]) / scales.lr_integral(preview)
    g = kept * ratio
    assert used["lr"] == pytest.approx(0.1 * g ** share)
    assert used["weight_decay"] == pytest.approx(1.6e-4 * g ** (1 - share))
    assert used["L1_decay"] == pytest.approx(5e-6 * g ** (1 - share))
    assert (used["last1_mult"], used["momentum"]) == (10.0, 0.0)  # multipliers stay
    # sum_t lr'(t) wd' over the preview = kept * sum_t lr(t) wd over the notebook's run
    integral = used["lr"] * used["weight_decay"] * scales.lr_integral(preview)
    assert integral == pytest.approx(kept * 0.1 * 1.6e-4 * scales.lr_integral(
        scales.SCALES["full"]))
    # lr_share 1/2 keeps lr / wd, hence the equilibrium norms ~ (lr / wd) ** (1/4)
    if share == 0.5:
        assert used["lr"] / used["weight_decay"] == pytest.approx(0.1 / 1.6e-4)


def test_unset_lr_maps_from_the_schemes_default():
    rule = scales.MINIATURES["preview"]
    used = rule.map_hparams(dict(lr=None, weight_decay=5e-4), scales.SCALES["preview"], 1e-3)
    assert used["lr"] == pytest.approx(1e-3 * rule.gain(scales.SCALES["preview"])
                                       ** rule.lr_share)


def test_preview_configs_keep_the_notebooks_values():
    family = registry.get_family("dxp")
    rule = scales.MINIATURES["preview"]
    g = rule.gain(scales.SCALES["preview"])
    configs = sweep.configs_for(family, family.runs, "preview", None, 0)
    for run, c in zip(family.runs, configs, strict=True):
        source = dict(c.source_hparams)
        assert source["weight_decay"] == run.hparams["weight_decay"]
        assert source["lr"] == run.hparams["lr"] == 0.1
        assert c.weight_decay == pytest.approx(run.hparams["weight_decay"]
                                               * g ** (1 - rule.lr_share))
        assert c.lr == pytest.approx(0.1 * g ** rule.lr_share)
        back = Config.from_dict(json.loads(json.dumps(c.to_dict())))  # as config.json holds it
        assert back == c
    # The decay factors are measured at the notebook's width (a run fixing its width: that).
    assert {(c.width, c.factor_width) for c in configs} == {(8, 32)}
    txp = registry.get_family("txp")
    assert {(c.width, c.factor_width) for c in sweep.configs_for(
        txp, txp.runs, "preview", None, 0)} == {(8, 8), (16, 16), (32, 32)}
    quick = sweep.configs_for(family, family.runs, "quick", None, 0)
    assert all(c.source_hparams is None and c.lr == 0.1 for c in quick)
    assert all(c.factor_width is None for c in quick)
    # Every run of a family shares one program: the record of the mapping is not in the key.
    assert len({c.shared_key() for c in configs}) == 1


@pytest.mark.slow
def test_config_json_records_both_values(tmp_path, cifar_archive, cifar_cache_dir, monkeypatch):
    monkeypatch.setenv("WDJAX_CACHE", str(cifar_cache_dir))
    sweep.main(["--name", "dxp", "--runs", "dxp4", "--scale", "preview", "--seeds", "1",
                "--train-subset", "256", "--stages", "1", "--epochs-per-stage", "1",
                "--out", str(tmp_path), "--data", f"folder:{cifar_archive}", "--no-progress"])
    recorded = json.loads((tmp_path / "dxp" / "dxp4" / "config.json").read_text())["config"]
    source = dict(recorded["source_hparams"])
    assert source["weight_decay"] == 1.6e-4 and source["lr"] == 0.1
    assert recorded["weight_decay"] > 1.6e-4 and math.isfinite(recorded["lr"])
    summary = (tmp_path / "dxp" / "summary.md").read_text()
    assert "0.00016 ->" in summary
    # Each layer's factor is 2 ** -depth / Var(W0) of the width-32 model's kernel at the
    # run's seed, not of the width-8 model it trains.
    model = VGG(vgg_conf(32), conv_impl="xla")
    params = init_variables(model, jax.random.PRNGKey(0), (32, 32, 3))["params"]
    layers = json.loads((tmp_path / "dxp" / "dxp4" / "config.json").read_text())["layers"]
    assert len(layers) == 12
    for name, info in layers.items():
        [kernel] = [np.asarray(v, np.float64) for k, v in flatten_dict(params[name]).items()
                    if k[-1] == "kernel"]
        assert info["factor"] == pytest.approx(2.0 ** -info["depth"] / kernel.var(ddof=1),
                                               rel=1e-5)
