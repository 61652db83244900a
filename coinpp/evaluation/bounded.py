"""Error-bounded and lossless coding, measured: coin's residual layer against the compressors people
who keep climate fields and MRI volumes choose, at the same maximum error.

Every codec gets the signal in its own units (climate: the variable's values; MRI: the voxel values as
stored) and a bound; each row gives the real file size and the largest error measured on the decode,
so a codec that breaks its promise shows it. A bound of 0 is lossless (integer data only).
"""

from __future__ import annotations

import gzip
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..decoder import decode_bytes
from ..encoder import Encoder, encode_each
from ..modalities import Modality, Signal
from ..residual import grid_bound
from .baselines import _module_check


@dataclass(frozen=True)
class Stored:
    """How the file stores its values: integers (a lossless decode exists), their type, the NIfTI header."""

    integer: bool  # every value is offset + quantum * an integer
    dtype: np.dtype
    quantum: float = 1.0
    offset: float = 0.0
    header: bytes = b""

    def codes(self, values: np.ndarray) -> np.ndarray:
        """The integers the file stores for `values`."""
        return np.rint((values - self.offset) / self.quantum).astype(np.int64)

    def values(self, codes: np.ndarray) -> np.ndarray:
        return self.offset + self.quantum * np.asarray(codes, dtype=np.float64)


@dataclass(frozen=True)
class BoundedCodec:
    name: str
    modality: str
    description: str
    # (values in the data's units, the bound, how they are stored) -> bytes; bytes -> values of the same shape
    encode: Callable[[np.ndarray, float, Stored], bytes]
    decode: Callable[[bytes, np.ndarray], np.ndarray]
    check: Callable[[], str | None]
    lossless_only: bool = False
    integer_only: bool = False
    gives_codes: bool = False  # decode gives the stored integers, not values


def _float32(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values[..., 0] if values.shape[-1] == 1 else values, dtype=np.float32)


def _sz3_encode(values: np.ndarray, bound: float, stored: Stored) -> bytes:
    import pysz

    cfg = pysz.szConfig()
    cfg.errorBoundMode = pysz.szErrorBoundMode.ABS
    # integer data: within bound + 1/2 before rounding back to integers is within the bound after
    cfg.absErrorBound = grid_bound(bound, stored.quantum) + 0.49 * stored.quantum if stored.integer else bound
    out, _ = pysz.sz.compress(_float32(values), cfg)
    return out.tobytes()


def _sz3_decode(data: bytes, like: np.ndarray) -> np.ndarray:
    import pysz

    shape = like.shape[:-1] if like.shape[-1] == 1 else like.shape
    out, _ = pysz.sz.decompress(np.frombuffer(data, dtype=np.uint8), np.float32, shape)
    return np.asarray(out, dtype=np.float64).reshape(like.shape)


def _zfp_encode(values: np.ndarray, bound: float, stored: Stored) -> bytes:
    import zfpy

    tolerance = grid_bound(bound, stored.quantum) + 0.49 * stored.quantum if stored.integer else bound
    return zfpy.compress_numpy(_float32(values), tolerance=tolerance)


def _zfp_decode(data: bytes, like: np.ndarray) -> np.ndarray:
    import zfpy

    return np.asarray(zfpy.decompress_numpy(data), dtype=np.float64).reshape(like.shape)


def _as_unsigned(vol: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer voxels as uint16 from their minimum (JPEG-LS takes unsigned samples)."""
    low = int(vol.min())
    return (vol - low).astype(np.uint16), low


def _slices(values: np.ndarray) -> list[np.ndarray]:
    """(X, Y, Z, V) -> the Z*V slices (X, Y) in order."""
    return [values[:, :, z, v] for v in range(values.shape[3]) for z in range(values.shape[2])]


def _pack(parts: list[bytes], head: bytes) -> bytes:
    return head + b"".join(np.uint32(len(p)).tobytes() + p for p in parts)


def _unpack(data: bytes, start: int, n: int) -> list[bytes]:
    pos, out = start, []
    for _ in range(n):
        k = int(np.frombuffer(data[pos : pos + 4], dtype="<u4")[0])
        out.append(data[pos + 4 : pos + 4 + k])
        pos += 4 + k
    return out


def _jpegls_encode(values: np.ndarray, bound: float, stored: Stored) -> bytes:
    import imagecodecs

    vol, low = _as_unsigned(stored.codes(values))
    near = int(math.floor(bound / stored.quantum))
    return _pack([imagecodecs.jpegls_encode(np.ascontiguousarray(s), level=near or None) for s in _slices(vol)],
                 np.int32(low).tobytes())


def _jpegls_decode(data: bytes, like: np.ndarray) -> np.ndarray:
    import imagecodecs

    low = int(np.frombuffer(data[:4], dtype="<i4")[0])
    x, y, z, v = like.shape
    slices = [imagecodecs.jpegls_decode(p) for p in _unpack(data, 4, z * v)]
    return np.stack(slices, -1).reshape(x, y, v, z).transpose(0, 1, 3, 2).astype(np.float64) + low  # codes


def _jpeg2000_lossless_encode(values: np.ndarray, bound: float, stored: Stored) -> bytes:
    import imagecodecs

    vol, low = _as_unsigned(stored.codes(values))
    return _pack([imagecodecs.jpeg2k_encode(np.ascontiguousarray(s), reversible=True) for s in _slices(vol)],
                 np.int32(low).tobytes())


def _jpeg2000_lossless_decode(data: bytes, like: np.ndarray) -> np.ndarray:
    import imagecodecs

    low = int(np.frombuffer(data[:4], dtype="<i4")[0])
    x, y, z, v = like.shape
    slices = [imagecodecs.jpeg2k_decode(p) for p in _unpack(data, 4, z * v)]
    return np.stack(slices, -1).reshape(x, y, v, z).transpose(0, 1, 3, 2).astype(np.float64) + low


def _gzip_nifti_encode(values: np.ndarray, bound: float, stored: Stored) -> bytes:
    """The NIfTI file as stored (its header, the extension flag, the voxels in their type), gzip -9:
    what a .nii.gz holds. One byte before it names the type (counted)."""
    code = next(k for k, t in enumerate(_INTEGER_TYPES) if t == stored.dtype)
    raw = stored.header + b"\0" * 4 + stored.codes(values).astype(stored.dtype).tobytes(order="F")
    return bytes([code]) + gzip.compress(raw, compresslevel=9, mtime=0)


def _gzip_nifti_decode(data: bytes, like: np.ndarray) -> np.ndarray:
    dtype = np.dtype(_INTEGER_TYPES[data[0]])
    raw = gzip.decompress(data[1:])
    voxels = raw[len(raw) - like.size * dtype.itemsize :]
    return np.frombuffer(voxels, dtype=dtype).reshape(like.shape, order="F").astype(np.float64)


_INTEGER_TYPES = tuple(np.dtype(t) for t in ("u1", "<i2", "<u2", "<i4", "<u4", "i1"))


CLIMATE = [
    BoundedCodec("sz3", "climate", "SZ3 (pysz), absolute error bound, the (fields, lat, lon) float32 array",
                 _sz3_encode, _sz3_decode, _module_check("pysz", "pysz")),
    BoundedCodec("zfp", "climate", "ZFP (zfpy), fixed-accuracy mode with the bound as tolerance, float32",
                 _zfp_encode, _zfp_decode, _module_check("zfpy", "zfpy")),
]
MRI = [
    BoundedCodec("gzip-nifti", "mri", "the NIfTI file (header and voxels as stored) gzip -9, as .nii.gz keeps it",
                 _gzip_nifti_encode, _gzip_nifti_decode, lambda: None, lossless_only=True, integer_only=True,
                 gives_codes=True),
    BoundedCodec("jpeg2000-slices", "mri", "JPEG 2000 lossless (OpenJPEG 5/3 via imagecodecs) of every slice "
                 "(third axis), the voxel integers from their minimum", _jpeg2000_lossless_encode,
                 _jpeg2000_lossless_decode, _module_check("imagecodecs", "imagecodecs"), lossless_only=True,
                 integer_only=True, gives_codes=True),
    BoundedCodec("jpegls-slices", "mri", "JPEG-LS (CharLS via imagecodecs) of every slice (third axis), NEAR = "
                 "the bound (lossless at 0)", _jpegls_encode, _jpegls_decode,
                 _module_check("imagecodecs", "imagecodecs"), integer_only=True, gives_codes=True),
    BoundedCodec("sz3", "mri", "SZ3 (pysz), absolute bound (+0.49 for integer voxels, rounded back), 3-D float32",
                 _sz3_encode, _sz3_decode, _module_check("pysz", "pysz")),
]
BY_MODALITY = {"climate": CLIMATE, "mri": MRI}


def measure_baseline(codec: BoundedCodec, values: np.ndarray, bound: float, stored: Stored,
                     mask: np.ndarray | None) -> dict:
    t0 = time.perf_counter()
    data = codec.encode(values, bound, stored)
    t1 = time.perf_counter()
    decoded = codec.decode(data, values)
    t2 = time.perf_counter()
    if codec.gives_codes:
        decoded = stored.values(decoded)
    elif stored.integer:  # snapped to the values the file can store, as coin's decoder does
        decoded = stored.values(stored.codes(decoded))
    return _row(codec.name, values, decoded, mask, len(data), t1 - t0, t2 - t1)


def measure_coin(modality: Modality, signal: Signal, names: list[str], bounds: list[float], device: str,
                 codecs_load: Callable[[str], object]) -> list[dict]:
    """coin with a residual layer at each bound: every rung tried, the smallest file kept (what `coin encode
    --max-error` writes). Each rung's network is fitted and decoded once for all the bounds; a row's encode
    time is the fit and decode of every rung plus the layers at its bound."""
    encoders = [Encoder(codecs_load(n), modality, "default", None, device) for n in names]
    t0 = time.perf_counter()
    networks = [(e, t.encoded) for e, t in zip(encoders, encode_each(signal, encoders), strict=True)]
    predicted = [e.prediction(enc) for e, enc in networks]
    shared_s = time.perf_counter() - t0
    mask = modality.missing(signal.meta, signal.spatial)
    rows = []
    for bound in bounds:
        t1 = time.perf_counter()
        files = []
        for (e, enc), p in zip(networks, predicted, strict=True):
            e.max_error = bound
            files.append(e.with_layer(enc, signal, p))
        best = min(files, key=lambda f: len(f.data))
        t2 = time.perf_counter()
        decoded, _ = decode_bytes(best.data, device=device)
        t3 = time.perf_counter()
        row = _row("coin", signal.exact, modality.units(decoded), mask, len(best.data), shared_s + t2 - t1, t3 - t2)
        rows.append(row | {"rung": best.codec.name, "bound": bound})
    return rows


def _row(name: str, values: np.ndarray, decoded: np.ndarray, mask: np.ndarray | None, nbytes: int,
         enc_s: float, dec_s: float) -> dict:
    valid = np.ones(values.shape, bool) if mask is None else ~mask
    err = np.abs(decoded.reshape(values.shape) - values)[valid]
    return {"codec": name, "bytes": nbytes, "bits_per_value": 8 * nbytes / int(valid.sum()),
            "max_error": float(err.max()), "rmse": float(np.sqrt(np.mean(err**2))),
            "encode_s": round(enc_s, 3), "decode_s": round(dec_s, 3)}


def stored(modality: Modality, signal: Signal) -> Stored:
    """How the signal's file stores its values."""
    grid = modality.value_grid(signal.meta)
    quantum, offset = grid or (1.0, 0.0)
    return Stored(grid is not None, np.dtype(modality.stored_dtype(signal.meta) or "f4"), quantum, offset,
                  signal.meta.get("header", b""))


def figure_rows(rows: list[dict]) -> str:
    """A Markdown table: per file and bound, each codec's size and measured maximum error."""
    out = io.StringIO()
    out.write("| file | bound | codec | bytes | bits/value | max error | RMSE | vs coin |\n")
    out.write("|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        coin = next((c for c in rows if c["codec"] == "coin" and c["file"] == r["file"] and c["bound"] == r["bound"]),
                    None)
        ratio = "" if coin is None or r["codec"] == "coin" else f"{r['bytes'] / coin['bytes']:.2f}x"
        out.write(f"| {r['file']} | {r['bound']:g} | {r['codec']}{' (' + r['rung'] + ')' if 'rung' in r else ''} | "
                  f"{r['bytes']:,} | {r['bits_per_value']:.3f} | {r['max_error']:.4g} | {r['rmse']:.4g} | {ratio} |\n")
    return out.getvalue()
