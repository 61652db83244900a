"""A file's own waveform filter (audio): the FILT section's body (bitstream/FORMAT.md).

The encoder fits a linear filter to the one file it codes, by least squares from the network's decode
to the original, and stores its taps; the decoder applies it instead of the codec's filter. It is a
post-filter like the codec's: the symbols and the network's output (the normative decode) do not
depend on it. Integers only here, so every machine reads the same taps.
"""

from __future__ import annotations

import numpy as np

# Odd tap counts up to this, each tap a signed 16-bit integer in units of 2^-14 (|tap| < 2; the centre
# tap is near 1).
MAX_FILE_TAPS = 63
FILE_TAP_BITS = 14


def file_filter_bytes(taps: np.ndarray) -> bytes | None:
    """Taps -> the FILT section's body (u8 count, then int16 little-endian); None when a tap does not fit."""
    q = np.rint(np.asarray(taps, dtype=np.float64) * (1 << FILE_TAP_BITS))
    if len(q) % 2 == 0 or not 1 <= len(q) <= MAX_FILE_TAPS or np.abs(q).max() > 32767:
        return None
    return bytes([len(q)]) + q.astype("<i2").tobytes()


def file_filter_taps(body: bytes) -> np.ndarray:
    """The FILT section's body -> taps (float64); ValueError when it is malformed."""
    n = body[0] if body else 0
    if n % 2 == 0 or n > MAX_FILE_TAPS or len(body) != 1 + 2 * n:
        raise ValueError("malformed waveform filter section")
    return np.frombuffer(body, dtype="<i2", offset=1).astype(np.float64) / (1 << FILE_TAP_BITS)
