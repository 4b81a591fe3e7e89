"""Topographic runs record the grouping statistic of conv5_2 and fc6; the topo sweeps'
summary and pictures show it (issue 15, point 4)."""

import jax
import numpy as np
import pytest
from synthetic_runs import write_run

from experiments import registry, report
from wdjax import storage
from wdjax.analysis import seeds
from wdjax.layers import labels
from wdjax.models import VGG, init_variables, vgg_conf
from wdjax.training import runlog
from wdjax.training.config import Config


@pytest.mark.slow
def test_trainer_records_grouping_of_the_topographic_positions_only():
    conf = vgg_conf(2)
    params = init_variables(VGG(conf), jax.random.PRNGKey(0))["params"]
    tab = labels.table(params, conf)
    got = runlog.topographic_grouping(Config(optimizer="SGD_topo.a"), params, tab)
    assert list(got) == ["conv5_2", "fc6"]  # fc6 multiplied, conv5_2 the control
    for entry in got.values():
        assert -1 <= entry["spearman"] <= 1 and 0 < entry["p_value"] <= 1
        assert len(entry["cell_map"]) == 9 and len(entry["cell_map"][0]) == 9
    assert runlog.topographic_grouping(Config(optimizer="SGD_var_dup2"), params, tab) is None


def _grouped(rho, p):
    cells = [[None if (i + j) % 5 == 0 else float(abs(i - j)) for j in range(9)]
             for i in range(9)]
    return dict(spearman=rho, p_value=p, cell_map=cells)


def test_topo_summary_and_pictures_show_the_grouping(tmp_path):
    fam = registry.get_family("topo.ac")
    runs = registry.select_runs(fam, ["topo.ac1", "topo.ac11"])
    for run, rho in zip(runs, (-0.05, -0.6), strict=True):
        d = write_run(tmp_path / fam.name / run.name, [0.6])
        summary = storage.read_json(d / "summary.json")
        summary["topographic_grouping"] = {"conv5_2": _grouped(0.01, 0.5),
                                           "fc6": _grouped(rho, 0.01)}
        storage.write_json(d / "summary.json", summary)
    rows = report.write_results(fam, runs, tmp_path / fam.name, "quick")
    by_run = {r["run"]: r["topographic_grouping"] for r in rows}
    assert by_run["topo.ac11"] == "conv5_2 rho +0.01 p 0.500; fc6 rho -0.60 p 0.010"
    md = (tmp_path / fam.name / "summary.md").read_text()
    assert "## Topographic grouping" in md and "| topo.ac11 | conv5_2 rho +0.01" in md
    assert (tmp_path / fam.name / "topographic_grouping.png").stat().st_size > 1000
    groups = {r.name: seeds.load(tmp_path / fam.name / r.name) for r in runs}
    fig = report.grouping_figure(fam, runs, groups)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert "topo.ac11 fc6: rho -0.60, p 0.010" in titles
    image = fig.axes[0].images[0].get_array()
    assert np.ma.getmaskarray(image)[0, 0] and image[0, 1] == 1.0  # empty cells stay empty


def test_other_families_have_no_grouping_section(tmp_path):
    fam = registry.get_family("dxp")
    runs = registry.select_runs(fam, ["dxp4"])
    write_run(tmp_path / "dxp" / "dxp4", [0.6])
    rows = report.write_results(fam, runs, tmp_path / "dxp", "quick")
    assert rows[0]["topographic_grouping"] is None
    assert "Topographic grouping" not in (tmp_path / "dxp" / "summary.md").read_text()
    assert not (tmp_path / "dxp" / "topographic_grouping.png").exists()
