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
from .errors import CodecError, FormatError, InputError, LimitError
from .fit import evaluate_grid, fit_latents
from .modalities import Modality, Signal
from .patching import patch_coordinates, split


@dataclass
class Encoded:
    data: bytes
    symbols: np.ndarray
    codec: codecs.Codec


def fit_signal(signal: Signal, modality: Modality, codec: codecs.Codec, steps: int | None = None,
               device: str = "auto") -> torch.Tensor:
    """Patch the signal and fit one latent per patch: (P, D) float latents."""
    if codec.modality != modality.name:
        raise CodecError(f"codec {codec.name!r} is for {codec.modality}, not {modality.name}")
    if len(signal.spatial) != len(codec.patch):
        raise InputError(f"codec {codec.name!r} expects {len(codec.patch)}-D data")
    steps = codec.steps if steps is None else steps
    if steps < 0 or steps > 10_000:
        raise InputError("--steps must be between 0 and 10000")
    values = modality.to_network(signal, codec.net.cfg.out_dim)
    patches, _ = split(values, codec.patch)  # (P, N, C)
    return fit_latents(codec.net, patch_coordinates(codec.patch), patches, steps, device)


def pack(latents: torch.Tensor, signal: Signal, modality: Modality, codec: codecs.Codec) -> Encoded:
    """Quantize and entropy code fitted latents into .coin bytes."""
    symbols = codec.quantizer.quantize(latents)
    f = container.CoinFile(
        codec_name=codec.name, codec_hash=codec.hash, modality=modality.code, shape=signal.spatial,
        channels=signal.channels, patch=codec.patch, bits=codec.bits,
        latent_dim=codec.net.cfg.latent_dim, payload=entropy.encode(symbols, codec.table),
        modality_meta=modality.encode_meta(signal.meta))
    return Encoded(container.write_bytes(f), symbols, codec)


def encode_signal(signal: Signal, modality: Modality, codec: codecs.Codec, steps: int | None = None,
                  device: str = "auto") -> Encoded:
    """Fit, quantize and entropy code one signal; returns the .coin bytes."""
    return pack(fit_signal(signal, modality, codec, steps, device), signal, modality, codec)


@dataclass
class Parsed:
    """A parsed and checked file with the codec and modality that decode it."""

    file: container.CoinFile
    codec: codecs.Codec
    modality: Modality
    meta: dict


def parse(data: bytes, allow_huge: bool = False) -> Parsed:
    f = container.read_bytes(data, allow_huge)
    if f.modality not in modalities.BY_CODE:
        raise FormatError(f"unknown modality code {f.modality}; upgrade coin")
    modality = modalities.BY_CODE[f.modality]
    meta = modality.decode_meta(f.modality_meta, f.channels)
    try:
        codec = codecs.load(f.codec_name, allow_path=False)
    except CodecError:
        raise CodecError(f"this file needs codec {f.codec_name!r}, which is not installed "
                         f"(available: {', '.join(sorted(codecs.available())) or 'none'})") from None
    if codec.hash != f.codec_hash:
        raise CodecError(f"codec {f.codec_name!r} installed here differs from the one that wrote "
                         f"this file (hash {codec.hash.hex()[:12]} vs {f.codec_hash.hex()[:12]})")
    if (f.latent_dim, f.bits, f.patch) != (codec.net.cfg.latent_dim, codec.bits, codec.patch):
        raise FormatError("corrupted header (latent size, bits or patch disagree with the codec)")
    return Parsed(f, codec, modality, meta)


def decode_symbols(p: Parsed) -> np.ndarray:
    return entropy.decode(p.file.payload, p.file.num_patches, p.codec.table)


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
                  device: str = "auto", allow_huge: bool = False) -> Signal:
    """A parsed file -> decoded Signal (values clipped to [0, 1]) at the requested resolution."""
    shape = output_shape(p.file.shape, scale, size)
    if not allow_huge and math.prod(shape) > container.MAX_SAMPLES:
        raise LimitError(f"requested output {'x'.join(map(str, shape))} exceeds the safety cap; "
                         "pass --allow-huge")
    latents = p.codec.quantizer.dequantize(decode_symbols(p))
    values = evaluate_grid(p.codec.net, torch.from_numpy(latents), p.file.shape, p.file.patch, shape, device)
    values = p.modality.from_network(np.clip(values, 0.0, 1.0), p.meta)
    return Signal(values.astype(np.float32), dict(p.meta))


def decode_bytes(data: bytes, scale: float | None = None, size: tuple[int, ...] | None = None,
                 device: str = "auto", allow_huge: bool = False) -> tuple[Signal, Parsed]:
    """.coin bytes -> (decoded Signal, the parsed file)."""
    p = parse(data, allow_huge)
    return decode_parsed(p, scale, size, device, allow_huge), p
