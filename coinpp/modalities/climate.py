"""Climate: gridded fields in NetCDF (netCDF4), decoded onto any latitude/longitude grid.

One variable per file (`--var`, or the only data variable). Its last two dimensions are latitude
and longitude; any leading dimensions (time, level, ...) are flattened into a series of 2-D fields,
each coded with its own latent vector. The network sees every grid point as a point on the unit
sphere, (cos lat cos lon, cos lat sin lon, sin lat), so a global field has no seam at the date line
and no distortion at the poles, and the order or convention of the axes (descending latitude,
longitudes in 0..360 or -180..180) does not matter.

Values are normalised to [0, 1] with the file's own range (stored as float64); a codec trained per
field (`"normalisation": "field"`, for fields whose ranges differ, e.g. 17 pressure levels) has each
field mapped to [0, 1] over its own range as well, stored in the header to 1/255 of the file's range
(`normalise`, `to_network`, `from_network`). Missing values
(_FillValue / missing_value / NaN) are filled with their field's mean for fitting and stay masked
on decode; packed integers (scale_factor/add_offset) are unpacked on read and packed again on
write. The container keeps the coordinate variables of every dimension (start and step when
regular), units, the variable's and the file's attributes, so the decoded file reads like the
original.

(Over 400 lines, kept in one file: a modality is one file behind one interface, and NetCDF's
conventions, masks, packing, the header's compression and regridding are all this one's.)
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from ..container import MAX_SAMPLES as MAX_OUTPUT_SAMPLES
from ..errors import FormatError, InputError, LimitError, OutputError
from .base import Modality, Resolution, Signal, Target

MAX_VALUES = 1 << 28  # values read into memory
MAX_GRID_AXIS = 1 << 20
MAX_META_BYTES = 1 << 24  # decompressed header fields (attributes, coordinates)
LAT_NAMES = ("lat", "latitude", "nav_lat", "y")
LON_NAMES = ("lon", "longitude", "nav_lon", "x")


def _netcdf():
    import netCDF4

    return netCDF4


def sphere_points(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Grid of lat x lon degrees -> (len(lat) * len(lon), 3) points on the unit sphere (row-major)."""
    la = np.deg2rad(np.asarray(lat, dtype=np.float64))[:, None]
    lo = np.deg2rad(np.asarray(lon, dtype=np.float64))[None, :]
    xyz = np.stack(np.broadcast_arrays(np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)), axis=-1)
    return xyz.reshape(-1, 3)


def _is_lat(var) -> bool:
    units = str(getattr(var, "units", "")).lower()
    return (units.startswith("degree") and units.endswith(("north", "_n", "n"))) or \
        getattr(var, "standard_name", "") == "latitude" or var.name.lower() in LAT_NAMES


def _is_lon(var) -> bool:
    units = str(getattr(var, "units", "")).lower()
    return (units.startswith("degree") and units.endswith(("east", "_e", "e"))) or \
        getattr(var, "standard_name", "") == "longitude" or var.name.lower() in LON_NAMES


def _jsonable(value) -> dict | str:
    """A NetCDF attribute value -> JSON that keeps its type (written back with the same dtype)."""
    if isinstance(value, str):
        return value
    a = np.asarray(value)
    if a.dtype.kind in "US":
        return str(value)
    return {"dtype": a.dtype.str, "value": a.tolist()}


def _from_json(value):
    if isinstance(value, str):
        return value
    a = np.array(value["value"], dtype=np.dtype(value["dtype"]))
    return a if a.ndim else a[()]


def _compact_axis(values: np.ndarray) -> dict:
    """Coordinate values: start/step/n when regular (exactly reproduced), else the list."""
    v = np.asarray(values)
    dtype = v.dtype.str
    if v.dtype.kind in "iuf" and v.size >= 2:
        start, step = float(v[0]), (float(v[-1]) - float(v[0])) / (v.size - 1)
        rebuilt = (start + step * np.arange(v.size)).astype(v.dtype)
        if np.array_equal(rebuilt, v):
            return {"dtype": dtype, "start": start, "step": step, "n": int(v.size)}
    return {"dtype": dtype, "values": v.tolist()}


def _expand_axis(d: dict) -> np.ndarray:
    dtype = np.dtype(d["dtype"])
    if "values" in d:
        return np.array(d["values"], dtype=dtype)
    n = int(d["n"])
    if not 0 <= n <= MAX_GRID_AXIS:
        raise FormatError("corrupted climate fields in the header")
    return (float(d["start"]) + float(d["step"]) * np.arange(n)).astype(dtype)


# A preset dictionary for the header fields (zlib's zdict): the JSON keys and the CF, COARDS and
# GRIB attribute names and values that most files carry. About 1 KB of attributes compresses to
# roughly half of what zlib alone gives, which matters when the latents of a whole series take
# only a few hundred bytes. Part of the format: never change it, add a new one with a new tag.
HEADER_DICT_V1 = (
    b'GRIB_paramIdGRIB_dataTypeGRIB_numberOfPointsGRIB_typeOfLevelGRIB_stepUnitsGRIB_stepType'
    b'GRIB_gridTypeGRIB_uvRelativeToGridGRIB_NVGRIB_NxGRIB_NyGRIB_cfNameGRIB_cfVarName'
    b'GRIB_gridDefinitionDescriptionGRIB_iDirectionIncrementInDegreesGRIB_iScansNegatively'
    b'GRIB_jDirectionIncrementInDegreesGRIB_jPointsAreConsecutiveGRIB_jScansPositively'
    b'GRIB_latitudeOfFirstGridPointInDegreesGRIB_latitudeOfLastGridPointInDegrees'
    b'GRIB_longitudeOfFirstGridPointInDegreesGRIB_longitudeOfLastGridPointInDegrees'
    b'GRIB_missingValueGRIB_nameGRIB_shortNameGRIB_totalNumberGRIB_unitsregular_llinstantsurface'
    b'Latitude/Longitude Gridnumber time step surface latitude longitude valid_time'
    b'European Centre for Medium-Range Weather Forecasts (ECMWF)Copernicus Climate Change Service (C3S)'
    b'NCEP-NCAR Reanalysis 1http://www.psl.noaa.gov/data/gridded/data.ncep.reanalysis.html'
    b'Climate Data Operators version Climate Data Interface version https://mpimet.mpg.de/cdi'
    b'"_FillValue":"missing_value":"scale_factor":"add_offset":"valid_range":"actual_range":'
    b'"least_significant_digit":"precision":"var_desc":"level_desc":"statistic":"dataset":'
    b'"Conventions":"CF-1.7""CF-1.6""COARDS""title":"history":"institution":"source":"references":'
    b'"comment":"positive":"down""axis":"T""axis":"Z""axis":"Y""axis":"X""millibar""hPa""Pa"'
    b'"calendar":"standard""gregorian""proleptic_gregorian""hours since ""days since "'
    b'"seconds since ""forecast_reference_time""time""Time""level""air_pressure""air_temperature"'
    b'"2 metre temperature""temperature""degK""degC""K"'
    b'{"var":"dtype":"<f4","attrs":{"global":{"format":"NETCDF4","NETCDF4_CLASSIC""NETCDF3_CLASSIC"'
    b'"NETCDF3_64BIT_OFFSET""dims":[{"name":"size":"unlimited":false,"unlimited":true,'
    b'"coord":{"axis":{"dtype":"<f8","start":"step":"n":"values":['
    b'{"dtype":"<i8","value":{"dtype":"<f8","value":{"dtype":"<f4","value":{"dtype":"<i2","value":'
    b'"attrs":{"units":"degrees_north","standard_name":"latitude","long_name":"latitude"'
    b'"units":"degrees_east","standard_name":"longitude","long_name":"longitude"'
    b'"stored_direction":"decreasing"}}},"low":"high":'
)


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, HEADER_DICT_V1)
    return c.compress(data) + c.flush()


def _inflate(data: bytes, limit: int) -> bytes:
    d = zlib.decompressobj(-15, zdict=HEADER_DICT_V1)
    out = d.decompress(data, limit)
    if d.unconsumed_tail:
        raise LimitError("climate header fields exceed the safety cap")
    if not d.eof:
        raise FormatError("corrupted climate fields in the header (cut short)")
    return out


class ClimateModality(Modality):
    name = "climate"
    code = 3
    extensions = (".nc", ".nc4", ".netcdf")
    spatial_dims = 3  # (field, latitude, longitude): fields are the flattened leading dimensions
    network_channels = 1
    absolute_coordinates = True
    resolution_options = ("--grid", "--lat", "--lon")

    @property
    def network_in_dim(self) -> int:
        return 3  # points on the unit sphere

    def consistent(self, meta: dict, shape: tuple[int, ...]) -> bool:
        dims = tuple(int(d["size"]) for d in meta["dims"])
        return shape == (math.prod(dims[:-2]), *dims[-2:])

    # --- reading -------------------------------------------------------------------------------

    def read(self, path: Path, var: str | None = None) -> Signal:
        nc = _netcdf()
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        try:
            ds = nc.Dataset(str(path), "r")
        except OSError as e:
            raise InputError(f"{path}: not a readable NetCDF file ({e})") from None
        try:
            return self._read_dataset(ds, path, var)
        finally:
            ds.close()

    def data_variables(self, ds) -> list[str]:
        """Variables whose last two dimensions are latitude and longitude coordinate variables."""
        out = []
        for name, v in ds.variables.items():
            if v.ndim < 2 or name in ds.dimensions:
                continue
            lat_dim, lon_dim = v.dimensions[-2:]
            if lat_dim in ds.variables and lon_dim in ds.variables and _is_lat(ds.variables[lat_dim]) \
                    and _is_lon(ds.variables[lon_dim]):
                out.append(name)
        return out

    def _read_dataset(self, ds, path: Path, var: str | None) -> Signal:
        candidates = self.data_variables(ds)
        if var is None:
            if len(candidates) != 1:
                listed = ", ".join(candidates) or "none"
                raise InputError(f"{path}: {'several' if candidates else 'no'} latitude/longitude variables "
                                 f"({listed}); pick one with --var")
            var = candidates[0]
        if var not in ds.variables:
            raise InputError(f"{path}: no variable {var!r} (variables: {', '.join(ds.variables)})")
        if var not in candidates:
            raise InputError(f"{path}: variable {var!r} is not a field on a latitude/longitude grid "
                             f"(its last two dimensions must be latitude and longitude)")
        v = ds.variables[var]
        shape = tuple(int(s) for s in v.shape)
        if math.prod(shape) > MAX_VALUES:
            raise InputError(f"{path}: {var} has {math.prod(shape)} values, more than coin handles")
        if min(shape) < 1:
            raise InputError(f"{path}: {var} is empty")
        v.set_auto_maskandscale(True)
        try:
            data = v[...]
        except (RuntimeError, ValueError, OSError) as e:
            raise InputError(f"{path}: cannot read {var}: {e}") from None
        values = np.ma.getdata(data).astype(np.float64)
        mask = np.ma.getmaskarray(data) | ~np.isfinite(values)
        if mask.all():
            raise InputError(f"{path}: {var} has no valid values (all missing)")
        valid = values[~mask]
        low, high = float(valid.min()), float(valid.max())
        span = high - low if high > low else 1.0
        lead = shape[:-2]
        fields = math.prod(lead)
        norm = ((values - low) / span).reshape(fields, shape[-2], shape[-1])
        mask = mask.reshape(norm.shape)
        if mask.any():  # fit through the gaps with each field's mean; they are masked again on decode
            counts = (~mask).sum(axis=(1, 2))
            sums = np.where(mask, 0.0, norm).sum(axis=(1, 2))
            means = np.where(counts > 0, sums / np.maximum(counts, 1), 0.5)
            norm = np.where(mask, means[:, None, None], norm)
        dims = []
        for name, size in zip(v.dimensions, shape, strict=True):
            d: dict = {"name": name, "size": size,
                       "unlimited": bool(ds.dimensions[name].isunlimited())}
            if name in ds.variables and ds.variables[name].ndim == 1:
                cv = ds.variables[name]
                cv.set_auto_maskandscale(False)
                d["coord"] = {"axis": _compact_axis(np.asarray(cv[:])),
                              "attrs": {k: _jsonable(cv.getncattr(k)) for k in cv.ncattrs()}}
            dims.append(d)
        meta = {
            "var": var,
            "dtype": v.dtype.str if isinstance(v.dtype, np.dtype) else "<f4",
            "attrs": {k: _jsonable(v.getncattr(k)) for k in v.ncattrs()},
            "global": {k: _jsonable(ds.getncattr(k)) for k in ds.ncattrs()},
            "format": ds.data_model,
            "dims": dims,
            "low": low, "high": high,
            "mask": mask if mask.any() else None,
        }
        self._check_grid(meta, path)
        exact = np.where(mask, 0.0, values.reshape(norm.shape))[..., None]
        return Signal(norm[..., None].astype(np.float32), meta, exact)

    def _check_grid(self, meta: dict, where) -> None:
        lat, lon = self.lat_lon(meta)
        if lat is None or lon is None or np.abs(lat).max() > 90 + 1e-6 or not np.all(np.isfinite(lon)):
            raise InputError(f"{where}: latitude/longitude coordinates are missing or out of range")

    # --- grid ------------------------------------------------------------------------------------

    @staticmethod
    def lat_lon(meta: dict) -> tuple[np.ndarray | None, np.ndarray | None]:
        def axis(d):
            return _expand_axis(d["coord"]["axis"]).astype(np.float64) if "coord" in d else None

        return axis(meta["dims"][-2]), axis(meta["dims"][-1])

    def coordinates(self, meta: dict) -> np.ndarray:
        """Network inputs of one field: (nlat * nlon, 3) points on the unit sphere."""
        lat, lon = self.lat_lon(meta)
        return sphere_points(lat, lon).astype(np.float32)

    def file_patch(self, codec_patch: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
        """One latent per whole field."""
        return (1, *shape[1:])

    @staticmethod
    def is_global_lon(lon: np.ndarray) -> bool:
        if lon.size < 2:
            return False
        step = abs(float(lon[1] - lon[0]))
        return step * lon.size >= 360 - 1e-6

    def size_order(self, size: tuple[int, ...]) -> tuple[int, ...]:
        return size  # fields, latitudes, longitudes

    def describe_shape(self, signal: Signal) -> str:
        return f"{signal.spatial[0]} fields of {signal.spatial[1]} latitudes x {signal.spatial[2]} longitudes"

    def target(self, meta: dict, shape: tuple[int, ...], r: Resolution, allow_huge: bool = False) -> Target:
        """Another latitude/longitude grid: --grid (a regular spacing), --lat/--lon, or --scale."""
        if r.size is not None or r.sample_rate is not None:
            raise InputError(f"{self.name}: use --grid, --lat/--lon or --scale instead of --size or --sample-rate")
        self.refuse_foreign(r, own=("--scale",))
        if r.grid is None and r.scale is None and r.lat is None and r.lon is None:
            return Target()
        if r.grid is not None and r.scale is not None:
            raise InputError("give --grid or --scale, not both")
        new_lat, new_lon = self.target_grid(meta, r.scale, r.grid, r.lat, r.lon)
        if not allow_huge and shape[0] * new_lat.size * new_lon.size > MAX_OUTPUT_SAMPLES:  # before the mask
            raise InputError(f"requested grid of {new_lat.size}x{new_lon.size} points per field exceeds the "
                             "safety cap; pass --allow-huge")
        return Target(meta=self.regridded(meta, new_lat, new_lon))

    def target_grid(self, meta: dict, scale: float | None = None, grid: float | None = None,
                    lat_spec: tuple[float, float, int] | None = None,
                    lon_spec: tuple[float, float, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The latitudes and longitudes to decode onto; refuses points outside a regional field."""
        lat, lon = self.lat_lon(meta)
        glob = self.is_global_lon(lon)

        def regular(axis: np.ndarray, step: float, periodic: bool) -> np.ndarray:
            if axis.size < 2:
                return axis.copy()
            if periodic:
                n = max(1, round(360 / step))
                return axis[0] + np.sign(axis[1] - axis[0]) * 360 / n * np.arange(n)
            extent = float(axis[-1] - axis[0])
            n = int(math.floor(abs(extent) / step + 1e-9)) + 1
            return axis[0] + math.copysign(step, extent) * np.arange(n)

        if grid is not None:
            if not 0 < grid <= 180 or math.isnan(grid):
                raise InputError("--grid must be a spacing in degrees in (0, 180]")
            new_lat, new_lon = regular(lat, grid, False), regular(lon, grid, glob)
        elif scale is not None:
            def finer(axis: np.ndarray, periodic: bool) -> np.ndarray:
                if axis.size < 2:
                    return axis.copy()
                if periodic:
                    n = max(1, round(axis.size * scale))
                    return axis[0] + np.sign(axis[1] - axis[0]) * 360 / n * np.arange(n)
                return np.linspace(axis[0], axis[-1], max(2, round((axis.size - 1) * scale) + 1))

            new_lat, new_lon = finer(lat, False), finer(lon, glob)
        else:
            new_lat, new_lon = lat, lon
        if lat_spec is not None:
            new_lat = np.linspace(*lat_spec[:2], lat_spec[2])
        if lon_spec is not None:
            new_lon = np.linspace(*lon_spec[:2], lon_spec[2])
        for axis in (new_lat, new_lon):
            if not 1 <= axis.size <= MAX_GRID_AXIS:
                raise InputError(f"a decoded grid axis must have 1..{MAX_GRID_AXIS} points")
        if np.abs(new_lat).max() > 90 + 1e-9:
            raise InputError("latitudes must lie in [-90, 90]")
        self._check_inside(lat, lon, new_lat, new_lon, glob)
        return new_lat, new_lon

    @staticmethod
    def _check_inside(lat, lon, new_lat, new_lon, glob: bool) -> None:
        """A regional field is only known inside its grid (plus half a cell): refuse extrapolation."""
        half_lat = abs(float(lat[1] - lat[0])) / 2 if lat.size > 1 else 0.0
        lo, hi = float(lat.min()) - half_lat - 1e-9, float(lat.max()) + half_lat + 1e-9
        if new_lat.min() < lo or new_lat.max() > hi:
            raise InputError(f"requested latitudes reach outside the coded field "
                             f"({lat.min():g}..{lat.max():g} degrees north)")
        if glob:
            return
        half_lon = abs(float(lon[1] - lon[0])) / 2 if lon.size > 1 else 0.0
        start = float(lon.min())
        extent = float(lon.max()) - start
        d = np.mod(new_lon - start, 360.0)
        inside = (d <= extent + half_lon + 1e-9) | (d >= 360.0 - half_lon - 1e-9)
        if not inside.all():
            raise InputError(f"requested longitudes reach outside the coded field "
                             f"({lon.min():g}..{lon.max():g} degrees east)")

    def regridded(self, meta: dict, new_lat: np.ndarray, new_lon: np.ndarray) -> dict:
        """Metadata of the fields on another grid: new coordinate variables, the mask resampled
        to the nearest original grid point."""
        lat, lon = self.lat_lon(meta)
        out = dict(meta)
        dims = [dict(d) for d in meta["dims"]]
        for d, axis in ((dims[-2], new_lat), (dims[-1], new_lon)):
            coord = dict(d["coord"])
            dtype = np.dtype(coord["axis"]["dtype"])
            dtype = dtype if dtype.kind == "f" else np.dtype("<f8")
            coord["axis"] = _compact_axis(np.asarray(axis, dtype=dtype))
            coord["attrs"] = {k: a for k, a in coord["attrs"].items() if k not in ("actual_range", "valid_range")}
            d["coord"], d["size"] = coord, int(axis.size)
        out["dims"] = dims
        if meta.get("mask") is not None:
            ilat = np.abs(new_lat[:, None] - lat[None, :]).argmin(axis=1)
            dlon = np.abs(np.mod(new_lon[:, None] - lon[None, :] + 180.0, 360.0) - 180.0)
            out["mask"] = meta["mask"][:, ilat][:, :, dlon.argmin(axis=1)]
        return out

    def held_out_start(self, meta: dict, fraction: float) -> int:
        """Index of the first field of the last `fraction` of the first leading dimension (the
        latest hours, every level of them): what training holds out and benchmarks measure."""
        dims = meta["dims"]
        n = dims[0]["size"] if len(dims) > 2 else 1
        per = math.prod(d["size"] for d in dims[1:-2])
        return (n - max(1, round(n * fraction))) * per

    def fields(self, signal: Signal, start: int, stop: int) -> Signal:
        """Entries start..stop-1 of the first leading dimension (e.g. some hours of a series), as a
        file holding only those would read: its coordinate values cut, its own value range."""
        m = signal.meta
        dims = [dict(d) for d in m["dims"]]
        if len(dims) < 3 or not 0 <= start < stop <= dims[0]["size"]:
            raise InputError("cannot cut these fields out of the series")
        per = math.prod(d["size"] for d in dims[1:-2])
        span = m["high"] - m["low"] if m["high"] > m["low"] else 1.0
        # from the normalised values (the gaps as filled for fitting), as a file of these fields reads
        phys = (signal.values[..., 0].astype(np.float64) * span + m["low"])[start * per : stop * per]
        exact = None if signal.exact is None else signal.exact[start * per : stop * per]
        mask = None if m.get("mask") is None else m["mask"][start * per : stop * per]
        if "coord" in dims[0]:
            coord = dict(dims[0]["coord"])
            coord["axis"] = _compact_axis(_expand_axis(coord["axis"])[start:stop])
            dims[0]["coord"] = coord
        dims[0]["size"] = stop - start
        valid = phys if mask is None else phys[~mask]
        low, high = float(valid.min()), float(valid.max())
        span = high - low if high > low else 1.0
        meta = dict(m, dims=dims, low=low, high=high, mask=mask if mask is not None and mask.any() else None)
        meta.pop("field_ranges", None)  # relative to the old range; `normalise` sets them anew
        return Signal(((phys - low) / span)[..., None].astype(np.float32), meta, exact)

    # --- per-field normalisation -------------------------------------------------------------------

    def normalise(self, signal: Signal, normalisation: str) -> Signal:
        """The signal as a codec normalising per `normalisation` codes it: "file" (the file's range)
        or "field" (each field over its own range, the ranges in the header)."""
        if normalisation == "file":
            return signal
        if normalisation != "field":
            return super().normalise(signal, normalisation)
        values = signal.values[..., 0]
        mask = signal.meta.get("mask")
        ranges = bytearray()
        for k, field_values in enumerate(values):
            valid = field_values if mask is None else field_values[~mask[k]]
            lo, hi = (float(valid.min()), float(valid.max())) if valid.size else (0.0, 1.0)
            # Steps of 1/255 of the file's range, widened outward so every value stays inside
            a = min(254, max(0, math.floor(lo * 255 + 1e-6)))
            b = max(a + 1, min(255, math.ceil(hi * 255 - 1e-6)))
            ranges += bytes((a, b))
        return Signal(signal.values, dict(signal.meta, field_ranges=ranges.hex()), signal.exact)

    @staticmethod
    def _field_ranges(meta: dict) -> tuple[np.ndarray, np.ndarray] | None:
        """(lows, spans) per field on the file's [0, 1] scale, or None for per-file normalisation."""
        hexed = meta.get("field_ranges")
        if hexed is None:
            return None
        ab = np.frombuffer(bytes.fromhex(hexed), np.uint8).reshape(-1, 2).astype(np.float64) / 255
        return ab[:, 0], ab[:, 1] - ab[:, 0]

    def to_network(self, signal: Signal, out_dim: int) -> np.ndarray:
        ranges = self._field_ranges(signal.meta)
        if ranges is None:
            return signal.values
        lows, spans = ranges
        return ((signal.values - lows[:, None, None, None]) / spans[:, None, None, None]).astype(np.float32)

    def from_network(self, values: np.ndarray, meta: dict) -> np.ndarray:
        ranges = self._field_ranges(meta)
        if ranges is None:
            return values
        lows, spans = ranges
        return (values * spans[:, None, None, None] + lows[:, None, None, None]).astype(np.float32)

    def summary(self, meta: dict) -> dict:
        lat, lon = self.lat_lon(meta)
        return {"variable": meta["var"], "units": str(meta["attrs"].get("units", "")),
                "dims": [f"{d['name']}={d['size']}" for d in meta["dims"]],
                "latitudes": f"{lat[0]:g}..{lat[-1]:g} ({lat.size})",
                "longitudes": f"{lon[0]:g}..{lon[-1]:g} ({lon.size})", "value_range": [meta["low"], meta["high"]],
                "missing_values": 0 if meta.get("mask") is None else int(meta["mask"].sum())}

    # --- writing ---------------------------------------------------------------------------------

    def value_grid(self, meta: dict) -> tuple[float, float] | None:
        if np.dtype(meta["dtype"]).kind not in "iu":
            return None
        attrs = {k: _from_json(a) for k, a in meta["attrs"].items()}
        scale, offset = float(attrs.get("scale_factor", 1.0)), float(attrs.get("add_offset", 0.0))
        return (abs(scale), offset) if scale else None

    def stored_dtype(self, meta: dict) -> np.dtype | None:
        return np.dtype(meta["dtype"])

    def missing(self, meta: dict, shape: tuple[int, ...]) -> np.ndarray | None:
        mask = meta.get("mask")
        return None if mask is None else np.asarray(mask, dtype=bool).reshape(*shape, 1)

    def physical(self, signal: Signal) -> np.ma.MaskedArray:
        """Normalised fields -> values in the variable's units, shaped like the variable, masked."""
        m = signal.meta
        values = self.units(signal)[..., 0]
        mask = m.get("mask")
        shape = tuple(d["size"] for d in m["dims"])
        values = values.reshape(shape)
        return np.ma.masked_array(values, mask=None if mask is None else mask.reshape(shape))

    def write(self, signal: Signal, path: Path) -> None:
        nc = _netcdf()
        m = signal.meta
        fmt = m.get("format", "NETCDF4")
        fmt = fmt if fmt in ("NETCDF4", "NETCDF4_CLASSIC", "NETCDF3_CLASSIC", "NETCDF3_64BIT_OFFSET",
                             "NETCDF3_64BIT_DATA") else "NETCDF4"
        compress = fmt.startswith("NETCDF4")
        try:
            ds = nc.Dataset(str(path), "w", format=fmt)
        except (OSError, ValueError) as e:
            raise OutputError(f"{path}: cannot write NetCDF: {e}") from None
        try:
            ds.setncatts({k: _from_json(a) for k, a in m["global"].items()})
            for d in m["dims"]:
                ds.createDimension(d["name"], None if d["unlimited"] else d["size"])
            for d in m["dims"]:
                if "coord" not in d:
                    continue
                axis = _expand_axis(d["coord"]["axis"])
                attrs = {k: _from_json(a) for k, a in d["coord"]["attrs"].items()}
                cv = ds.createVariable(d["name"], axis.dtype, (d["name"],), fill_value=attrs.pop("_FillValue", None))
                cv.set_auto_maskandscale(False)
                cv.setncatts(attrs)
                cv[:] = axis
            attrs = {k: _from_json(a) for k, a in m["attrs"].items()}
            fill = attrs.pop("_FillValue", None)
            dtype = np.dtype(m["dtype"])
            if fill is None and signal.meta.get("mask") is not None and dtype.kind == "f":
                fill = np.array(np.nan, dtype=dtype)[()]
            v = ds.createVariable(m["var"], dtype, tuple(d["name"] for d in m["dims"]), fill_value=fill,
                                  zlib=compress)
            v.setncatts(attrs)
            values = self.physical(signal)
            if dtype.kind in "iu" and "scale_factor" not in attrs and "add_offset" not in attrs:
                info = np.iinfo(dtype)
                values = np.ma.clip(np.ma.round(values), info.min, info.max)
            v[...] = values
        except (OSError, ValueError, TypeError, RuntimeError) as e:
            raise OutputError(f"{path}: cannot write NetCDF: {e}") from None
        finally:
            ds.close()

    # --- measuring -------------------------------------------------------------------------------

    def quality(self, original: Signal, decoded: Signal) -> dict[str, float]:
        """RMSE and maximum error in the variable's units over the valid points; PSNR over the
        file's value range."""
        a, b = self.physical(original), self.physical(decoded)
        valid = ~np.ma.getmaskarray(a)
        err = np.ma.getdata(a)[valid] - np.ma.getdata(b)[valid]
        rmse = float(np.sqrt(np.mean(err**2)))
        span = original.meta["high"] - original.meta["low"]
        psnr = float("inf") if rmse == 0 else 20 * math.log10(max(span, 1e-30) / rmse)
        return {"rmse": rmse, "max_error": float(np.abs(err).max()), "psnr": psnr}

    def describe_quality(self, q: dict[str, float], meta: dict | None = None) -> str:
        units = str((meta or {}).get("attrs", {}).get("units", ""))
        u = f" {units}" if units else ""
        return f"RMSE {q['rmse']:.4g}{u}, max error {q['max_error']:.4g}{u}, PSNR {q['psnr']:.2f} dB"

    def rate(self, nbytes: int, signal_shape: tuple[int, ...], meta: dict | None = None) -> dict[str, float]:
        """Bits per value and the compression ratio against the variable's raw size."""
        values = math.prod(signal_shape)
        itemsize = np.dtype((meta or {}).get("dtype", "<f4")).itemsize
        return {"bits/value": nbytes * 8 / values, "ratio": values * itemsize / nbytes}

    # --- container fields --------------------------------------------------------------------------

    def encode_meta(self, meta: dict) -> bytes:
        doc = {k: meta[k] for k in ("var", "dtype", "attrs", "global", "format", "dims", "low", "high")}
        if meta.get("field_ranges") is not None:
            doc["field_ranges"] = meta["field_ranges"]
        text = _deflate(json.dumps(doc, separators=(",", ":"), allow_nan=False).encode())
        mask = meta.get("mask")
        bits = b"" if mask is None else zlib.compress(np.packbits(mask.reshape(-1)).tobytes(), 9)
        return struct.pack("<II", len(text), len(bits)) + text + bits

    def decode_meta(self, data: bytes, channels: int) -> dict:
        bad = FormatError("corrupted climate fields in the header")
        if len(data) < 8 or channels != 1:
            raise bad
        n_text, n_mask = struct.unpack("<II", data[:8])
        if 8 + n_text + n_mask != len(data):
            raise bad
        try:
            meta = json.loads(_inflate(data[8 : 8 + n_text], MAX_META_BYTES))
            dims = meta["dims"]
            if not all(isinstance(x, dict) and isinstance(x.get("size"), int) for x in dims):
                raise bad
            shape = tuple(x["size"] for x in dims)
            if len(dims) < 2 or min(shape) < 1 or math.prod(shape) > MAX_VALUES:
                raise bad
            for x in dims:
                if "coord" in x and _expand_axis(x["coord"]["axis"]).size != x["size"]:
                    raise bad
            if not all(isinstance(meta[k], float | int) and math.isfinite(meta[k]) for k in ("low", "high")):
                raise bad
            np.dtype(meta["dtype"])
            ranges = self._field_ranges(meta)
            if ranges is not None and (len(ranges[0]) != math.prod(shape[:-2]) or (ranges[1] <= 0).any()):
                raise bad
            meta["mask"] = None
            if n_mask:
                n = math.prod(shape)
                d = zlib.decompressobj()
                raw = d.decompress(data[8 + n_text :], (n + 7) // 8 + 1)
                if len(raw) != (n + 7) // 8 or not d.eof:
                    raise bad
                fields = math.prod(shape[:-2])
                meta["mask"] = np.unpackbits(np.frombuffer(raw, np.uint8))[:n].astype(bool).reshape(
                    fields, shape[-2], shape[-1])
            lat, lon = self.lat_lon(meta)
            if lat is None or lon is None or not (np.all(np.abs(lat) <= 90) and np.all(np.isfinite(lon))):
                raise bad
            for k in ("attrs", "global"):
                if not isinstance(meta[k], dict):
                    raise bad
        except (zlib.error, ValueError, KeyError, TypeError, AttributeError, OverflowError) as e:
            raise FormatError(f"corrupted climate fields in the header ({e.__class__.__name__})") from None
        return meta
