"""Decoding finer than coded, against ground truth (`coin bench SUITE --upscale F`).

Each test signal is reduced by F (images: Lanczos; speech: resampled by soxr to 16/F kHz; MRI: voxels
F times larger, each the mean of the F^3 it replaces; climate: every F-th grid point), coded with the
suite's default codec, and decoded at the full resolution by coin (its network evaluated on the finer
grid, as `coin decode --scale/--sample-rate/--voxel-size/--lat --lon` does). Against it, the ordinary
decode resized by the resamplers users would reach for. Everything is compared with the real
full-resolution signal.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from .. import codec as codecs
from .. import modalities
from ..bitstream import parse
from ..decoder import Decoder
from ..encoder import Encoder
from ..errors import InputError
from ..modalities import Modality, Resolution, Signal
from ..modalities.image import to_uint8
from .bench import Suite, read_signal


def _scipy():
    """scipy with the resamplers the MRI and climate cases use (checked before any coding starts)."""
    try:
        import scipy.interpolate
        import scipy.ndimage
    except ImportError:
        raise InputError("--upscale needs scipy for the MRI and climate resamplers (pip install scipy)") from None
    return scipy


@dataclass
class Case:
    """One test signal at reduced resolution, what coin is asked for, and the truth to compare with."""

    low: Signal
    resolution: Resolution
    truth: np.ndarray  # full resolution, in the unit the measures use (below)
    # name -> the ordinary decode (a Signal) resized to the truth's grid
    resamplers: dict[str, Callable[[Signal], np.ndarray]]
    peak: float  # PSNR's peak (images 255, others the truth's range)
    valid: np.ndarray | None = None  # climate: the points that are not missing


# --- the reduced signals and their resamplers --------------------------------------------------------

def image_cases(m: Modality, signal: Signal, scales: list[float], tmp: Path) -> list[Case]:
    from PIL import Image

    full = Image.fromarray(to_uint8(signal.values))
    w, h = full.size
    small = full.resize((round(w / 2), round(h / 2)), Image.LANCZOS)  # every scale decodes the halved image
    path = tmp / "small.png"
    small.save(path)
    low = m.read(path)
    cases = []
    for s in scales:
        size = (max(1, round(small.width * s)), max(1, round(small.height * s)))
        truth = full if size == full.size else full.resize(size, Image.LANCZOS)

        cases.append(Case(low, Resolution(scale=s), np.asarray(truth).astype(np.float64),
                          {"bicubic": partial(_resize_image, size=size, how=Image.BICUBIC),
                           "lanczos": partial(_resize_image, size=size, how=Image.LANCZOS)}, 255.0))
    return cases


def _resize_image(decoded: Signal, size: tuple[int, int], how: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(to_uint8(decoded.values)).resize(size, how))


def audio_cases(m: Modality, signal: Signal, scales: list[float], tmp: Path) -> list[Case]:
    import soundfile as sf

    soxr = _soxr()
    rate = signal.meta["sample_rate"]
    wave = signal.values.astype(np.float64) * 2 - 1
    cases = []
    for s in scales:
        low_rate = rate / s
        if low_rate != int(low_rate):
            raise InputError(f"--upscale {s:g}: {rate} Hz audio needs a factor that divides it")
        path = tmp / f"low-{int(low_rate)}.wav"
        sf.write(path, soxr.resample(wave, rate, int(low_rate), quality="VHQ"), int(low_rate), subtype="PCM_16")

        cases.append(Case(m.read(path), Resolution(sample_rate=rate), wave,
                          {"soxr-vhq": partial(_resample_audio, rates=(int(low_rate), rate))}, 2.0))
    return cases


def _resample_audio(decoded: Signal, rates: tuple[int, int]) -> np.ndarray:
    return _soxr().resample(decoded.values.astype(np.float64) * 2 - 1, *rates, quality="VHQ")


def _soxr():
    try:
        import soxr
    except ImportError:
        raise InputError("--upscale on audio needs soxr, the resampler audio tools use (pip install soxr)") from None
    return soxr


def mri_cases(m: Modality, signal: Signal, scales: list[float], tmp: Path) -> list[Case]:
    import nibabel as nib

    cases = []
    for s in scales:
        f = int(s)
        if f != s or f < 2:
            raise InputError("--upscale for MRI takes whole factors (2: voxels twice as large)")
        truth = signal.exact[..., 0]
        even = tuple(n - n % f for n in truth.shape)
        truth = truth[: even[0], : even[1], : even[2]]
        blocks = truth.reshape(even[0] // f, f, even[1] // f, f, even[2] // f, f).mean(axis=(1, 3, 5))
        header = m.header(signal.meta)
        zooms = tuple(float(z) for z in header.get_zooms()[:3])
        affine = header.get_best_affine() @ np.diag([f, f, f, 1.0])
        affine[:3, 3] = header.get_best_affine()[:3, :3] @ np.full(3, (f - 1) / 2) + header.get_best_affine()[:3, 3]
        path = tmp / "low.nii.gz"
        nib.save(nib.Nifti1Image(blocks.astype(np.float32), affine), str(path))
        low = m.read(path)
        span = float(signal.meta["high"] - signal.meta["low"]) or 1.0
        cases.append(Case(low, Resolution(voxel_size=zooms), truth,
                          {"trilinear": partial(_zoom_volume, m, shape=truth.shape, order=1),
                           "cubic-spline": partial(_zoom_volume, m, shape=truth.shape, order=3)}, span))
    return cases


def _zoom_volume(m: Modality, decoded: Signal, shape: tuple[int, ...], order: int) -> np.ndarray:
    """scipy's spline resampling of a decoded volume onto `shape` voxels over the same field of view."""
    v = m.units(decoded)[..., 0]
    return _scipy().ndimage.zoom(v, [t / n for t, n in zip(shape, v.shape, strict=True)], order=order,
                                 mode="nearest", grid_mode=True)


def climate_cases(m: Modality, signal: Signal, scales: list[float], tmp: Path) -> list[Case]:
    _scipy()
    lat, lon = m.lat_lon(signal.meta)
    cases = []
    for s in scales:
        f = int(s)
        if f != s or f < 2:
            raise InputError("--upscale for climate takes whole factors (2: every second grid point)")
        meta = m.regridded(signal.meta, lat[::f], lon[::f])
        low = Signal(np.ascontiguousarray(signal.values[:, ::f, ::f]), meta,
                     None if signal.exact is None else np.ascontiguousarray(signal.exact[:, ::f, ::f]))
        mask = m.missing(signal.meta, signal.spatial)
        valid = np.ones(signal.values.shape[:-1], bool) if mask is None else ~mask[..., 0]
        truth = m.units(signal)[..., 0]

        span = float(signal.meta["high"] - signal.meta["low"]) or 1.0
        cases.append(Case(low, Resolution(lat=(float(lat[0]), float(lat[-1]), lat.size),
                                          lon=(float(lon[0]), float(lon[-1]), lon.size)),
                          truth, {"bilinear": partial(_interpolate_fields, m, lat=lat, lon=lon, method="linear"),
                                  "bicubic": partial(_interpolate_fields, m, lat=lat, lon=lon, method="cubic")},
                          span, valid))
    return cases


def _interpolate_fields(m: Modality, decoded: Signal, lat: np.ndarray, lon: np.ndarray, method: str) -> np.ndarray:
    """scipy's interpolation of each decoded field onto the `lat` x `lon` grid (beyond the coarse grid's
    last row or column: extrapolated)."""
    la, lo = m.lat_lon(decoded.meta)
    v = m.units(decoded)[..., 0]
    ia, io = np.argsort(la), np.argsort(lo)
    points = np.stack(np.meshgrid(lat, lon, indexing="ij"), -1).reshape(-1, 2)
    grid = _scipy().interpolate.RegularGridInterpolator
    out = [grid((la[ia], lo[io]), field[ia][:, io], method=method, bounds_error=False, fill_value=None)(points)
           for field in v]
    return np.stack(out).reshape(len(v), lat.size, lon.size)


CASES = {"image": image_cases, "audio": audio_cases, "mri": mri_cases, "climate": climate_cases}


# --- measuring -----------------------------------------------------------------------------------------

def _as_truth(m: Modality, decoded: Signal) -> np.ndarray:
    """A decode in the truth's unit: 8-bit RGB, waveform in [-1, 1], intensities, kelvin."""
    if m.name == "image":
        return to_uint8(decoded.values).astype(np.float64)
    if m.name == "audio":
        return decoded.values.astype(np.float64) * 2 - 1
    return m.units(decoded)[..., 0]


def measure(case: Case, approx: np.ndarray) -> dict:
    """PSNR over the case's peak, RMSE and largest error (valid points), in the truth's unit."""
    truth = case.truth
    if approx.shape[0] != truth.shape[0] and truth.ndim <= 2:  # audio: the resampler's length may differ by one
        n = min(len(approx), len(truth))
        approx, truth = approx[:n], truth[:n]
    if approx.shape != truth.shape:
        raise InputError(f"a resampled decode of shape {approx.shape} does not match the truth's {truth.shape}")
    err = (approx - truth)[case.valid] if case.valid is not None else approx - truth
    rmse = float(np.sqrt(np.mean(err**2)))
    return {"psnr": float("inf") if rmse == 0 else 20 * math.log10(case.peak / rmse), "rmse": rmse,
            "max_error": float(np.abs(err).max())}


def measure_file(suite: Suite, path: Path, scales: list[float], codec_name: str | None = None,
                 device: str = "auto") -> tuple[list[dict], dict[float, dict[str, np.ndarray]]]:
    """Rows for one file (per scale: coin's finer decode and each resampler of its ordinary decode),
    and the outputs themselves per scale (for crops)."""
    m = modalities.get(suite.modality)
    signal = read_signal(m, path, suite)
    codec = codecs.load(codec_name or codecs.default_for(m.name))
    rows, outputs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        cases = CASES[m.name](m, signal, scales, Path(tmp))
    encoded: dict[int, bytes] = {}
    decoder = Decoder(device)
    for s, case in zip(scales, cases, strict=True):
        key = id(case.low)
        if key not in encoded:
            encoded[key] = Encoder(codec, m, device=device).encode(case.low).data
        p = parse(encoded[key])
        t0 = time.perf_counter()
        native = decoder.decode(p)
        t_native = time.perf_counter() - t0
        t0 = time.perf_counter()
        finer = decoder.decode(p, m.target(p.meta, p.file.shape, case.resolution))
        t_finer = time.perf_counter() - t0
        base = {"file": path.name, "scale": s, "codec": codec.name, "bytes": len(encoded[key])}
        outputs[s] = {"truth": case.truth, "coin": _as_truth(m, finer)}
        rows.append(base | {"method": "coin"} | measure(case, outputs[s]["coin"]) | {"decode_s": round(t_finer, 3)})
        for name, resample in case.resamplers.items():
            t0 = time.perf_counter()
            out = np.asarray(resample(native), dtype=np.float64)
            if m.name == "image":
                out = np.clip(np.rint(out), 0, 255)
            outputs[s][name] = out
            rows.append(base | {"method": name} | measure(case, out) |
                        {"decode_s": round(t_native + time.perf_counter() - t0, 3)})
    return rows, outputs


def summary_table(rows: list[dict]) -> str:
    """Markdown: mean PSNR per scale and method, and coin against the best resampler."""
    lines = ["| scale | method | files | PSNR (dB) | RMSE | max error | coin − this (dB) |",
             "|---|---|---|---|---|---|---|"]
    for s in sorted({r["scale"] for r in rows}):
        at = [r for r in rows if r["scale"] == s]
        means = {}
        for method in dict.fromkeys(r["method"] for r in at):
            rs = [r for r in at if r["method"] == method]
            means[method] = (float(np.mean([r["psnr"] for r in rs])), float(np.mean([r["rmse"] for r in rs])),
                             float(np.mean([r["max_error"] for r in rs])), len(rs))
        for method, (p, e, mx, n) in means.items():
            diff = "" if method == "coin" else f"{means['coin'][0] - p:+.2f}"
            lines.append(f"| {s:g}× | {method} | {n} | {p:.2f} | {e:.4g} | {mx:.4g} | {diff} |")
    return "\n".join(lines) + "\n"


def crop_strip(outputs: dict[str, np.ndarray], size: int = 128) -> np.ndarray:
    """Image crops side by side (truth, coin, each resampler), from the most detailed window."""
    truth = outputs["truth"]
    h, w = truth.shape[:2]
    size = min(size, h, w)
    gray = truth.mean(axis=-1)
    best, at = -1.0, (0, 0)
    for y in range(0, h - size + 1, size // 2):
        for x in range(0, w - size + 1, size // 2):
            detail = float(np.abs(np.diff(gray[y : y + size, x : x + size], axis=1)).mean())
            if detail > best:
                best, at = detail, (y, x)
    y, x = at
    gap = np.full((size, 4, 3), 255.0)
    parts = []
    for out in outputs.values():
        parts += [out[y : y + size, x : x + size], gap]
    return np.concatenate(parts[:-1], axis=1).astype(np.uint8)
