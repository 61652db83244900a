"""The decoder: .coin bytes -> Signal, at the file's own resolution or any other.

    container -> entropy (bitstream.py) -> dequantize -> evaluate at any coordinates (synthesis.py)
              -> post-filter (images; on another grid its own-grid correction, resampled; audio: the
                 file's own waveform filter or the codec's, and at another rate that decode resampled;
                 volumes: the codec's volume filter, and on a finer grid that decode interpolated)
              -> the modality's values
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import codec as codecs
from . import container
from .bitstream import Parsed, decode_symbols, file_filter, parse, residual_layer
from .device import pick_device
from .errors import FormatError, InputError, LimitError
from .modalities import Placement, Resolution, Signal, Target
from .overfit import decode_file
from .postfilter import PostFilter, VolumeFilter, WaveformFilter, apply_volume, apply_waveform, carried
from .postfilter import apply as apply_postfilter
from .resample import linear, resample
from .residual import apply_layer
from .synthesis import evaluate_fields, evaluate_grid, evaluate_latent_grid


class Decoder:
    """Decodes parsed files. `postfilter` (images, codecs that have one): restore with the codec's
    post-filter averaged over `postfilter_views` views (None: the codec's choice); onto another grid
    spanning the image, add the filter's correction on the own grid, resampled (postfilter.carried).
    Audio: with `postfilter`, the file's own waveform filter (FILT) or else the codec's (if it has one)
    at the file's own rate, and at another sample rate that decode resampled band-limited
    (resample.py). Volumes (MRI): with `postfilter`, the codec's volume filter on the own grid, and onto
    a grid at least as fine on every axis that decode interpolated trilinearly (resample.linear).
    Without it the output is the network's own (the normative decode)."""

    def __init__(self, device: str = "auto", allow_huge: bool = False, postfilter: bool = True,
                 postfilter_views: int | None = None) -> None:
        self.device, self.allow_huge = device, allow_huge
        self.postfilter, self.postfilter_views = postfilter, postfilter_views

    def decode(self, p: Parsed, target: Target | None = None) -> Signal:
        """A parsed file -> decoded Signal (values clipped to [0, 1]) where `target` says."""
        target = target or Target()
        if p.modality.absolute_coordinates and p.spec is not None:
            return self._decode_fields(p, target.meta or p.meta)
        shape = tuple(target.shape or p.file.shape)
        if not self.allow_huge and math.prod(shape) > container.MAX_SAMPLES:
            raise LimitError(f"requested output {'x'.join(map(str, shape))} exceeds the safety cap; "
                             "pass --allow-huge")
        if isinstance(p.file, container.NetworkFile):
            signal = decode_file(p.file, p.modality, p.meta, shape, self.device, target.placement)
        else:
            signal = self._decode_patches(p, shape, target.placement)
        if target.sample_rate is not None:
            signal.meta["sample_rate"] = target.sample_rate
        if own_grid(p, target):
            self._add_residual(p, signal)
        return signal

    def _add_residual(self, p: Parsed, signal: Signal) -> None:
        """On the file's own grid, a residual layer brings every value within the file's bound."""
        layer = residual_layer(p)
        if layer is not None:
            signal.exact = apply_layer(layer, p.modality.units(signal), p.modality.missing(p.meta, p.file.shape))

    def _decode_patches(self, p: Parsed, shape: tuple[int, ...], placement: Placement | None) -> Signal:
        codec = codecs.for_spec(p.spec)
        latents = torch.from_numpy(codec.quantizer.dequantize(decode_symbols(p)))
        groups = latents.chunk(p.file.groups)
        if codec.net.cfg.cell and placement is not None:
            raise InputError(f"codec {codec.name!r} (a latent grid) decodes onto grids spanning the image only")
        # Audio at another sample rate: the network at the file's own rate, resampled band-limited (between
        # its samples the speech network produces noise); a volume on a finer grid: the network on its own
        # grid, interpolated (the MRI networks interpolate worse than trilinear; resample.py).
        own_grid = shape == tuple(p.file.shape) and placement is None
        resampled = self.postfilter and not own_grid and not codec.net.cfg.cell and (
            (p.modality.name == "audio" and placement is None)
            or (p.modality.name == "mri" and finer(p.file.shape, shape, placement)))
        at = tuple(p.file.shape) if resampled else shape
        if codec.net.cfg.cell:
            values = join([evaluate_latent_grid(codec.net, g, p.file.shape, at, self.device) for g in groups])
        else:
            values = join([evaluate_grid(codec.net, g, p.file.shape, p.file.patch, at, self.device,
                                         placement=None if resampled else placement,
                                         supersample=codec.spec.supersample) for g in groups])
        np.clip(values, 0.0, 1.0, out=values)  # (in place: a large image's arrays are hundreds of MB each)
        # Audio: the filter the encoder fitted to this file where it carries one, else the codec's.
        waveform = file_filter(p)
        if waveform is None and isinstance(codec.postfilter, WaveformFilter):
            waveform = codec.postfilter
        if self.postfilter and waveform is not None and (own_grid or resampled):
            values = apply_waveform(waveform, values)  # each channel
            np.clip(values, 0.0, 1.0, out=values)
        if self.postfilter and isinstance(codec.postfilter, VolumeFilter) and (own_grid or resampled):
            values = apply_volume(codec.postfilter, values)
            np.clip(values, 0.0, 1.0, out=values)
        if resampled:
            values = resample(values, shape[0]) if p.modality.name == "audio" else linear(values, shape, placement)
            np.clip(values, 0.0, 1.0, out=values)
        image_filter = isinstance(codec.postfilter, PostFilter)
        if self.postfilter and image_filter and own_grid:
            values = self._filtered(codec, values)
            np.clip(values, 0.0, 1.0, out=values)
        elif self.postfilter and image_filter and placement is None and not codec.net.cfg.cell:
            # Another grid spanning the image: the filter's own-grid correction, resampled onto it.
            own = join([evaluate_grid(codec.net, g, p.file.shape, p.file.patch, p.file.shape, self.device,
                                      supersample=codec.spec.supersample) for g in groups])
            np.clip(own, 0.0, 1.0, out=own)
            values += carried(self._filtered(codec, own) - own, shape)
            np.clip(values, 0.0, 1.0, out=values)
        values = p.modality.from_network(values, p.meta)
        return Signal(values.astype(np.float32, copy=False),
                      p.modality.resampled(p.meta, p.file.shape, shape, placement))

    def _filtered(self, codec: codecs.Codec, values: np.ndarray) -> np.ndarray:
        """The post-filter's output on own-grid values (each RGB group), not clipped."""
        try:
            return join([apply_postfilter(codec.postfilter, values[..., g : g + 3], pick_device(self.device),
                                          views=self.postfilter_views) for g in range(0, values.shape[-1], 3)])
        except ValueError as e:  # a view count the filter's patch does not allow
            raise InputError(f"--postfilter-views: {e}") from None

    def _decode_fields(self, p: Parsed, meta: dict) -> Signal:
        """Evaluate every field's latent at the points `meta` describes (any grid)."""
        signal = self._evaluate_fields(p, meta)
        if meta is p.meta:
            self._add_residual(p, signal)
        return signal

    def _evaluate_fields(self, p: Parsed, meta: dict) -> Signal:
        fields = p.file.shape[0]
        spatial = (fields, *(int(d["size"]) for d in meta["dims"][-2:]))
        if not self.allow_huge and math.prod(spatial) > container.MAX_SAMPLES:  # before the grid is allocated
            raise LimitError(f"requested output {'x'.join(map(str, spatial))} exceeds the safety cap; "
                             "pass --allow-huge")
        codec = codecs.for_spec(p.spec)
        if (codec.spec.normalisation == "field") != (meta.get("field_ranges") is not None):
            raise FormatError(f"the file's field ranges do not match codec {codec.name!r}'s normalisation")
        coords = torch.from_numpy(p.modality.coordinates(meta))
        latents = torch.from_numpy(codec.quantizer.dequantize(decode_symbols(p)))
        values = evaluate_fields(codec.net, latents, coords, self.device)  # (fields, points, C)
        values = np.clip(values, 0.0, 1.0).reshape(*spatial, -1)
        return Signal(p.modality.from_network(values, meta).astype(np.float32), meta)


def decode_bytes(data: bytes, resolution: Resolution | None = None, device: str = "auto", allow_huge: bool = False,
                 postfilter: bool = True, postfilter_views: int | None = None) -> tuple[Signal, Parsed]:
    """.coin bytes -> (decoded Signal, the parsed file), at the file's own resolution or the one
    `resolution` asks for (as `coin decode`'s options do)."""
    p = parse(data, allow_huge)
    target = p.modality.target(p.meta, p.file.shape, resolution, allow_huge) if resolution is not None else None
    return Decoder(device, allow_huge, postfilter, postfilter_views).decode(p, target), p


def own_grid(p: Parsed, target: Target) -> bool:
    """Whether `target` is the file's own grid (the one its residual layer is for)."""
    return target.shape in (None, tuple(p.file.shape)) and target.placement is None and target.meta is None


def finer(shape: tuple[int, ...], out_shape: tuple[int, ...], placement: Placement | None) -> bool:
    """Whether a grid of `out_shape` samples (spanning the signal, or at `placement`) samples every axis
    at least as finely as the signal's own `shape`."""
    if placement is None:
        return all(o >= n for n, o in zip(shape, out_shape, strict=True))
    return all(step <= 1.0 for _, step in placement)


def join(parts: list[np.ndarray]) -> np.ndarray:
    """Channel groups side by side (one group: itself, not a copy)."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)
