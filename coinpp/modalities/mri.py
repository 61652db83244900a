"""MRI: NIfTI-1/2 volumes (.nii, .nii.gz) through nibabel, with their geometry kept.

A 3-D volume is one channel; a 4-D series (fMRI, multi-echo, ...) is coded volume by volume as
channel groups of a one-channel codec (a latent per patch and volume). Intensities are
normalised to [0, 1] between the minimum and a robust maximum (the 99.99th percentile, as in
COIN++); values above it are clipped, and the clipped fraction is reported.

The container keeps the whole NIfTI header (compressed): shape, sform and qform with their
codes, voxel sizes and units, data type, scaling slope/intercept, description and intent, so the
decoded file overlays the original in a viewer. A decode on another grid (`--scale`,
`--voxel-size`) writes the affine of that grid: the same field of view at the new voxel size.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import FormatError, InputError, OutputError
from .base import Modality, Placement, Resolution, Signal, Target, first_line, psnr

MAX_VOXELS = 1 << 28
MAX_VOLUMES = 256
ROBUST_PERCENTILE = 99.99
HEADER_VERSIONS = {1: 348, 2: 540}  # NIfTI-1 / NIfTI-2 header sizes


def _nibabel():
    import nibabel

    return nibabel


class MRIModality(Modality):
    name = "mri"
    code = 4
    extensions = (".nii.gz", ".nii")
    spatial_dims = 3
    network_channels = 1
    resolution_options = ("--voxel-size",)

    def own_target(self, meta: dict, shape: tuple[int, ...], r: Resolution) -> Target | None:
        if r.voxel_size is None:
            return None
        out, placement = self.voxel_grid(meta, shape, r.voxel_size)
        return Target(shape=out, placement=placement)

    def size_order(self, size: tuple[int, ...]) -> tuple[int, ...]:
        return size  # volumes: X x Y x Z is already array order

    def describe_shape(self, signal: Signal) -> str:
        zooms = "x".join(f"{z:.3g}" for z in self.voxel_size(signal.meta))
        return f"{'x'.join(map(str, signal.spatial))} voxels of {zooms} mm"

    def read(self, path: Path) -> Signal:
        nib = _nibabel()
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        try:
            img = nib.load(str(path))
        except Exception as e:  # nibabel raises many kinds (ImageFileError, ValueError, EOFError, gzip errors)
            raise InputError(f"{path}: not a readable NIfTI file ({first_line(e)})") from None
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise InputError(f"{path}: not a NIfTI-1/2 image ({type(img).__name__})")
        shape = tuple(int(s) for s in img.shape)
        if len(shape) == 5 and shape[3] == 1:  # NIfTI's (x, y, z, 1, n): a series stored in the 5th axis
            shape = shape[:3] + shape[4:]
        if len(shape) not in (3, 4):
            raise InputError(f"{path}: {len(shape)}-D data; coin codes 3-D volumes and 4-D series")
        if min(shape) < 1 or math.prod(shape) > MAX_VOXELS:
            raise InputError(f"{path}: {'x'.join(map(str, shape))} voxels is empty or larger than coin handles")
        if len(shape) == 4 and shape[3] > MAX_VOLUMES:
            raise InputError(f"{path}: {shape[3]} volumes (coin codes series of up to {MAX_VOLUMES})")
        try:
            data = np.asarray(img.dataobj, dtype=np.float64).reshape(shape)
        except Exception as e:
            raise InputError(f"{path}: cannot read the voxels ({first_line(e)})") from None
        if not np.all(np.isfinite(data)):
            raise InputError(f"{path}: the volume contains NaN or infinite values")
        low = float(data.min())
        high = float(np.percentile(data, ROBUST_PERCENTILE))
        if high <= low:  # e.g. mostly-constant volumes: fall back to the true maximum
            high = float(data.max())
        span = high - low if high > low else 1.0
        clipped = float(np.mean(data > high))
        values = np.clip((data - low) / span, 0.0, 1.0)
        if values.ndim == 3:
            values = values[..., None]
        version = 2 if isinstance(img, nib.Nifti2Image) else 1
        header = img.header.copy()
        slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
        if (slope, inter) != (1.0, 0.0):  # nibabel moved the file's scaling into dataobj: keep it in the header
            header.set_slope_inter(slope, inter)
        meta = {"header": bytes(header.binaryblock), "version": version, "low": low, "high": high,
                "clipped": clipped, "volumes": values.shape[-1]}
        exact = data if data.ndim == 4 else data[..., None]
        return Signal(values.astype(np.float32), meta, exact)

    def to_network(self, signal: Signal, out_dim: int) -> np.ndarray:
        if out_dim != 1:
            raise InputError(f"cannot code MRI with a {out_dim}-channel codec")
        return signal.values

    def coded_channels(self, channels: int, out_dim: int) -> int:
        return channels

    # --- geometry --------------------------------------------------------------------------------

    def header(self, meta: dict):
        nib = _nibabel()
        cls = nib.Nifti2Header if meta["version"] == 2 else nib.Nifti1Header
        return cls(binaryblock=meta["header"], check=False)

    def voxel_size(self, meta: dict) -> tuple[float, float, float]:
        return tuple(float(z) for z in self.header(meta).get_zooms()[:3])

    def voxel_grid(self, meta: dict, shape: tuple[int, ...], size: tuple[float, ...]
                   ) -> tuple[tuple[int, ...], Placement]:
        """Voxels of exactly `size` mm on a grid centred on the original field of view, as many per axis
        as come nearest to covering it: (shape, placement in input voxels)."""
        if len(size) != 3 or not all(math.isfinite(s) and s > 0 for s in size):
            raise InputError("--voxel-size needs three positive sizes, e.g. 1,1,1")
        out, placement = [], []
        for n, z, s in zip(shape, self.voxel_size(meta), size, strict=True):
            m, step = max(1, round(n * z / s)), s / z
            out.append(m)
            placement.append((n / 2 - (m - 1) * step / 2, step))
        return tuple(out), tuple(placement)

    def coarser(self, signal: Signal, f: int) -> Signal:
        """The volume with voxels f times larger per axis, each the mean of the f^3 it replaces (each axis
        cut to a multiple of f first); the intensity range and so the network's scale stay the source's."""
        even = tuple(max(f, n - n % f) for n in signal.spatial)

        def blocks(v: np.ndarray) -> np.ndarray:
            v = np.pad(v, [(0, max(0, e - n)) for e, n in zip(even, v.shape, strict=False)] + [(0, 0)], mode="edge")
            v = v[: even[0], : even[1], : even[2]]
            return v.reshape(even[0] // f, f, even[1] // f, f, even[2] // f, f, -1).mean(axis=(1, 3, 5))

        out = tuple(e // f for e in even)
        return Signal(blocks(signal.values).astype(np.float32), self.resampled(signal.meta, even, out),
                      None if signal.exact is None else blocks(signal.exact))

    def resampled(self, meta: dict, shape: tuple[int, ...], out_shape: tuple[int, ...],
                  placement: Placement | None = None) -> dict:
        """The header of the volume sampled on `out_shape` (at `placement`, default spanning the same
        field of view): voxel sizes and both affines set so that output voxel centres land where the
        decoder evaluated them."""
        if tuple(out_shape) == tuple(shape) and placement is None:
            return dict(meta)
        h = self.header(meta).copy()
        if placement is None:
            f = np.array([n / m for n, m in zip(shape, out_shape, strict=True)], dtype=np.float64)
            offset = 0.5 * f - 0.5  # output voxel i sits at input index (i + 0.5) * f - 0.5 (pixel centres)
        else:
            f = np.array([step for _, step in placement], dtype=np.float64)
            offset = np.array([first for first, _ in placement], dtype=np.float64) - 0.5
        to_old = np.eye(4)
        to_old[:3, :3] = np.diag(f)
        to_old[:3, 3] = offset
        sform, scode = h.get_sform(coded=True)
        qform, qcode = h.get_qform(coded=True)
        zooms = list(h.get_zooms())
        zooms[:3] = [z * k for z, k in zip(zooms[:3], f, strict=True)]
        h.set_data_shape((*out_shape, *h.get_data_shape()[3:]))
        h.set_zooms(zooms)
        if qform is not None:
            h.set_qform(qform @ to_old, int(qcode))
        if sform is not None:
            h.set_sform(sform @ to_old, int(scode))
        return dict(meta, header=bytes(h.binaryblock))

    def summary(self, meta: dict) -> dict:
        h = self.header(meta)
        return {"voxel_size_mm": [round(float(z), 6) for z in h.get_zooms()[:3]], "volumes": meta["volumes"],
                "dtype": str(h.get_data_dtype()), "sform_code": int(h["sform_code"]),
                "qform_code": int(h["qform_code"]), "intensity_range": [meta["low"], meta["high"]]}

    # --- writing ---------------------------------------------------------------------------------

    def physical(self, signal: Signal) -> np.ndarray:
        data = self.units(signal)
        return data[..., 0] if data.shape[-1] == 1 else data

    def value_grid(self, meta: dict) -> tuple[float, float] | None:
        h = self.header(meta)
        if h.get_data_dtype().kind not in "iu":
            return None
        slope, inter = h.get_slope_inter()
        return abs(slope or 1.0), inter or 0.0

    def stored_dtype(self, meta: dict) -> np.dtype | None:
        return np.dtype(self.header(meta).get_data_dtype())

    def plane_axis(self, meta: dict) -> int:
        """The axis of the thickest voxels: the slices as acquired (an axial series' z) are the planes."""
        return int(np.argmax(self.voxel_size(meta)))

    def write(self, signal: Signal, path: Path) -> None:
        nib = _nibabel()
        name = Path(path).name.lower()
        if not name.endswith(self.extensions):
            raise OutputError(f"{path}: NIfTI output needs a .nii or .nii.gz name")
        h = self.header(signal.meta).copy()
        data = self.physical(signal)
        dtype = h.get_data_dtype()
        scaling = None
        if dtype.kind in "iu":  # store integers as the original did: with its scaling, if it had one
            slope, inter = h.get_slope_inter()
            scaling = (slope or 1.0, inter or 0.0)
            info = np.iinfo(dtype)
            codes = np.rint((data - scaling[1]) / scaling[0])
            h.set_slope_inter(np.nan, np.nan)
            if scaling == (1.0, 0.0) and (codes.min() < info.min or codes.max() > info.max):
                # a file written before the scaling was kept: nibabel picks one that fits the values
                scaling = None
            else:
                data = np.clip(codes, info.min, info.max).astype(dtype)
        h.set_data_shape(data.shape)
        cls = nib.Nifti2Image if signal.meta["version"] == 2 else nib.Nifti1Image
        img = cls(data, None, header=h)
        if scaling is not None and scaling != (1.0, 0.0):  # set after creation, or nibabel rescales the integers
            img.header.set_slope_inter(*scaling)
        # nibabel takes the affines from the header when none is given; keep both codes as stored.
        img.set_sform(*h.get_sform(coded=True))
        img.set_qform(*h.get_qform(coded=True))
        try:
            # A temporary name ending in .tmp would make nibabel refuse it: write through a file object.
            gz = name.endswith(".gz")
            with open(path, "wb") as f:
                if gz:
                    import gzip

                    with gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as z:
                        z.write(img.to_bytes())
                else:
                    f.write(img.to_bytes())
        except (OSError, ValueError) as e:
            raise OutputError(f"{path}: cannot write NIfTI: {e}") from None

    # --- measuring -------------------------------------------------------------------------------

    def quality(self, original: Signal, decoded: Signal) -> dict[str, float]:
        """PSNR over the whole volume on intensities normalised to [0, 1] (the published measure); with
        a residual layer, on the bounded intensities, with their largest error (in intensity units)."""
        if decoded.exact is None or original.exact is None:
            return {"psnr": psnr(original.values, decoded.values)}
        m = original.meta
        span = m["high"] - m["low"] if m["high"] > m["low"] else 1.0
        err = np.abs(self.units(original) - self.units(decoded))
        mse = float(np.mean((err / span) ** 2))
        return {"psnr": float("inf") if mse == 0 else -10 * math.log10(mse), "max_error": float(err.max())}

    def describe_quality(self, q: dict[str, float], meta: dict | None = None) -> str:
        if q.get("max_error") == 0:
            return "lossless"
        text = f"PSNR {q['psnr']:.2f} dB" + (f", max error {q['max_error']:.4g}" if "max_error" in q else "")
        if meta and meta.get("clipped", 0) > 0:
            text += f" ({100 * meta['clipped']:.3f} % of voxels clipped at the {ROBUST_PERCENTILE}th percentile)"
        return text

    def rate(self, nbytes: int, signal_shape: tuple[int, ...], meta: dict | None = None) -> dict[str, float]:
        volumes = (meta or {}).get("volumes", 1)
        return {"bpp": nbytes * 8 / (math.prod(signal_shape) * volumes)}

    # --- container fields --------------------------------------------------------------------------

    def encode_meta(self, meta: dict) -> bytes:
        """u8 header version, f64 low, f64 high, then the zlib-compressed NIfTI header."""
        return struct.pack("<Bdd", meta["version"], meta["low"], meta["high"]) + zlib.compress(meta["header"], 9)

    def decode_meta(self, data: bytes, channels: int) -> dict:
        bad = FormatError("corrupted MRI fields in the header")
        if len(data) < 17:
            raise bad
        version, low, high = struct.unpack("<Bdd", data[:17])
        if version not in HEADER_VERSIONS or not (math.isfinite(low) and math.isfinite(high)):
            raise bad
        try:
            d = zlib.decompressobj()
            header = d.decompress(data[17:], HEADER_VERSIONS[version] + 1)
        except zlib.error:
            raise bad from None
        if len(header) != HEADER_VERSIONS[version] or not d.eof or d.unconsumed_tail:
            raise bad
        meta = {"header": header, "version": version, "low": low, "high": high, "clipped": 0.0,
                "volumes": channels}
        try:
            h = self.header(meta)
            h.get_zooms()
            h.get_sform(coded=True)
            h.get_qform(coded=True)
            h.get_data_dtype()
        except Exception:  # nibabel validates lazily and raises several kinds
            raise bad from None
        return meta

    def consistent(self, meta: dict, shape: tuple[int, ...]) -> bool:
        try:
            stored = tuple(int(s) for s in self.header(meta).get_data_shape())
        except Exception:
            return False
        if len(stored) == 5 and stored[3] == 1:
            stored = stored[:3] + stored[4:]
        return stored[:3] == tuple(shape) and (stored[3] if len(stored) > 3 else 1) == meta["volumes"]
