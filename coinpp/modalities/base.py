"""The small interface every modality implements: read, write, metrics, and its metadata.

A modality turns a file into a `Signal` (channels-last float array in [0, 1] plus what is
needed to write the file back) and back. Everything else in the pipeline is shared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import InputError


@dataclass
class Signal:
    """values: (*spatial, C) float32 in [0, 1]; meta: modality-specific fields kept in the file;
    exact: (*spatial, C) float64 in the data's own units where they are more than `values` holds
    (MRI, climate: the values as read, unclipped; a decode with a residual layer: its bounded values)."""

    values: np.ndarray
    meta: dict = field(default_factory=dict)
    exact: np.ndarray | None = None

    @property
    def spatial(self) -> tuple[int, ...]:
        return tuple(self.values.shape[:-1])

    @property
    def channels(self) -> int:
        return int(self.values.shape[-1])


@dataclass(frozen=True)
class Resolution:
    """What a user asked for at decode time (`coin decode`'s output options); None: not given.
    `size` is as typed: width x height for images, X x Y x Z for volumes."""

    scale: float | None = None
    size: tuple[int, ...] | None = None
    sample_rate: int | None = None
    voxel_size: tuple[float, ...] | None = None
    grid: float | None = None
    lat: tuple[float, float, int] | None = None
    lon: tuple[float, float, int] | None = None

    def given(self) -> list[str]:
        return [f"--{k.replace('_', '-')}" for k, v in self.__dict__.items() if v is not None]


OPTION_OWNERS = {"--sample-rate": "audio", "--voxel-size": "MRI volumes", "--grid": "climate data",
                 "--lat": "climate data", "--lon": "climate data", "--size": "images, audio and MRI volumes"}


@dataclass(frozen=True)
class Target:
    """Where the decoder evaluates: the file's own grid (all None), or another one."""

    shape: tuple[int, ...] | None = None  # spatial output shape (regular grids)
    meta: dict | None = None  # absolute-coordinate modalities: the grid to evaluate on
    sample_rate: int | None = None  # audio: the rate the output is written at
    # Per axis, (centre of the first output sample, distance between samples) in input samples (input
    # sample k is centred at k + 0.5); None: the output samples span the input's extent exactly.
    placement: Placement | None = None


Placement = tuple[tuple[float, float], ...]


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

    # Output options of `coin decode` this modality takes besides --scale and --size.
    resolution_options: ClassVar[tuple[str, ...]] = ()

    def target(self, meta: dict, shape: tuple[int, ...], r: Resolution, allow_huge: bool = False) -> Target:
        """The decode target for the options in `r` (validated); the file's own grid when none."""
        self.refuse_foreign(r)
        self._one_of(r, ("--scale", "--size", *self.resolution_options))
        own = self.own_target(meta, shape, r)
        if own is not None:
            return own
        return Target(shape=self.output_shape(shape, r.scale, None if r.size is None else self.size_order(r.size)))

    def own_target(self, meta: dict, shape: tuple[int, ...], r: Resolution) -> Target | None:
        """The target for this modality's own option in `r` (resolution_options), None when not given."""
        return None

    def refuse_foreign(self, r: Resolution, own: tuple[str, ...] = ("--scale", "--size")) -> None:
        foreign = [o for o in r.given() if o not in (*own, *self.resolution_options)]
        if foreign:
            raise InputError(f"{foreign[0]} applies to {OPTION_OWNERS.get(foreign[0], 'other data')}, "
                             f"not to {self.name}")

    @staticmethod
    def _one_of(r: Resolution, options: tuple[str, ...]) -> None:
        given = [o for o in r.given() if o in options]
        if len(given) > 1:
            raise InputError(f"give one of {', '.join(options)}, not {' and '.join(given)}")

    def size_order(self, size: tuple[int, ...]) -> tuple[int, ...]:
        """--size as typed -> spatial (array) order and back (images: WIDTHxHEIGHT <-> (H, W)); every
        size coin prints is in the order --size takes."""
        return (size[1], size[0], *size[2:]) if len(size) >= 2 else size

    @staticmethod
    def output_shape(shape: tuple[int, ...], scale: float | None = None,
                     size: tuple[int, ...] | None = None) -> tuple[int, ...]:
        if size is not None:
            if len(size) != len(shape) or min(size) < 1:
                raise InputError(f"--size needs {len(shape)} positive numbers")
            return tuple(size)
        if scale is None:
            return shape
        if not (0 < scale <= 64) or math.isnan(scale):
            raise InputError("--scale must be in (0, 64]")
        return tuple(max(1, round(s * scale)) for s in shape)

    def describe_shape(self, signal: Signal) -> str:
        """The decoded grid in words (images: WIDTHxHEIGHT)."""
        return "x".join(map(str, reversed(signal.spatial)))

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

    def normalise(self, signal: Signal, normalisation: str) -> Signal:
        """The signal as a codec with this normalisation (its config's "normalisation") codes it;
        "file", the range `read` gives, is every modality's."""
        if normalisation == "file":
            return signal
        raise InputError(f"{self.name} data has no {normalisation!r} normalisation")

    def coded_channels(self, channels: int, out_dim: int) -> int:
        """Channels of `to_network`'s output for a signal of `channels` (known from the header)."""
        return out_dim

    # --- the residual layer (data with an error bound: MRI, climate) ----------------------------

    def units(self, signal: Signal) -> np.ndarray:
        """(*spatial, C) float64 in the data's units: `exact` where the signal has it, else its values
        mapped back from [0, 1] over the range its metadata names (`low`, `high`: MRI, climate)."""
        if signal.exact is not None:
            return signal.exact
        m = signal.meta
        if "low" not in m or "high" not in m:
            raise InputError(f"{self.name} data has no error-bounded mode (--max-error, --lossless)")
        span = m["high"] - m["low"] if m["high"] > m["low"] else 1.0
        return signal.values.astype(np.float64) * span + m["low"]

    def value_grid(self, meta: dict) -> tuple[float, float] | None:
        """(spacing, offset) when every value the file can hold is offset + spacing * integer (integer
        voxels, packed NetCDF); None for real values."""
        return None

    def stored_dtype(self, meta: dict) -> np.dtype | None:
        """The number type the decoded file stores its values in."""
        return None

    def plane_axis(self, meta: dict) -> int:
        """The spatial axis the residual layer stacks its planes along (each plane: the other two)."""
        return 0

    def span(self, meta: dict) -> float:
        """The range of values the network's [0, 1] maps to, in the data's units."""
        return float(meta["high"] - meta["low"]) if "high" in meta else 1.0

    def missing(self, meta: dict, shape: tuple[int, ...]) -> np.ndarray | None:
        """(*shape, C) True where a value is missing (not coded, not bounded); None when none is."""
        return None

    def from_network(self, values: np.ndarray, meta: dict) -> np.ndarray:
        """Inverse of to_network on decoded values (*spatial, out_dim) -> (*spatial, C)."""
        return values

    def resampled(self, meta: dict, shape: tuple[int, ...], out_shape: tuple[int, ...],
                  placement: Placement | None = None) -> dict:
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
