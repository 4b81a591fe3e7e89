"""The self-tuning conv plan (`wdjax.cpu.tune`): its plans compute the same convolution as
the fixed ones, its cache outlives the process that timed it, ``WDJAX_CONV_TUNE=0`` restores
the rule table, and a corrupt cache is rebuilt.

The suite runs with tuning off (conftest); these tests turn it on with a cache in tmp_path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import jax
import pytest
from test_ops import assert_close, ref_conv, value_and_grads

from wdjax.cpu import ops, tune
from wdjax.cpu import plan as cp

X_SHAPE, K_SHAPE = (2, 4, 4, 3), (3, 3, 3, 4)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> tuple[cp.Plan, os.PathLike]:
    """One timed plan for a tiny layer (one repeat), and its cache file."""
    path = tmp_path_factory.mktemp("wdjax-cache") / tune.CACHE_NAME
    return tune.tuned_plan(X_SHAPE, K_SHAPE, repeats=1, path=path), path


def test_candidates_cover_every_method_and_valid_chunks() -> None:
    got = tune.candidates((128, 16, 16, 32), (3, 3, 32, 64))
    assert {(m.kind, m.tile) for m in got} == {("xla", 0), ("im2col", 0), ("winograd", 2),
                                               ("winograd", 4)}
    assert any(m.chunk for m in got) and all(128 % m.chunk == 0 for m in got if m.chunk)
    assert len(set(got)) == len(got)
    # Winograd needs a 3x3 kernel.
    assert {m.kind for m in tune.candidates((8, 8, 8, 4), (5, 5, 4, 4))} == {"xla", "im2col"}


@pytest.mark.slow
def test_tuned_plan_is_the_fastest_candidate_and_is_cached(tuned) -> None:
    plan, path = tuned
    entry = json.loads(path.read_text())["plans"][tune.machine()][tune.shape_key(X_SHAPE,
                                                                                 K_SHAPE)]
    names = {str(m) for m in tune.candidates(X_SHAPE, K_SHAPE)}
    for p, method in zip(cp.PASSES, plan, strict=True):
        ms = entry[p]["ms"]
        assert set(ms) == names and str(method) == min(ms, key=ms.get)


@pytest.mark.slow
def test_tuned_plan_computes_the_fixed_plans_numbers(tuned) -> None:
    """Values and both gradients of the tuned plan agree with XLA's conv and the rule plan,
    to the tolerance of tests/test_ops.py (which checks every fixed plan against XLA's)."""
    plan, _ = tuned
    rules = cp.conv_plan(X_SHAPE, K_SHAPE, tune=False)
    x = jax.random.normal(jax.random.key(1), X_SHAPE)
    k = jax.random.normal(jax.random.key(2), K_SHAPE) / 6.0
    got = value_and_grads(lambda x, k: ops.planned_conv(x, k, plan), x, k)
    for want in (value_and_grads(ref_conv, x, k),
                 value_and_grads(lambda x, k: ops.planned_conv(x, k, rules), x, k)):
        for a, b in zip(got, want, strict=True):
            assert_close(a, b)


@pytest.mark.slow
def test_a_second_process_reuses_the_cache_without_timing(tuned) -> None:
    plan, path = tuned
    before = path.stat().st_mtime_ns
    code = ("from wdjax.cpu import plan, tune\n"
            "def timed(*a, **k): raise AssertionError('timed again')\n"
            "tune.time_passes = timed\n"
            f"print(plan.conv_plan({X_SHAPE}, {K_SHAPE}))\n")
    env = dict(os.environ, WDJAX_CONV_TUNE="1", WDJAX_CACHE=str(path.parent))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(plan)
    assert path.stat().st_mtime_ns == before


def _fake_times(winner: cp.Method):
    """A stand-in for `tune.time_passes` where `winner` is fastest for every pass."""
    def times(x_shape, k_shape, repeats=tune.REPEATS):
        return {p: {cp.XLA: 2.0, winner: 1.0} for p in cp.PASSES}
    return times


def test_tuning_off_gives_the_rule_plan(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WDJAX_CACHE", str(tmp_path))
    monkeypatch.setattr(tune, "time_passes", _fake_times(cp.im2col_method(1)))
    x_shape, k_shape = (128, 32, 32, 32), (3, 3, 32, 32)
    rules = cp.conv_plan(x_shape, k_shape, cp.RULES)
    assert rules == cp.Plan(*[cp.winograd_method(4)] * 3)
    monkeypatch.setenv("WDJAX_CONV_TUNE", "1")
    assert cp.conv_plan(x_shape, k_shape) == cp.Plan(*[cp.im2col_method(1)] * 3)
    assert cp.conv_plan(x_shape, k_shape, tune=False) == rules
    monkeypatch.setenv("WDJAX_CONV_TUNE", "0")
    assert cp.conv_plan(x_shape, k_shape) == rules
    assert cp.conv_plan(x_shape, k_shape, tune=True) != rules  # from the cache


def test_a_corrupt_cache_is_rebuilt_with_one_warning(tmp_path, monkeypatch) -> None:
    path = tmp_path / tune.CACHE_NAME
    path.write_text('{"version": 1, "plans": {"trunc')
    monkeypatch.setattr(tune, "time_passes", _fake_times(cp.winograd_method(2)))
    with pytest.warns(UserWarning) as caught:
        plan = tune.tuned_plan(X_SHAPE, K_SHAPE, path=path)
    assert plan == cp.Plan(*[cp.winograd_method(2)] * 3)
    assert len(caught) == 1 and "rebuilding" in str(caught[0].message)
    assert "\n" not in str(caught[0].message)
    # Rebuilt: the next read finds the plan (no timing: it would pick XLA) and warns no more.
    monkeypatch.setattr(tune, "time_passes", _fake_times(cp.XLA))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tune.tuned_plan(X_SHAPE, K_SHAPE, path=path) == plan
