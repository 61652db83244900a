"""The command line, end to end with a tiny codec: round trips, any resolution, every error case."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_tiny_codec, smooth_image
from PIL import Image

from coinpp import codec as codecs
from coinpp import spec as specs
from coinpp.cli import cli


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_clean_error(result, message: str):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("coin: error:"), result.output
    assert message in lines[0], lines[0]


def no_leftovers(folder: Path):
    return not list(folder.glob(".*.tmp*"))


def test_encode_info_decode_round_trip(tiny_codec, rgb_png, tmp_path):
    out = tmp_path / "a.coin"
    r = run("encode", rgb_png, "-o", out)
    assert r.exit_code == 0, r.output
    assert "bpp" in r.output and "PSNR" in r.output
    info = run("info", out, "--json")
    rec = json.loads(info.output)
    assert rec["bytes"] == out.stat().st_size
    assert rec["size"] == [29, 37] and rec["codec"] == tiny_codec.name and rec["bits"] == 4
    assert rec["bpp"] == pytest.approx(out.stat().st_size * 8 / (37 * 29))
    r = run("decode", out, "-o", tmp_path / "a.png")
    assert r.exit_code == 0, r.output
    dec = np.asarray(Image.open(tmp_path / "a.png"))
    assert dec.shape == (37, 29, 3) and dec.dtype == np.uint8
    assert no_leftovers(tmp_path)


def test_info_human_readable(tiny_codec, rgb_png, tmp_path):
    run("encode", rgb_png, "-o", tmp_path / "a.coin", "--no-check")
    r = run("info", tmp_path / "a.coin")
    assert r.exit_code == 0 and "tiny-b4" in r.output and "29x37" in r.output  # width x height, as --size takes it


def test_codecs_lists_installed(tiny_codec):
    r = run("codecs", "--json")
    rows = json.loads(r.output)
    assert [row["name"] for row in rows] == ["tiny-b4"]
    assert rows[0]["modality"] == "image" and rows[0]["default"] is True
    assert "tiny-b4" in run("codecs").output


def test_decode_is_deterministic_and_matches_encoder_check(tiny_codec, rgb_png, tmp_path):
    run("encode", rgb_png, "-o", tmp_path / "a.coin")
    run("encode", rgb_png, "-o", tmp_path / "b.coin")
    assert (tmp_path / "a.coin").read_bytes() == (tmp_path / "b.coin").read_bytes()


def test_scale_two_gives_double_size_and_smooth_output(tiny_codec, tmp_path):
    src = tmp_path / "s.png"
    Image.fromarray(smooth_image(32, 24)).save(src)
    run("encode", src, "-o", tmp_path / "s.coin", "--no-check")
    assert run("decode", tmp_path / "s.coin", "-o", tmp_path / "one.png").exit_code == 0
    r = run("decode", tmp_path / "s.coin", "-o", tmp_path / "two.png", "--scale", "2")
    assert r.exit_code == 0, r.output
    one = np.asarray(Image.open(tmp_path / "one.png")).astype(np.float64)
    two = np.asarray(Image.open(tmp_path / "two.png")).astype(np.float64)
    assert two.shape == (64, 48, 3)
    # Not nearest-neighbour blocks: samples inside each 2x2 block differ ...
    blocks = two.reshape(32, 2, 24, 2, 3)
    assert np.abs(blocks[:, 0] - blocks[:, 1]).mean() > 0.1
    # ... and the fine grid agrees with the coarse one on average (same function).
    assert np.abs(blocks.mean(axis=(1, 3)) - one).mean() < 3.0


def test_size_option(tiny_codec, rgb_png, tmp_path):
    run("encode", rgb_png, "-o", tmp_path / "a.coin", "--no-check")
    r = run("decode", tmp_path / "a.coin", "-o", tmp_path / "b.png", "--size", "50x20")
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "b.png").size == (50, 20)
    assert_clean_error(run("decode", tmp_path / "a.coin", "-o", tmp_path / "c.png", "--size", "5xq"), "--size")
    assert_clean_error(run("decode", tmp_path / "a.coin", "-o", tmp_path / "c.png", "--scale", "-1"), "--scale")


def test_grayscale_round_trip_stays_grayscale(tiny_codec, tmp_path):
    src = tmp_path / "g.png"
    Image.fromarray(smooth_image(20, 21, 1)[:, :, 0], "L").save(src)
    assert run("encode", src, "-o", tmp_path / "g.coin").exit_code == 0
    assert run("decode", tmp_path / "g.coin", "-o", tmp_path / "g2.png").exit_code == 0
    im = Image.open(tmp_path / "g2.png")
    assert im.mode == "L" and im.size == (21, 20)


@pytest.mark.parametrize("mode", ["P", "RGBA-opaque", "JPEG", "WEBP", "TIFF"])
def test_other_inputs_are_handled(tiny_codec, tmp_path, mode):
    rgb = Image.fromarray(smooth_image(19, 23))
    if mode == "P":
        src = tmp_path / "p.png"
        rgb.convert("P").save(src)
    elif mode == "RGBA-opaque":
        src = tmp_path / "a.png"
        rgb.convert("RGBA").save(src)
    else:
        src = tmp_path / f"x.{mode.lower()}"
        rgb.save(src, format=mode)
    r = run("encode", src, "-o", tmp_path / "x.coin")
    assert r.exit_code == 0, r.output
    assert run("decode", tmp_path / "x.coin", "-o", tmp_path / "x.png").exit_code == 0
    assert Image.open(tmp_path / "x.png").size == (23, 19)


def test_refused_inputs(tiny_codec, tmp_path):
    rgba = np.dstack([smooth_image(8, 8), np.full((8, 8), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    assert_clean_error(run("encode", tmp_path / "alpha.png", "-o", tmp_path / "o.coin"), "transparency")
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(tmp_path / "deep.png")
    assert_clean_error(run("encode", tmp_path / "deep.png", "-o", tmp_path / "o.coin"), "not supported")
    (tmp_path / "fake.png").write_bytes(b"not an image at all")
    assert_clean_error(run("encode", tmp_path / "fake.png", "-o", tmp_path / "o.coin"), "not an image coin can read")
    (tmp_path / "notes.txt").write_text("hello")
    assert_clean_error(run("encode", tmp_path / "notes.txt", "-o", tmp_path / "o.coin"), "unknown file type")
    assert_clean_error(run("encode", tmp_path / "missing.png", "-o", tmp_path / "o.coin"), "no such file")
    assert not (tmp_path / "o.coin").exists() and no_leftovers(tmp_path)


def test_bad_coin_files(tiny_codec, rgb_png, tmp_path):
    good = tmp_path / "a.coin"
    run("encode", rgb_png, "-o", good, "--no-check")
    data = good.read_bytes()
    cases = {
        "missing.coin": None,
        "trunc.coin": data[: len(data) // 2],
        "corrupt.coin": data[:20] + bytes([data[20] ^ 0x10]) + data[21:],
        "foreign.coin": rgb_png.read_bytes(),
        "empty.coin": b"",
    }
    messages = {"missing.coin": "no such file", "trunc.coin": "checksum", "corrupt.coin": "checksum",
                "foreign.coin": "not a .coin", "empty.coin": "the file is empty"}
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        out = tmp_path / (name + ".png")
        assert_clean_error(run("decode", tmp_path / name, "-o", out), messages[name])
        assert not out.exists()
        assert_clean_error(run("info", tmp_path / name), messages[name])
    assert no_leftovers(tmp_path)


def test_existing_output_needs_force(tiny_codec, rgb_png, tmp_path):
    out = tmp_path / "a.coin"
    out.write_bytes(b"precious")
    assert_clean_error(run("encode", rgb_png, "-o", out), "--force")
    assert out.read_bytes() == b"precious"
    assert run("encode", rgb_png, "-o", out, "--force").exit_code == 0
    assert out.read_bytes()[:4] == b"COIN"
    png = tmp_path / "a.png"
    png.write_bytes(b"precious")
    assert_clean_error(run("decode", out, "-o", png), "--force")
    assert png.read_bytes() == b"precious"


def test_unknown_codec(tiny_codec, rgb_png, tmp_path):
    assert_clean_error(run("encode", rgb_png, "-o", tmp_path / "a.coin", "--codec", "nope"), "unknown codec 'nope'")


def test_file_for_a_missing_codec_names_it(tiny_codec, rgb_png, tmp_path, monkeypatch):
    run("encode", rgb_png, "-o", tmp_path / "a.coin", "--no-check")
    monkeypatch.setenv("COIN_CODECS_PATH", str(tmp_path / "nowhere"))
    monkeypatch.setattr(specs, "search_path", lambda: [])
    codecs.clear_cache()
    assert_clean_error(run("decode", tmp_path / "a.coin", "-o", tmp_path / "a.png"), "needs codec 'tiny-b4'")


def test_codec_hash_mismatch(tiny_codec, rgb_png, tmp_path, monkeypatch):
    run("encode", rgb_png, "-o", tmp_path / "a.coin", "--no-check")
    other = tmp_path / "other"
    make_tiny_codec(other, name="tiny-b4", seed=5)  # same name, different network
    monkeypatch.setenv("COIN_CODECS_PATH", str(other))
    codecs.clear_cache()
    assert_clean_error(run("decode", tmp_path / "a.coin", "-o", tmp_path / "a.png"), "differs from the one")
    assert not (tmp_path / "a.png").exists()


def test_tampered_codec_is_refused(tiny_codec, rgb_png, tmp_path):
    weights = tiny_codec.folder / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01
    weights.write_bytes(bytes(data))
    codecs.clear_cache()
    assert_clean_error(run("encode", rgb_png, "-o", tmp_path / "a.coin"), "hash check")


def test_cuda_request_without_gpu_is_clear(tiny_codec, rgb_png, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert_clean_error(run("encode", rgb_png, "-o", tmp_path / "a.coin", "--device", "cuda"), "no CUDA")


def test_python_dash_m_entry_point(tiny_codec):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "coinpp", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "encode" in r.stdout


def test_decode_to_a_foreign_extension_is_refused(tiny_codec, rgb_png, tmp_path):
    run("encode", rgb_png, "-o", tmp_path / "a.coin", "--no-check")
    assert_clean_error(run("decode", tmp_path / "a.coin", "-o", tmp_path / "a.wav"), "image cannot be written as .wav")
    assert_clean_error(run("decode", tmp_path / "a.coin", "-o", tmp_path / "a.coin2"), "cannot be written as .coin2")


def test_a_file_cannot_point_at_a_codec_folder(tiny_codec, tmp_path, monkeypatch):
    from coinpp import container

    # A relative path that really leads to the (valid) codec folder must still be refused.
    monkeypatch.chdir(tiny_codec.folder.parent.parent)
    name = f"{tiny_codec.folder.parent.name}/{tiny_codec.name}"
    f = container.CoinFile(name, tiny_codec.hash, 1, (8, 8), 3, (8, 8), 4, 8, b"")
    (tmp_path / "evil.coin").write_bytes(container.write_bytes(f))
    assert_clean_error(run("decode", tmp_path / "evil.coin", "-o", tmp_path / "x.png"), "needs codec")


def test_failed_write_leaves_no_partial_output(tiny_codec, rgb_png, tmp_path, monkeypatch):
    from coinpp.modalities.image import ImageModality

    run("encode", rgb_png, "-o", tmp_path / "a.coin", "--no-check")

    def disk_full(self, signal, path):
        Path(path).write_bytes(b"half an image")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ImageModality, "write", disk_full)
    assert_clean_error(run("decode", tmp_path / "a.coin", "-o", tmp_path / "a.png"), "No space left")
    assert not (tmp_path / "a.png").exists() and no_leftovers(tmp_path)


def test_outputs_honour_the_umask(tiny_codec, rgb_png, tmp_path):
    old = os.umask(0o022)
    try:
        assert run("encode", rgb_png, "-o", tmp_path / "a.coin", "--no-check").exit_code == 0
        assert run("decode", tmp_path / "a.coin", "-o", tmp_path / "a.png").exit_code == 0
        assert (tmp_path / "a.coin").stat().st_mode & 0o777 == 0o644
        assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        assert run("decode", tmp_path / "a.coin", "-o", tmp_path / "b.png").exit_code == 0
        assert (tmp_path / "b.png").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_errors_name_the_file_in_words(tiny_codec, rgb_png, tmp_path):
    empty = tmp_path / "empty.coin"
    empty.write_bytes(b"")
    assert_clean_error(run("info", empty), f"{empty}: the file is empty")
    cut = tmp_path / "cut.coin"
    run("encode", rgb_png, "-o", tmp_path / "a.coin", "--no-check")
    cut.write_bytes((tmp_path / "a.coin").read_bytes()[:-7])
    for command in (["info", cut], ["decode", cut, "-o", tmp_path / "c.png"]):
        assert_clean_error(run(*command), f"{cut}:")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a picture")
    r = run("encode", bad, "-o", tmp_path / "b.coin")
    assert_clean_error(r, f"{bad}: not an image coin can read")
    assert "Error" not in r.output  # no library exception class
    r = run("encode", rgb_png, "-o", tmp_path / "d.coin", "--codec", "tiny-b5")
    assert_clean_error(r, "did you mean 'tiny-b4'?")
    assert len(r.output) < 200  # one short line, not every codec's name
