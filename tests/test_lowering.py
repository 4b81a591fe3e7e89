"""Programs built for an accelerator, lowered here on CPU: the trainer's train and eval steps
(one run, K vmapped runs, a runs x data mesh) use the platform's own convolution, pooling and
BatchNorm and nothing of `wdjax.cpu`, and compute what the CPU program computes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wdjax.cpu import batchnorm, ops
from wdjax.models import VGG, vgg
from wdjax.training import batches, parallel, steps
from wdjax.training.config import Config

pytestmark = pytest.mark.device

WIDTH, BATCH, N_TRAIN = 4, 16, 32
CONV = re.compile(r"stablehlo\.convolution.*: \(tensor<[^>]*>, tensor<([^>]*)>\)")


def lowered(platform: str, k: int = 1, conv_impl: str | None = None,
            precision: str = "fp32") -> tuple[str, str]:
    """StableHLO of the train and eval steps of `k` VGG runs (one seed, vmapped when k > 1),
    built by `steps.programs` for `platform` and lowered for it, on the default mesh."""
    configs = [Config(name=f"r{i}", width=WIDTH, batch_size=BATCH, conv_impl=conv_impl,
                      precision=precision, weight_decay=1e-3 * (i + 1)) for i in range(k)]
    prog = steps.programs(configs, (32, 32, 3), 10, N_TRAIN, parallel.make_mesh(k),
                          platform=platform)
    tx = steps.optimizer(configs[0], prog.params0, prog.layers, prog.schedule)
    one = steps.TrainState(jnp.zeros([], jnp.int32), prog.params0, prog.batch_stats0,
                           tx.init(prog.params0))
    state = jax.eval_shape(lambda s: steps.stack([s] * k) if k > 1 else s, one)
    images, labels = np.zeros((N_TRAIN, 32, 32, 3), np.uint8), np.zeros(N_TRAIN, np.int32)
    idx, mask = batches.epoch_batches(0, 0, N_TRAIN, BATCH)
    train = prog.step.trace(state, images, labels, idx, mask, 0, 0, jax.random.PRNGKey(0))
    evaluate = prog.eval.trace(state.params, state.batch_stats, images, labels, idx, mask, 0)
    return tuple(t.lower(lowering_platforms=(platform,)).as_text() for t in (train, evaluate))


def check_native(train: str, evaluate: str, k: int = 1, dtype: str = "f32") -> None:
    """AssertionError unless both programs are the VGG's native form: one convolution per
    3x3 layer and pass (forward of every layer, input gradient of all but the first, kernel
    gradient of every layer), each 3x3 kernel in a forward convolution (vmapped: the K
    runs' kernels side by side), the 1x1 layers (fc, logit) as dots (`vgg.pointwise`),
    reduce_window pooling (select_and_scatter gradients), no custom call. A CPU
    formulation (Winograd, im2col, reshape pooling) breaks the counts."""
    conf = vgg.vgg_conf(WIDTH)
    layers, pools = vgg.weight_layers(conf), sum(vgg.layer_kind(n) == "pool" for n, _ in conf)
    convs = [n for n in layers if vgg.layer_kind(n) == "conv"]
    cin, kernels = 3, Counter()
    for name, (cout, _) in conf:
        if name in convs:
            kernels[f"3x3x{cin}x{k * cout}x{dtype}"] += 1
        cin = cout if name in layers else cin
    for text, n_convs, n_dots in ((train, 3 * len(convs) - 1, 3 * (len(layers) - len(convs))),
                                  (evaluate, len(convs), len(layers) - len(convs))):
        rhs = Counter(CONV.findall(text))
        assert sum(rhs.values()) == n_convs, (sum(rhs.values()), n_convs)
        assert text.count("stablehlo.dot_general") >= n_dots
        assert not kernels - rhs, kernels - rhs
        assert text.count("stablehlo.reduce_window") == pools
        assert "custom_call" not in text
    assert train.count("stablehlo.select_and_scatter") == pools


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
@pytest.mark.parametrize("k", [1, 2])
def test_programs_lower_natively_for_the_platform(platform, k):
    check_native(*lowered(platform, k), k)


def test_bf16_programs_convolve_in_bfloat16():
    train, evaluate = lowered("cuda", precision="bf16")
    check_native(train, evaluate, dtype="bf16")
    assert "xf32>" not in "".join(CONV.findall(train + evaluate))


@pytest.mark.parametrize("conv_impl", ["winograd", "hybrid"])
def test_check_fails_when_the_cpu_plan_is_forced_into_the_cuda_program(conv_impl):
    with pytest.raises(AssertionError):
        check_native(*lowered("cuda", conv_impl=conv_impl))


@pytest.mark.slow
def test_programs_lower_on_a_runs_x_data_mesh():
    """2 runs on 4 (forced host) devices: a 2 x 2 mesh, lowered for cuda in a subprocess."""
    code = ("import json, sys; sys.path.insert(0, 'tests'); import test_lowering as t; "
            "train, ev = t.lowered('cuda', 2); t.check_native(train, ev, 2); "
            "print(json.dumps(train[:20000]))")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}  # host devices, also where an accelerator is present
    r = subprocess.run([sys.executable, "-W", "ignore", "-c", code], env=env, text=True,
                       capture_output=True, cwd=Path(__file__).resolve().parents[1],
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    head = json.loads(r.stdout.splitlines()[-1])
    assert 'sdy.mesh @mesh = <["runs"=2, "data"=2]>' in head
    assert "mhlo.num_partitions = 4" in head


def test_accelerator_model_uses_nothing_of_wdjax_cpu(monkeypatch):
    """Tracing the model for cuda calls no `wdjax.cpu` kernel; for cpu it does (so the
    trap works)."""

    def trap(*args, **kwargs):
        raise RuntimeError("wdjax.cpu used")

    for module, name in ((ops, "conv2d"), (ops, "max_pool"), (batchnorm, "batch_norm_train")):
        monkeypatch.setattr(module, name, trap)
    x = jnp.zeros((2, 32, 32, 3))

    def trace(platform):
        model = VGG(vgg.vgg_conf(WIDTH), platform=platform)
        v = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=True))
        jax.eval_shape(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]), v)

    trace("cuda")
    with pytest.raises(RuntimeError, match="wdjax.cpu used"):
        trace("cpu")


@pytest.mark.slow
def test_accelerator_model_computes_the_cpu_model():
    """The cuda-built VGG (nn.Conv, reduce_window, flax-style BatchNorm) and the CPU-built
    one (the conv plan, reshape pooling, fused BatchNorm) give the same loss, batch
    statistics and gradients on the same variables, to float32 summation-order rounding
    (compared per tensor, as tests/test_models.py compares the conv formulations: conv
    biases feeding BatchNorm have a true gradient of 0, float noise here)."""
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 32, 32, 3))
    mask = jnp.ones(8).at[-3:].set(0)  # padded rows: the statistics must drop them alike

    def run(platform):
        model = VGG(vgg.vgg_conf(WIDTH), platform=platform)
        v = vgg.init_variables(model, jax.random.PRNGKey(0))

        def loss(params):
            out, new = model.apply({**v, "params": params}, x, train=True, mask=mask,
                                   mutable=["batch_stats"])
            return jnp.sum(jnp.sin(out)), new

        (value, new), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(v["params"])
        return value, new, grads

    for a, b in zip(jax.tree.leaves(run("cuda")), jax.tree.leaves(run("cpu")), strict=True):
        assert np.linalg.norm(a - b) <= 1e-4 * np.linalg.norm(b) + 1e-4


def test_allocator_is_tuned_only_for_a_cpu_backend():
    """JAX_PLATFORMS naming an accelerator first: `tune_cpu_allocator` does nothing, told
    without starting a backend; naming cpu: it tunes."""
    code = ("from wdjax.cpu import ops; import jax._src.xla_bridge as xb; "
            "print(ops.tune_cpu_allocator(), xb.backends_are_initialized())")
    for platforms, expected in (("cuda,cpu", "False False"), ("cpu", "True False")):
        r = subprocess.run([sys.executable, "-c", code], text=True, capture_output=True,
                           env={**os.environ, "JAX_PLATFORMS": platforms}, timeout=300)
        assert r.stdout.split() == expected.split(), r.stderr[-2000:]
