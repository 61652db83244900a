"""Audio: WAV, FLAC and OGG (Vorbis/Opus) through soundfile; mono or multi-channel, any sample rate.

Samples in [-1, 1] are mapped to [0, 1] (the published normalisation). A mono codec network
codes each channel as its own group of patches. The container keeps the sample rate and the
sample format (subtype), so `decode` writes the same kind of file back; decoding at another
sample rate evaluates the network at the new sample times over the same duration.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from ..errors import FormatError, InputError, OutputError
from .base import Modality, Placement, Resolution, Signal, Target, first_line, psnr

MAX_SAMPLE_RATE = 1_000_000
MAX_SAMPLES = 1 << 28  # frames x channels read into memory; the container caps the rest
MAX_CHANNELS = 64

# Stable codes stored in the file (append only).
SUBTYPES = {1: "PCM_16", 2: "PCM_24", 3: "PCM_32", 4: "FLOAT", 5: "DOUBLE", 6: "PCM_U8", 7: "PCM_S8",
            8: "VORBIS", 9: "OPUS"}
SUBTYPE_CODES = {v: k for k, v in SUBTYPES.items()}
FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}


def _soundfile():
    import soundfile

    return soundfile


class AudioModality(Modality):
    name = "audio"
    code = 2
    extensions = (".flac", ".wav", ".ogg")
    spatial_dims = 1
    network_channels = 1
    coord_scale = 5.0
    resolution_options = ("--sample-rate",)

    def own_target(self, meta: dict, shape: tuple[int, ...], r: Resolution) -> Target | None:
        if r.sample_rate is None:
            return None
        if not 1 <= r.sample_rate <= MAX_SAMPLE_RATE:
            raise InputError(f"--sample-rate must be between 1 and {MAX_SAMPLE_RATE} Hz")
        n = max(1, round(shape[0] * r.sample_rate / meta["sample_rate"]))  # the same duration
        return Target(shape=(n,), sample_rate=r.sample_rate)

    def size_order(self, size: tuple[int, ...]) -> tuple[int, ...]:
        return size

    def describe_shape(self, signal: Signal) -> str:
        return f"{signal.spatial[0]} samples at {signal.meta['sample_rate']} Hz"

    def read(self, path: Path) -> Signal:
        sf = _soundfile()
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        try:
            info = sf.info(str(path))
        except (RuntimeError, sf.LibsndfileError) as e:  # LibsndfileError is a RuntimeError in new versions
            raise InputError(f"{path}: not a readable audio file ({first_line(e)})") from None
        if info.subtype not in SUBTYPE_CODES:
            raise InputError(f"{path}: audio sample format {info.subtype} is not supported "
                             f"(supported: {', '.join(SUBTYPE_CODES)})")
        if not 1 <= info.samplerate <= MAX_SAMPLE_RATE:
            raise InputError(f"{path}: sample rate {info.samplerate} Hz is out of range (1..{MAX_SAMPLE_RATE})")
        if not 1 <= info.channels <= MAX_CHANNELS:
            raise InputError(f"{path}: {info.channels} channels (coin handles 1..{MAX_CHANNELS})")
        if info.frames > 0 and info.frames * info.channels > MAX_SAMPLES:
            raise InputError(f"{path}: {info.frames} frames x {info.channels} channels is larger than coin handles")
        try:
            data, rate = sf.read(str(path), dtype="float64", always_2d=True)
        except (RuntimeError, sf.LibsndfileError) as e:
            raise InputError(f"{path}: cannot read audio: {first_line(e)}") from None
        if data.shape[0] == 0:
            raise InputError(f"{path}: empty audio (no samples)")
        if not np.all(np.isfinite(data)):
            raise InputError(f"{path}: audio contains NaN or infinite samples")
        values = ((np.clip(data, -1.0, 1.0) + 1.0) / 2.0).astype(np.float32)
        return Signal(values, {"sample_rate": int(rate), "subtype": info.subtype, "channels": info.channels})

    def write(self, signal: Signal, path: Path) -> None:
        sf = _soundfile()
        ext = Path(path).suffix.lower()
        if ext not in FORMATS:
            raise OutputError(f"{path}: unknown audio extension {ext!r}; use one of {', '.join(FORMATS)}")
        fmt = FORMATS[ext]
        subtype = signal.meta.get("subtype", "PCM_16")
        if fmt == "OGG":
            subtype = subtype if subtype in ("VORBIS", "OPUS") else "VORBIS"
        elif not sf.check_format(fmt, subtype):
            subtype = "PCM_24" if fmt == "FLAC" and subtype in ("PCM_32", "FLOAT", "DOUBLE") else "PCM_16"
        samples = np.clip(signal.values.astype(np.float64) * 2.0 - 1.0, -1.0, 1.0)
        try:
            sf.write(str(path), samples, int(signal.meta["sample_rate"]), subtype=subtype, format=fmt)
        except (RuntimeError, sf.LibsndfileError) as e:
            raise OutputError(f"{path}: cannot write audio: {first_line(e)}") from None

    def to_network(self, signal: Signal, out_dim: int) -> np.ndarray:
        if out_dim != 1 and signal.channels != out_dim:
            raise InputError(f"cannot code {signal.channels}-channel audio with a {out_dim}-channel codec")
        return signal.values

    def coded_channels(self, channels: int, out_dim: int) -> int:
        return channels

    def resampled(self, meta: dict, shape: tuple[int, ...], out_shape: tuple[int, ...],
                  placement: Placement | None = None) -> dict:
        """The same duration at another number of samples: another sample rate."""
        out = dict(meta)
        if out_shape[0] != shape[0]:
            out["sample_rate"] = max(1, round(meta["sample_rate"] * out_shape[0] / shape[0]))
        return out

    def quality(self, original: Signal, decoded: Signal) -> dict[str, float]:
        """PSNR on the waveform normalised to [0, 1] (as published) and SNR on the waveform."""
        a = original.values.astype(np.float64)
        b = decoded.values.astype(np.float64)
        noise = float(np.sum((a - b) ** 2))
        power = float(np.sum((2 * a - 1) ** 2))
        snr = float("inf") if noise == 0 else 10 * np.log10(max(power, 1e-30) / (4 * noise))
        return {"psnr": psnr(a, b), "snr": snr}

    def rate(self, nbytes: int, signal_shape: tuple[int, ...], meta: dict | None = None) -> dict[str, float]:
        seconds = signal_shape[0] / float((meta or {}).get("sample_rate", 16000))
        return {"kbps": nbytes * 8 / seconds / 1000}

    def encode_meta(self, meta: dict) -> bytes:
        return struct.pack("<IB", int(meta["sample_rate"]), SUBTYPE_CODES.get(meta.get("subtype", "PCM_16"), 1))

    def decode_meta(self, data: bytes, channels: int) -> dict:
        if len(data) != 5:
            raise FormatError("corrupted audio fields in the header")
        rate, code = struct.unpack("<IB", data)
        if not 1 <= rate <= MAX_SAMPLE_RATE or code not in SUBTYPES or channels > MAX_CHANNELS:
            raise FormatError("corrupted audio fields in the header")
        return {"sample_rate": rate, "subtype": SUBTYPES[code], "channels": channels}
