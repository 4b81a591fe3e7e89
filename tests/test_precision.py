"""bf16 mixed precision: bfloat16 compute with float32 parameters, optimiser state, BatchNorm
statistics, loss and decay; the same training as fp32 up to bfloat16's rounding."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import subset

from experiments import cli, sweep
from experiments import train as train_cli
from wdjax import storage
from wdjax.training import batches, parallel, steps, train
from wdjax.training.config import Config

# bfloat16 keeps an 8-bit significand (7 bits stored): unit roundoff u = 2**-8 ~ 0.39%.
BF16_ROUNDOFF = 2.0**-8


def first_step(precision: str) -> tuple[steps.TrainState, dict, jax.Array]:
    """The trainer's compiled step (default CPU conv plan, monitors on: the epoch's last step)
    on one batch of 64 images from seed 0; returns the state after it, its metrics and the
    model's output dtype."""
    cfg = Config(width=4, batch_size=64, precision=precision)
    prog = steps.programs([cfg], (32, 32, 3), 10, 64, parallel.make_mesh(1))
    state = steps.initial_states([cfg], prog, steps.starts([cfg], prog))[0]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 32, 32, 3), np.uint8)
    labels = rng.integers(0, 10, 64).astype(np.int32)
    idx, mask = batches.epoch_batches(0, 0, 64, 64)
    logits = jax.eval_shape(lambda v: prog.model.apply(v, jnp.zeros((1, 32, 32, 3)),
                                                       train=False),
                            {"params": state.params, "batch_stats": state.batch_stats})
    state, metrics = prog.step(state, images, labels, idx, mask, 0, 0, jax.random.PRNGKey(0))
    return state, metrics, logits.dtype


@pytest.mark.device
@pytest.mark.slow
def test_bf16_step_matches_fp32_to_bf16_rounding_and_keeps_float32_state():
    """The first step's loss (the initial weights' loss on the batch) agrees within 4 u:
    BatchNorm renormalises every layer, so the logits carry a few roundings of relative
    size u, not a compounding of 12 layers' (measured: at most 0.9 u over 3 seeds). The
    losses differ (bf16 did compute), and everything the step carries over is float32."""
    s32, m32, out32 = first_step("fp32")
    s16, m16, out16 = first_step("bf16")
    assert (out32, out16) == (jnp.float32, jnp.bfloat16)
    loss32, loss16 = float(m32["loss"]), float(m16["loss"])
    assert loss16 != loss32
    assert abs(loss16 - loss32) <= 4 * BF16_ROUNDOFF * loss32, (loss32, loss16)
    for tree in (s16.params, s16.batch_stats):
        assert {leaf.dtype for leaf in jax.tree.leaves(tree)} == {jnp.dtype(jnp.float32)}
    carried = jax.tree.leaves((s16.opt_state, m16))
    floats = {leaf.dtype for leaf in carried if jnp.issubdtype(leaf.dtype, jnp.floating)}
    assert floats == {jnp.dtype(jnp.float32)}  # optimiser state, loss, decay monitors


@pytest.mark.device
@pytest.mark.slow
def test_bf16_tiny_run_reaches_fp32_accuracy(cifar_jpeg, tmp_path):
    """Width 8, 2000 CIFAR images, 4 epochs: the test accuracies (1000 images) of fp32 and
    bf16 differ by less than 3 standard deviations of a difference of two accuracies' binomial
    noise, sqrt(2 p (1 - p) / n) ~ 2.1 points at p ~ 0.35 (the trajectories part like two
    seeds': fp32 seeds 0 and 1 differ by 1.5 points). Measured: 35.2% both."""
    dataset = subset(cifar_jpeg, 2000, 1000)
    acc = {}
    for precision in ("fp32", "bf16"):
        cfg = Config(name=precision, width=8, stages=2, epochs_per_stage=2,
                     eval_batch_size=500, log_every=1000, precision=precision)
        summary = train.train(cfg, tmp_path, dataset=dataset, progress=False, plots=False)[0]
        acc[precision] = summary["final_test_accuracy"]
        record = storage.read_json(tmp_path / precision / "config.json")
        assert record["config"]["precision"] == precision
    p, n = acc["fp32"], len(dataset.test_labels)
    assert p > 0.25, acc  # it learned: the tolerance is about a trained model
    assert abs(acc["bf16"] - p) < 3 * math.sqrt(2 * p * (1 - p) / n), acc


def test_precision_flag_on_both_clis(capsys):
    """--precision reaches every run's Config (fp32 by default); the sweep's dry run shows it
    in the protocol and each run's config; anything else is refused."""
    parse = train_cli.parser().parse_args
    assert parse(["-n", "a"]).precision == "fp32"
    assert parse(["-n", "a", "--precision", "bf16"]).precision == "bf16"
    sweep.main(["--name", "dxp", "--scale", "quick", "--dry-run", "--precision", "bf16"])
    lines = capsys.readouterr().out.splitlines()
    assert '"precision": "bf16"' in lines[1]
    configs = [line for line in lines if line.startswith('{"name"')]
    assert configs and all('"precision": "bf16"' in line for line in configs)
    with pytest.raises(cli.UsageError, match="--precision"):
        parse(["-n", "a", "--precision", "fp16"])
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        Config(precision="fp16").validate()


def test_runs_recorded_before_precision_existed_are_fp32_runs(tmp_path):
    """A config.json without the field is the same config as fp32 (its run is reused or
    resumed), not as bf16."""
    from wdjax.training.runlog import same_config

    old = Config(name="a").to_dict()
    del old["precision"]
    storage.write_json(tmp_path / "config.json", {"config": old})
    assert same_config(tmp_path, Config(name="a"))
    assert not same_config(tmp_path, Config(name="a", precision="bf16"))
