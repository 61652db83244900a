"""The pipeline, both ways: Signal -> .coin bytes -> Signal. Each stage is its own module.

    read -> patch -> fit -> quantize -> entropy -> container
    container -> entropy -> dequantize -> evaluate at any coordinates -> write
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import codec as codecs
from . import container, entropy, modalities
from .device import pick_device
from .errors import CodecError, FormatError, InputError, LimitError
from .fit import (
    RatePenalty,
    evaluate_fields,
    evaluate_grid,
    evaluate_latent_grid,
    fit_grid,
    fit_latents,
    refine_latents,
    refine_through_filter,
)
from .modalities import Modality, Signal
from .patching import checkerboard, patch_coordinates, split
from .postfilter import apply as apply_postfilter


@dataclass
class Encoded:
    data: bytes
    symbols: np.ndarray
    codec: codecs.Codec


def fit_signal(signal: Signal, modality: Modality, codec: codecs.Codec, steps: int | None = None,
               device: str = "auto") -> torch.Tensor:
    """Patch the signal and fit one latent per patch: (P, D) float latents."""
    return fit_signals([signal], modality, codec, steps, device)[0]


def fit_signals(signals: list[Signal], modality: Modality, codec: codecs.Codec, steps: int | None = None,
                device: str = "auto") -> list[torch.Tensor]:
    """Fit the patches of several signals in one batch (small files fill the batch together).

    Each patch's latent depends only on that patch, so the result is the same as one by one.
    A signal with more channels than the network outputs is coded as groups of channels, with
    a latent per patch and group (group-major).
    """
    if codec.modality != modality.name:
        raise CodecError(f"codec {codec.name!r} is for {codec.modality}, not {modality.name}")
    steps = codec.steps if steps is None else steps
    if steps < 0 or steps > 10_000:
        raise InputError("--steps must be between 0 and 10000")
    if modality.absolute_coordinates:
        return [_fit_fields(signal, modality, codec, steps, device) for signal in signals]
    if codec.net.cfg.cell:
        return [_fit_latent_grid(signal, modality, codec, steps, device) for signal in signals]
    parts = [_patch_targets(signal, modality, codec) for signal in signals]
    # The codec's first SGD steps on alternate halves of each patch (codec.half_steps).
    subsets = [checkerboard(codec.patch, k) for k in range(min(codec.half_steps, steps))]
    latents = _fit_unique(codec, patch_coordinates(codec.patch), np.concatenate(parts), steps, device, subsets)
    return list(latents.split([len(p) for p in parts]))


def _patch_targets(signal: Signal, modality: Modality, codec: codecs.Codec) -> np.ndarray:
    """The patches a codec fits, (G*P, N, C): each channel group's patches, group-major."""
    if len(signal.spatial) != len(codec.patch):
        raise InputError(f"codec {codec.name!r} expects {len(codec.patch)}-D data")
    out_dim = codec.net.cfg.out_dim
    values = modality.to_network(signal, out_dim)
    return np.concatenate([split(values[..., g : g + out_dim], codec.patch)[0]
                           for g in range(0, values.shape[-1], out_dim)])


def _fit_latent_grid(signal: Signal, modality: Modality, codec: codecs.Codec, steps: int, device: str
                     ) -> torch.Tensor:
    """A latent grid per channel group over the whole image (latents shared across cells)."""
    if len(signal.spatial) != 2:
        raise InputError(f"codec {codec.name!r} expects 2-D data")
    out_dim = codec.net.cfg.out_dim
    values = modality.to_network(signal, out_dim)
    return torch.cat([fit_grid(codec.net, values[..., g : g + out_dim], steps, device)
                      for g in range(0, values.shape[-1], out_dim)])


def _fit_unique(codec: codecs.Codec, coords: torch.Tensor, targets: np.ndarray, steps: int,
                device: str, subsets: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Fit each distinct patch once: identical patches (the empty background of an MRI volume,
    flat sky) get identical latents anyway, and a brain volume is often half background."""
    flat = targets.reshape(len(targets), -1)
    unique, inverse = np.unique(flat, axis=0, return_inverse=True)
    if len(unique) > 0.9 * len(flat):
        return fit_latents(codec.net, coords, targets, steps, device, subsets=subsets)
    fitted = fit_latents(codec.net, coords, unique.reshape(-1, *targets.shape[1:]), steps, device, subsets=subsets)
    return fitted[torch.from_numpy(inverse.reshape(-1))]


def _fit_fields(signal: Signal, modality: Modality, codec: codecs.Codec, steps: int, device: str) -> torch.Tensor:
    """One latent per whole field, the network seeing where each sample lies (climate)."""
    if len(signal.spatial) != modality.spatial_dims:
        raise InputError(f"{modality.name} data must be {modality.spatial_dims}-D")
    coords = torch.from_numpy(modality.coordinates(signal.meta))
    values = modality.to_network(signal, codec.net.cfg.out_dim)
    targets = values.reshape(values.shape[0], -1, values.shape[-1])  # (fields, points, C)
    return fit_latents(codec.net, coords, targets, steps, device)


def refine_signal(latents: torch.Tensor, signal: Signal, modality: Modality, codec: codecs.Codec,
                  device: str = "auto", through_postfilter: bool = True) -> torch.Tensor:
    """The codec's encoder-side refinement of fitted latents: Adam on each patch (through the
    quantizer, or with a rate term), then, with `through_postfilter`, the steps that see the
    post-filter (refine_through_postfilter); the latents unchanged when the codec has neither."""
    spec = codec.refine
    if not spec or not spec.get("steps") or modality.absolute_coordinates or codec.net.cfg.cell:
        return latents  # (not written for latent grids)
    quantizer = codec.quantizer if spec.get("quantized", True) else None
    if "latent_lr" in spec:
        lr = np.full(codec.net.cfg.latent_dim, float(spec["latent_lr"]), dtype=np.float32)
    else:
        lr = float(spec["lr"]) * codec.quantizer.latent_step
    penalty = None
    if spec.get("rate_lambda"):
        penalty = RatePenalty.from_spec(codec.quantizer, spec)
    latents = refine_latents(codec.net, patch_coordinates(codec.patch), _patch_targets(signal, modality, codec),
                             latents, int(spec["steps"]), lr, quantizer, device, penalty=penalty)
    return refine_through_postfilter(latents, signal, modality, codec, device) if through_postfilter else latents


def refine_through_postfilter(latents: torch.Tensor, signal: Signal, modality: Modality, codec: codecs.Codec,
                              device: str = "auto") -> torch.Tensor:
    """The codec's last encoder steps (refine "filter_steps"), whose loss is the post-filtered
    image's error (fit.refine_through_filter), for an image of one channel group; the latents
    unchanged otherwise. They depend on the codec's filter, so codecs that share the per-patch
    refinement (refine_key) do not share these."""
    spec = codec.refine or {}
    steps = int(spec.get("filter_steps", 0))
    values = modality.to_network(signal, codec.net.cfg.out_dim) if modality.name == "image" else None
    if (not steps or codec.postfilter is None or values is None or values.shape[-1] != codec.net.cfg.out_dim
            or codec.net.cfg.cell):
        return latents
    penalty = RatePenalty.from_spec(codec.quantizer, spec) if spec.get("rate_lambda") else None
    return refine_through_filter(codec.net, codec.postfilter, codec.patch, values, latents, steps,
                                 float(spec["filter_lr"]), penalty, spec.get("filter_views"), device)


def _patch_grid(codec: codecs.Codec, shape: tuple[int, ...], groups: int) -> tuple[int, int, int]:
    """(groups, rows, cols) of patches, the order the neighbour context walks them."""
    if len(shape) != 2 or len(codec.patch) != 2:
        raise CodecError(f"codec {codec.name!r}: the neighbour context needs 2-D data")
    return (groups, *(math.ceil(s / p) for s, p in zip(shape, codec.patch, strict=True)))


def pack(latents: torch.Tensor, signal: Signal, modality: Modality, codec: codecs.Codec,
         rd_lambda: float | None = None) -> Encoded:
    """Quantize and entropy code fitted latents into .coin bytes.

    With the neighbour context, each value is rounded by rate and distortion (`rd_lambda`, default
    the codec's; 0: to the nearest level).
    """
    lam = codec.rd_lambda if rd_lambda is None else rd_lambda
    groups = modality.coded_channels(signal.channels, codec.net.cfg.out_dim) // codec.net.cfg.out_dim
    if codec.context is not None:
        grid = _patch_grid(codec, signal.spatial, groups)
        payload, symbols = entropy.encode_context_rd(codec.quantizer.positions(latents), grid, codec.context, lam)
    else:
        symbols = codec.quantizer.quantize(latents)
        payload = entropy.encode(symbols, codec.table, codec.delta_table)
    f = container.CoinFile(
        codec_name=codec.name, codec_hash=codec.hash, modality=modality.code, shape=signal.spatial,
        channels=signal.channels, patch=modality.file_patch(codec.patch, signal.spatial), bits=codec.bits,
        latent_dim=codec.net.cfg.latent_dim, payload=payload, modality_meta=modality.encode_meta(signal.meta),
        groups=groups)
    return Encoded(container.write_bytes(f), symbols, codec)


def encode_signal(signal: Signal, modality: Modality, codec: codecs.Codec, steps: int | None = None,
                  device: str = "auto", through_postfilter: bool = True) -> Encoded:
    """Fit (and refine), quantize and entropy code one signal; returns the .coin bytes. Without
    `through_postfilter` the encoder skips its steps through the post-filter (faster; same format)."""
    latents = refine_signal(fit_signal(signal, modality, codec, steps, device), signal, modality, codec, device,
                            through_postfilter)
    return pack(latents, signal, modality, codec)


@dataclass
class Parsed:
    """A parsed and checked file with the codec and modality that decode it."""

    file: container.CoinFile | container.NetworkFile
    codec: codecs.Codec | None  # None for COIN files (kind 1): they carry their own network
    modality: Modality
    meta: dict


def parse(data: bytes, allow_huge: bool = False) -> Parsed:
    f = container.read_bytes(data, allow_huge)
    if f.modality not in modalities.BY_CODE:
        raise FormatError(f"unknown modality code {f.modality}; upgrade coin")
    modality = modalities.BY_CODE[f.modality]
    meta = modality.decode_meta(f.modality_meta, f.channels)
    if not modality.consistent(meta, f.shape):
        raise FormatError(f"corrupted header ({modality.name} fields disagree with the grid)")
    if isinstance(f, container.NetworkFile):
        if len(f.shape) != modality.spatial_dims:
            raise FormatError(f"corrupted header ({len(f.shape)}-D {modality.name})")
        return Parsed(f, None, modality, meta)
    try:
        codec = codecs.load(f.codec_name, allow_path=False)
    except CodecError:
        raise CodecError(f"this file needs codec {f.codec_name!r}, which is not installed "
                         f"(available: {', '.join(sorted(codecs.available())) or 'none'})") from None
    if codec.hash != f.codec_hash:
        raise CodecError(f"codec {f.codec_name!r} installed here differs from the one that wrote "
                         f"this file (hash {codec.hash.hex()[:12]} vs {f.codec_hash.hex()[:12]})")
    if codec.modality != modality.name:
        raise FormatError(f"corrupted header (codec {codec.name!r} is for {codec.modality}, not {modality.name})")
    patch = modality.file_patch(codec.patch, f.shape)
    if (f.latent_dim, f.bits, f.patch) != (codec.net.cfg.latent_dim, codec.bits, patch):
        raise FormatError("corrupted header (latent size, bits or patch disagree with the codec)")
    coded = modality.coded_channels(f.channels, codec.net.cfg.out_dim)
    if coded % codec.net.cfg.out_dim or f.groups != coded // codec.net.cfg.out_dim:
        raise FormatError("corrupted header (channel groups disagree with the codec)")
    return Parsed(f, codec, modality, meta)


def decode_symbols(p: Parsed) -> np.ndarray:
    if p.codec is None:
        raise FormatError("a COIN file holds network weights, not latent symbols")
    if p.codec.context is not None:
        grid = _patch_grid(p.codec, p.file.shape, p.file.groups)
        return entropy.decode_context(p.file.payload, grid, p.codec.context)
    return entropy.decode(p.file.payload, p.file.num_patches, p.codec.table, p.codec.delta_table)


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


def decode_parsed(p: Parsed, scale: float | None = None, size: tuple[int, ...] | None = None,
                  device: str = "auto", allow_huge: bool = False, target_meta: dict | None = None,
                  postfilter: bool = True, postfilter_views: int | None = None) -> Signal:
    """A parsed file -> decoded Signal (values clipped to [0, 1]) at the requested resolution.

    With `postfilter` (and a codec that has one), an image decoded onto its own grid is restored by
    the codec's post-filter, averaged over `postfilter_views` flipped/transposed views (default: the
    codec's choice); without, the output is the network's (the normative decode).

    For modalities with absolute coordinates, `target_meta` (from the modality, e.g. another
    latitude/longitude grid) says where to evaluate; scale and size do not apply.
    """
    if p.modality.absolute_coordinates and p.codec is not None:
        return _decode_fields(p, target_meta or p.meta, device, allow_huge)
    shape = output_shape(p.file.shape, scale, size)
    if not allow_huge and math.prod(shape) > container.MAX_SAMPLES:
        raise LimitError(f"requested output {'x'.join(map(str, shape))} exceeds the safety cap; "
                         "pass --allow-huge")
    if isinstance(p.file, container.NetworkFile):
        from .overfit import decode_file

        return decode_file(p.file, p.modality, p.meta, shape, device)
    latents = torch.from_numpy(p.codec.quantizer.dequantize(decode_symbols(p)))
    if p.codec.net.cfg.cell:
        values = np.concatenate([evaluate_latent_grid(p.codec.net, group, p.file.shape, shape, device)
                                 for group in latents.chunk(p.file.groups)], axis=-1)
    else:
        values = np.concatenate([evaluate_grid(p.codec.net, group, p.file.shape, p.file.patch, shape, device)
                                 for group in latents.chunk(p.file.groups)], axis=-1)
    if postfilter and p.codec.postfilter is not None and shape == tuple(p.file.shape):
        try:
            values = np.concatenate([apply_postfilter(p.codec.postfilter, np.clip(values[..., g : g + 3], 0.0, 1.0),
                                                      pick_device(device), views=postfilter_views)
                                     for g in range(0, values.shape[-1], 3)], axis=-1)
        except ValueError as e:  # a view count the filter's patch does not allow
            raise InputError(f"--postfilter-views: {e}") from None
    values = p.modality.from_network(np.clip(values, 0.0, 1.0), p.meta)
    return Signal(values.astype(np.float32), p.modality.resampled(p.meta, p.file.shape, shape))


def _decode_fields(p: Parsed, meta: dict, device: str, allow_huge: bool) -> Signal:
    """Evaluate every field's latent at the points `meta` describes (any grid)."""
    fields = p.file.shape[0]
    spatial = (fields, *(int(d["size"]) for d in meta["dims"][-2:]))
    if not allow_huge and math.prod(spatial) > container.MAX_SAMPLES:  # before the grid is allocated
        raise LimitError(f"requested output {'x'.join(map(str, spatial))} exceeds the safety cap; pass --allow-huge")
    coords = torch.from_numpy(p.modality.coordinates(meta))
    latents = torch.from_numpy(p.codec.quantizer.dequantize(decode_symbols(p)))
    values = evaluate_fields(p.codec.net, latents, coords, device)  # (fields, points, C)
    values = np.clip(values, 0.0, 1.0).reshape(*spatial, -1)
    return Signal(p.modality.from_network(values, meta).astype(np.float32), meta)


def decode_bytes(data: bytes, scale: float | None = None, size: tuple[int, ...] | None = None,
                 device: str = "auto", allow_huge: bool = False, postfilter: bool = True) -> tuple[Signal, Parsed]:
    """.coin bytes -> (decoded Signal, the parsed file)."""
    p = parse(data, allow_huge)
    return decode_parsed(p, scale, size, device, allow_huge, postfilter=postfilter), p
