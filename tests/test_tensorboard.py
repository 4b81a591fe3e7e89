"""TensorBoard events from run records, read back with TensorBoard's own event reader."""

from __future__ import annotations

import math
import sys
import types

import pytest
from conftest import read_tensorboard_scalars

from wdjax import storage
from wdjax.training import tensorboard as tb

pytest.importorskip("tensorboardX", reason="tensorboardX absent: pip install -e '.[dev]'")
# TensorBoard's switch for its own TF stub (its "no_tensorflow" build): reading events then
# skips importing TensorFlow, several seconds where TF is installed.
sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="tensorboard absent: pip install -e '.[dev]'")
hparams_metadata = pytest.importorskip("tensorboard.plugins.hparams.metadata")


def make_row(epoch: int, scale: float = 1.0) -> dict:
    """A metrics.jsonl row with the trainer's fields (as read back from JSON)."""
    return dict(
        epoch=epoch, lr=0.1 / epoch, seconds=2.5 * epoch, train_loss=2.0 / epoch * scale,
        train_correct=10 * epoch, train_total=100, train_accuracy=0.1 * epoch,
        test_correct=5 * epoch, test_total=50, test_accuracy=0.1 * epoch * scale,
        test_loss="nan" if epoch == 3 else 1.5 / epoch, best_test_correct=5 * epoch,
        best_epoch=epoch, diverged=None,
        dead_units={"1e-09": {"conv1": [epoch, 8], "conv2": [0, 16]}},
        angular_update={"conv1": {"measured": 0.01 * epoch, "predicted": 0.02},
                        "logit": {"measured": 0.03 * epoch, "predicted": None}},
        tensors={"conv1/conv/kernel": {"param": 3.0 + epoch, "grad": 0.5, "update": 0.25}},
    )


def read_scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    return read_tensorboard_scalars(logdir)


def hparams_content(logdir) -> dict[str, bytes]:
    acc = event_accumulator.EventAccumulator(str(logdir))
    acc.Reload()
    return acc.PluginTagToContent(hparams_metadata.PLUGIN_NAME)


def test_epoch_scalars_name_every_record_number():
    row = make_row(2)
    got = tb.epoch_scalars(row)
    want = {
        "loss/train": 1.0, "loss/test": 0.75, "accuracy/train": 0.2, "accuracy/test": 0.2,
        "accuracy/best_test": 10 / 50, "lr": 0.05, "time/epoch_seconds": 5.0,
        "angular_update/conv1/measured": 0.02, "angular_update/conv1/predicted": 0.02,
        "angular_update/logit/measured": 0.06,  # no prediction: left out
        "tensor_param/conv1/conv/kernel": 5.0, "tensor_grad/conv1/conv/kernel": 0.5,
        "tensor_update/conv1/conv/kernel": 0.25,
        "dead_units_1e-09/conv1": 2.0, "dead_units_1e-09/conv2": 0.0,
        "dead_units_1e-09/all": 2.0,
    }
    assert got == pytest.approx(want)
    assert math.isnan(tb.epoch_scalars(make_row(3))["loss/test"])  # "nan" as JSON stores it


def test_epoch_events_read_back_equal_the_rows(tmp_path):
    rows = [make_row(e) for e in (1, 2, 3)]
    with tb.EpochWriter(tmp_path) as writer:
        for row in rows:
            writer.write(row)
    scalars = read_scalars(tmp_path / "tensorboard")
    expected = [tb.epoch_scalars(r) for r in rows]
    assert set(scalars) == set(expected[0])
    for tag, events in scalars.items():
        assert [step for step, _ in events] == [1, 2, 3], tag
        for (_, value), want in zip(events, expected, strict=True):
            if math.isnan(want[tag]):
                assert math.isnan(value)
            else:
                assert value == pytest.approx(want[tag], rel=1e-6), tag


def test_resumed_run_shows_each_epoch_once(tmp_path):
    with tb.EpochWriter(tmp_path) as writer:  # a process killed after writing epoch 3 ...
        for e in (1, 2, 3):
            writer.write(make_row(e))
    with tb.EpochWriter(tmp_path, resume_epoch=2) as writer:  # ... resumed from epoch 2
        writer.write(make_row(3, scale=2.0))
    events = read_scalars(tmp_path / "tensorboard")["loss/train"]
    assert [step for step, _ in events] == [1, 2, 3]
    assert events[-1][1] == pytest.approx(2.0 / 3 * 2.0)


def test_export_run_rewrites_events_from_metrics_jsonl(tmp_path):
    for e in (1, 2):
        storage.append_jsonl(tmp_path / "metrics.jsonl", make_row(e))
    tb.export_run(tmp_path)
    tb.export_run(tmp_path)  # again: replaced, not appended
    files = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1
    assert read_scalars(tmp_path / "tensorboard")["accuracy/test"] == [
        (1, pytest.approx(0.1)), (2, pytest.approx(0.2))]


def test_hparams_columns_keep_one_type_per_column():
    configs = [dict(name="a", optimizer="SGD", lr=None, weight_decay=1e-4, seed=0, flag=False),
               dict(name="b", optimizer="SGD", lr=0.1, weight_decay=2e-4, seed=0, flag=True)]
    assert tb.hparams_columns(configs) == [
        dict(optimizer="SGD", lr="None", weight_decay=1e-4, flag=False),
        dict(optimizer="SGD", lr="0.1", weight_decay=2e-4, flag=True),
    ]


def test_family_hparams_for_the_hparams_table(tmp_path):
    family = tmp_path / "dxp"
    names = ("dxp1", "dxp2", "dxp3")
    for i, name in enumerate(names[:2]):
        run = family / name
        run.mkdir(parents=True)
        config = dict(name=name, optimizer="SGD", weight_decay=1e-4 * (i + 1), seed=0)
        storage.write_json(run / "config.json", dict(config=config))
        with tb.EpochWriter(run) as writer:
            writer.write(make_row(1))
    storage.write_json(family / "dxp1" / "summary.json", {})  # dxp2 is still running
    assert tb.write_family_hparams(family, names) == [family / "dxp1", family / "dxp2"]
    assert tb.write_family_hparams(family, names)  # idempotent: one session per run

    for i, name in enumerate(names[:2]):
        logdir = family / name / "tensorboard"
        assert len(list(logdir.glob("*.hparams"))) == 1
        content = hparams_content(logdir)
        start = hparams_metadata.parse_session_start_info_plugin_data(
            content[hparams_metadata.SESSION_START_INFO_TAG])
        assert start.hparams["optimizer"].string_value == "SGD"
        assert start.hparams["weight_decay"].number_value == pytest.approx(1e-4 * (i + 1))
        assert "seed" not in start.hparams  # the same in every run: not a column
        assert (hparams_metadata.SESSION_END_INFO_TAG in content) == (name == "dxp1")
        # The metric columns are scalar tags the run writes every epoch.
        assert set(tb.METRIC_TAGS) <= set(read_scalars(logdir))
    experiment = hparams_metadata.parse_experiment_plugin_data(
        hparams_content(family / "tensorboard")[hparams_metadata.EXPERIMENT_TAG])
    assert [h.name for h in experiment.hparam_infos] == ["optimizer", "weight_decay"]
    assert [m.name.tag for m in experiment.metric_infos] == list(tb.METRIC_TAGS)


def test_enabled_by_flag_or_environment(monkeypatch):
    monkeypatch.delenv(tb.ENV_TENSORBOARD, raising=False)
    assert not tb.enabled() and tb.enabled(True)
    monkeypatch.setenv(tb.ENV_TENSORBOARD, "1")
    assert tb.enabled() and not tb.enabled(False)
    monkeypatch.setenv(tb.ENV_TENSORBOARD, "0")
    assert not tb.enabled()


@pytest.mark.parametrize(("flags", "env", "want"), [
    (["--tensorboard"], None, True), ([], "1", True), ([], None, False)])
def test_train_cli_turns_events_on_by_flag_or_environment(tmp_path, monkeypatch, flags, env,
                                                          want):
    from conftest import write_image_tree

    from experiments import train as train_cli
    from wdjax import data
    from wdjax.training import train as trainer

    classes = [f"c{i}" for i in range(10)]
    write_image_tree(tmp_path / "img", {"train": dict.fromkeys(classes, 1),
                                        "test": dict.fromkeys(classes, 1)}, size=(32, 32))
    monkeypatch.setenv(data.ENV_CACHE, str(tmp_path / "cache"))
    if env is None:
        monkeypatch.delenv(tb.ENV_TENSORBOARD, raising=False)
    else:
        monkeypatch.setenv(tb.ENV_TENSORBOARD, env)
    seen = {}

    def fake_train(configs, out, **kwargs):  # the CLI's call, without training
        seen.update(kwargs)
        for c in configs:
            (out / c.run_path).mkdir(parents=True)
            storage.write_json(out / c.run_path / "summary.json", dict(diverged={"step": 1}))
        return [dict(diverged={"step": 1}) for _ in configs]

    monkeypatch.setattr(trainer, "train", fake_train)
    argv = ["--name", "r", "--data", f"folder:{tmp_path / 'img'}", "--out",
            str(tmp_path / "runs"), *flags]
    assert train_cli.main(argv) == 0
    assert seen["tensorboard"] is want


def test_missing_tensorboardx_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(ValueError, match=r"^TensorBoard events need tensorboardX: pip install "
                                         r"'wdjax\[tb\]'$"):
        tb.require()
