"""units.topographic_grouping: finds built-in grouping, and none in a random kernel."""

import numpy as np
import pytest
from PIL import Image

from wdjax.analysis import plots, units
from wdjax.layers import labels

IN, OUT, GRID = 18, 27, 3


def grouped_kernel(seed=0):
    """HWIO kernel whose magnitude falls as 0.3 ** (floored grid distance), as topo decay makes."""
    rng = np.random.default_rng(seed)
    scale = 0.3 ** labels.topographic_distance(IN, OUT, GRID)
    return rng.normal(size=(3, 3, IN, OUT)) * scale


def he_kernel(seed=0):
    return np.random.default_rng(seed).normal(size=(3, 3, IN, OUT)) * np.sqrt(2 / (9 * IN))


def test_cell_map_is_the_mean_magnitude_per_cell_pair():
    kernel = grouped_kernel()
    result = units.topographic_grouping(kernel, GRID, permutations=5)
    cell_in = [x + GRID * y for x, y in labels.unit_cells(IN, GRID)]
    cell_out = [x + GRID * y for x, y in labels.unit_cells(OUT, GRID)]
    magnitude = np.abs(kernel).mean(axis=(0, 1))
    want = np.full((GRID**2, GRID**2), np.nan)
    for co in range(GRID**2):
        for ci in range(GRID**2):
            block = [magnitude[i, o] for i in range(IN) for o in range(OUT)
                     if cell_in[i] == ci and cell_out[o] == co]
            if block:
                want[co, ci] = np.mean(block)
    np.testing.assert_allclose(result.cell_map, want, rtol=1e-12)
    # 18 inputs fill cells 0-8 two by two; 27 outputs three by three: every pair has units.
    assert not np.isnan(result.cell_map).any()
    assert result.distance[0, 8] == pytest.approx(np.sqrt(8))
    assert result.null.shape == (5,)


def test_finds_grouping_in_a_kernel_built_with_it():
    result = units.topographic_grouping(grouped_kernel(), GRID)
    assert result.spearman < -0.5
    assert result.p_value < 0.01


def test_finds_none_in_a_he_initialised_kernel():
    result = units.topographic_grouping(he_kernel(), GRID)
    assert result.p_value > 0.05
    # Deterministic for a seed.
    again = units.topographic_grouping(he_kernel(), GRID)
    assert again.p_value == result.p_value


def test_io_kernels_and_bad_input():
    io = grouped_kernel()[0, 0]
    assert units.topographic_grouping(io, GRID, permutations=20).p_value < 0.1
    with pytest.raises(ValueError, match="ndim >= 2"):
        units.topographic_grouping(np.ones(5))


def test_topographic_maps_png(tmp_path):
    groupings = {"fc6": units.topographic_grouping(grouped_kernel()[0, 0], permutations=3),
                 "conv5_2": units.topographic_grouping(he_kernel(), permutations=3)}
    path = plots.topographic_maps(groupings, tmp_path / "maps.png")
    with Image.open(path) as image:
        assert image.width > image.height > 100
