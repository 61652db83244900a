"""COIN mode: one small network overfitted per file, its weights stored in the file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import smooth_image
from PIL import Image

from coinpp import container, modalities, overfit
from coinpp.bitstream import parse
from coinpp.cli import cli
from coinpp.container import SirenArch
from coinpp.decoder import decode_bytes
from coinpp.errors import FormatError, InputError
from coinpp.modalities import Resolution, Signal

IMAGE = modalities.get("image")


def _signal(h: int = 24, w: int = 20, channels: int = 3) -> Signal:
    return Signal(smooth_image(h, w, channels).astype(np.float32) / 255, {"channels": channels})


def test_fit_improves_and_round_trips_through_the_file():
    sig = _signal()
    res = overfit.encode_signal(sig, IMAGE, SirenArch(2, 3, 16, 3), iterations=150, lr=1e-3, device="cpu")
    decoded, parsed = decode_bytes(res.data, device="cpu")
    assert parsed.spec is None and parsed.file.arch == SirenArch(2, 3, 16, 3)
    assert decoded.spatial == sig.spatial
    # The file decodes to exactly the iterate the encoder kept (its PSNR was measured as stored).
    mse = float(np.mean((np.clip(overfit.evaluate_network(res.report.net, sig.spatial, "cpu"), 0, 1)
                         - sig.values) ** 2))
    assert abs(-10 * np.log10(mse) - res.report.psnr) < 0.05
    untrained = overfit.fit_network(sig.values, SirenArch(2, 3, 16, 3), 1, device="cpu")
    assert res.report.psnr > untrained.psnr + 3


def test_weights_are_exact_after_16_bit_storage():
    sig = _signal()
    res = overfit.encode_signal(sig, IMAGE, SirenArch(2, 3, 8, 2), iterations=20, device="cpu")
    net = overfit.network_from_file(parse(res.data).file)
    for stored, kept in zip(net.tensors(), res.report.net.tensors(), strict=True):
        assert torch.equal(stored, kept)
        assert torch.equal(stored, stored.half().float())  # every weight is a half float


@pytest.mark.parametrize("bits", [8, 12, 15])
def test_fewer_weight_bits_round_trip_exactly(bits):
    torch.manual_seed(0)
    tensors = [torch.randn(7, 5), torch.randn(7), torch.zeros(3)]  # a constant tensor too
    shapes = [tuple(t.shape) for t in tensors]
    payload = overfit.encode_weights(tensors, bits)
    assert len(payload) == 8 * 3 + (sum(t.numel() for t in tensors) * bits + 7) // 8
    once = overfit.decode_weights(payload, shapes, bits)
    twice = overfit.decode_weights(overfit.encode_weights(once, bits), shapes, bits)
    for a, b, t in zip(once, twice, tensors, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
        span = float(t.max() - t.min())
        assert float((a - t).abs().max()) <= span / (2 ** bits - 1) / 2 + 1e-6


def test_any_resolution_decode_samples_the_same_function():
    sig = _signal(16, 16)
    res = overfit.encode_signal(sig, IMAGE, SirenArch(2, 3, 16, 2), iterations=100, lr=1e-3, device="cpu")
    base, _ = decode_bytes(res.data, device="cpu")
    big, _ = decode_bytes(res.data, Resolution(scale=2), device="cpu")
    assert big.spatial == (32, 32)
    # Sample centres of the 2x grid average (2x2 blocks) close to the 1x samples of a smooth fit.
    pooled = big.values.reshape(16, 2, 16, 2, 3).mean(axis=(1, 3))
    assert np.abs(pooled - base.values).max() < 0.05
    odd, _ = decode_bytes(res.data, Resolution(size=(9, 7)), device="cpu")  # WIDTHxHEIGHT
    assert odd.spatial == (7, 9)


def test_grayscale_fits_one_channel():
    sig = _signal(12, 10, channels=1)
    res = overfit.encode_signal(sig, IMAGE, bpp=40.0, iterations=5, device="cpu")
    assert res.arch.out_dim == 1
    decoded, _ = decode_bytes(res.data, device="cpu")
    assert decoded.values.shape == (12, 10, 1)


def test_architecture_from_rate_matches_the_published_kodak_choice():
    arch = overfit.arch_for_rate(0.3, 768 * 512, 2, 3)
    assert (arch.depth, arch.width) == (10, 28)
    assert overfit.arch_for_rate(0.15, 768 * 512, 2, 3).depth == 5
    low = overfit.arch_for_rate(0.3, 768 * 512, 2, 3, weight_bits=10)
    assert low.width > arch.width  # fewer bits per weight buy a wider network at the same rate
    with pytest.raises(InputError):
        overfit.arch_for_rate(0.001, 100, 2, 3)


def test_time_limit_stops_early_with_the_best_so_far():
    sig = _signal()
    r = overfit.fit_network(sig.values, SirenArch(2, 3, 8, 2), 10**9, time_limit=0.3, device="cpu")
    assert 1 <= r.iterations < 10**9 and r.best_iteration <= r.iterations and np.isfinite(r.psnr)


def test_payload_size_is_checked_and_caps_apply():
    f = container.NetworkFile(1, (4, 4), 3, SirenArch(2, 3, 4, 2), 16, bytes(2 * SirenArch(2, 3, 4, 2).params))
    data = container.write_bytes(f)
    assert isinstance(container.read_bytes(data), container.NetworkFile)
    bad = bytearray(data)
    bad[bad.index(b"DATA") + 4] += 2  # declared DATA length no longer matches the architecture
    import struct
    import zlib

    body = bytes(bad[:-4])
    with pytest.raises(FormatError):
        container.read_bytes(body + b"\0\0" + struct.pack("<I", zlib.crc32(body + b"\0\0")))


def test_cli_coin_method(tmp_path):
    src = tmp_path / "in.png"
    Image.fromarray(smooth_image(20, 24)).save(src)
    run = CliRunner().invoke
    r = run(cli, ["encode", str(src), "-o", str(tmp_path / "a.coin"), "--method", "coin", "--arch", "2x8",
                  "--iters", "30", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "PSNR" in r.output and "COIN 2x8" in r.output
    info = json.loads(run(cli, ["info", str(tmp_path / "a.coin"), "--json"]).output)
    assert info["method"] == "coin" and info["weights"] == SirenArch(2, 3, 8, 2).params
    r = run(cli, ["decode", str(tmp_path / "a.coin"), "-o", str(tmp_path / "a.png"), "--size", "48x40"])
    assert r.exit_code == 0 and Image.open(tmp_path / "a.png").size == (48, 40)
    for args, msg in ((["--bpp", "0.3", "--arch", "2x8"], "not both"), (["--arch", "ten"], "LAYERSxWIDTH"),
                      (["--weight-bits", "4"], "--weight-bits"), (["--codec", "x"], "only apply")):
        r = run(cli, ["encode", str(src), "-o", str(tmp_path / "b.coin"), "--method", "coin", *args])
        assert r.exit_code == 1 and msg in r.output and "Traceback" not in r.output
    r = run(cli, ["encode", str(src), "-o", str(tmp_path / "b.coin"), "--arch", "2x8"])
    assert r.exit_code == 1 and "--method coin" in r.output


def test_encoding_is_deterministic():
    sig = _signal()
    a = overfit.encode_signal(sig, IMAGE, SirenArch(2, 3, 8, 2), iterations=30, batch_points=100, device="cpu")
    b = overfit.encode_signal(sig, IMAGE, SirenArch(2, 3, 8, 2), iterations=30, batch_points=100, device="cpu")
    assert a.data == b.data
