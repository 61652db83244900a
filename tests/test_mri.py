"""MRI modality: NIfTI volumes keep their geometry, decode at any voxel size, errors are clear."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import make_tiny_codec, write_nifti

from coinpp import modalities
from coinpp import spec as specs
from coinpp.bitstream import decode_symbols, parse
from coinpp.cli import cli
from coinpp.decoder import decode_bytes
from coinpp.encoder import encode_signal
from coinpp.errors import InputError
from coinpp.synthesis import evaluate_grid

MRI = modalities.get("mri")


def _roundtrip(tmp_path, codec, src, out_name="out.nii.gz", *args):
    r = CliRunner().invoke(cli, ["encode", str(src), "-o", str(tmp_path / "v.coin"), "--force"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["decode", str(tmp_path / "v.coin"), "-o", str(tmp_path / out_name), "--force", *args])
    assert r.exit_code == 0, r.output
    return nib.load(str(tmp_path / out_name)), r.output


def test_affine_header_and_dtype_round_trip(tmp_path, tiny_mri_codec):
    src = tmp_path / "v.nii.gz"
    orig = write_nifti(src)
    out, _ = _roundtrip(tmp_path, tiny_mri_codec, src)
    assert out.shape == orig.shape and out.get_data_dtype() == np.int16
    assert np.allclose(out.affine, orig.affine)
    assert np.allclose(out.header.get_sform(), orig.affine) and int(out.header["sform_code"]) == 4
    assert np.allclose(out.header.get_qform(), orig.affine) and int(out.header["qform_code"]) == 1
    assert out.header.get_zooms() == pytest.approx(orig.header.get_zooms())
    assert out.header.get_xyzt_units() == ("mm", "sec") and out.header["descrip"] == b"coin test volume"
    data = np.asarray(out.dataobj)
    assert data.dtype == np.int16 and data.min() >= 0 and data.max() <= 1000


def test_voxel_size_decode_keeps_the_field_of_view(tmp_path, tiny_mri_codec):
    src = tmp_path / "v.nii"
    orig = write_nifti(src, shape=(16, 12, 8), zooms=(1.0, 1.0, 2.0))
    out, line = _roundtrip(tmp_path, tiny_mri_codec, src, "fine.nii.gz", "--voxel-size", "0.5,0.5,1")
    assert out.shape == (32, 24, 16) and out.header.get_zooms() == pytest.approx((0.5, 0.5, 1.0))
    assert "32x24x16 voxels of 0.5x0.5x1 mm" in line

    def corner(affine, shape, sign):  # world position of the outer face of the first/last voxel
        idx = np.array([-0.5 if sign < 0 else n - 0.5 for n in shape] + [1.0])
        return (affine @ idx)[:3]

    for sign in (-1, 1):
        assert np.allclose(corner(out.affine, out.shape, sign), corner(orig.affine, orig.shape, sign))
        assert np.allclose(corner(out.header.get_qform(), out.shape, sign), corner(orig.affine, orig.shape, sign))
    out2, _ = _roundtrip(tmp_path, tiny_mri_codec, src, "half.nii", "--scale", "0.5")
    assert out2.shape == (8, 6, 4) and out2.header.get_zooms() == pytest.approx((2.0, 2.0, 4.0))


def test_voxel_size_is_exactly_the_one_asked_on_a_grid_centred_on_the_field_of_view(tmp_path, tiny_mri_codec):
    """1 mm asked of 13 x 11 x 9 voxels of 0.9 x 1.1 x 2 mm: not a whole number of voxels, so the grid
    is 12 x 12 x 18 voxels of exactly 1 mm, its centre where the original's is."""
    src = tmp_path / "odd.nii"
    orig = write_nifti(src, zooms=(0.9, 1.1, 2.0))
    out, line = _roundtrip(tmp_path, tiny_mri_codec, src, "iso.nii", "--voxel-size", "1,1,1")
    assert out.shape == (12, 12, 18)
    assert np.allclose(out.header.get_zooms()[:3], (1.0, 1.0, 1.0), atol=1e-6)
    assert "12x12x18 voxels of 1x1x1 mm" in line

    def centre(affine, shape):
        return (affine @ np.array([(n - 1) / 2 for n in shape] + [1.0]))[:3]

    assert np.allclose(centre(out.affine, out.shape), centre(orig.affine, orig.shape))
    step = np.linalg.norm(out.affine[:3, :3], axis=0)  # world distance between neighbouring voxels
    assert np.allclose(step, 1.0)


def test_series_float_and_nifti2(tmp_path, tiny_mri_codec):
    src = tmp_path / "s.nii.gz"
    write_nifti(src, shape=(9, 10, 11, 3))
    s = MRI.read(src)
    assert s.values.shape == (9, 10, 11, 3)
    enc = encode_signal(s, MRI, tiny_mri_codec)
    decoded, p = decode_bytes(enc.data)
    assert p.file.groups == 3 and decoded.values.shape == (9, 10, 11, 3)
    assert MRI.rate(len(enc.data), s.spatial, s.meta)["bpp"] == pytest.approx(len(enc.data) * 8 / (990 * 3))
    f32 = tmp_path / "f.nii"
    write_nifti(f32, dtype=np.float32, version=2)
    out, _ = _roundtrip(tmp_path, tiny_mri_codec, f32, "f-out.nii")
    assert isinstance(out, nib.Nifti2Image) and out.get_data_dtype() == np.float32


def test_robust_range_clips_outliers_and_reports_them(tmp_path):
    vals = np.zeros((20, 20, 20), np.float32)
    vals[5:15, 5:15, 5:15] = 100
    vals[0, 0, 0] = 1e6  # one hot voxel: above the 99.99th percentile
    src = tmp_path / "o.nii"
    write_nifti(src, shape=vals.shape, values=vals)
    s = MRI.read(src)
    assert s.meta["high"] < 1e6 and s.meta["clipped"] == pytest.approx(1 / 8000)
    assert "clipped at the 99.99th percentile" in MRI.describe_quality({"psnr": 30.0}, s.meta)


def test_constant_volume_decodes_to_a_constant(tmp_path, tiny_mri_codec):
    src = tmp_path / "c.nii"
    write_nifti(src, values=np.full((8, 8, 8), 7, np.int16))
    out, _ = _roundtrip(tmp_path, tiny_mri_codec, src, "c-out.nii")
    data = np.asarray(out.dataobj)
    assert data.dtype == np.int16 and data.min() >= 7  # a constant range: everything maps back to 7..8


def test_bad_inputs_give_one_clear_line(tmp_path, tiny_mri_codec):
    flat = tmp_path / "flat.nii"
    nib.save(nib.Nifti1Image(np.zeros((10, 10), np.int16), np.eye(4)), str(flat))
    five = tmp_path / "five.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2, 2), np.int16), np.eye(4)), str(five))
    nan = tmp_path / "nan.nii"
    v = np.ones((6, 6, 6), np.float32)
    v[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(v, np.eye(4)), str(nan))
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"\x1f\x8b not really gzip")
    for path, msg in ((flat, "2-D data"), (five, "5-D data"), (nan, "NaN"), (junk, "not a readable NIfTI")):
        with pytest.raises(InputError, match=msg):
            MRI.read(path)
        r = CliRunner().invoke(cli, ["encode", str(path), "-o", str(tmp_path / "x.coin")])
        assert r.exit_code == 1 and msg in r.output and "Traceback" not in r.output
    src = tmp_path / "v.nii.gz"
    write_nifti(src)
    CliRunner().invoke(cli, ["encode", str(src), "-o", str(tmp_path / "v.coin")])
    r = CliRunner().invoke(cli, ["decode", str(tmp_path / "v.coin"), "-o", str(tmp_path / "o.nii"),
                                 "--voxel-size", "1,0,1"])
    assert r.exit_code == 1 and "three positive sizes" in r.output
    r = CliRunner().invoke(cli, ["decode", str(tmp_path / "v.coin"), "-o", str(tmp_path / "o.png")])
    assert r.exit_code == 1 and ".nii.gz, .nii" in r.output


def test_identical_patches_are_fitted_once(tmp_path, tiny_mri_codec, monkeypatch):
    from coinpp import encoder
    from coinpp.encoder import Encoder

    vals = np.zeros((32, 32, 16), np.int16)  # 32 patches of 8^3, 31 of them empty background
    vals[2:6, 3:7, 1:5] = 500
    src = tmp_path / "bg.nii"
    write_nifti(src, values=vals)
    s = MRI.read(src)
    seen = []
    real = encoder.fit_latents
    monkeypatch.setattr(encoder, "fit_latents",
                        lambda net, c, t, *a, **k: seen.append(len(t)) or real(net, c, t, *a, **k))
    z = Encoder(tiny_mri_codec, MRI).fit([s])[0]
    assert seen == [2] and len(z) == 32
    assert (z[1:] == z[-1]).all() and not (z[0] == z[-1]).all()


def test_info_shows_voxel_size_and_codes(tmp_path, tiny_mri_codec):

    src = tmp_path / "v.nii.gz"
    write_nifti(src)
    CliRunner().invoke(cli, ["encode", str(src), "-o", str(tmp_path / "v.coin")])
    rec = json.loads(CliRunner().invoke(cli, ["info", str(tmp_path / "v.coin"), "--json"]).output)
    assert rec["voxel_size_mm"] == [1.0, 1.0, 2.0] and rec["sform_code"] == 4 and rec["dtype"] == "int16"


def test_a_supersampled_codec_decodes_each_voxel_as_the_network_averaged_over_it(tmp_path, tiny_mri_codec):
    c = make_tiny_codec(Path(os.environ["COIN_CODECS_PATH"]), "tiny-mri-mean-b5", bits=5, modality="mri",
                        supersample=2)
    assert c.spec.supersample == 2 and c.spec.hash != tiny_mri_codec.spec.hash  # the field is in the hash
    write_nifti(tmp_path / "v.nii.gz")
    s = MRI.read(tmp_path / "v.nii.gz")
    data = encode_signal(s, MRI, c).data
    p = parse(data)
    z = torch.from_numpy(c.quantizer.dequantize(decode_symbols(p)))
    fine = evaluate_grid(c.net, z, p.file.shape, p.file.patch, tuple(2 * n for n in p.file.shape), "cpu")
    expected = np.clip(fine.reshape(13, 2, 11, 2, 9, 2, 1).mean(axis=(1, 3, 5)), 0, 1)
    decoded, _ = decode_bytes(data)
    assert np.allclose(decoded.values, expected, atol=1e-5)
    # a residual layer is made against this decode, so the bound holds
    bounded, _ = decode_bytes(encode_signal(s, MRI, c, max_error=2.0).data)
    assert np.abs(MRI.units(bounded) - MRI.units(s)).max() <= 2.0
    # values a decoder cannot honour are refused when the codec loads
    config = json.loads((c.folder / "config.json").read_text())
    for bad in (0, 5, 2.0, "2"):
        cfg = dict(config, supersample=bad)
        cfg["hash"] = specs.codec_hash(c.folder, cfg).hex()
        with pytest.raises(ValueError, match="supersample"):
            specs.parse_config(c.folder, cfg)


def test_a_finer_voxel_grid_is_the_own_grid_decode_interpolated(tmp_path, tiny_mri_codec):
    """Onto a grid at least as fine on every axis the decoder interpolates its own-grid decode
    trilinearly (the MRI networks interpolate worse); --no-postfilter gives the network's own
    finer output, and a coarser grid is the network's too."""
    from coinpp.modalities import Resolution
    from coinpp.resample import linear

    write_nifti(tmp_path / "v.nii.gz", shape=(16, 12, 8))
    data = encode_signal(MRI.read(tmp_path / "v.nii.gz"), MRI, tiny_mri_codec).data
    own, p = decode_bytes(data)
    for r in (Resolution(scale=2.0), Resolution(voxel_size=(0.7, 0.7, 1.5))):
        fine, _ = decode_bytes(data, r)
        target = MRI.target(p.meta, p.file.shape, r)
        assert np.allclose(fine.values, np.clip(linear(own.values, target.shape, target.placement), 0, 1), atol=1e-6)
        network, _ = decode_bytes(data, r, postfilter=False)
        assert network.values.shape == fine.values.shape and not np.allclose(network.values, fine.values, atol=1e-3)
    coarse, _ = decode_bytes(data, Resolution(scale=0.5))
    assert np.array_equal(coarse.values, decode_bytes(data, Resolution(scale=0.5), postfilter=False)[0].values)


def test_volume_post_filter_is_fitted_installed_and_applied_outside_the_hash(tmp_path, tiny_mri_codec):
    from coinpp import codec as codecs
    from coinpp.modalities import Resolution
    from coinpp.postfilter import apply_volume
    from coinpp.resample import linear

    folder = tmp_path / "volumes"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in (18, 16, 12)], indexing="ij")
        blob = np.exp(-((grid[0] - 0.2 * i) ** 2 + 2 * grid[1] ** 2 + grid[2] ** 2) * (2 + i))
        write_nifti(folder / f"v{i}.nii.gz", values=(blob * 900 + rng.normal(0, 20, blob.shape)).astype(np.int16))
    old = encode_signal(MRI.read(folder / "v0.nii.gz"), MRI, tiny_mri_codec).data
    plain, p = decode_bytes(old)
    r = CliRunner().invoke(cli, ["postfilter", tiny_mri_codec.name, "--data", str(folder), "--side", "3",
                                 "--val-files", "1"])
    assert r.exit_code == 0, r.output
    assert "installed" in r.output
    codecs.clear_cache()
    c = codecs.load(tiny_mri_codec.name)
    assert c.hash == tiny_mri_codec.hash and c.spec.postfilter.kind == "volume" and c.postfilter.taps.shape == (3, 3, 3)
    entry = json.loads((c.folder / "config.json").read_text())["postfilter"]
    assert entry["training"]["val_psnr_gain_db"] > 0 and entry["training"]["volumes"] == 3
    assert "3x3x3 neighbourhood" in (c.folder / "MODEL_CARD.md").read_text()
    filtered, _ = decode_bytes(old)  # a file written before decodes, now filtered
    normative, _ = decode_bytes(old, postfilter=False)
    assert np.array_equal(normative.values, plain.values)
    assert not np.allclose(filtered.values, plain.values, atol=1e-4)
    assert np.allclose(filtered.values, np.clip(apply_volume(c.postfilter, plain.values), 0, 1), atol=1e-6)
    fine, _ = decode_bytes(old, Resolution(scale=2.0))  # filtered, then interpolated
    shape = tuple(2 * n for n in p.file.shape)
    assert np.allclose(fine.values, np.clip(linear(filtered.values, shape), 0, 1), atol=1e-6)
    (tmp_path / "v.coin").write_bytes(old)
    info = CliRunner().invoke(cli, ["info", str(tmp_path / "v.coin")])
    assert info.exit_code == 0 and "3x3x3 linear filter" in info.output
    again = CliRunner().invoke(cli, ["postfilter", tiny_mri_codec.name, "--data", str(folder), "--val-files", "1"])
    assert again.exit_code != 0 and "--force" in again.output
    bad = CliRunner().invoke(cli, ["postfilter", tiny_mri_codec.name, "--data", str(folder), "--side", "4", "--force"])
    assert bad.exit_code != 0 and "--side must be odd" in bad.output


def test_a_volume_filter_fitted_to_filtered_volumes_recovers_the_filter():
    from coinpp.postfilter import VolumeFilter, apply_volume, fit_volume
    from coinpp.spec import PostFilterSpec

    rng = np.random.default_rng(1)
    kernel = rng.normal(0, 0.1, (3, 3, 3))
    kernel[1, 1, 1] = 0.6
    f = VolumeFilter(PostFilterSpec(kind="volume", taps=3), kernel, 0.05)
    pairs = []
    for shape in ((20, 11, 9), (7, 13, 10)):  # slabs of VOLUME_SLAB rows and a remainder
        x = rng.random((*shape, 1))
        pairs.append((x[..., 0], apply_volume(f, x)[..., 0]))
    taps, offset = fit_volume(pairs, 3, ridge=0.0)
    assert np.allclose(taps, kernel, atol=1e-5) and offset == pytest.approx(0.05, abs=1e-5)


def test_volume_post_filter_entries_are_checked(tiny_codec):
    from coinpp.spec import PostFilterSpec

    assert PostFilterSpec.from_dict({"kind": "volume", "taps": 3}).to_dict() == {"kind": "volume", "taps": 3}
    for bad in ({"kind": "volume", "taps": 4}, {"kind": "volume"}, {"kind": "volume", "taps": 11}):
        with pytest.raises(ValueError):
            PostFilterSpec.from_dict(bad)
    config = json.loads((tiny_codec.folder / "config.json").read_text())
    config["postfilter"] = {"kind": "volume", "taps": 3, "sha256": ""}
    with pytest.raises(ValueError, match="volume post-filter is for MRI"):
        specs.parse_config(tiny_codec.folder, config)


def test_linear_resampling_is_scipys_trilinear_on_the_same_centres():
    import scipy.ndimage as ndi

    from coinpp.resample import linear

    v = np.random.default_rng(2).random((9, 10, 7, 1)).astype(np.float32)
    for shape in ((18, 20, 14), (13, 17, 5)):
        zoomed = ndi.zoom(v[..., 0], [t / n for t, n in zip(shape, v.shape, strict=False)], order=1, mode="nearest",
                          grid_mode=True)
        assert np.allclose(linear(v, shape)[..., 0], zoomed, atol=1e-6)
    placement = ((0.2, 0.6), (1.0, 0.75), (-0.3, 0.5))  # first centre and step, in input voxels
    shape = (15, 12, 16)
    coords = np.meshgrid(*[a + np.arange(n) * s - 0.5 for (a, s), n in zip(placement, shape, strict=True)],
                         indexing="ij")
    expected = ndi.map_coordinates(v[..., 0].astype(np.float64), coords, order=1, mode="nearest")
    assert np.allclose(linear(v, shape, placement)[..., 0], expected, atol=1e-6)
