"""Latent grids (image lever 4): latents at cell centres, interpolated, shared across cell borders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_codec, smooth_image

from coinpp import codec as codecs
from coinpp import modalities
from coinpp import spec as specs
from coinpp.bitstream import decode_symbols, parse
from coinpp.decoder import decode_bytes
from coinpp.encoder import encode_signal
from coinpp.errors import InputError
from coinpp.fit import fit_grid
from coinpp.modalities import Resolution
from coinpp.model import GridModulatedSiren, SirenConfig, build_network
from coinpp.patching import CellLayout, cell_harmonics, interpolation_weights, sample_centres
from coinpp.synthesis import evaluate_latent_grid

GRID = SirenConfig(width=16, depth=2, latent_dim=4, cell=4, frequencies=2)


def _double(layout: CellLayout) -> CellLayout:
    return CellLayout(*(t.double() for t in (layout.row_weights, layout.col_weights, layout.row_harmonics,
                                             layout.col_harmonics)))


def test_interpolation_weights_sum_to_one_and_hold_the_edge_latents():
    w = interpolation_weights(sample_centres(12, 12), 4, 3)  # latents at 2, 6 and 10
    assert np.allclose(w.sum(axis=1), 1)
    assert np.array_equal(w[0], [1, 0, 0]) and np.array_equal(w[-1], [0, 0, 1])  # past the outer centres
    assert np.allclose(w[2], [0.875, 0.125, 0])  # centre 2.5: 1/8 of a cell past the first latent
    # At a cell's centre the sample takes that cell's latent alone.
    assert np.allclose(interpolation_weights(np.array([6.0]), 4, 3), [[0, 1, 0]])


def test_cell_harmonics_repeat_every_cell():
    a = cell_harmonics(np.array([0.5, 1.5]), 4, 3)
    b = cell_harmonics(np.array([4.5, 9.5]), 4, 3)
    assert np.allclose(a, b)


def test_grid_latent_gradient_matches_autograd_first_and_second_order():
    torch.manual_seed(0)
    net = build_network(SirenConfig(width=24, depth=3, latent_dim=5, cell=4, frequencies=2)).double()
    assert isinstance(net, GridModulatedSiren)
    layout = _double(CellLayout.for_region((10, 13), 4, 2))
    targets = torch.rand(2, 130, 3, dtype=torch.float64)
    z = (torch.randn(2, 12, 5, dtype=torch.float64) * 0.1).requires_grad_(True)
    loss, grad = net.loss_and_latent_grad(layout, z, targets)
    sse = (net(layout, z) - targets).pow(2).sum() / (4 * 4 * 3)
    (auto,) = torch.autograd.grad(sse, z)
    assert torch.allclose(grad, auto, rtol=1e-9, atol=1e-12)
    assert torch.allclose(loss, (net(layout, z) - targets).pow(2).mean(dim=(1, 2)))

    def meta_grads(manual: bool):
        net.zero_grad()
        w = torch.zeros(2, 12, 5, dtype=torch.float64, requires_grad=True)
        for _ in range(2):
            if manual:
                _, g = net.loss_and_latent_grad(layout, w, targets)
            else:
                e = (net(layout, w) - targets).pow(2).sum() / 48
                (g,) = torch.autograd.grad(e, w, create_graph=True)
            w = w - net.learning_rates() * g
        (net(layout, w) - targets).pow(2).mean().backward()
        return [p.grad.clone() for p in net.parameters()]

    for a, b in zip(meta_grads(True), meta_grads(False), strict=True):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-10)


def test_fit_in_bands_equals_fit_in_one_piece_and_lowers_the_error():
    torch.manual_seed(1)
    net = build_network(GRID).requires_grad_(False)
    values = smooth_image(21, 18, seed=3).astype(np.float32) / 255
    whole = fit_grid(net, values, 4, "cpu", band=10**6)
    banded = fit_grid(net, values, 4, "cpu", band=18 * 5)  # bands of 5 rows
    assert whole.shape == (6 * 5, 4)
    assert torch.allclose(whole, banded, atol=1e-6)
    zero = evaluate_latent_grid(net, torch.zeros_like(whole), (21, 18), (21, 18), "cpu")
    fitted = evaluate_latent_grid(net, whole, (21, 18), (21, 18), "cpu", chunk=18 * 3)
    assert ((fitted - values) ** 2).mean() < ((zero - values) ** 2).mean()


def test_decoding_is_continuous_across_cell_borders():
    """Samples ever closer to a cell border converge from both sides (no seams), unlike patches."""
    torch.manual_seed(2)
    net = build_network(GRID).requires_grad_(False)
    z = torch.randn(3 * 3, 4) * 0.5
    jumps = []
    for n in (96, 960):  # a dense row of samples across a 12-sample region
        out = evaluate_latent_grid(net, z, (12, 12), (1, n), "cpu")[0]
        jumps.append(np.abs(np.diff(out, axis=0)).max())
    assert jumps[1] < 0.2 * jumps[0]


@pytest.fixture()
def tiny_grid_codec(tiny_codec) -> codecs.Codec:
    """A tiny latent-grid image codec with the neighbour context, next to the tiny image codec."""
    return make_tiny_codec(Path(os.environ["COIN_CODECS_PATH"]), "tiny-grid-b4", context=True, grid=True)


def test_grid_codec_round_trip_any_resolution_and_channel_groups(tiny_grid_codec):
    image = modalities.get("image")
    rgb = modalities.Signal(smooth_image(19, 26, seed=4).astype(np.float32) / 255, {"channels": 3})
    enc = encode_signal(rgb, image, tiny_grid_codec, device="cpu")
    decoded, p = decode_bytes(enc.data, device="cpu")
    assert decoded.values.shape == rgb.values.shape
    assert p.file.patch == (4, 4) and p.file.num_patches == 5 * 7
    assert np.array_equal(decode_symbols(parse(enc.data)), enc.symbols)
    big, _ = decode_bytes(enc.data, Resolution(scale=2), device="cpu")
    assert big.values.shape == (38, 52, 3)
    gray = modalities.Signal(rgb.values[..., :1].copy(), {"channels": 1})
    assert decode_bytes(encode_signal(gray, image, tiny_grid_codec, device="cpu").data)[0].values.shape == (19, 26, 1)


def test_grid_codec_folder_must_tile_by_its_cell(tmp_path):
    c = make_tiny_codec(tmp_path, "g-b4", grid=True)
    cfg = c.folder / "config.json"
    import json

    config = json.loads(cfg.read_text())
    config["patch"] = [8, 8]
    config["hash"] = specs.codec_hash(c.folder, config).hex()
    cfg.write_text(json.dumps(config))
    with pytest.raises(codecs.CodecError, match="cell"):
        codecs.load_folder(c.folder)


def test_training_crops_must_be_whole_cells():
    from coinpp.training.meta import training_points

    assert training_points(GRID, (8, 12)).nodes == (2, 3)
    with pytest.raises(InputError):
        training_points(GRID, (10, 10))


def test_info_says_the_latents_are_a_grid(tiny_grid_codec, tmp_path):
    import json

    from click.testing import CliRunner

    from coinpp.cli import cli

    sig = modalities.Signal(smooth_image(12, 9, seed=5).astype(np.float32) / 255, {"channels": 3})
    path = tmp_path / "g.coin"
    path.write_bytes(encode_signal(sig, modalities.get("image"), tiny_grid_codec, device="cpu").data)
    r = CliRunner().invoke(cli, ["info", str(path), "--json"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.output)
    assert rec["latents"].startswith("a grid") and rec["patches"] == 3 * 3
