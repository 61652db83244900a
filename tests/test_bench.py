"""Benchmark rows: sizes from real encoded bytes, JPEG baseline, CompressAI-style JSON."""

import json

from click.testing import CliRunner
from conftest import smooth_image
from PIL import Image

from coinpp.bench import interpolate_psnr, summarize
from coinpp.cli import cli


def test_bench_on_a_tiny_suite(tiny_codec, tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    for i in range(2):
        Image.fromarray(smooth_image(24, 16 + 8 * i, seed=i)).save(suite / f"im{i}.png")
    out = tmp_path / "res"
    r = CliRunner().invoke(cli, ["bench", str(suite), "--codecs", "default,jpeg", "--jpeg-qualities", "5,50",
                                 "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "tiny-b4.json").read_text())
    assert doc["name"] == "tiny-b4" and len(doc["results"]["bpp"]) == len(doc["results"]["psnr-rgb"]) == 1
    jpeg = json.loads((out / "jpeg.json").read_text())
    assert len(jpeg["results"]["bpp"]) == 2 and jpeg["results"]["psnr-rgb"][1] > jpeg["results"]["psnr-rgb"][0]
    rows = (out / "rows.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * (1 + 2)
    # The coin rate is the real file size: encode one file by hand and compare.
    CliRunner().invoke(cli, ["encode", str(suite / "im0.png"), "-o", str(tmp_path / "x.coin"), "--no-check"])
    size = (tmp_path / "x.coin").stat().st_size
    row = next(line for line in rows if line.startswith("tiny-b4,b4,im0.png"))
    assert int(row.split(",")[3]) == size


def test_summary_and_interpolation():
    rows = [{"codec": "a", "setting": "s", "file": f, "bytes": 10, "bpp": b, "psnr": p, "encode_s": 1,
             "decode_s": 1} for f, b, p in [("x", 0.1, 20), ("y", 0.3, 30)]]
    s = summarize(rows)
    assert s["a"][0]["bpp"] == 0.2 and s["a"][0]["psnr"] == 25
    pts = [{"bpp": 0.1, "psnr": 20}, {"bpp": 0.3, "psnr": 30}]
    assert interpolate_psnr(pts, 0.2) == 25 and interpolate_psnr(pts, 0.5) is None
