"""Config fields, CLI flags, registry defaults and validation all come from `hparams.TABLE`."""

import dataclasses

import pytest

from experiments import cli, registry
from experiments import sweep as sweep_cli
from experiments import train as train_cli
from wdjax.schemes import hparams
from wdjax.training.config import Config


def test_config_has_one_field_per_row_with_its_default():
    fields = {f.name: f.default for f in dataclasses.fields(Config)}
    for h in hparams.TABLE:
        assert fields[h.name] == h.default, h.name
    assert Config().hparams() == {h.name: h.default for h in hparams.TABLE if h.traced}


def _actions(parser):
    return {a.dest: a for a in parser._actions}


def test_train_cli_flags_come_from_the_table():
    actions = _actions(train_cli.parser())
    for h in hparams.TABLE:
        a = actions[h.name]
        assert h.flag in a.option_strings and a.default == h.default and a.help == h.help
        if h.short:
            assert h.short in a.option_strings
        if h.low_open:  # the bound itself is refused with the table's interval in the message
            with pytest.raises(cli.UsageError, match=rf"{h.flag} must be .*\({h.low:g}"):
                a.type(str(h.low))


def test_a_new_row_becomes_a_flag(monkeypatch):
    row = hparams.HParam("new_coef", 0.5, "a coefficient added to the table", high=2.0)
    monkeypatch.setattr(hparams, "TABLE", (*hparams.TABLE, row))
    parser = cli.Parser()
    cli.add_hparam_flags(parser)
    args = parser.parse_args(["--new-coef", "1.5"])
    assert args.new_coef == 1.5
    with pytest.raises(cli.UsageError, match=r"--new-coef must be a finite number in \[0, 2\)"):
        parser.parse_args(["--new-coef", "2"])


def test_registry_defaults_are_the_table_with_the_notebook_lr():
    assert dict(registry.HPARAM_DEFAULTS) == {**hparams.defaults(), "lr": registry.NOTEBOOK_LR}
    for run in registry.all_runs().values():
        assert set(run.hparams) == set(hparams.NAMES)


def test_validation_names_the_row_and_its_range():
    with pytest.raises(ValueError, match=r"momentum must be a finite number in \[0, 1\), got 1"):
        Config(momentum=1.0).validate()
    with pytest.raises(ValueError, match="unknown hyperparameter 'wd'"):
        hparams.validate(wd=1.0)


def test_sweep_help_lists_the_families():
    assert "dxp" in sweep_cli.parser().format_help()


def test_tau_epochs_and_weight_decay_are_exclusive_on_both_clis():
    for parser in (train_cli.parser(), sweep_cli.parser()):
        with pytest.raises(cli.UsageError, match="not allowed with") as err:
            parser.parse_args(["--name", "x", "--tau-epochs", "5", "--weight-decay", "1e-3"])
        assert "\n" not in str(err.value)
    assert train_cli.parser().parse_args(["-n", "x", "--tau-epochs", "5"]).tau_epochs == 5.0
    args = sweep_cli.parser().parse_args(["--name", "dxp", "--tau-epochs", "5"])
    assert cli.decay_override(args) == {"tau_epochs": 5.0}
    args = sweep_cli.parser().parse_args(["--name", "dxp", "--weight-decay", "1e-3"])
    assert cli.decay_override(args) == {"weight_decay": 1e-3, "tau_epochs": None}


def test_tau_epochs_sets_weight_decay_and_both_are_kept():
    c = Config(optimizer="SGD", lr=0.05, tau_epochs=8.0).validate()
    got = c.with_timescale(steps_per_epoch=40)
    assert got.weight_decay == pytest.approx(1 / (8.0 * 0.05 * 40), rel=1e-12)
    assert got.to_dict()["tau_epochs"] == 8.0
    assert Config(weight_decay=1e-3).with_timescale(40).weight_decay == 1e-3
    # Runs differing only in tau_epochs (hence weight_decay) train together.
    assert Config(tau_epochs=2.0).shared_key() == Config(tau_epochs=4.0).shared_key()
    with pytest.raises(ValueError, match=r"tau_epochs must be a finite number in \(0"):
        Config(tau_epochs=0.0).validate()


def test_resumed_tau_run_is_the_same_config(tmp_path):
    from wdjax import storage
    from wdjax.training.runlog import same_config

    c = Config(name="t", tau_epochs=8.0)
    storage.write_json(tmp_path / "config.json", dict(config=c.with_timescale(40).to_dict()))
    assert same_config(tmp_path, c)
    assert not same_config(tmp_path, Config(name="t", tau_epochs=4.0))
