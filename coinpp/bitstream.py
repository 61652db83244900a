"""From bytes to symbols, without torch: parse a .coin file, check it against the codec that wrote
it, and decode its latent symbols with that codec's entropy model.

`coin info` and symbol decoding need nothing more; evaluating the network is decoder.py's work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import container, modalities
from . import spec as specs
from .entropy import Layout
from .errors import CodecError, FormatError
from .file_filter import file_filter_taps
from .modalities import Modality
from .residual import ResidualLayer
from .spec import CodecSpec


@dataclass
class Parsed:
    """A parsed and checked file with the codec specification and modality that decode it."""

    file: container.CoinFile | container.NetworkFile
    spec: CodecSpec | None  # None for COIN files (kind 1): they carry their own network
    modality: Modality
    meta: dict


def layout(shape: tuple[int, ...], patch: tuple[int, ...], groups: int) -> Layout:
    """(groups, patches per axis...): the order in which the patches' latents are coded."""
    return (groups, *(math.ceil(s / p) for s, p in zip(shape, patch, strict=True)))


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
        spec = specs.load(f.codec_name, allow_path=False)
    except CodecError:
        raise CodecError(f"this file needs codec {f.codec_name!r}, which is not installed (older codecs come back "
                         "with COIN_CODECS_PATH set to a folder holding them)") from None
    if spec.hash != f.codec_hash:
        raise CodecError(f"codec {f.codec_name!r} installed here differs from the one that wrote "
                         f"this file (hash {spec.hash.hex()[:12]} vs {f.codec_hash.hex()[:12]})")
    if spec.modality != modality.name:
        raise FormatError(f"corrupted header (codec {spec.name!r} is for {spec.modality}, not {modality.name})")
    patch = modality.file_patch(spec.patch, f.shape)
    if (f.latent_dim, f.bits, f.patch) != (spec.model.latent_dim, spec.bits, patch):
        raise FormatError("corrupted header (latent size, bits or patch disagree with the codec)")
    coded = modality.coded_channels(f.channels, spec.model.out_dim)
    if coded % spec.model.out_dim or f.groups != coded // spec.model.out_dim:
        raise FormatError("corrupted header (channel groups disagree with the codec)")
    parsed = Parsed(f, spec, modality, meta)
    file_filter(parsed)  # a malformed or misplaced FILT section makes the file corrupt, whatever is asked of it
    return parsed


def decode_symbols(p: Parsed) -> np.ndarray:
    """The file's latent symbols (P, D) int32, exactly as the encoder chose them."""
    if p.spec is None:
        raise FormatError("a COIN file holds network weights, not latent symbols")
    try:
        return p.spec.entropy.decode(p.file.payload, layout(p.file.shape, p.file.patch, p.file.groups))
    except ValueError as e:  # a layout the codec's entropy model cannot walk
        raise FormatError(f"corrupted header ({e})") from None


def file_filter(p: Parsed) -> np.ndarray | None:
    """The waveform filter the encoder fitted to this file (audio; FILT), or None."""
    data = p.file.extra.get(container.FILE_FILTER_TAG) if isinstance(p.file, container.CoinFile) else None
    if data is None:
        return None
    if p.modality.name != "audio":
        raise FormatError(f"corrupted file (a waveform filter section in {p.modality.name} data)")
    try:
        return file_filter_taps(data)
    except ValueError as e:
        raise FormatError(f"corrupted file ({e})") from None


def residual_layer(p: Parsed) -> ResidualLayer | None:
    """The file's residual layer (its bound, on the file's own grid), or None."""
    data = p.file.extra.get(container.RESIDUAL_TAG) if isinstance(p.file, container.CoinFile) else None
    return None if data is None else ResidualLayer.from_bytes(data)
