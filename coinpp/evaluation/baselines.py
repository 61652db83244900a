"""The codecs users already know, as benchmark baselines: encode to real bytes, decode, per setting.

Registered by modality, so other modalities add theirs here. A baseline whose library is missing
reports why and is skipped by the benchmark with a warning.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, features


@dataclass(frozen=True)
class Baseline:
    name: str
    modality: str
    description: str
    settings: tuple[float, ...]
    # image: (H, W, C) uint8 <-> bytes; audio: ((T, C) float64 in [-1, 1], sample rate) -> bytes -> (T', C)
    encode: Callable[[object, float], bytes]
    decode: Callable[[bytes], np.ndarray]
    check: Callable[[], str | None]  # None when available, else why not
    label: Callable[[float], str] = lambda s: f"{s:g}"


def _pil(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)


def _pil_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im.convert("RGB") if im.mode not in ("RGB", "L") else im)
    return arr[:, :, None] if arr.ndim == 2 else arr


def _pil_encode(fmt: str, **fixed) -> Callable[[np.ndarray, float], bytes]:
    def enc(arr: np.ndarray, setting: float, _param: str = "quality") -> bytes:
        buf = io.BytesIO()
        _pil(arr).save(buf, format=fmt, **{_param: int(setting)}, **fixed)
        return buf.getvalue()

    return enc


def _jpeg2000_encode(arr: np.ndarray, bpp: float) -> bytes:
    # Irreversible 9/7 wavelet with the colour transform: Pillow's defaults (5/3, no MCT) are far weaker.
    buf = io.BytesIO()
    bits = 8 * arr.shape[2]
    _pil(arr).save(buf, format="JPEG2000", irreversible=True, mct=1 if arr.shape[2] == 3 else 0,
                   quality_mode="rates", quality_layers=[bits / bpp])
    return buf.getvalue()


def _feature(name: str) -> Callable[[], str | None]:
    return lambda: None if features.check(name) else f"Pillow was built without {name}"


def _heif_check() -> str | None:
    try:
        import pillow_heif
    except ImportError:
        return "pillow-heif is not installed (pip install pillow-heif)"
    pillow_heif.register_heif_opener()
    return None


def _heif_encode(arr: np.ndarray, quality: float) -> bytes:
    buf = io.BytesIO()
    _pil(arr).save(buf, format="HEIF", quality=int(quality), chroma=444)
    return buf.getvalue()


def _jxl_check() -> str | None:
    try:
        import imagecodecs
    except ImportError:
        return "imagecodecs is not installed (pip install imagecodecs)"
    return None if getattr(imagecodecs, "JPEGXL", None) and imagecodecs.JPEGXL.available else \
        "imagecodecs was built without JPEG XL"


def _jxl_encode(arr: np.ndarray, distance: float) -> bytes:
    import imagecodecs

    return bytes(imagecodecs.jpegxl_encode(arr if arr.shape[2] == 3 else arr[:, :, 0], distance=distance))


def _jxl_decode(data: bytes) -> np.ndarray:
    import imagecodecs

    arr = np.asarray(imagecodecs.jpegxl_decode(data))
    return arr[:, :, None] if arr.ndim == 2 else arr


IMAGE_BASELINES = [
    Baseline("jpeg", "image", "JPEG (Pillow/libjpeg, 4:2:0), quality sweep",
             (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30, 50, 75), _pil_encode("JPEG"), _pil_decode,
             _feature("jpg"), lambda s: f"q{s:g}"),
    Baseline("jpeg2000", "image", "JPEG 2000 (Pillow/OpenJPEG, irreversible 9/7 + colour transform), rate sweep",
             (0.02, 0.03, 0.04, 0.06, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.2), _jpeg2000_encode, _pil_decode,
             _feature("jpg_2000"), lambda s: f"{s:g}bpp"),
    Baseline("webp", "image", "WebP (Pillow/libwebp, method 6), quality sweep",
             (0, 5, 10, 20, 30, 50, 70, 90), _pil_encode("WEBP", method=6), _pil_decode,
             _feature("webp"), lambda s: f"q{s:g}"),
    Baseline("avif", "image", "AVIF (Pillow/libavif, 4:2:0), quality sweep",
             (5, 10, 20, 30, 40, 50, 65, 80), _pil_encode("AVIF"), _pil_decode, _feature("avif"),
             lambda s: f"q{s:g}"),
    Baseline("hevc-444", "image",
             "HEVC intra 4:4:4 (pillow-heif/libheif+x265), standing in for BPG, which has no package here",
             (1, 5, 10, 20, 30, 45, 60, 75), _heif_encode, _pil_decode, _heif_check, lambda s: f"q{s:g}"),
    Baseline("jpegxl", "image", "JPEG XL (imagecodecs/libjxl), distance sweep",
             (25, 18, 12, 8, 5, 3, 2, 1), _jxl_encode, _jxl_decode, _jxl_check, lambda s: f"d{s:g}"),
]



def _soundfile_check() -> str | None:
    try:
        import soundfile as sf
    except ImportError:
        return "soundfile is not installed"
    have = sf.available_formats()
    return None if "MP3" in have and "OGG" in have else f"libsndfile {sf.__libsndfile_version__} lacks MP3/Opus"


def _soundfile_encode(fmt: str, subtype: str, **fixed) -> Callable[[object, float], bytes]:
    """libsndfile's encoders (LAME for MP3, libopus); the setting is its compression level in
    [0, 1) (1 is refused), which maps to the bitrate; the rate is measured from the bytes."""

    def enc(native: object, level: float) -> bytes:
        import soundfile as sf

        wave, rate = native
        buf = io.BytesIO()
        sf.write(buf, wave, rate, format=fmt, subtype=subtype, compression_level=level, **fixed)
        return buf.getvalue()

    return enc


def _soundfile_decode(data: bytes) -> np.ndarray:
    import soundfile as sf

    wave, _ = sf.read(io.BytesIO(data), dtype="float64", always_2d=True)
    return wave


# libsndfile maps the level to a bitrate; for MP3 at 16 kHz these give CBR 8, 16, 24, 32, 40, 56 kbps
MP3_LEVELS = (0.99, 0.96, 0.9, 0.85, 0.8, 0.7)
OPUS_LEVELS = (0.99, 0.98, 0.97, 0.96, 0.95, 0.93, 0.9, 0.85, 0.8)
AUDIO_BASELINES = [
    Baseline("mp3", "audio", "MP3 (libsndfile/LAME, constant bitrate), compression-level sweep; encoder delay "
             "trimmed by cross-correlation", MP3_LEVELS,
             _soundfile_encode("MP3", "MPEG_LAYER_III", bitrate_mode="CONSTANT"), _soundfile_decode,
             _soundfile_check, lambda s: f"c{s:g}"),
    Baseline("opus", "audio", "Opus in Ogg (libsndfile/libopus), compression-level sweep", OPUS_LEVELS,
             _soundfile_encode("OGG", "OPUS"), _soundfile_decode, _soundfile_check, lambda s: f"c{s:g}"),
]



# Climate: native data is the (fields, lat, lon) float32 array in the variable's units.
def _module_check(module: str, package: str) -> Callable[[], str | None]:
    def check() -> str | None:
        try:
            __import__(module)
        except ImportError:
            return f"{package} is not installed (pip install {package})"
        return None

    return check


def _shape_header(arr: np.ndarray) -> bytes:
    """Decoders of raw float streams need the array's shape: 3 x u32, counted in the rate."""
    return np.asarray(arr.shape, dtype="<u4").tobytes()


def _zfp_encode(arr: np.ndarray, tolerance: float) -> bytes:
    import zfpy

    return zfpy.compress_numpy(np.ascontiguousarray(arr, dtype=np.float32), tolerance=tolerance)  # has its header


def _zfp_decode(data: bytes) -> np.ndarray:
    import zfpy

    return zfpy.decompress_numpy(data)


def _sz3_encode(arr: np.ndarray, bound: float) -> bytes:
    import pysz

    cfg = pysz.szConfig()
    cfg.errorBoundMode = pysz.szErrorBoundMode.ABS
    cfg.absErrorBound = bound
    out, _ = pysz.sz.compress(np.ascontiguousarray(arr, dtype=np.float32), cfg)
    return _shape_header(arr) + out.tobytes()


def _sz3_decode(data: bytes) -> np.ndarray:
    import pysz

    shape = tuple(int(v) for v in np.frombuffer(data[:12], dtype="<u4"))
    out, _ = pysz.sz.decompress(np.frombuffer(data[12:], dtype=np.uint8), np.float32, shape)
    return out


def _map_jpeg2000_encode(arr: np.ndarray, bpp: float) -> bytes:
    """Each field as an 8-bit map over the array's range (as published for ERA5), JPEG 2000 per map."""
    low, high = float(arr.min()), float(arr.max())
    maps = np.round((arr - low) / max(high - low, 1e-30) * 255).astype(np.uint8)
    out = [_shape_header(arr), np.array([low, high], dtype="<f4").tobytes()]
    for m in maps:
        buf = io.BytesIO()
        Image.fromarray(m).save(buf, format="JPEG2000", irreversible=True, quality_mode="rates",
                                quality_layers=[8 / bpp])
        out += [np.uint32(len(buf.getvalue())).tobytes(), buf.getvalue()]
    return b"".join(out)


def _map_jpeg2000_decode(data: bytes) -> np.ndarray:
    shape = tuple(int(v) for v in np.frombuffer(data[:12], dtype="<u4"))
    low, high = (float(v) for v in np.frombuffer(data[12:20], dtype="<f4"))
    pos, maps = 20, []
    for _ in range(shape[0]):
        n = int(np.frombuffer(data[pos : pos + 4], dtype="<u4")[0])
        maps.append(_pil_decode(data[pos + 4 : pos + 4 + n])[:, :, 0])
        pos += 4 + n
    return np.stack(maps).astype(np.float64) / 255 * (high - low) + low


CLIMATE_BASELINES = [
    Baseline("zfp", "climate", "ZFP (zfpy), fixed-accuracy mode on the whole (fields, lat, lon) float32 array, "
             "tolerance sweep in the variable's units", (0.5, 1, 2, 4, 8, 16, 32, 64, 128),
             _zfp_encode, _zfp_decode, _module_check("zfpy", "zfpy"), lambda s: f"tol{s:g}"),
    Baseline("sz3", "climate", "SZ3 (pysz), absolute error bound on the whole (fields, lat, lon) float32 array, "
             "bound sweep in the variable's units", (0.25, 0.5, 1, 1.5, 2, 3, 4, 6),
             _sz3_encode, _sz3_decode, _module_check("pysz", "pysz"), lambda s: f"abs{s:g}"),
    Baseline("jpeg2000-map", "climate", "JPEG 2000 (Pillow/OpenJPEG) of each field as an 8-bit map over the "
             "array's range, rate sweep in bits per value", (0.1, 0.2, 0.4, 0.8, 1.6),
             _map_jpeg2000_encode, _map_jpeg2000_decode, _feature("jpg_2000"), lambda s: f"{s:g}bpv"),
]



# MRI: native data is the volume normalised to [0, 1] as 8-bit (X, Y, Z, V); slices along the third
# axis are coded one by one as grayscale images (as published for FastMRI).
def _slices_encode(image_encode: Callable[[np.ndarray, float], bytes]) -> Callable[[np.ndarray, float], bytes]:
    def enc(vol: np.ndarray, setting: float) -> bytes:
        out = [np.asarray(vol.shape, dtype="<u4").tobytes()]
        for v in range(vol.shape[3]):
            for z in range(vol.shape[2]):
                data = image_encode(np.ascontiguousarray(vol[:, :, z, v])[:, :, None], setting)
                out += [np.uint32(len(data)).tobytes(), data]
        return b"".join(out)

    return enc


def _slices_decode(data: bytes) -> np.ndarray:
    shape = tuple(int(v) for v in np.frombuffer(data[:16], dtype="<u4"))
    vol = np.empty(shape, dtype=np.uint8)
    pos = 16
    for v in range(shape[3]):
        for z in range(shape[2]):
            n = int(np.frombuffer(data[pos : pos + 4], dtype="<u4")[0])
            vol[:, :, z, v] = _pil_decode(data[pos + 4 : pos + 4 + n])[:, :, 0]
            pos += 4 + n
    return vol


MRI_BASELINES = [
    Baseline("jpeg-slices", "mri", "JPEG (Pillow/libjpeg) of every slice (third axis) as an 8-bit image, "
             "quality sweep", (1, 3, 5, 10, 20, 40, 60, 80, 95), _slices_encode(_pil_encode("JPEG")),
             _slices_decode, _feature("jpg"), lambda s: f"q{s:g}"),
    Baseline("jpeg2000-slices", "mri", "JPEG 2000 (Pillow/OpenJPEG, irreversible 9/7) of every slice (third axis) "
             "as an 8-bit image, rate sweep in bits per voxel of each slice",
             (0.02, 0.04, 0.06, 0.1, 0.15, 0.25, 0.4, 0.7, 1.0), _slices_encode(_jpeg2000_encode), _slices_decode,
             _feature("jpg_2000"), lambda s: f"{s:g}bpp"),
]

BY_NAME = {b.name: b for b in IMAGE_BASELINES + AUDIO_BASELINES + CLIMATE_BASELINES + MRI_BASELINES}
