"""The families beyond the notebook (wxp, txp, rxp, axp2): their runs as data, their dry
runs, txp's one-group-per-width and one-line-per-width picture, rxp's dead-unit columns."""

import json

import pytest
from synthetic_runs import write_run

from experiments import registry, report
from experiments import sweep as sweep_cli
from wdjax import schemes, storage
from wdjax.analysis import seeds


def _optimizers(name):
    return [r.optimizer for r in registry.get_family(name).runs]


@pytest.mark.parametrize("name", ["wxp", "txp", "rxp", "axp2"])
def test_dry_run_and_empty_notebook_column(name, capsys):
    assert sweep_cli.main(["--name", name, "--scale", "quick", "--dry-run"]) == 0
    out = capsys.readouterr().out
    family = registry.get_family(name)
    configs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [c["name"] for c in configs] == list(family.run_names)
    assert all(r.reported == registry.Reported(None, None, None, None, registry.NOTEBOOK_EPOCHS)
               for r in family.runs)
    assert f"{family.runs[0].name}: no notebook number" in out


def test_wxp_variants_at_dxp4_settings():
    fam = registry.get_family("wxp")
    assert fam.baseline == "dxp4" and _optimizers("wxp")[0] == "SGD_var_dup2"
    forms = {schemes.get(o).decay_form for o in _optimizers("wxp")}
    assert {"independent", "cautious", "toward_init", "proximal", "decoupled",
            "corrected"} <= forms
    for run in fam.runs:
        adam = schemes.get(run.optimizer).base_optimizer == "adam"
        assert (run.hparams["lr"], run.hparams["weight_decay"]) == (
            (1e-3, 0.05) if adam else (0.1, 1.6e-4)), run.name


def test_txp_widths_share_one_tau_grid_and_train_one_group_per_width():
    fam = registry.get_family("txp")
    grid = {}
    for run in fam.runs:
        grid.setdefault(run.settings["width"], []).append(run.value)
    assert sorted(grid) == [8, 16, 32] and len({tuple(v) for v in grid.values()}) == 1
    configs = sweep_cli.configs_for(fam, fam.runs, "quick", None, 0)
    groups = sweep_cli.vmap_groups(configs)
    assert [{c.width for c in g} for g in groups] == [{8}, {16}, {32}]
    assert all(c.tau_epochs is not None for c in configs)


def test_rxp_and_axp2_rows():
    fam = registry.get_family("rxp")
    assert _optimizers("rxp") == ["SGD_var_dup2", "LSSGD_var_dup2_last1_mult",
                                  "RSGD_var_dup2", "RSGD_var_dup2_tensor"]
    assert [schemes.get(o).rotational for o in _optimizers("rxp")[2:]] == ["neuron", "tensor"]
    run = fam.runs[1]
    assert (run.hparams["weight_decay"], run.hparams["last1_mult"],
            run.hparams["norm_ema"]) == (1.6e-4, 10.0, 0.98)
    rows = [(schemes.get(o).adam_blocks, schemes.get(o).decay_form)
            for o in _optimizers("axp2")]
    assert sorted(rows) == sorted((b, f) for b in ("element", "unit", "layer")
                                  for f in ("coupled", "decoupled"))


def test_txp_picture_has_one_line_per_width(tmp_path):
    fam = registry.get_family("txp")
    runs = [r for r in fam.runs if r.value in (1.0, 2.0)]
    for i, run in enumerate(runs):
        write_run(tmp_path / "txp" / run.name, [0.5 + 0.01 * i, 0.52 + 0.01 * i])
    groups = {r.name: seeds.load(tmp_path / "txp" / r.name) for r in runs}
    fig = report.lines_figure(fam, runs, groups)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["width 8", "width 16", "width 32"]
    paths = report.sweep_pictures(fam, runs, tmp_path / "txp")
    assert paths[-1].name == "accuracy_vs_tau_epochs_by_width.png"


def test_rxp_table_reports_dead_units_at_both_thresholds(tmp_path):
    fam = registry.get_family("rxp")
    run = fam.runs[2]
    d = write_run(tmp_path / "rxp" / run.name, [0.6], dead={"fc6": 2})
    summary = storage.read_json(d / "summary.json")
    summary["dead_units"]["1e-05"] = {"fc6": [7, 1024], "logit": [1, 2048]}
    storage.write_json(d / "summary.json", summary)
    rows, _ = report.summary_rows(fam, [run], tmp_path / "rxp", "quick")
    row = next(r for r in rows if r["run"] == run.name)
    assert (row["dead_1e9"], row["dead_1e5"]) == (2, 8)
    md = report.markdown(fam, rows, "quick", {}, "")
    assert "| dead (1e-9) | dead (1e-5) |" in md and "| 2 | 8 |" in md
