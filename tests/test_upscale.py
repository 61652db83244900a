"""`coin bench --upscale`: coded reduced, decoded finer, compared with the real full-resolution signal."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from conftest import smooth_image, write_netcdf, write_nifti
from PIL import Image

from coinpp import modalities
from coinpp.cli import cli
from coinpp.evaluation import upscale
from coinpp.evaluation.bench import SUITES
from coinpp.modalities import Signal

pytest.importorskip("scipy")
pytest.importorskip("soxr")


def _suite(name, folder, **kw):
    return dataclasses.replace(SUITES[name], folder=str(folder), files=(), **kw)


def test_image_cases_halve_and_compare_with_the_original(tiny_codec, tmp_path):
    Image.fromarray(smooth_image(40, 56)).save(tmp_path / "a.png")
    rows, outputs = upscale.measure_file(_suite("kodak", tmp_path), tmp_path / "a.png", [2.0, 1.5], device="cpu")
    methods = ("coin", "bicubic", "lanczos")
    assert {(r["scale"], r["method"]) for r in rows} == {(s, m) for s in (2.0, 1.5) for m in methods}
    # at 2x the truth is the original itself; at 1.5x the original resized to 1.5x the halved image
    assert np.array_equal(outputs[2.0]["truth"], np.asarray(Image.open(tmp_path / "a.png")))
    assert outputs[1.5]["truth"].shape == (30, 42, 3)
    for outs in outputs.values():
        assert all(o.shape == outs["truth"].shape for o in outs.values())
    assert all(np.isfinite(r["psnr"]) and r["rmse"] > 0 and r["bytes"] > 0 for r in rows)
    strip = upscale.crop_strip(outputs[2.0], size=16)
    assert strip.shape == (16, 4 * 16 + 3 * 4, 3) and strip.dtype == np.uint8


def test_speech_is_coded_at_half_the_rate_and_decoded_at_the_full(tiny_audio_codec, tmp_path):
    t = np.arange(1600) / 16000
    sf.write(tmp_path / "a.wav", 0.3 * np.sin(2 * np.pi * 440 * t), 16000, subtype="PCM_16")
    rows, outputs = upscale.measure_file(_suite("speech", tmp_path), tmp_path / "a.wav", [2.0], device="cpu")
    assert [r["method"] for r in rows] == ["coin", "soxr-vhq"]
    assert rows[0]["bytes"] > 0 and abs(len(outputs[2.0]["coin"]) - 1600) <= 1
    # soxr back up from the 8 kHz signal itself (a perfect decode) of a tone well inside the band: the truth
    m = modalities.get("audio")
    case = upscale.audio_cases(m, m.read(tmp_path / "a.wav"), [2.0], tmp_path)[0]
    assert case.low.meta["sample_rate"] == 8000 and case.low.spatial == (800,)
    assert upscale.measure(case, case.resamplers["soxr-vhq"](case.low))["psnr"] > 60
    with pytest.raises(Exception, match="divides"):
        upscale.measure_file(_suite("speech", tmp_path), tmp_path / "a.wav", [3.0], device="cpu")


def test_mri_voxels_twice_as_large_are_block_means_on_the_same_field_of_view(tiny_mri_codec, tmp_path):
    write_nifti(tmp_path / "a.nii.gz", shape=(16, 12, 10), zooms=(1.0, 1.0, 2.0))
    m = modalities.get("mri")
    signal = m.read(tmp_path / "a.nii.gz")
    case = upscale.mri_cases(m, signal, [2.0], tmp_path)[0]
    truth = signal.exact[..., 0]
    assert case.low.spatial == (8, 6, 5)
    assert np.allclose(m.units(case.low)[0, 0, 0, 0], truth[:2, :2, :2].mean(), atol=1e-3)
    assert m.voxel_size(case.low.meta) == pytest.approx((2.0, 2.0, 4.0))
    # the coarse voxel's centre is the centroid of the eight it replaces
    import nibabel as nib

    fine, coarse = nib.load(tmp_path / "a.nii.gz").affine, m.header(case.low.meta).get_best_affine()
    assert np.allclose(coarse @ [0, 0, 0, 1], fine @ [0.5, 0.5, 0.5, 1], atol=1e-4)
    # a resampler of a perfect coarse decode lands on the truth's grid
    assert case.resamplers["trilinear"](case.low).shape == truth.shape
    rows, _ = upscale.measure_file(_suite("mri", tmp_path), tmp_path / "a.nii.gz", [2.0], device="cpu")
    assert [r["method"] for r in rows] == ["coin", "trilinear", "cubic-spline"]
    with pytest.raises(Exception, match="whole factors"):
        upscale.mri_cases(m, signal, [1.5], tmp_path)


def test_climate_every_second_point_decoded_onto_the_full_grid(tiny_climate_codec, tmp_path):
    lat, lon = np.arange(58.0, 49.9, -0.5), np.arange(-10.0, 2.01, 0.5)
    write_netcdf(tmp_path / "a.nc", lat, lon, times=5, missing=True)
    m = modalities.get("climate")
    signal = m.read(tmp_path / "a.nc")
    case = upscale.climate_cases(m, signal, [2.0], tmp_path)[0]
    la, lo = m.lat_lon(case.low.meta)
    assert np.array_equal(la, lat[::2]) and np.array_equal(lo, lon[::2])
    assert case.valid.sum() == case.valid.size - int(signal.meta["mask"].sum())
    # the interpolators are exact on the coarse points themselves
    out = case.resamplers["bilinear"](case.low)
    assert out.shape == case.truth.shape
    assert np.allclose(out[:, ::2, ::2], case.truth[:, ::2, ::2], atol=1e-4)
    suite = _suite("climate", tmp_path, holdout=0.4)
    rows, _ = upscale.measure_file(suite, tmp_path / "a.nc", [2.0], device="cpu")
    assert [r["method"] for r in rows] == ["coin", "bilinear", "bicubic"] and rows[0]["rmse"] > 0


def test_measure_and_the_table():
    case = upscale.Case(Signal(np.zeros((2, 1), np.float32)), modalities.Resolution(), np.array([[0.0], [1.0]]),
                        {}, 1.0)
    assert upscale.measure(case, np.array([[0.0], [1.0]]))["psnr"] == float("inf")
    assert upscale.measure(case, np.array([[0.1], [1.0]]))["max_error"] == pytest.approx(0.1)
    rows = [{"scale": 2.0, "method": "coin", "psnr": 30.0, "rmse": 1.0, "max_error": 2.0},
            {"scale": 2.0, "method": "lanczos", "psnr": 29.5, "rmse": 1.1, "max_error": 2.0}]
    assert "| 2× | lanczos | 1 | 29.50 | 1.1 | 2 | +0.50 |" in upscale.summary_table(rows)


def test_cli_writes_rows_table_and_crops(tiny_codec, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(smooth_image(24, 32)).save(data / "a.png")
    r = CliRunner().invoke(cli, ["bench", str(data), "--upscale", "2", "--out", str(tmp_path / "out"),
                                 "--device", "cpu"])
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "out" / "upscale.json").read_text())
    assert len(rows) == 3 and (tmp_path / "out" / "crops-2x.png").exists()
    assert "lanczos" in (tmp_path / "out" / "upscale.md").read_text()
    r = CliRunner().invoke(cli, ["bench", str(data), "--upscale", "0", "--out", str(tmp_path / "out")])
    assert r.exit_code != 0 and "--upscale" in r.output
    r = CliRunner().invoke(cli, ["bench", str(data), "--upscale", "2", "--codecs", "a,b", "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "one coin codec" in r.output
