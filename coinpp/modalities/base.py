"""The small interface every modality implements: read, write, metrics, and its metadata.

A modality turns a file into a `Signal` (channels-last float array in [0, 1] plus what is
needed to write the file back) and back. Everything else in the pipeline is shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np


@dataclass
class Signal:
    """values: (*spatial, C) float32 in [0, 1]; meta: modality-specific fields kept in the file."""

    values: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def spatial(self) -> tuple[int, ...]:
        return tuple(self.values.shape[:-1])

    @property
    def channels(self) -> int:
        return int(self.values.shape[-1])


class Modality:
    """One kind of data. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    code: ClassVar[int]  # stable number stored in the bitstream
    extensions: ClassVar[tuple[str, ...]]
    spatial_dims: ClassVar[int]
    network_channels: ClassVar[int]  # outputs of this modality's codec networks (image: RGB = 3)
    coord_scale: ClassVar[float] = 1.0  # coordinates in [-s, s] per patch (published: audio time 5)
    # False: every patch sees the same local coordinates (pixel centres of its cell, patching.py).
    # True: the network sees where each sample lies (climate: points on the sphere), one latent per
    # whole field along the last axes (`file_patch`), and `coordinates` gives the points.
    absolute_coordinates: ClassVar[bool] = False

    @property
    def network_in_dim(self) -> int:
        """Inputs of this modality's codec networks (patch coordinates: one per spatial axis)."""
        return self.spatial_dims

    def file_patch(self, codec_patch: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
        """The patch shape a file of spatial `shape` is cut into by a codec with `codec_patch`."""
        return tuple(codec_patch)

    def coordinates(self, meta: dict) -> np.ndarray:
        """(N, network_in_dim) network inputs of one field (absolute_coordinates modalities only)."""
        raise NotImplementedError

    def consistent(self, meta: dict, shape: tuple[int, ...]) -> bool:
        """Whether header fields read from a file agree with its grid shape."""
        return True

    def held_out_start(self, meta: dict, fraction: float) -> int:
        """First field of the part of a series held out for validation (climate)."""
        raise NotImplementedError(f"{self.name} signals are not series of fields")

    def fields(self, signal: Signal, start: int, stop: int) -> Signal:
        """Part of a series along its first axis (climate: some hours), as a file of its own."""
        raise NotImplementedError(f"{self.name} signals are not series of fields")

    def summary(self, meta: dict) -> dict:
        """What `coin info` shows of the modality's header fields."""
        return {}

    def describe_quality(self, q: dict[str, float], meta: dict | None = None) -> str:
        """One line for the CLI."""
        return ", ".join(f"{k.upper()} {v:.2f} dB" for k, v in q.items())

    def extension_of(self, path: Path | str) -> str | None:
        """The modality's extension that `path` ends with (by full name: .nii.gz), or None."""
        name = Path(path).name.lower()
        return next((e for e in self.extensions if name.endswith(e)), None)

    def read(self, path: Path) -> Signal:
        raise NotImplementedError

    def write(self, signal: Signal, path: Path) -> None:
        """Write to `path` (the caller handles atomic rename and --force)."""
        raise NotImplementedError

    def to_network(self, signal: Signal, out_dim: int) -> np.ndarray:
        """Values as the codec's network sees them: (*spatial, k * out_dim), coded as k groups of
        out_dim channels with a latent per patch and group (k = coded_channels / out_dim)."""
        if signal.channels == out_dim:
            return signal.values
        raise NotImplementedError

    def coded_channels(self, channels: int, out_dim: int) -> int:
        """Channels of `to_network`'s output for a signal of `channels` (known from the header)."""
        return out_dim

    def from_network(self, values: np.ndarray, meta: dict) -> np.ndarray:
        """Inverse of to_network on decoded values (*spatial, out_dim) -> (*spatial, C)."""
        return values

    def resampled(self, meta: dict, shape: tuple[int, ...], out_shape: tuple[int, ...]) -> dict:
        """Metadata of the signal decoded onto `out_shape` samples instead of `shape`."""
        return dict(meta)

    def quality(self, original: Signal, decoded: Signal) -> dict[str, float]:
        raise NotImplementedError

    def rate(self, nbytes: int, signal_shape: tuple[int, ...], meta: dict | None = None) -> dict[str, float]:
        raise NotImplementedError

    def encode_meta(self, meta: dict) -> bytes:
        """Modality fields for the container (little-endian, versioned by the format)."""
        raise NotImplementedError

    def decode_meta(self, data: bytes, channels: int) -> dict:
        raise NotImplementedError


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def first_line(e: Exception) -> str:
    """The first line of a library's error message (some span several lines), for one-line errors."""
    return str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
