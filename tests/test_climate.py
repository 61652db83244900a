"""Climate modality: NetCDF fields read, coded and written back on any latitude/longitude grid."""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_netcdf

from coinpp import modalities
from coinpp.bitstream import parse
from coinpp.cli import cli
from coinpp.decoder import Decoder, decode_bytes
from coinpp.encoder import encode_signal
from coinpp.errors import FormatError, InputError
from coinpp.modalities import Target
from coinpp.modalities.climate import sphere_points

CLIMATE = modalities.get("climate")
UK_LAT = np.arange(58.0, 49.9, -1.0)  # descending, 9 points
UK_LON = np.arange(-10.0, 2.01, 1.5)  # 9 points
GLOBE_LAT = np.arange(90.0, -90.1, -30.0)
GLOBE_LON = np.arange(0.0, 360.0, 45.0)  # 0..360 convention


def _read_nc(path, var="t2m"):
    with netCDF4.Dataset(str(path)) as ds:
        v = ds.variables[var]
        return (v[...], {k: v.getncattr(k) for k in v.ncattrs()}, ds.variables["lat"][:], ds.variables["lon"][:],
                {k: ds.getncattr(k) for k in ds.ncattrs()}, v.dtype, ds.variables["time"][:])


def test_sphere_points_are_unit_and_seamless():
    p = sphere_points(np.array([0.0, 45.0, 90.0]), np.array([-180.0, 180.0]))
    assert np.allclose(np.linalg.norm(p, axis=1), 1)
    assert np.allclose(p[0], p[1]) and np.allclose(p[4], p[5])  # the date line is one meridian
    assert np.allclose(p[4], [0, 0, 1])  # the pole is one point


def test_read_flattens_leading_dims_and_keeps_geometry(tmp_path):
    f = tmp_path / "a.nc"
    write_netcdf(f, UK_LAT, UK_LON, times=2, levels=3)
    s = CLIMATE.read(f)
    assert s.values.shape == (6, 9, 9, 1) and s.values.min() >= 0 and s.values.max() <= 1
    lat, lon = CLIMATE.lat_lon(s.meta)
    assert np.array_equal(lat, UK_LAT) and np.array_equal(lon, UK_LON)
    assert [d["name"] for d in s.meta["dims"]] == ["time", "level", "lat", "lon"]
    assert s.meta["dims"][-2]["coord"]["axis"].keys() >= {"start", "step"}  # regular: stored compactly


def test_round_trip_keeps_attributes_coordinates_dtype_and_mask(tmp_path, tiny_climate_codec):
    src, out = tmp_path / "a.nc", tmp_path / "b.nc"
    orig = write_netcdf(src, UK_LAT, UK_LON, times=3, missing=True)
    s = CLIMATE.read(src)
    data = encode_signal(s, CLIMATE, tiny_climate_codec).data
    decoded, parsed = decode_bytes(data)
    assert decoded.values.shape == s.values.shape
    CLIMATE.write(decoded, out)
    values, attrs, lat, lon, glob, dtype, times = _read_nc(out)
    assert dtype == np.float32 and attrs["units"] == "K" and attrs["long_name"] == "2 metre temperature"
    assert glob["title"] == "test field"
    assert np.array_equal(lat, UK_LAT.astype(np.float32)) and np.array_equal(lon, UK_LON.astype(np.float32))
    assert np.array_equal(times, [0, 6, 12])
    assert np.array_equal(np.ma.getmaskarray(values), np.ma.getmaskarray(orig))  # masked stays masked
    assert np.ma.getmaskarray(values).sum() == 4
    valid = ~np.ma.getmaskarray(orig)
    assert values[valid].min() >= orig[valid].min() - 1e-3 and values[valid].max() <= orig[valid].max() + 1e-3
    q = CLIMATE.quality(s, decoded)
    assert q["rmse"] > 0 and q["max_error"] >= q["rmse"]


def test_packed_integers_are_packed_again(tmp_path, tiny_climate_codec):
    src, out = tmp_path / "a.nc", tmp_path / "b.nc"
    write_netcdf(src, UK_LAT, UK_LON, packed=True)
    s = CLIMATE.read(src)
    assert s.meta["dtype"] == "<i2"
    decoded, _ = decode_bytes(encode_signal(s, CLIMATE, tiny_climate_codec).data)
    CLIMATE.write(decoded, out)
    with netCDF4.Dataset(str(out)) as ds:
        v = ds.variables["t2m"]
        assert v.dtype == np.int16 and v.scale_factor == pytest.approx(0.01) and v.add_offset == 280.0
        v.set_auto_maskandscale(False)
        raw = v[...]
    assert raw.dtype == np.int16
    assert CLIMATE.rate(1000, s.spatial, s.meta)["ratio"] == pytest.approx(3 * 81 * 2 / 1000)


def test_decode_onto_another_grid(tmp_path, tiny_climate_codec):
    src = tmp_path / "a.nc"
    write_netcdf(src, UK_LAT, UK_LON, times=2)
    s = CLIMATE.read(src)
    p = parse(encode_signal(s, CLIMATE, tiny_climate_codec).data)
    lat, lon = CLIMATE.target_grid(p.meta, grid=0.5)
    assert lat[0] == 58 and lat[-1] == 50 and len(lat) == 17 and len(lon) == 25
    fine = Decoder().decode(p, Target(meta=CLIMATE.regridded(p.meta, lat, lon)))
    same = Decoder().decode(p)
    assert fine.values.shape == (2, 17, 25, 1)
    # the finer grid passes through the original points: same values there
    assert np.allclose(fine.values[:, ::2, ::3], same.values, atol=1e-5)
    out = tmp_path / "fine.nc"
    CLIMATE.write(fine, out)
    _, _, lat_w, lon_w, _, _, _ = _read_nc(out)
    assert np.allclose(lat_w, lat) and np.allclose(lon_w, lon)
    with pytest.raises(InputError, match="outside the coded field"):
        CLIMATE.target_grid(p.meta, lat_spec=(40.0, 58.0, 10))
    with pytest.raises(InputError, match="outside the coded field"):
        CLIMATE.target_grid(p.meta, lon_spec=(-20.0, 0.0, 10))


def test_global_field_wraps_in_longitude(tmp_path, tiny_climate_codec):
    src = tmp_path / "g.nc"
    write_netcdf(src, GLOBE_LAT, GLOBE_LON, times=1)
    p = parse(encode_signal(CLIMATE.read(src), CLIMATE, tiny_climate_codec).data)
    lat, lon = CLIMATE.target_grid(p.meta, lon_spec=(-180.0, 180.0, 9))  # other convention: allowed
    v = Decoder().decode(p, Target(meta=CLIMATE.regridded(p.meta, lat, lon))).values
    assert np.allclose(v[:, :, 0], v[:, :, -1], atol=1e-6)  # -180 and 180 are the same meridian
    lat2, lon2 = CLIMATE.target_grid(p.meta, scale=2)
    assert len(lon2) == 16 and lon2[-1] == pytest.approx(337.5) and len(lat2) == 13


def test_cli_encode_decode_with_grid(tmp_path, tiny_climate_codec):
    src = tmp_path / "a.nc"
    write_netcdf(src, UK_LAT, UK_LON, times=2, missing=True)
    r = CliRunner().invoke(cli, ["encode", str(src), "-o", str(tmp_path / "a.coin")])
    assert r.exit_code == 0, r.output
    assert "bits/value" in r.output and "RMSE" in r.output and " K" in r.output
    r = CliRunner().invoke(cli, ["decode", str(tmp_path / "a.coin"), "-o", str(tmp_path / "b.nc"),
                                 "--lat", "50:58:5", "--lon", "-10:2:7"])
    assert r.exit_code == 0, r.output
    values, *_ = _read_nc(tmp_path / "b.nc")
    assert values.shape == (2, 5, 7)
    assert np.ma.getmaskarray(values)[:, -1, 0].all()  # the missing corner (58 N, 10 W) stays masked
    r = CliRunner().invoke(cli, ["decode", str(tmp_path / "a.coin"), "-o", str(tmp_path / "c.nc"), "--size", "4x4"])
    assert r.exit_code == 1 and "--grid" in r.output
    r = CliRunner().invoke(cli, ["decode", str(tmp_path / "a.coin"), "-o", str(tmp_path / "c.nc"),
                                 "--lat", "0:10:3"])
    assert r.exit_code == 1 and "outside the coded field" in r.output


def test_variable_choice_and_errors(tmp_path, tiny_climate_codec):
    two = tmp_path / "two.nc"
    write_netcdf(two, UK_LAT, UK_LON, extra_var="d2m")
    with pytest.raises(InputError, match="several.*t2m, d2m.*--var"):
        CLIMATE.read(two)
    assert CLIMATE.read(two, var="d2m").meta["var"] == "d2m"
    with pytest.raises(InputError, match="no variable 'x'"):
        CLIMATE.read(two, var="x")
    with pytest.raises(InputError, match="not a field"):
        CLIMATE.read(two, var="time")
    bad = tmp_path / "bad.nc"
    bad.write_bytes(b"not netcdf at all")
    with pytest.raises(InputError, match="not a readable NetCDF"):
        CLIMATE.read(bad)
    r = CliRunner().invoke(cli, ["encode", str(two), "-o", str(tmp_path / "x.coin")])
    assert r.exit_code == 1 and "--var" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["encode", str(two), "-o", str(tmp_path / "x.coin"), "--var", "d2m"])
    assert r.exit_code == 0, r.output


def test_all_missing_is_refused(tmp_path):
    f = tmp_path / "m.nc"
    with netCDF4.Dataset(str(f), "w") as ds:
        ds.createDimension("lat", 3)
        ds.createDimension("lon", 3)
        ds.createVariable("lat", "f4", ("lat",))[:] = [0, 1, 2]
        ds.variables["lat"].units = "degrees_north"
        ds.createVariable("lon", "f4", ("lon",))[:] = [0, 1, 2]
        ds.variables["lon"].units = "degrees_east"
        v = ds.createVariable("t", "f4", ("lat", "lon"), fill_value=np.float32(-1))
        v[...] = np.full((3, 3), -1, np.float32)
    with pytest.raises(InputError, match="no valid values"):
        CLIMATE.read(f)


def test_corrupt_climate_header_is_a_format_error(tmp_path, tiny_climate_codec):
    src = tmp_path / "a.nc"
    write_netcdf(src, UK_LAT, UK_LON, times=2)
    s = CLIMATE.read(src)
    with pytest.raises(FormatError):
        CLIMATE.decode_meta(CLIMATE.encode_meta(s.meta)[:-3], 1)
    meta = dict(s.meta, dims=s.meta["dims"][1:])  # header says 1 field, grid says 2
    bad = encode_signal(s, CLIMATE, tiny_climate_codec)
    from coinpp import container

    f = container.read_bytes(bad.data)
    f.modality_meta = CLIMATE.encode_meta(meta)
    with pytest.raises(FormatError, match="disagree"):
        parse(container.write_bytes(f))


def test_info_shows_the_variable_grid_and_header_size(tmp_path, tiny_climate_codec):
    import json

    src = tmp_path / "a.nc"
    write_netcdf(src, UK_LAT, UK_LON, times=2, missing=True)
    CliRunner().invoke(cli, ["encode", str(src), "-o", str(tmp_path / "a.coin")])
    r = CliRunner().invoke(cli, ["info", str(tmp_path / "a.coin"), "--json"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.output)
    assert rec["variable"] == "t2m" and rec["units"] == "K" and rec["missing_values"] == 3
    assert rec["latitudes"] == "58..50 (9)" and rec["modality_fields_bytes"] > 0 and "bits/value" in rec


def test_huge_requested_grid_is_refused_before_allocating(tmp_path, tiny_climate_codec):
    src = tmp_path / "a.nc"
    write_netcdf(src, UK_LAT, UK_LON, times=2, missing=True)  # a mask to resample too
    r = CliRunner().invoke(cli, ["encode", str(src), "-o", str(tmp_path / "a.coin")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["decode", str(tmp_path / "a.coin"), "-o", str(tmp_path / "b.nc"),
                                 "--lat", "50:58:20000", "--lon", "-10:2:20000"])
    assert r.exit_code == 1 and "safety cap" in r.output


# --- per-field normalisation (codecs with "normalisation": "field") ------------------------------

@pytest.fixture()
def levels_codec(tiny_climate_codec):
    import os
    from pathlib import Path

    from conftest import make_tiny_codec

    return make_tiny_codec(Path(os.environ["COIN_CODECS_PATH"]), "tiny-levels-b6", bits=6, modality="climate",
                           normalisation="field")


def _levels_file(path):
    """Three levels whose ranges differ by tens of kelvin, as pressure levels do."""
    values = write_netcdf(path, GLOBE_LAT, GLOBE_LON, times=2, levels=3, missing=True)
    with netCDF4.Dataset(str(path), "a") as ds:
        ds.variables["t2m"][:, 1] = values[:, 1] - 60.0
        ds.variables["t2m"][:, 2] = (values[:, 2] - 280.0) * 4 + 220.0
    return CLIMATE.read(path)


def test_each_field_is_mapped_over_its_own_range(tmp_path):
    s = _levels_file(tmp_path / "a.nc")
    coded = CLIMATE.normalise(s, "field")
    assert CLIMATE.normalise(s, "file") is s and "field_ranges" not in s.meta
    net = CLIMATE.to_network(coded, 1)
    mask = s.meta["mask"]
    for k in range(net.shape[0]):
        valid = net[k, ..., 0][~mask[k]]
        # within [0, 1], and filling it but for the 1/255-of-the-file's-range steps the ranges are stored in
        assert valid.min() >= -1e-6 and valid.max() <= 1 + 1e-6
        assert valid.max() - valid.min() > 0.8
    # the decoder's inverse brings the file's own [0, 1] values back
    assert np.allclose(CLIMATE.from_network(net, coded.meta), s.values, atol=1e-6)
    with pytest.raises(InputError):
        modalities.get("mri").normalise(s, "field")


def test_field_ranges_are_kept_in_the_header_and_checked(tmp_path):
    s = CLIMATE.normalise(_levels_file(tmp_path / "a.nc"), "field")
    meta = CLIMATE.decode_meta(CLIMATE.encode_meta(s.meta), 1)
    assert meta["field_ranges"] == s.meta["field_ranges"] and len(bytes.fromhex(meta["field_ranges"])) == 2 * 6
    for bad in (s.meta["field_ranges"][:-4], "ff00" * 6, "zz" * 12, 7):  # a field short, low >= high, not hex
        with pytest.raises(FormatError):
            CLIMATE.decode_meta(CLIMATE.encode_meta(dict(s.meta, field_ranges=bad)), 1)
    # cutting fields out of a series changes its range: the ranges go, normalise sets them anew
    assert "field_ranges" not in CLIMATE.fields(s, 1, 2).meta


def test_per_field_codec_round_trip_and_other_grids(tmp_path, levels_codec, tiny_climate_codec):
    s = _levels_file(tmp_path / "a.nc")
    data = encode_signal(s, CLIMATE, levels_codec).data
    p = parse(data)
    assert p.spec.normalisation == "field" and p.meta["field_ranges"] is not None
    decoded, _ = decode_bytes(data)
    phys, orig = CLIMATE.physical(decoded), CLIMATE.physical(s)
    for k in range(phys.shape[1]):  # every level decodes inside its own range (an untrained network)
        level, want = phys[:, k], orig[:, k]
        assert level.min() >= want.min() - 0.6 and level.max() <= want.max() + 0.6
    assert CLIMATE.quality(s, decoded)["rmse"] > 0
    finer = Decoder().decode(p, CLIMATE.target(p.meta, p.file.shape, modalities.Resolution(scale=2)))
    assert finer.values.shape[0] == 6
    # The file-range codec leaves the header as it was; a file whose header disagrees with its codec is refused
    assert "field_ranges" not in parse(encode_signal(s, CLIMATE, tiny_climate_codec).data).meta
    from coinpp import container

    f = container.read_bytes(data)
    f.modality_meta = CLIMATE.encode_meta(s.meta)
    with pytest.raises(FormatError, match="field ranges"):
        Decoder().decode(parse(container.write_bytes(f)))


def test_per_field_codec_keeps_a_bound(tmp_path, levels_codec):
    s = _levels_file(tmp_path / "a.nc")
    data = encode_signal(s, CLIMATE, levels_codec, max_error=0.25).data
    decoded, _ = decode_bytes(data)
    a, b = CLIMATE.physical(s), CLIMATE.physical(decoded)
    valid = ~np.ma.getmaskarray(a)
    assert np.abs(np.ma.getdata(a)[valid] - np.ma.getdata(b)[valid]).max() <= 0.25


def test_a_normalisation_the_modality_lacks_is_refused(tmp_path):
    from conftest import make_tiny_codec

    from coinpp import codec as codecs
    from coinpp.errors import CodecError

    for name, modality, normalisation in (("img", "image", "field"), ("clim", "climate", "level")):
        with pytest.raises(CodecError, match="normalisation"):  # written, then refused on loading
            make_tiny_codec(tmp_path, name, modality=modality, normalisation=normalisation)
        with pytest.raises(CodecError, match="normalisation"):
            codecs.load_folder(tmp_path / name)
