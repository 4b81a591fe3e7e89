"""Seeds of a run: what `with_seeds` makes, and that seeds really differ where they should."""

import jax
import numpy as np
import pytest

from wdjax.training import batches, parallel, steps, train
from wdjax.training.config import Config, with_seeds

BASE = dict(width=2, batch_size=16, stages=1, epochs_per_stage=1,
            optimizer="SGD_var_dup2_last1_mult")


def test_with_seeds_expands_run_major_with_seed_directories():
    a, b = Config(name="a", seed=3, **BASE), Config(name="b", seed=3, **BASE)
    assert with_seeds([a, b], 1) == [a, b]  # one seed: records stay in <name>/
    got = with_seeds([a, b], 2)
    assert [(c.name, c.seed, str(c.run_path)) for c in got] == [
        ("a", 3, "a/seed3"), ("a", 4, "a/seed4"), ("b", 3, "b/seed3"), ("b", 4, "b/seed4")]
    assert len({c.shared_key() for c in got}) == 1  # all of them train in one program
    with pytest.raises(ValueError, match="seeds must be a positive integer, got 0"):
        with_seeds([a], 0)


@pytest.mark.slow
def test_seeds_differ_in_weights_factors_batch_order_and_flips():
    configs = with_seeds([Config(name="s", **BASE)], 2) + [Config(name="t", **BASE)]
    prog = steps.programs(configs, (8, 8, 3), 10, 64, parallel.make_mesh(1))
    s0, s1, again = steps.starts(configs, prog)
    k0, k1 = (np.asarray(s.variables["params"]["conv1_1"]["conv"]["kernel"]) for s in (s0, s1))
    assert not np.allclose(k0, k1)
    assert s0.factors["conv1_1"] != s1.factors["conv1_1"]  # measured on each seed's weights
    # Seed 0 alone starts where seed 0 of the group does.
    np.testing.assert_array_equal(
        k0, np.asarray(again.variables["params"]["conv1_1"]["conv"]["kernel"]))
    first0 = batches.epoch_batches(0, 0, 64, 16)[0][0]
    first1 = batches.epoch_batches(1, 0, 64, 16)[0][0]
    assert sorted(first0) != sorted(first1)
    keys = train._keys(configs[:2])
    assert keys.shape == (2, 2) and not np.array_equal(keys[0], keys[1])
    images = np.random.default_rng(0).uniform(0, 255, (32, 8, 8, 3)).astype(np.float32)

    def flipped(key):  # as the step derives it, at epoch 0, step 0
        key = jax.random.fold_in(jax.random.fold_in(key, 0), 0)
        return np.asarray(batches.augment(jax.random.fold_in(key, 0), images))

    assert not np.array_equal(flipped(keys[0]), flipped(keys[1]))
