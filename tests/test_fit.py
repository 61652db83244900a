"""Fitting is chunked without changing results; evaluation on any grid matches the forward pass."""

import numpy as np
import torch

from coinpp.fit import fit_latents
from coinpp.malloc import tune
from coinpp.model import LatentModulatedSiren, SirenConfig
from coinpp.patching import merge, patch_coordinates, split
from coinpp.synthesis import evaluate_grid


def _net():
    torch.manual_seed(0)
    return LatentModulatedSiren(SirenConfig(width=16, depth=2, latent_dim=4)).requires_grad_(False)


def test_chunk_size_does_not_change_latents():
    net = _net()
    targets = torch.rand(10, 16, 3)
    c = patch_coordinates((4, 4))
    a = fit_latents(net, c, targets, 3, "cpu", chunk=3)
    b = fit_latents(net, c, targets, 3, "cpu", chunk=64)
    assert torch.allclose(a, b, atol=1e-6)


def test_grid_evaluation_at_own_resolution_equals_patchwise_forward():
    net = _net()
    img = np.random.default_rng(0).random((10, 7, 3)).astype(np.float32)
    patches, grid = split(img, (4, 4))
    z = torch.randn(grid.num_patches, 4) * 0.1
    direct = net(patch_coordinates((4, 4)), z).numpy()  # (P, 16, 3)
    expected = merge(direct, grid)
    got = evaluate_grid(net, z, (10, 7), (4, 4), (10, 7), "cpu", chunk=5)
    assert got.shape == (10, 7, 3)
    assert np.allclose(got, expected, atol=1e-5)


def test_grid_evaluation_at_double_resolution_is_each_patchs_network_blended_at_borders():
    net = _net()
    z = torch.randn(6, 4) * 0.1  # an 8x12 signal in 4x4 patches: 2x3 patches
    dense = net(patch_coordinates((8, 8)), z).numpy()
    from coinpp.patching import PatchGrid

    unblended = merge(dense, PatchGrid((8, 12), (4, 4)), scale=2)
    got = evaluate_grid(net, z, (8, 12), (4, 4), (16, 24), "cpu")

    def axis(j: int, out: int, size: int, p: int = 4) -> list[tuple[int, float, float]]:
        """(patch, local coordinate, weight) of output sample j: between two patches' outermost input
        samples (half an input sample either side of the border) both, weighted linearly."""
        c = (j + 0.5) * size / out
        k = min(int(c // p), size // p - 1)
        off = c - k * p
        loc = lambda kk: 2 * (c - kk * p) / p - 1  # noqa: E731
        if off < 0.5 and k > 0:
            return [(k, loc(k), 0.5 + off), (k - 1, loc(k - 1), 0.5 - off)]
        if off > p - 0.5 and k < size // p - 1:
            return [(k, loc(k), 1 - (off - p + 0.5)), (k + 1, loc(k + 1), off - p + 0.5)]
        return [(k, loc(k), 1.0)]

    expected = np.zeros_like(got)
    for y in range(16):
        for x in range(24):
            for ky, ly, wy in axis(y, 16, 8):
                for kx, lx, wx in axis(x, 24, 12):
                    at = torch.tensor([[ly, lx]], dtype=torch.float32)
                    v = net.forward_points(at, net.latent_map(z)[[ky * 3 + kx]])
                    expected[y, x] += wy * wx * v[0].numpy()
    assert np.allclose(got, expected, atol=1e-5)
    inner = np.ones((16, 24), bool)
    inner[[7, 8]] = False
    inner[:, [7, 8, 15, 16]] = False  # the samples next to an inner border are blended, the rest are not
    assert np.allclose(got[inner], unblended[inner], atol=1e-5)
    assert not np.allclose(got[~inner], unblended[~inner], atol=1e-3)
    # the own grid is each patch's own output, exactly
    own = evaluate_grid(net, z, (8, 12), (4, 4), (8, 12), "cpu")
    assert np.array_equal(own, merge(net(patch_coordinates((4, 4)), z).numpy(), PatchGrid((8, 12), (4, 4))))


def test_supersampled_evaluation_is_the_mean_over_each_samples_equal_parts():
    net = _net()
    z = torch.randn(6, 4) * 0.1  # an 8x12 signal in 4x4 patches
    fine = evaluate_grid(net, z, (8, 12), (4, 4), (16, 24), "cpu")  # blended where it crosses a border
    got = evaluate_grid(net, z, (8, 12), (4, 4), (8, 12), "cpu", chunk=7, supersample=2)
    assert np.allclose(got, fine.reshape(8, 2, 12, 2, 3).mean(axis=(1, 3)), atol=1e-6)
    assert not np.allclose(got, evaluate_grid(net, z, (8, 12), (4, 4), (8, 12), "cpu"), atol=1e-3)
    # onto another grid (placed: first centre, step in input samples) each output sample's own parts
    placed = evaluate_grid(net, z, (8, 12), (4, 4), (5, 7), "cpu", placement=((0.7, 1.5), (0.2, 1.6)), supersample=3)
    parts = evaluate_grid(net, z, (8, 12), (4, 4), (15, 21), "cpu", placement=((0.2, 0.5), (0.2 - 1.6 / 3, 1.6 / 3)))
    assert np.allclose(placed, parts.reshape(5, 3, 7, 3, 3).mean(axis=(1, 3)), atol=1e-6)


def test_malloc_tuning_is_harmless():
    assert tune() in (True, False)


def test_checkerboard_halves_partition_the_patch():
    from coinpp.patching import checkerboard

    even, odd = checkerboard((4, 6), 0), checkerboard((4, 6), 1)
    assert len(even) == len(odd) == 12
    assert sorted(torch.cat([even, odd]).tolist()) == list(range(24))
    rows, cols = np.divmod(even.numpy(), 6)
    assert ((rows + cols) % 2 == 0).all()  # no two neighbours in one half
    assert torch.equal(checkerboard((4, 6), 2), even)


def test_half_steps_take_their_gradient_on_their_subset_alone():
    """A step on a subset moves the latents by the subset's gradient (not the whole patch's), the
    steps after it see every sample, and no subsets is the plain fit."""
    from coinpp.patching import checkerboard

    net = _net()
    targets = torch.rand(5, 16, 3)
    c = patch_coordinates((4, 4))
    lr = net.learning_rates()
    assert torch.equal(fit_latents(net, c, targets, 3, "cpu", subsets=[]), fit_latents(net, c, targets, 3, "cpu"))
    half = checkerboard((4, 4), 0)
    z0 = torch.zeros(5, 4)
    by_hand = z0 - lr * net.loss_and_latent_grad(c[half], z0, targets[:, half])[1]
    whole = z0 - lr * net.loss_and_latent_grad(c, z0, targets)[1]
    one = fit_latents(net, c, targets, 1, "cpu", subsets=[half])
    assert torch.allclose(one, by_hand, atol=1e-7) and not torch.allclose(one, whole, atol=1e-4)
    by_hand = by_hand - lr * net.loss_and_latent_grad(c, by_hand, targets)[1]
    assert torch.allclose(fit_latents(net, c, targets, 2, "cpu", subsets=[half]), by_hand, atol=1e-7)
    # more subsets than steps: the extra ones are not taken
    assert torch.equal(fit_latents(net, c, targets, 1, "cpu", subsets=[half, half]), one)
