"""Benchmarks: real sizes, CompressAI-style JSON, skipped missing baselines, resume, BD-rate, plot."""

import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import smooth_image
from PIL import Image

from coinpp.cli import cli
from coinpp.evaluation import baselines
from coinpp.evaluation.bench import summarize
from coinpp.evaluation.plots import load_published
from coinpp.evaluation.rd import bd_rate, curves, interpolate_psnr


@pytest.fixture()
def suite(tmp_path, monkeypatch):
    d = tmp_path / "suite"
    d.mkdir()
    for i in range(2):
        Image.fromarray(smooth_image(24, 16 + 8 * i, seed=i)).save(d / f"im{i}.png")
    # Two settings per baseline keep the test fast.
    small = {n: dataclasses.replace(b, settings=b.settings[:1] + b.settings[-1:]) for n, b in baselines.BY_NAME.items()}
    monkeypatch.setattr(baselines, "BY_NAME", small)
    return d


def bench(suite, out, codecs="default,jpeg,jpeg2000,webp"):
    return CliRunner().invoke(cli, ["bench", str(suite), "--codecs", codecs, "--out", str(out), "--device", "cpu"])


def test_results_schema_real_sizes_plot_and_resume(tiny_codec, suite, tmp_path):
    out = tmp_path / "res"
    r = bench(suite, out)
    assert r.exit_code == 0, r.output
    assert "im0.png: 7 rows (1/2 files" in r.output  # progress for a log: no terminal, no bar
    for name in ("tiny-b4", "jpeg", "jpeg2000", "webp"):
        doc = json.loads((out / f"{name}.json").read_text())
        assert set(doc) == {"name", "unit", "description", "results"} and doc["name"] == name
        assert doc["unit"] == "bpp"
        res = doc["results"]
        assert len(res["bpp"]) == len(res["psnr-rgb"]) == len(res["setting"]) >= 1
        assert all(isinstance(v, float) for v in res["bpp"] + res["psnr-rgb"])
    rows = (out / "rows.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * (1 + 2 + 2 + 2)  # header + 2 files x (coin + 3 baselines x 2 settings)
    # Sizes are real: encode by hand and compare with the rows.
    CliRunner().invoke(cli, ["encode", str(suite / "im0.png"), "-o", str(tmp_path / "x.coin"), "--no-check"])
    coin_row = next(line for line in rows if line.startswith("tiny-b4,b4,im0.png"))
    assert int(coin_row.split(",")[3]) == (tmp_path / "x.coin").stat().st_size
    arr = np.asarray(Image.open(suite / "im0.png"))
    jpeg = baselines.BY_NAME["jpeg"]
    jpeg_row = next(line for line in rows if line.startswith("jpeg,q1,im0.png"))
    assert int(jpeg_row.split(",")[3]) == len(jpeg.encode(arr, 1))
    assert (out / "rd.png").stat().st_size > 1000
    bd = json.loads((out / "bd-rate.json").read_text())
    assert bd["anchor"] == "jpeg" and "webp" in bd["vs_anchor"]
    # A second run measures nothing again.
    r2 = bench(suite, out)
    assert r2.exit_code == 0 and "(0 new)" in r2.output and "rows (1/2 files" not in r2.output
    assert len((out / "rows.csv").read_text().splitlines()) == len(rows)
    # A run over fewer codecs than --out holds counts only what it measured.
    lines = (out / "rows.csv").read_text().splitlines()
    (out / "rows.csv").write_text("\n".join(line for line in lines if not line.startswith("jpeg,")) + "\n")
    r3 = bench(suite, out, "jpeg")
    assert r3.exit_code == 0 and "(4 new)" in " ".join(r3.output.split()), r3.output[-300:]


def test_missing_baseline_is_skipped_with_a_warning(tiny_codec, suite, tmp_path, monkeypatch):
    missing = dataclasses.replace(baselines.BY_NAME["webp"], check=lambda: "libwebp is not installed")
    monkeypatch.setitem(baselines.BY_NAME, "webp", missing)
    r = bench(suite, tmp_path / "res", "jpeg,webp")
    assert r.exit_code == 0, r.output
    assert "skipping baseline webp: libwebp is not installed" in r.output
    assert not (tmp_path / "res" / "webp.json").exists() and (tmp_path / "res" / "jpeg.json").exists()


def test_unknown_codec_fails_before_any_work(tiny_codec, suite, tmp_path):
    r = bench(suite, tmp_path / "res", "nope,jpeg")
    assert r.exit_code == 1 and "unknown codec 'nope'" in r.output
    assert not (tmp_path / "res").exists()


def test_bd_rate_of_a_uniformly_cheaper_curve():
    anchor = [(0.1, 25.0), (0.2, 28.0), (0.4, 31.0), (0.8, 34.0)]
    assert bd_rate(anchor, [(r * 0.9, q) for r, q in anchor]) == pytest.approx(-10.0, abs=1e-9)
    assert bd_rate(anchor, anchor) == pytest.approx(0.0, abs=1e-12)
    assert bd_rate(anchor, [(r * 2, q) for r, q in anchor]) == pytest.approx(100.0, abs=1e-9)
    assert bd_rate(anchor, [(1.0, 40.0), (2.0, 45.0)]) is None  # no PSNR overlap


def test_bd_rate_is_the_bjontegaard_packages_pchip():
    # log-rate linear in PSNR (rate doubles every 3 dB): 1 dB more at every rate is 2^(-1/3) of the rate,
    # whatever the interpolation
    anchor = [(0.1, 30.0), (0.2, 33.0), (0.4, 36.0), (0.8, 39.0)]
    better = [(r, q + 1.0) for r, q in anchor]
    assert bd_rate(anchor, better) == pytest.approx((2 ** (-1 / 3) - 1) * 100, abs=1e-9)
    # a pinned case with curved points: pchip's value, not the piecewise-linear one (-5.1005 %)
    a = [(0.1, 25.0), (0.2, 28.5), (0.4, 31.2), (0.8, 33.1)]
    t = [(0.12, 25.8), (0.22, 29.0), (0.45, 32.0), (0.9, 33.9)]
    assert bd_rate(a, t) == pytest.approx(-5.00690, abs=1e-4)


def test_summary_curves_and_interpolation():
    rows = [{"codec": c, "setting": s, "file": f, "bytes": 10, "bpp": b, "psnr": p, "encode_s": 1, "decode_s": 1}
            for c, s, f, b, p in [("a", "s", "x", 0.1, 20), ("a", "s", "y", 0.3, 30),
                                  ("image-n-b3", "b3", "x", 0.1, 21), ("image-n-b4", "b4", "x", 0.2, 24)]]
    s = summarize(rows)
    assert s["a"][0]["bpp"] == pytest.approx(0.2) and s["a"][0]["psnr"] == 25
    assert curves(s)["image-n"] == [(0.1, 21), (0.2, 24)]
    pts = [{"bpp": 0.1, "psnr": 20}, {"bpp": 0.3, "psnr": 30}]
    assert interpolate_psnr(pts, 0.2) == 25 and interpolate_psnr(pts, 0.5) is None


def test_published_curves_parse_leniently(tmp_path):
    (tmp_path / "coinpp" / "kodak").mkdir(parents=True)
    (tmp_path / "coinpp" / "kodak" / "coinpp.json").write_text(
        '{"name": "COIN++", "results": {"psnr": [23.6, 24.9,], "bpp": [0.066, 0.132,],}}')
    assert load_published(tmp_path) == {"COIN++ (published)": [(0.066, 23.6), (0.132, 24.9)]}


def test_speech_suite_measures_kbps_psnr_snr_with_delay_trimmed(tiny_audio_codec, tmp_path, monkeypatch):
    import soundfile as sf

    d = tmp_path / "speech"
    d.mkdir()
    t = np.arange(16000) / 16000
    for i in range(2):
        sf.write(str(d / f"c{i}.flac"), 0.3 * np.sin(2 * np.pi * (220 + 110 * i) * t * (1 + t))[:, None], 16000)
    small = {n: dataclasses.replace(b, settings=b.settings[-2:]) for n, b in baselines.BY_NAME.items()}
    monkeypatch.setattr(baselines, "BY_NAME", small)
    out = tmp_path / "res"
    r = CliRunner().invoke(cli, ["bench", str(d), "--codecs", "default,mp3,opus", "--out", str(out),
                                 "--device", "cpu"])
    assert r.exit_code == 0, r.output
    for name in ("tiny-audio-b5", "mp3", "opus"):
        doc = json.loads((out / f"{name}.json").read_text())
        assert doc["unit"] == "kbps" and {"bpp", "psnr", "snr"} <= set(doc["results"])
    mp3 = json.loads((out / "mp3.json").read_text())["results"]
    # 32-40 kbps MP3 of a clean chirp: only a decoder output aligned to the input scores this high
    assert max(mp3["psnr"]) > 40 and max(mp3["bpp"]) > 20
    coin = json.loads((out / "tiny-audio-b5.json").read_text())["results"]
    size = (out / "rows.csv").read_text()
    assert "tiny-audio-b5,b5,c0.flac" in size and coin["bpp"][0] > 0
    assert json.loads((out / "bd-rate.json").read_text())["anchor"] == "mp3"
    r = CliRunner().invoke(cli, ["bench", str(d), "--codecs", "jpeg", "--out", str(out)])
    assert r.exit_code == 1 and "not for audio" in r.output


def test_climate_suite_measures_bits_per_value_rmse_and_ratio(tiny_climate_codec, tmp_path):
    from conftest import write_netcdf

    d = tmp_path / "fields"
    d.mkdir()
    write_netcdf(d / "uk.nc", np.arange(58.0, 49.9, -0.5), np.arange(-10.0, 2.01, 0.5), times=6)
    out = tmp_path / "res"
    r = CliRunner().invoke(cli, ["bench", str(d), "--codecs", "default,zfp,sz3,jpeg2000-map", "--out", str(out),
                                 "--device", "cpu"])
    assert r.exit_code == 0, r.output
    for name in ("tiny-climate-b6", "zfp", "sz3", "jpeg2000-map"):
        doc = json.loads((out / f"{name}.json").read_text())
        assert doc["unit"] == "bits/value" and {"bpp", "psnr", "rmse", "max_error"} <= set(doc["results"])
    sz3 = json.loads((out / "sz3.json").read_text())["results"]
    bounds = [float(s[3:]) for s in sz3["setting"]]
    assert all(m <= b * 1.001 for m, b in zip(sz3["max_error"], bounds, strict=True))  # SZ3 keeps its bound
    zfp = json.loads((out / "zfp.json").read_text())["results"]
    tol = {s: m for s, m in zip(zfp["setting"], zfp["max_error"], strict=True)}
    assert tol["tol0.5"] <= 0.5 and tol["tol64"] > tol["tol0.5"]  # fixed-accuracy mode holds its tolerance
    at = json.loads((out / "at-rmse-0.5.json").read_text())
    assert at["raw_bits_per_value"] == 32 and set(at["curves"]) >= {"zfp", "sz3", "tiny-climate"}
    assert json.loads((out / "bd-rate.json").read_text())["anchor"] == "sz3"


def test_mri_suite_codes_slices_with_the_image_codecs(tiny_mri_codec, tmp_path):
    from conftest import write_nifti

    d = tmp_path / "vols"
    d.mkdir()
    write_nifti(d / "v.nii.gz", shape=(64, 56, 4))
    out = tmp_path / "res"
    r = CliRunner().invoke(cli, ["bench", str(d), "--codecs", "default,jpeg-slices,jpeg2000-slices", "--out",
                                 str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    j2k = json.loads((out / "jpeg2000-slices.json").read_text())
    assert j2k["unit"] == "bpp" and len(j2k["results"]["bpp"]) == 9
    assert max(j2k["results"]["psnr"]) > 35  # a smooth blob at 1 bpp (slices large enough for the header)
    rows = (out / "rows.csv").read_text()
    assert "tiny-mri-b5,b5,v.nii.gz" in rows and "jpeg-slices,q95,v.nii.gz" in rows
    assert json.loads((out / "bd-rate.json").read_text())["anchor"] == "jpeg2000-slices"
