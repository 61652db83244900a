"""Images: 8-bit RGB or grayscale PNG, JPEG, WebP, TIFF, BMP of any size.

Grayscale is coded through an RGB codec by repeating the channel and decoded as the mean.
Palette images are expanded to RGB; an alpha channel that is fully opaque is dropped. What
we cannot code faithfully (partial transparency, 16-bit or float samples, CMYK) is refused.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import FormatError, InputError, OutputError
from .base import Modality, Signal, psnr

# Pillow's own decompression-bomb guard stays on; we refuse anything beyond this many pixels.
MAX_PIXELS = 1 << 28


class ImageModality(Modality):
    name = "image"
    code = 1
    extensions = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
    spatial_dims = 2
    network_channels = 3

    def read(self, path: Path) -> Signal:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    if im.width * im.height > MAX_PIXELS:
                        raise InputError(f"{path}: {im.width}x{im.height} is larger than coin handles")
                    im.load()
                    return self._from_pil(im, path)
        except UnidentifiedImageError:
            raise InputError(f"{path}: not an image coin can read (PNG, JPEG, WebP, TIFF or BMP), or damaged") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputError(f"{path}: the image is larger than the safety cap; pass --allow-huge if you trust "
                             "it") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise InputError(f"{path}: the image is damaged or cut short ({str(e).rstrip('.').lower()})") from None

    def _from_pil(self, im: Image.Image, path: Path) -> Signal:
        mode = im.mode
        if mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            mode = im.mode
        if mode in ("RGBA", "LA"):
            alpha = np.asarray(im.getchannel("A"))
            if alpha.min() < 255:
                raise InputError(f"{path}: images with transparency are not supported (alpha channel)")
            im = im.convert("RGB" if mode == "RGBA" else "L")
            mode = im.mode
        if mode == "1":
            im = im.convert("L")
            mode = "L"
        if mode not in ("RGB", "L"):
            raise InputError(f"{path}: image mode {mode} is not supported; "
                             "coin codes 8-bit RGB and grayscale images")
        arr = np.asarray(im, dtype=np.uint8)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.shape[0] == 0 or arr.shape[1] == 0:
            raise InputError(f"{path}: empty image")
        return Signal(arr.astype(np.float32) / 255.0, {"channels": arr.shape[2]})

    def write(self, signal: Signal, path: Path) -> None:
        arr = to_uint8(signal.values)
        im = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr, "L" if arr.shape[2] == 1 else "RGB")
        fmt = format_for(path)
        try:
            im.save(path, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
        except OSError as e:
            raise OutputError(f"{path}: cannot write image: {e}") from None

    def to_network(self, signal: Signal, out_dim: int) -> np.ndarray:
        v = signal.values
        if v.shape[-1] == out_dim:
            return v
        if v.shape[-1] == 1 and out_dim == 3:
            return np.repeat(v, 3, axis=-1)
        raise InputError(f"cannot code a {v.shape[-1]}-channel image with a {out_dim}-channel codec")

    def from_network(self, values: np.ndarray, meta: dict) -> np.ndarray:
        if meta.get("channels", values.shape[-1]) == 1 and values.shape[-1] != 1:
            return values.mean(axis=-1, keepdims=True)
        return values

    def quality(self, original: Signal, decoded: Signal) -> dict[str, float]:
        """PSNR in dB on the 8-bit output, as every image codec is judged."""
        return {"psnr": psnr(to_uint8(original.values), to_uint8(decoded.values), peak=255.0)}

    def rate(self, nbytes: int, signal_shape: tuple[int, ...], meta: dict | None = None) -> dict[str, float]:
        h, w = signal_shape[:2]
        return {"bpp": nbytes * 8 / (h * w)}

    def encode_meta(self, meta: dict) -> bytes:
        return b""  # the channel count in the grid section is all an image needs

    def decode_meta(self, data: bytes, channels: int) -> dict:
        if data or channels not in (1, 3):
            raise FormatError("corrupted image fields in the header")
        return {"channels": channels}


def to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)


_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF",
            ".tiff": "TIFF", ".bmp": "BMP"}


def format_for(path: Path) -> str:
    ext = Path(path).suffix.lower()
    if ext not in _FORMATS:
        raise OutputError(f"{path}: unknown image extension {ext!r}; use one of {', '.join(_FORMATS)}")
    return _FORMATS[ext]
