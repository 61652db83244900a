"""Resampling of decodes onto another grid: band-limited for audio (windowed sinc), linear for volumes.

Between its samples the speech network produces noise: a clip coded at 8 kHz and evaluated at 16 kHz
scores 25 dB against the real 16 kHz clip, where band-limited resampling of its 8 kHz decode scores
39 dB (benchmarks/results/upscale/). So the decoder evaluates an audio file's network at the file's
own rate and resamples that (`coin decode --no-postfilter` gives the network's own output at the asked
rate). Output only: nothing here touches what is parsed.

Volumes likewise: the MRI networks are worse interpolators than trilinear interpolation everywhere
between their voxel centres (benchmarks/experiments/RECORD.md, section 22), so a finer voxel grid is
the own-grid decode interpolated (`linear`).
"""

from __future__ import annotations

import numpy as np

from .patching import sample_centres

HALF_TAPS = 32  # input samples each side of an output sample (at the lower of the two rates)
KAISER_BETA = 8.6  # stop band about 90 dB down
CHUNK = 1 << 14  # output samples per block: bounds the (block, taps) matrix


def resample(values: np.ndarray, n_out: int) -> np.ndarray:
    """(N, C) samples -> (n_out, C) over the same duration, sample i at time i / n_out of it (audio's
    convention: sample instants from the start, as soxr and every audio tool place them), by a
    Kaiser-windowed sinc whose cut-off is the lower rate's Nyquist frequency (downsampling is
    anti-aliased). Beyond its ends the signal is taken as its edge sample held, so a clip does not
    fade at its borders."""
    n_in, channels = values.shape
    if n_out == n_in:
        return values.astype(np.float32, copy=True)
    ratio = n_out / n_in  # output samples per input sample
    cutoff = min(1.0, ratio)  # in units of the input Nyquist frequency
    half = int(np.ceil(HALF_TAPS / cutoff))  # input samples each side
    x = np.pad(values.astype(np.float64), ((half, half + 1), (0, 0)), mode="edge")
    out = np.empty((n_out, channels), dtype=np.float32)
    offsets = np.arange(-half, half + 1)
    for start in range(0, n_out, CHUNK):
        i = np.arange(start, min(start + CHUNK, n_out))
        t = i / ratio  # output instant in input samples
        base = np.floor(t).astype(np.int64)
        taps = base[:, None] + offsets[None, :]  # (B, 2 half + 1) input indices
        d = t[:, None] - taps
        w = cutoff * np.sinc(cutoff * d) * _kaiser(d / (half + 1))
        w /= w.sum(axis=1, keepdims=True)  # unit gain at DC whatever the phase
        out[start : start + len(i)] = np.einsum("bt,btc->bc", w, x[taps + half])
    return out


def _kaiser(u: np.ndarray) -> np.ndarray:
    """The Kaiser window at positions u in [-1, 1] (0 outside)."""
    inside = np.abs(u) < 1
    arg = KAISER_BETA * np.sqrt(np.clip(1 - u**2, 0, None))
    return np.where(inside, np.i0(arg) / np.i0(KAISER_BETA), 0.0)


def linear(values: np.ndarray, out_shape: tuple[int, ...],
           placement: tuple[tuple[float, float], ...] | None = None) -> np.ndarray:
    """(*shape, C) samples -> (*out_shape, C) float32 by linear interpolation along each axis in turn
    (trilinear for a volume). Output sample centres span the same extent as the input's (pixel
    centres, as patching.sample_centres places them) or, per axis, sit at `placement` (first centre,
    step) in input samples; past the outer input centres the edge sample holds."""
    out = values.astype(np.float32, copy=False)
    for axis, m in enumerate(out_shape):
        n = out.shape[axis]
        if m == n and placement is None:
            continue
        centre = sample_centres(n, m) if placement is None else placement[axis][0] + np.arange(m) * placement[axis][1]
        x = np.clip(centre - 0.5, 0.0, n - 1.0)  # in input sample indices
        i0 = np.minimum(np.floor(x).astype(np.int64), max(n - 2, 0))
        t = (x - i0).astype(np.float32)
        i1 = np.minimum(i0 + 1, n - 1)
        shape = [1] * out.ndim
        shape[axis] = m
        t = t.reshape(shape)
        out = np.take(out, i0, axis=axis) * (1 - t) + np.take(out, i1, axis=axis) * t
    return np.ascontiguousarray(out, dtype=np.float32)
