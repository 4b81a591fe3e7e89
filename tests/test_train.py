"""The training system: steps, schedule, monitors, records, divergence, resume, CLI."""

import functools
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wdjax import schemes, storage
from wdjax.analysis import units
from wdjax.layers.labels import table as layer_table
from wdjax.models import VGG, init_variables, vgg_conf
from wdjax.training import batches, steps, train

TINY = dict(width=4, batch_size=128, stages=3, epochs_per_stage=1, log_every=2,
            conv_impl="xla", eval_batch_size=100)


def test_lr_schedule_halves_per_stage():
    sched = train.lr_schedule(0.1, steps_per_epoch=391, epochs_per_stage=20)
    assert float(sched(0)) == 0.1 and float(sched(391 * 20 - 1)) == 0.1
    assert float(sched(391 * 20)) == 0.05
    assert float(sched(391 * 200 - 1)) == pytest.approx(0.1 / 2**9)


def _step_setup(optimizer="SGD_var_dup2", momentum=0.9):
    conf = vgg_conf(4)
    model = VGG(conf, conv_impl="xla")
    v = init_variables(model, jax.random.PRNGKey(0))
    tx = schemes.build(optimizer, params=v["params"], conf=conf, lr=0.1, weight_decay=1e-3,
                       momentum=momentum)
    state = train.TrainState(jnp.zeros([], jnp.int32), v["params"], v["batch_stats"],
                             tx.init(v["params"]))
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (40, 32, 32, 3), np.uint8))
    labels = jnp.asarray(rng.integers(0, 10, 40).astype(np.int32))
    return model, tx, state, images, labels


@pytest.mark.device
@pytest.mark.slow
def test_padded_partial_batch_equals_the_real_batch():
    model, tx, state, images, labels = _step_setup()
    key = jax.random.PRNGKey(5)
    x = batches.normalize(images)
    # 12 real rows padded to 16 with rows that must not matter (mask 0).
    pad_x = jnp.concatenate([x[20:32], x[:4] * 50.0])
    pad_y = jnp.concatenate([labels[20:32], labels[:4]])
    mask = jnp.array([1.0] * 12 + [0.0] * 4)
    step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx))
    a, ma = step(state, pad_x, pad_y, mask, key)
    b, mb = step(state, x[20:32], labels[20:32], jnp.ones(12), key)
    assert float(ma["correct"]) == float(mb["correct"])
    assert float(ma["loss"]) == pytest.approx(float(mb["loss"]), rel=1e-5)
    for u, v in zip(jax.tree.leaves((a.params, a.batch_stats)),
                    jax.tree.leaves((b.params, b.batch_stats)), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-6)


@pytest.mark.device
@pytest.mark.slow
def test_step_metrics_match_direct_computation():
    model, tx, state, images, labels = _step_setup()
    x = batches.normalize(images[:16])
    step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx))
    new, m = step(state, x, labels[:16], jnp.ones(16), jax.random.PRNGKey(1))
    upd = jax.tree.map(lambda a, b: np.asarray(a, np.float64) - np.asarray(b, np.float64),
                       new.params, state.params)
    direct_update = np.sqrt(sum((u**2).sum() for u in jax.tree.leaves(upd)))
    direct_param = np.sqrt(sum((np.asarray(p, np.float64) ** 2).sum()
                               for p in jax.tree.leaves(state.params)))
    assert np.sqrt(float(m["sq_update"].sum())) == pytest.approx(direct_update, rel=1e-4)
    assert np.sqrt(float(m["sq_param"].sum())) == pytest.approx(direct_param, rel=1e-5)


def _monitor_setup(momentum):
    model, tx, state, images, labels = _step_setup("SGD_topo.a", momentum)
    conf = vgg_conf(4)
    factors = schemes.layer_factors("SGD_topo.a", state.params, conf)

    def spec_fn(s):
        return schemes.spec_from_state("SGD_topo.a", s, state.params,
                                       layer_table(state.params, conf))

    step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, spec_fn=spec_fn))
    # One real step first, so the momentum buffer is not zero.
    state, first = step(state, batches.normalize(images[:16]), labels[:16], jnp.ones(16),
                        jax.random.PRNGKey(0))
    assert all(float(v) == 0 for t in first["tensors"].values() for v in t.values())
    x = batches.normalize(images[16:32])
    new, m = step(state, x, labels[16:32], jnp.ones(16), jax.random.PRNGKey(0), True)
    return model, state, new, m["tensors"], x, labels[16:32], factors


@pytest.mark.device
@pytest.mark.slow
def test_tensor_monitors_are_the_last_steps_values():
    """The epoch-end monitors are those of the step that was applied (REFERENCE s. 9)."""
    model, state, new, mon, x, y, factors = _monitor_setup(0.9)

    def loss(p):
        out, _ = model.apply({"params": p, "batch_stats": state.batch_stats}, x, train=True,
                             mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()

    def kernel(tree):
        return np.asarray(tree["fc6"]["conv"]["kernel"], np.float64)

    g, p = kernel(jax.grad(loss)(state.params)), kernel(state.params)
    dec = 1e-3 * factors["fc6"] * p * 2.0 ** analysis_distance(p.shape)
    buf = kernel(state.opt_state.inner_state[1].trace)
    m = mon["fc6/conv/kernel"]
    assert float(m["param"]) == pytest.approx(np.linalg.norm(p), rel=1e-5)
    assert float(m["grad"]) == pytest.approx(np.linalg.norm(g), rel=1e-3)
    assert float(m["decay"]) == pytest.approx(np.linalg.norm(dec), rel=1e-5)
    assert float(m["grad_on_decay"]) == pytest.approx((dec * g).sum() / np.linalg.norm(dec),
                                                      rel=1e-3, abs=1e-7)
    # The buffer after the step, 0.9 * buf + g + decay, and the update it applied.
    assert float(m["momentum"]) == pytest.approx(np.linalg.norm(0.9 * buf + g + dec), rel=1e-3)
    assert float(m["update"]) == pytest.approx(np.linalg.norm(kernel(new.params) - p), rel=1e-4)
    assert float(m["update"]) == pytest.approx(0.1 * np.linalg.norm(0.9 * buf + g + dec),
                                               rel=1e-3)
    assert "fc6/conv/bias" not in mon  # only tensors with 2+ dims


@pytest.mark.slow
def test_momentum_monitor_is_zero_without_momentum():
    *_, mon, _, _, _ = _monitor_setup(0.0)
    m = mon["fc6/conv/kernel"]
    assert float(m["momentum"]) == 0.0 and float(m["update"]) > 0


def analysis_distance(shape):
    """Cell distances for the topographic multiplier, written out from REFERENCE s. 8."""
    import math

    _, _, cin, cout = shape

    def cell(u, n):
        c = u // math.ceil(n / 9)
        return c % 3, c // 3

    d = np.zeros((cin, cout))
    for j in range(cin):
        for i in range(cout):
            (xi, yi), (xj, yj) = cell(i, cout), cell(j, cin)
            d[j, i] = math.floor(math.sqrt((xi - xj) ** 2 + (yi - yj) ** 2))
    return d[None, None]


def test_dead_units_on_crafted_params():
    k = np.ones((3, 3, 5, 4), np.float32)
    k[:, :, 1, :] = 0.0            # input 1: mean |w| = 0, dead at every threshold
    k[:, :, 3, :] = -1e-12         # input 3: 1e-12, dead below 1e-9 (sign must not matter)
    k[:, :, 4, :] = 0.0
    k[0, 0, 4, 0] = 1e-6           # input 4: mean |w| = 1e-6 / 36 ~ 2.8e-8, dead below 1e-5
    params = {"conv1_1": {"conv": {"kernel": k, "bias": np.zeros(4)}},
              "logit": {"conv": {"kernel": np.ones((1, 1, 4, 2)), "bias": np.zeros(2)}}}
    conf = [("conv1_1", (5, 4)), ("pool1", (None, None)), ("logit", (4, 2))]
    got = {t: units.model_utilization(params, conf, t) for t in (1e-20, 1e-9, 1e-5)}
    assert got[1e-20] == {"conv1_1": (1, 5), "logit": (0, 4)}
    assert got[1e-9] == {"conv1_1": (2, 5), "logit": (0, 4)}
    assert got[1e-5] == {"conv1_1": (3, 5), "logit": (0, 4)}


def test_equilibrium_prediction_formula():
    """The one formula the monitor and the records use (ROTATIONAL.md section 1)."""
    from wdjax import decay

    assert float(decay.equilibrium_angle(0.1, 5e-4, 0.0)) == pytest.approx(0.01)
    assert float(decay.equilibrium_angle(0.1, 5e-4, 0.9)) == pytest.approx(np.sqrt(1e-4 / 1.9))
    assert float(decay.equilibrium_angle(0.1, 5e-4, b1=0.9)) == pytest.approx(
        np.sqrt(1e-4 * 0.1 / 1.9))
    assert float(decay.equilibrium_angle(0.1, 0.0)) == 0.0


def _metrics(run_dir):
    return storage.read_jsonl(run_dir / "metrics.jsonl")


@pytest.mark.slow
def test_run_records_refusal_and_resume_equivalence(small_cifar, tmp_path):
    cfg = train.Config(name="r", optimizer="SGD_var_dup2", weight_decay=1.6e-4, momentum=0.9,
                       **TINY)
    # Uninterrupted.
    full = train.train(cfg, tmp_path / "a", dataset=small_cifar, progress=False)[0]
    # Stopped after epoch 1 of 3, then resumed by calling again.
    part = train.train(cfg, tmp_path / "b", dataset=small_cifar, progress=False,
                       stop_after_epochs=1)[0]
    assert part["epochs_done"] == 1 and not (tmp_path / "b" / "r" / "summary.json").exists()
    # Resume reads the variance-inverse factors back from config.json and refuses, in one
    # line and writing nothing, when those recomputed from the seed differ.
    record = tmp_path / "b" / "r" / "config.json"
    good = record.read_text()
    bad = json.loads(good)
    bad["layers"]["conv2_1"]["factor"] *= 1.001
    record.write_text(json.dumps(bad))
    before = {f.name: f.read_bytes() for f in record.parent.glob("*.json*")}
    with pytest.raises(storage.RunError, match=r"differ from the recorded.*conv2_1") as err:
        train.train(cfg, tmp_path / "b", dataset=small_cifar, progress=False)
    assert "\n" not in str(err.value)
    assert {f.name: f.read_bytes() for f in record.parent.glob("*.json*")} == before
    record.write_text(good)
    resumed = train.train(cfg, tmp_path / "b", dataset=small_cifar, progress=False)[0]
    assert resumed == full
    a, b = _metrics(tmp_path / "a" / "r"), _metrics(tmp_path / "b" / "r")
    assert len(a) == 3
    for x, y in zip(a, b, strict=True):
        x.pop("seconds"), y.pop("seconds")
        assert x == y  # bit for bit: every count, loss and norm
    run = tmp_path / "a" / "r"
    for f in ("config.json", "metrics.jsonl", "steps.jsonl", "summary.json", "accuracy.png",
              "norms.png", "dead_units.png"):
        assert (run / f).exists(), f
    row = a[-1]
    assert row["train_total"] == 300 and row["test_total"] == 200
    # Counted on the 300 real images only (the padded rows of the last batch are masked):
    # above half of chance, at most all, and what the summary reports.
    assert 15 < row["train_correct"] <= 300 and row["train_correct"] == full["final_train_correct"]
    assert row["train_accuracy"] == row["train_correct"] / 300
    assert set(row["dead_units"]) == {"1e-20", "1e-09", "1e-05"}
    cfgj = storage.read_json(run / "config.json")
    # The equilibrium monitor's values at the epoch's last step: the prediction written out
    # (REFERENCE 9 / ROTATIONAL.md 1: sqrt(2 lr wd / (1 + m)) at the last step's lr), the
    # ratio of the EMA to it, none for logit (no BatchNorm after it: not scale-invariant).
    conv = row["angular_update"]["conv2_1"]
    lr_last = float(train.lr_schedule(cfg.base_lr, 3, cfg.epochs_per_stage)(3 * 3 - 1))
    want = np.sqrt(2 * lr_last * cfgj["layers"]["conv2_1"]["coefficient"] / 1.9)
    assert conv["predicted"] == pytest.approx(want, rel=1e-5)
    assert conv["ratio"] == pytest.approx(conv["ema"] / want, rel=1e-5) and conv["ratio"] > 0
    assert row["angular_update"]["logit"]["predicted"] is None
    assert row["angular_update"]["logit"]["ratio"] is None
    assert cfgj["environment"]["jax"] == jax.__version__
    assert cfgj["layers"]["fc6"]["coefficient"] > 0
    steps = storage.read_jsonl(run / "steps.jsonl")
    # Windows of 2 global steps across epochs of 3 steps: (1,2) (3,4) (5,6) (7,8); step 9's
    # window stays open. Each line's loss is its window's mean, so with epoch means e and
    # window means w: 3 e1 - 2 w1 = loss3, 3 e2 - 2 w3 = loss4, and (loss3 + loss4) / 2 = w2.
    assert [s["step"] for s in steps] == [2, 4, 6, 8]
    e, w = [r["train_loss"] for r in a], [s["loss"] for s in steps]
    assert ((3 * e[0] - 2 * w[0]) + (3 * e[1] - 2 * w[2])) / 2 == pytest.approx(w[1], rel=1e-6)
    # The open window survives the resume: the resumed run logs the same lines.
    assert storage.read_jsonl(tmp_path / "b" / "r" / "steps.jsonl") == steps
    # A finished run is not overwritten.
    with pytest.raises(storage.RunError, match="already has results"):
        train.train(cfg, tmp_path / "a", dataset=small_cifar, progress=False)
    with pytest.raises(storage.RunError, match="different config"):
        train.train(train.Config(**{**cfg.to_dict(), "weight_decay": 1e-3}), tmp_path / "b2",
                    dataset=small_cifar, progress=False, stop_after_epochs=1) and \
            train.train(train.Config(**{**cfg.to_dict(), "weight_decay": 2e-3}),
                        tmp_path / "b2", dataset=small_cifar, progress=False)


def test_resume_uses_the_recorded_factors():
    """Within the tolerance the recorded factors are used as read (not recomputed ones), and
    they reach the optimiser state; beyond it, resuming is refused."""
    from wdjax.training import parallel

    cfg = train.Config(name="f", optimizer="SGD_var_dup2", **TINY)
    prog = steps.programs([cfg], (32, 32, 3), 10, 300, parallel.make_mesh(1, 1))
    measured = steps.starts([cfg], prog)[0].factors
    recorded = {k: v * (1 + 1e-9) for k, v in measured.items()}
    start = steps.starts([cfg], prog, [recorded])[0]
    assert start.factors == recorded
    state = steps.initial_states([cfg], prog, [start])[0]
    in_state = schemes.state_factors(state.opt_state, prog.layers)
    assert {k: float(v) for k, v in in_state.items()} == pytest.approx(recorded, rel=1e-7)
    with pytest.raises(storage.RunError, match="conv1_1"):
        steps.starts([cfg], prog, [{**recorded, "conv1_1": 1.0}])


@pytest.mark.slow
def test_divergence_is_recorded_and_returns(small_cifar, tmp_path):
    cfg = train.Config(name="boom", optimizer="SGD", lr=1e6, weight_decay=1.0, **TINY)
    s = train.train(cfg, tmp_path, dataset=small_cifar, progress=False)[0]
    assert s["diverged"] and s["diverged"]["step"] >= 1
    rows = _metrics(tmp_path / "boom")
    assert rows and rows[-1]["diverged"]["step"] == s["diverged"]["step"]
    assert (tmp_path / "boom" / "summary.json").exists()


@pytest.mark.device
@pytest.mark.slow
def test_vmapped_runs_equal_separate_runs(small_cifar, tmp_path):
    """Runs trained together equal runs trained alone, up to float rounding.

    vmapped convolutions are batched differently by XLA, so sums are ordered differently;
    after one epoch the losses and norms agree to ~1e-4 and counts to a few images.
    """
    base = dict(TINY, optimizer="SGD_var_dup2_last1_mult", momentum=0.9, stages=1)
    cfgs = [train.Config(name=f"v{i}", weight_decay=wd, last1_mult=m, **base)
            for i, (wd, m) in enumerate([(1e-4, 3.0), (1e-3, 30.0)])]
    together = train.train(cfgs, tmp_path / "vm", dataset=small_cifar, progress=False)
    alone = [train.train(c, tmp_path / "seq", dataset=small_cifar, progress=False)[0]
             for c in cfgs]
    for t, s in zip(together, alone, strict=True):
        assert abs(t["final_train_correct"] - s["final_train_correct"]) <= 3
        assert abs(t["final_test_correct"] - s["final_test_correct"]) <= 3
    for c in cfgs:
        a = _metrics(tmp_path / "vm" / c.name)[-1]
        b = _metrics(tmp_path / "seq" / c.name)[-1]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        for k in a["tensors"]:
            assert a["tensors"][k]["param"] == pytest.approx(b["tensors"][k]["param"], rel=1e-3)
    # ... and the two runs really differ from each other (the hyperparameters reached them).
    a, b = (_metrics(tmp_path / "vm" / c.name)[-1] for c in cfgs)
    assert a["tensors"]["logit/conv/kernel"]["decay"] != b["tensors"]["logit/conv/kernel"]["decay"]


CLI = [sys.executable, "-m", "experiments.train"]


@pytest.mark.parametrize("args,needle", [
    (["--optimizer", "SGDX"], "unknown optimizer"),
    (["-wd", "nan"], "--weight-decay"),
    (["-wd", "abc"], "--weight-decay must be a number"),
    (["--lr", "0"], "--lr"),
    (["--momentum", "1.5"], "--momentum"),
    (["--topo-base", "0"], "--topo-base"),
    (["-b", "0"], "--batch-size"),
    (["-nb", "0"], "--width"),
    (["--name", "../evil"], "invalid run name"),
    (["--name", "a/b"], "invalid run name"),
    (["--data", "folder:/does/not/exist"], "does not exist"),
])
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, needle):
    out = tmp_path / "out"
    argv = ["--name", "x", *args, "--out", str(out)] if "--name" not in args else [
        *args, "--out", str(out)]
    r = subprocess.run(CLI + argv, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert not out.exists()


@pytest.mark.slow
def test_cli_runs_refuses_to_overwrite_and_adds_seeds(cifar_archive, cifar_cache_dir,
                                                       tmp_path):
    argv = CLI + ["-n", "c1", "-o", "SGD", "-nb", "4", "--stages", "1", "--epochs-per-stage",
                  "1", "--train-subset", "200", "--test-subset", "100", "--data",
                  f"folder:{cifar_archive}", "--out", str(tmp_path), "--no-progress",
                  "--conv-impl", "xla"]
    env = {**__import__("os").environ, "WDJAX_CACHE": str(cifar_cache_dir)}
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "c1: test" in r.stdout
    summary = json.loads((tmp_path / "c1" / "summary.json").read_text())
    assert summary["train_total"] == 200
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2 and "already has results" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    # Two seeds: the finished run becomes seed 0 (kept as it is), seed 1 trains, and the
    # mean with its standard error is printed.
    r = subprocess.run(argv + ["--seeds", "2"], capture_output=True, text=True, timeout=300,
                       env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "c1" / "seed0" / "summary.json").read_text()) == summary
    finals = [json.loads((tmp_path / "c1" / f"seed{k}" / "summary.json").read_text())
              ["final_test_accuracy"] for k in (0, 1)]
    mean, sem = np.mean(finals), np.std(finals, ddof=1) / np.sqrt(2)
    assert f"c1: test {mean:.4f} ± {sem:.4f} (n=2" in r.stdout
