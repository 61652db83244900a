"""Split/merge is exact for any size; coordinates are pixel centres."""

import numpy as np
import pytest
import torch

from coinpp.patching import PatchGrid, merge, patch_coordinates, pixel_centres, split


@pytest.mark.parametrize("shape,patch", [((37, 53), (8, 8)), ((32, 32), (32, 32)), ((5, 3), (8, 8)),
                                         ((17, 9, 11), (4, 4, 4)), ((1001,), (200,))])
def test_split_merge_round_trip_is_exact(shape, patch):
    x = np.random.default_rng(0).random((*shape, 3)).astype(np.float32)
    patches, grid = split(x, patch)
    assert patches.shape == (grid.num_patches, int(np.prod(patch)), 3)
    assert np.array_equal(merge(patches, grid), x)


def test_padding_is_reflected_at_far_edges():
    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    patches, grid = split(x, (4,))
    assert grid.padding == (2,)
    assert patches[-1, :, 0].tolist() == [8, 9, 8, 7]


def test_grid_counts():
    g = PatchGrid((512, 768), (32, 32))
    assert g.counts == (16, 24) and g.num_patches == 384 and g.padding == (0, 0)
    assert PatchGrid((33, 1), (32, 32)).counts == (2, 1)


def test_pixel_centres_tile_the_cell():
    c = pixel_centres(4)
    assert torch.allclose(c, torch.tensor([-0.75, -0.25, 0.25, 0.75], dtype=torch.float64))
    fine = pixel_centres(8)
    # Each coarse centre is the mean of the two fine centres in its cell.
    assert torch.allclose((fine[0::2] + fine[1::2]) / 2, c)


def test_patch_coordinates_shape_and_order():
    c = patch_coordinates((2, 3))
    assert c.shape == (6, 2)
    assert c[0].tolist() == pytest.approx([-0.5, -2 / 3])
    assert c[1].tolist() == pytest.approx([-0.5, 0.0])
