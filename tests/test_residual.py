"""The residual layer: every value within the bound on the file's own grid, lossless for integer data."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from conftest import write_netcdf, write_nifti

from coinpp import container, modalities
from coinpp.bitstream import parse, residual_layer
from coinpp.decoder import Decoder, decode_bytes
from coinpp.encoder import encode_signal
from coinpp.errors import FormatError, InputError
from coinpp.modalities import Target
from coinpp.residual import MAX_MAGNITUDE, ResidualLayer, apply_layer, decode_field, encode_field, make_layer

CLIMATE, MRI = modalities.get("climate"), modalities.get("mri")
UK_LAT, UK_LON = np.arange(58.0, 49.9, -1.0), np.arange(-10.0, 2.01, 1.5)


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 5, 7), (3, 1, 9), (1, 9, 1), (4, 17, 23)])
def test_integer_fields_round_trip(shape):
    rng = np.random.default_rng(sum(shape))
    q = rng.integers(-4, 5, size=shape) * rng.integers(0, 2, size=shape)
    q.flat[0], q.flat[-1] = MAX_MAGNITUDE, -MAX_MAGNITUDE  # the extremes the format allows
    assert np.array_equal(decode_field(encode_field(q), shape), q)


def test_smooth_fields_cost_little_and_noise_costs_its_entropy():
    y, x = np.mgrid[0:64, 0:96]
    smooth = np.round(20 * np.sin(x / 9) + 10 * np.cos(y / 7)).astype(np.int64)[None]
    noise = np.random.default_rng(0).integers(-8, 8, size=(1, 64, 96))
    assert 8 * len(encode_field(smooth)) / smooth.size < 2.0
    assert 3.5 < 8 * len(encode_field(noise)) / noise.size < 5.0  # 16 equiprobable values: 4 bits


def test_corrupt_fields_raise_format_errors_only():
    q = np.random.default_rng(1).integers(-50, 50, size=(2, 9, 11))
    data = encode_field(q)
    for cut in (0, 3, 4, len(data) // 2, len(data) - 1):
        try:
            decode_field(data[:cut], q.shape)
        except FormatError:
            pass
    rng = np.random.default_rng(2)
    for _ in range(50):
        b = bytearray(data)
        b[rng.integers(len(b))] ^= 1 << int(rng.integers(8))
        try:
            decode_field(bytes(b), q.shape)
        except FormatError:
            pass


@pytest.mark.parametrize("bound", [5e-3, 0.05, 0.7])
def test_real_values_stay_within_the_bound_after_float32_storage_and_a_perturbed_decode(bound):
    rng = np.random.default_rng(3)
    x = (280 + 10 * rng.standard_normal((4, 12, 15, 1))).astype(np.float32).astype(np.float64)
    x[0, 0, 0, 0], x[-1, -1, -1, 0] = np.float32(3.4e2), np.float32(2.1e2)  # edge values of the range
    p = x + rng.normal(0, 0.5, x.shape)
    mask = np.zeros(x.shape, bool)
    mask[1, 2:4] = True
    span = 130.0
    layer = ResidualLayer.from_bytes(make_layer(x, p, bound, out_dtype=np.dtype("f4"), mask=mask, span=span).to_bytes())
    # another machine's network evaluation: off by float rounding, 16 float32 steps of its [0, 1] outputs
    other = p + span * rng.uniform(-(2.0**-20), 2.0**-20, p.shape)
    for pred in (p, other):
        out = apply_layer(layer, pred, mask).astype(np.float32).astype(np.float64)
        assert np.abs(out - x)[~mask].max() <= bound
    assert layer.describe() == f"maximum error {bound:g}"


@pytest.mark.parametrize("bound", [0, 1, 3])
def test_integer_values_are_exact_at_zero_and_within_the_bound_above(bound):
    rng = np.random.default_rng(4)
    x = rng.integers(0, 4096, size=(6, 10, 7, 2)).astype(np.float64)
    x[0, 0, 0, 0], x[-1, -1, -1, -1] = 0, 32767
    p = x + rng.normal(0, 20, x.shape)
    layer = make_layer(x, p, bound, quantum=1.0, span=32767.0)
    out = apply_layer(layer, p + 32767.0 * 2.0**-20)
    assert np.all(out == np.rint(out)) and np.abs(out - x).max() <= bound
    if bound == 0:
        assert np.array_equal(out, x) and layer.describe() == "lossless"


def test_a_damaged_integer_layer_is_caught_by_its_checksum():
    x = np.arange(2 * 5 * 6, dtype=np.float64).reshape(2, 5, 6, 1)
    layer = make_layer(x, x + 0.3, 0, quantum=1.0)
    with pytest.raises(FormatError, match="checksum"):
        apply_layer(layer, x + 3.0)  # a decode far off: the integers come out wrong


def test_bounds_the_data_cannot_hold_are_refused():
    x = np.full((1, 3, 3, 1), 300.0)
    with pytest.raises(InputError, match="smallest bound here is 6.51e-05"):
        make_layer(x, x, 1e-6, out_dtype=np.dtype("f4"))
    with pytest.raises(InputError, match="lossless"):
        make_layer(x, x, 0)
    with pytest.raises(InputError, match="too small"):
        make_layer(x, x - 1e9, 1e-3)


def test_climate_files_keep_every_value_within_the_bound(tmp_path, tiny_climate_codec):
    src, out = tmp_path / "a.nc", tmp_path / "b.nc"
    write_netcdf(src, UK_LAT, UK_LON, times=4, missing=True)
    s = CLIMATE.read(src)
    plain = encode_signal(s, CLIMATE, tiny_climate_codec).data
    bounded = encode_signal(s, CLIMATE, tiny_climate_codec, max_error=0.05).data
    p = parse(bounded)
    assert p.file.flags & container.FLAG_RESIDUAL and residual_layer(p).bound == 0.05
    assert len(bounded) > len(plain)
    decoded, _ = decode_bytes(bounded)
    CLIMATE.write(decoded, out)
    written = CLIMATE.read(out)
    valid = ~s.meta["mask"][..., None]
    assert np.abs(written.exact - s.exact)[valid].max() <= 0.05
    assert np.array_equal(written.meta["mask"], s.meta["mask"])  # the missing points stay missing
    assert CLIMATE.quality(s, decoded)["max_error"] <= 0.05
    # another grid: the network alone (no bound there)
    other = Decoder().decode(p, CLIMATE.target(p.meta, p.file.shape, modalities.Resolution(scale=2)))
    assert other.exact is None


def test_packed_climate_data_is_lossless_at_zero(tmp_path, tiny_climate_codec):
    src, out = tmp_path / "a.nc", tmp_path / "b.nc"
    write_netcdf(src, UK_LAT, UK_LON, packed=True)
    s = CLIMATE.read(src)
    decoded, _ = decode_bytes(encode_signal(s, CLIMATE, tiny_climate_codec, max_error=0).data)
    CLIMATE.write(decoded, out)
    import netCDF4
    with netCDF4.Dataset(str(src)) as a, netCDF4.Dataset(str(out)) as b:
        a["t2m"].set_auto_maskandscale(False)
        b["t2m"].set_auto_maskandscale(False)
        assert np.array_equal(a["t2m"][...], b["t2m"][...])


@pytest.mark.parametrize("dtype", [np.int16, np.uint8])
def test_integer_volumes_come_back_bit_exact(tmp_path, tiny_mri_codec, dtype):
    src, out = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    vol = np.random.default_rng(5).integers(0, 200, size=(13, 11, 9)).astype(dtype)
    vol[0, 0, 0] = np.iinfo(dtype).max  # clipped by the network's robust range: the layer restores it
    write_nifti(src, dtype=dtype, values=vol)
    s = MRI.read(src)
    data = encode_signal(s, MRI, tiny_mri_codec, max_error=0).data
    decoded, _ = decode_bytes(data)
    assert MRI.describe_quality(MRI.quality(s, decoded)) == "lossless"
    MRI.write(decoded, out)
    back = nib.load(str(out))
    assert back.get_data_dtype() == dtype and np.array_equal(np.asarray(back.dataobj), vol)
    # another voxel grid: the network alone
    p = parse(data)
    assert Decoder().decode(p, Target(shape=(26, 22, 18))).exact is None


def test_lossless_needs_integer_data_and_images_have_no_bound(tmp_path, tiny_mri_codec, tiny_codec):
    src = tmp_path / "f.nii.gz"
    write_nifti(src, dtype=np.float32, values=np.random.default_rng(6).random((13, 11, 9)).astype(np.float32))
    with pytest.raises(InputError, match="integer data"):
        encode_signal(MRI.read(src), MRI, tiny_mri_codec, max_error=0)
    image = modalities.get("image")
    signal = modalities.Signal(np.full((8, 8, 3), 0.5, np.float32), {"channels": 3})
    with pytest.raises(InputError, match="no error-bounded mode"):
        encode_signal(signal, image, tiny_codec, max_error=1)


def test_the_residual_flag_and_section_go_together(tiny_climate_codec, tmp_path):
    src = tmp_path / "a.nc"
    write_netcdf(src, UK_LAT, UK_LON, times=2)
    data = encode_signal(CLIMATE.read(src), CLIMATE, tiny_climate_codec, max_error=0.1).data
    f = container.read_bytes(data)
    f.flags = 0
    f.extra = {}
    stripped = bytearray(container.write_bytes(f))
    stripped[5] = container.FLAG_RESIDUAL  # the flag without its section
    import struct
    import zlib
    stripped[-4:] = struct.pack("<I", zlib.crc32(bytes(stripped[:-4])))
    with pytest.raises(FormatError, match="residual flag"):
        container.read_bytes(bytes(stripped))
    stripped[5] = 0x02  # a flag this reader does not know
    stripped[-4:] = struct.pack("<I", zlib.crc32(bytes(stripped[:-4])))
    with pytest.raises(FormatError, match="unsupported flags"):
        container.read_bytes(bytes(stripped))


def test_cli_bounds_decodes_and_says_where_the_bound_holds(tmp_path, tiny_climate_codec):
    from click.testing import CliRunner

    from coinpp.cli import cli

    src, coin, out, fine = tmp_path / "a.nc", tmp_path / "a.coin", tmp_path / "b.nc", tmp_path / "c.nc"
    write_netcdf(src, UK_LAT, UK_LON, times=3)
    run = CliRunner().invoke
    r = run(cli, ["encode", str(src), "-o", str(coin), "--max-error", "0.1", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "max error 0.1" in r.output
    assert float(r.output.split("max error ")[-1].split()[0].rstrip(",K")) <= 0.1  # the check decode's own
    r = run(cli, ["info", str(coin)])
    assert "maximum error 0.1 on the file's own grid" in r.output
    r = run(cli, ["decode", str(coin), "-o", str(out), "--device", "cpu"])
    assert r.exit_code == 0 and "maximum error 0.1" in r.output and "note" not in r.output
    r = run(cli, ["decode", str(coin), "-o", str(fine), "--scale", "2", "--device", "cpu"])
    assert r.exit_code == 0 and "on this grid the decode is the network's alone" in r.output
    for bad, message in ((["--lossless"], "integer data"), (["--max-error", "-1"], ">= 0"),
                         (["--lossless", "--max-error", "1"], "give one of them"),
                         (["--max-error", "1", "--bits-per-value", "2"], "not with")):
        r = run(cli, ["encode", str(src), "-o", str(tmp_path / "x.coin"), "--force", *bad])
        assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output, r.output


def test_the_encoder_keeps_the_smaller_of_network_or_none_and_planes_or_differences():
    from coinpp.residual import BASE_NETWORK, BASE_ZERO, PLANE_DIFFERENCES, PLANES

    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:20, 0:24]
    ramp = (100 * np.sin(x / 5) + 50 * np.cos(y / 4))[None, :, :, None]
    series = ramp + 0.01 * np.arange(6)[:, None, None, None]  # planes alike: their differences are ~0
    bad_network = series + rng.normal(0, 30, series.shape)
    layer = make_layer(series, bad_network, 0.05)
    assert (layer.base, layer.predictor) == (BASE_ZERO, PLANE_DIFFERENCES)
    assert np.abs(apply_layer(layer, bad_network) - series).max() <= 0.05
    rough = rng.normal(0, 50, series.shape)  # no neighbour predicts it; a good network does
    layer = make_layer(rough, rough + rng.normal(0, 0.02, rough.shape), 0.05)
    assert (layer.base, layer.predictor) == (BASE_NETWORK, PLANES)


def test_scaled_integer_volumes_keep_their_scaling_and_come_back_exact(tmp_path, tiny_mri_codec):
    """A NIfTI whose integers carry scl_slope/scl_inter: its values lie on that grid, and are written
    back as the same integers with the same scaling (not clipped to the integer type's range)."""
    src, out = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    k = np.random.default_rng(8).integers(0, 256, size=(13, 11, 9)).astype(np.uint8)
    img = nib.Nifti1Image(k, np.eye(4))
    img.header.set_slope_inter(6.48, 0.5)
    nib.save(img, str(src))
    s = MRI.read(src)
    assert MRI.value_grid(s.meta) == pytest.approx((6.48, 0.5))
    decoded, _ = decode_bytes(encode_signal(s, MRI, tiny_mri_codec, max_error=0).data)
    MRI.write(decoded, out)
    back = nib.load(str(out))
    assert np.array_equal(np.asarray(back.dataobj.get_unscaled()), k)
    assert (back.dataobj.slope, back.dataobj.inter) == pytest.approx((6.48, 0.5))


@pytest.mark.parametrize("bound", [3.0, 7.0, 13.0])
def test_bounds_between_grid_steps_hold_after_snapping_to_the_grid(bound):
    """Values on a grid of 6.48: the output snapped to the grid stays within the bound (a bound below one
    step is then lossless), also for a decoder whose network evaluation differs a little."""
    rng = np.random.default_rng(9)
    k = rng.integers(0, 256, size=(5, 9, 8, 1))
    x = 0.5 + 6.48 * k
    p = x + rng.normal(0, 40, x.shape)
    layer = make_layer(x, p, bound, quantum=6.48, offset=0.5, span=1652.0)
    out = apply_layer(layer, p + 1652.0 * 2.0**-20)
    assert np.abs(out - x).max() <= bound + 1e-9
    assert np.allclose((out - 0.5) / 6.48, np.rint((out - 0.5) / 6.48))
    if bound < 6.48:
        assert np.allclose(out, x)


def test_a_volume_whose_header_lost_its_scaling_is_written_with_one_that_fits(tmp_path):
    """Files written before the scaling was kept: uint8 header, values up to 1652 -> scaled, not clipped."""
    k = np.random.default_rng(10).integers(0, 256, size=(6, 5, 4)).astype(np.uint8)
    img = nib.Nifti1Image(k, np.eye(4))
    img.header.set_slope_inter(6.48, 0.0)
    nib.save(img, str(tmp_path / "a.nii.gz"))
    s = MRI.read(tmp_path / "a.nii.gz")
    h = MRI.header(s.meta)
    h.set_slope_inter(np.nan, np.nan)  # as coin 0.2 stored it
    old = modalities.Signal(s.values, dict(s.meta, header=bytes(h.binaryblock)))
    MRI.write(old, tmp_path / "b.nii.gz")
    back = np.asarray(nib.load(str(tmp_path / "b.nii.gz")).dataobj)
    assert back.max() > 1600 and np.abs(back - 6.48 * k).max() < 10
