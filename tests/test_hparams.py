"""Config fields, CLI flags, registry defaults and validation all come from `hparams.TABLE`."""

import dataclasses

import pytest

from experiments import cli, families, registry
from experiments import sweep as sweep_cli
from experiments import train as train_cli
from wdjax import hparams
from wdjax.config import Config


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
    assert dict(registry.HPARAM_DEFAULTS) == {**hparams.defaults(), "lr": families.NOTEBOOK_LR}
    for run in registry.all_runs().values():
        assert set(run.hparams) == set(hparams.NAMES)


def test_validation_names_the_row_and_its_range():
    with pytest.raises(ValueError, match=r"momentum must be a finite number in \[0, 1\), got 1"):
        Config(momentum=1.0).validate()
    with pytest.raises(ValueError, match="unknown hyperparameter 'wd'"):
        hparams.validate(wd=1.0)


def test_sweep_help_lists_the_families():
    assert "dxp" in sweep_cli.parser().format_help()
