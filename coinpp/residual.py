"""The residual layer: what the network's decode missed, coded so that every sample's error is bounded.

    signal x, network decode p  ->  ResidualLayer (bound, step, integer field q)  <->  RESI bytes

The encoder quantizes the difference between the signal and the network's decode on the file's own
grid, q = round((x - p) / step), and the decoder adds `step * q` to its own decode of the network.
`step` is twice the bound less a margin (a 32nd of the bound, 2^-18 of the network's value range,
and the output type's rounding), so a decoder whose network evaluation differs from the encoder's by
float rounding (another machine or device: far below that margin) still keeps every error within the
bound. For data on a grid of values (integers, packed NetCDF), the output is snapped to the grid, and
the bound before snapping is the largest multiple of the grid's spacing within the bound plus half a
spacing: a bound of 0 is then lossless, and a CRC-32 of the output integers checks it (with a bound
above 0, which of the values within it comes out may differ between machines).

Where the network's decode predicts worse than a value's neighbours do (MRI noise), the residual is
taken from zero instead: the values themselves are coded, and the latents serve decodes on other grids.
Only the integer field is in the parse path; it is coded losslessly, the way JPEG-LS codes pixels
(each plane, or each plane's difference from the one before, whichever is smaller): each value is
predicted from its already decoded left, upper and upper-left neighbours in its plane
(the median edge detector), and the prediction error is coded as a magnitude class with an adaptive
table chosen by the neighbours' own errors, followed by its sign and the bits below its leading one,
stored as they are.

Values are visited by anti-diagonals (all (i, j) with i + j = t, in every plane at once): a value's
neighbours all lie on earlier diagonals, so each diagonal is coded and decoded as one vectorised step.
Every table is built from integer counts, so encoder and decoder build the same rows on any machine.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import constriction
import numpy as np

from .entropy import TABLE_PRECISION, adaptive_rows
from .errors import FormatError, InputError

CLASSES = 32  # magnitude classes: 0 for a zero error, else the bit length of |error| (< 2^31)
MAX_MAGNITUDE = 1 << 28  # |q| cap: a plane difference stays within FIELD_MAX
FIELD_MAX = 1 << 29  # |value| cap of a coded field: any prediction error then stays below 2^31
CONTEXTS = 12  # the bit length of the neighbours' summed absolute errors, capped
INCREMENT = 32  # counts added per coded value (the initial table counts 1 per class)
HALVE_ABOVE = 1 << 20  # a context's counts are halved when their sum passes this
# How the field is predicted (RESI byte 0): each plane on its own, or each plane's difference from
# the plane before (climate: consecutive hours); by the median edge detector, or interpolated from the
# coarser grid (better where the field is smooth at the step's scale: coarse bounds).
PLANES, PLANE_DIFFERENCES, INTERPOLATED, INTERPOLATED_DIFFERENCES = 1, 2, 3, 4
PREDICTIONS = (PLANES, PLANE_DIFFERENCES, INTERPOLATED, INTERPOLATED_DIFFERENCES)
# What the residual is taken from (RESI byte 1): the network's decode, or nothing (the values themselves:
# where the network's decode predicts worse than the neighbours do, as on MRI noise).
BASE_NETWORK, BASE_ZERO = 0, 1
MARGIN = 1 / 32  # of the bound, kept for the decoder's float rounding
# How far another machine's evaluation of the network may differ from the encoder's, as a fraction of
# the network's value range (float32 outputs: 2^-24 a rounding; measured CPU-to-CPU differences are
# a few of those); taken off the step besides MARGIN.
DISAGREEMENT = 2.0**-18
_HEADER = struct.Struct("<BBBddddI")
_POWERS = np.array([1 << b for b in range(63)], dtype=np.int64)


def bit_length(a: np.ndarray) -> np.ndarray:
    """Bit length of non-negative int64 values, by integer comparison (no floating point)."""
    return np.searchsorted(_POWERS, a, side="right").astype(np.int64)


def _diagonals(h: int, w: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for t in range(h + w - 1):
        i = np.arange(max(0, t - w + 1), min(t, h - 1) + 1, dtype=np.int64)
        yield i, t - i


def _predict(q: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Median-edge-detector prediction of q[:, i, j] (planes, m) from decoded neighbours; 0 at (0, 0)."""
    n = q.shape[0]
    left = np.where(j > 0, q[:, i, np.maximum(j - 1, 0)], 0)
    up = np.where(i > 0, q[:, np.maximum(i - 1, 0), j], 0)
    corner = np.where((i > 0) & (j > 0), q[:, np.maximum(i - 1, 0), np.maximum(j - 1, 0)], 0)
    med = np.where(corner >= np.maximum(left, up), np.minimum(left, up),
                   np.where(corner <= np.minimum(left, up), np.maximum(left, up), left + up - corner))
    pred = np.where(i > 0, np.where(j > 0, med, up), np.where(j > 0, left, 0))
    return np.broadcast_to(pred, (n, len(i)))


def _contexts(err_abs: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """The table of each value: bit length of |error| summed over its left, upper and upper-left
    neighbours (already coded), capped at CONTEXTS - 1."""
    left = np.where(j > 0, err_abs[:, i, np.maximum(j - 1, 0)], 0)
    up = np.where(i > 0, err_abs[:, np.maximum(i - 1, 0), j], 0)
    corner = np.where((i > 0) & (j > 0), err_abs[:, np.maximum(i - 1, 0), np.maximum(j - 1, 0)], 0)
    return np.minimum(bit_length(left + up + corner), CONTEXTS - 1)


def _rows(counts: np.ndarray) -> np.ndarray:
    return adaptive_rows(counts).astype(np.float32) / np.float32(1 << TABLE_PRECISION)


def _learn(counts: np.ndarray, ctx: np.ndarray, cls: np.ndarray) -> None:
    np.add.at(counts, (ctx, cls), INCREMENT)
    full = counts.sum(axis=1) > HALVE_ABOVE
    if full.any():
        counts[full] = (counts[full] + 1) >> 1


def _interpolation_steps(h: int, w: int) -> Iterator[tuple[np.ndarray, np.ndarray, int, int]]:
    """The points of a plane coarse to fine, as SZ3 visits them: (0, 0) first, then for strides s =
    S, S/2, ..., 2 (S the smallest power of two >= the plane's larger side, half = s/2) the points on
    rows that are multiples of s, half between two columns of the coarser grid, and then the points
    half between two rows, on every column that is a multiple of half. Yields (rows, cols, axis, half):
    the points (flattened grid) and the axis along which their neighbours lie (-1: none, for (0, 0))."""
    yield np.zeros(1, np.int64), np.zeros(1, np.int64), -1, 0
    s = 2
    while s < max(h, w):
        s *= 2
    while s >= 2:
        half = s // 2
        for axis, rows, cols in ((1, np.arange(0, h, s), np.arange(half, w, s)),
                                 (0, np.arange(half, h, s), np.arange(0, w, half))):
            if len(rows) and len(cols):
                i, j = np.meshgrid(rows, cols, indexing="ij")
                yield i.reshape(-1), j.reshape(-1), axis, half
        s = half


def _along(a: np.ndarray, i: np.ndarray, j: np.ndarray, axis: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """a[:, i, j] moved `offset` along `axis`, and where that lies inside the plane (else zeros)."""
    size = a.shape[1 + axis]
    pos = (i if axis == 0 else j) + offset
    inside = (pos >= 0) & (pos < size)
    pos = np.clip(pos, 0, size - 1)
    v = a[:, pos, j] if axis == 0 else a[:, i, pos]
    return np.where(inside, v, 0), inside


def _interpolate(q: np.ndarray, i: np.ndarray, j: np.ndarray, axis: int, half: int) -> np.ndarray:
    """Prediction from the decoded neighbours half a stride away along `axis`: cubic (-1, 9, 9, -1)/16
    with two on each side, their mean with one, the one before at the plane's far edge (floors)."""
    if axis < 0:
        return np.zeros((q.shape[0], len(i)), dtype=np.int64)
    a, _ = _along(q, i, j, axis, -half)
    b, has_b = _along(q, i, j, axis, half)
    a2, has_a2 = _along(q, i, j, axis, -3 * half)
    b2, has_b2 = _along(q, i, j, axis, 3 * half)
    cubic = (9 * (a + b) - a2 - b2 + 8) >> 4
    return np.where(has_b, np.where(has_a2 & has_b2, cubic, (a + b) >> 1), a)


def _interpolation_contexts(err_abs: np.ndarray, i: np.ndarray, j: np.ndarray, axis: int, half: int) -> np.ndarray:
    if axis < 0:
        return np.zeros((err_abs.shape[0], len(i)), dtype=np.int64)
    a, _ = _along(err_abs, i, j, axis, -half)
    b, _ = _along(err_abs, i, j, axis, half)
    return np.minimum(bit_length(a + b), CONTEXTS - 1)


def _walk(shape: tuple[int, int, int], interpolation: bool):
    """(rows, cols, prediction, context) per step, in coding order."""
    _, h, w = shape
    if interpolation:
        for i, j, axis, half in _interpolation_steps(h, w):
            yield (i, j, lambda q, i=i, j=j, axis=axis, half=half: _interpolate(q, i, j, axis, half),
                   lambda e, i=i, j=j, axis=axis, half=half: _interpolation_contexts(e, i, j, axis, half))
    else:
        for i, j in _diagonals(h, w):
            yield i, j, lambda q, i=i, j=j: _predict(q, i, j), lambda e, i=i, j=j: _contexts(e, i, j)


def encode_field(q: np.ndarray, interpolation: bool = False) -> bytes:
    """Integer field (planes, rows, cols), |q| <= FIELD_MAX -> bytes:
    u32 number of range-coder words | the words | the raw bits (sign and low bits), packed MSB first.
    Each value predicted by the median edge detector (anti-diagonals) or, `interpolation`, from the
    coarser grid (SZ3's order)."""
    q = np.asarray(q, dtype=np.int64)
    if q.ndim != 3:
        raise ValueError("the residual field must be (planes, rows, cols)")
    if q.size and np.abs(q).max() > FIELD_MAX:
        raise ValueError("residual out of range")
    err_abs = np.zeros_like(q)
    counts = np.ones((CONTEXTS, CLASSES), dtype=np.int64)
    coder = constriction.stream.queue.RangeEncoder()
    cat = constriction.stream.model.Categorical(perfect=False)
    raw: list[np.ndarray] = []
    for i, j, predict, context in _walk(q.shape, interpolation):
        e = q[:, i, j] - predict(q)
        mag = np.abs(e)
        ctx = context(err_abs).reshape(-1)
        err_abs[:, i, j] = mag
        cls = bit_length(mag).reshape(-1)
        coder.encode(cls.astype(np.int32), cat, _rows(counts)[ctx])
        raw.append(_raw_bits(e.reshape(-1), cls))
        _learn(counts, ctx, cls)
    words = coder.get_compressed().astype("<u4").tobytes()
    bits = np.concatenate(raw) if raw else np.zeros(0, dtype=np.uint8)
    return struct.pack("<I", len(words) // 4) + words + np.packbits(bits).tobytes()


def _raw_bits(e: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """Per nonzero error of class c: its sign (1 = negative) then the c - 1 bits of |e| below the
    leading one, most significant first: c bits, as 0/1 bytes."""
    nz = cls > 0
    if not nz.any():
        return np.zeros(0, dtype=np.uint8)
    c, e = cls[nz], e[nz]
    value = ((e < 0).astype(np.int64) << (c - 1)) | (np.abs(e) - (np.int64(1) << (c - 1)))
    owner = np.repeat(np.arange(len(c)), c)
    shift = (np.cumsum(c) - 1)[owner] - np.arange(owner.size)  # c-1 ... 0 within each value
    return ((value[owner] >> shift) & 1).astype(np.uint8)


def decode_field(data: bytes, shape: tuple[int, int, int], interpolation: bool = False) -> np.ndarray:
    """bytes -> the integer field (planes, rows, cols). Corrupt data raises FormatError."""
    n = shape[0]
    if len(data) < 4:
        raise FormatError("corrupted residual (cut short)")
    (nwords,) = struct.unpack("<I", data[:4])
    if 4 + 4 * nwords > len(data):
        raise FormatError("corrupted residual (cut short)")
    words = np.frombuffer(data[4 : 4 + 4 * nwords], dtype="<u4").astype(np.uint32)
    bits = np.unpackbits(np.frombuffer(data[4 + 4 * nwords :], dtype=np.uint8))
    q = np.zeros(shape, dtype=np.int64)
    err_abs = np.zeros(shape, dtype=np.int64)
    counts = np.ones((CONTEXTS, CLASSES), dtype=np.int64)
    cursor = 0
    try:
        coder = constriction.stream.queue.RangeDecoder(words)
        cat = constriction.stream.model.Categorical(perfect=False)
        for i, j, predict, context in _walk(shape, interpolation):
            ctx = context(err_abs).reshape(-1)
            cls = np.asarray(coder.decode(cat, _rows(counts)[ctx]), dtype=np.int64)
            e, cursor = _read_errors(bits, cursor, cls)
            err_abs[:, i, j] = np.abs(e).reshape(n, len(i))
            q[:, i, j] = predict(q) + e.reshape(n, len(i))
            if np.abs(q[:, i, j]).max(initial=0) > FIELD_MAX:  # before the next prediction multiplies it
                raise FormatError("corrupted residual (value out of range)")
            _learn(counts, ctx, cls)
    except FormatError:
        raise
    except Exception as e:  # constriction reports invalid data with its own exception types
        raise FormatError(f"corrupted residual ({e})") from None
    return q


def _read_errors(bits: np.ndarray, cursor: int, cls: np.ndarray) -> tuple[np.ndarray, int]:
    e = np.zeros(len(cls), dtype=np.int64)
    nz = np.flatnonzero(cls > 0)
    if not len(nz):
        return e, cursor
    c = cls[nz]
    total = int(c.sum())
    if cursor + total > len(bits):
        raise FormatError("corrupted residual (raw bits cut short)")
    chunk = bits[cursor : cursor + total].astype(np.int64)
    owner = np.repeat(np.arange(len(c)), c)
    shift = (np.cumsum(c) - 1)[owner] - np.arange(total)
    value = np.add.reduceat(chunk << shift, np.cumsum(c) - c)
    sign = value >> (c - 1)
    mag = (value & ((np.int64(1) << (c - 1)) - 1)) | (np.int64(1) << (c - 1))
    e[nz] = np.where(sign == 1, -mag, mag)
    return e, cursor + total


# --- the layer: bound, step and the field ---------------------------------------------------------


@dataclass(frozen=True)
class ResidualLayer:
    """A RESI section. `quantum` 0: real values; else the outputs are offset + quantum * integer."""

    bound: float  # the largest error promised, in the data's units
    step: float
    quantum: float
    offset: float
    crc: int  # lossless: CRC-32 of the output integers (int64 little-endian, valid points in order); else 0
    field: bytes
    predictor: int = PLANES
    base: int = BASE_NETWORK
    stack: int = 0  # the spatial axis the planes are stacked along (the plane: the other two)

    def to_bytes(self) -> bytes:
        return _HEADER.pack(self.predictor, self.base, self.stack, self.bound, self.step, self.quantum,
                            self.offset, self.crc) + self.field

    @classmethod
    def from_bytes(cls, data: bytes) -> ResidualLayer:
        if len(data) < _HEADER.size:
            raise FormatError("corrupted residual section (cut short)")
        predictor, base, stack, bound, step, quantum, offset, crc = _HEADER.unpack_from(data)
        if predictor not in PREDICTIONS or base not in (BASE_NETWORK, BASE_ZERO):
            raise FormatError(f"unsupported residual coding {predictor}/{base}; upgrade coin")
        if not all(math.isfinite(v) for v in (bound, step, quantum, offset)) or bound < 0 or quantum < 0 \
                or not 0 < step <= 2 * (bound + quantum / 2):
            raise FormatError("corrupted residual section (bound or step out of range)")
        return cls(bound, step, quantum, offset, crc, data[_HEADER.size :], predictor, base, stack)

    def describe(self) -> str:
        if self.quantum and self.bound == 0:
            return "lossless"
        return f"maximum error {self.bound:g}"


def planes(values: np.ndarray, stack: int = 0) -> np.ndarray:
    """(*spatial, C) -> (planes, rows, cols): channel by channel, the planes along spatial axis `stack`,
    each plane the other two axes in order (two spatial axes: the planes are the channels)."""
    d = values.ndim - 1
    if d < 2 or not 0 <= stack < stacks(d):
        raise InputError("the residual layer needs data of two or three dimensions")
    v = np.moveaxis(values, [-1, stack], [0, 1]) if d == 3 else np.moveaxis(values, -1, 0)
    return v.reshape(-1, v.shape[-2], v.shape[-1])


def stacks(spatial_dims: int) -> int:
    """How many axes the planes can be stacked along: any of three, or the channels only."""
    return 3 if spatial_dims == 3 else 1


def unplanes(field: np.ndarray, shape: tuple[int, ...], stack: int = 0) -> np.ndarray:
    """planes' inverse: the field back to `shape` (*spatial, C)."""
    d = len(shape) - 1
    if d == 3:
        order = (shape[-1], shape[stack], *(n for a, n in enumerate(shape[:-1]) if a != stack))
        return np.moveaxis(field.reshape(order), [0, 1], [-1, stack])
    return np.moveaxis(field.reshape(shape[-1], *shape[:-1]), 0, -1)


def make_layer(x: np.ndarray, p: np.ndarray, bound: float, quantum: float = 0.0, offset: float = 0.0,
               out_dtype: np.dtype | None = None, mask: np.ndarray | None = None, span: float = 0.0,
               stack: int = 0, predictions: tuple[int, ...] = PREDICTIONS,
               bases: tuple[int, ...] = (BASE_NETWORK, BASE_ZERO)) -> ResidualLayer:
    """Encoder: the smallest layer that brings the decode within `bound` of the signal `x`, taken from the
    network's decode `p` or from nothing, each plane predicted on its own or from the plane before; x and
    p (*spatial, C) float64 in the data's units. `quantum` > 0: x lies on offset + quantum * integer.
    `span`: the value range the network's [0, 1] outputs map to (what its float rounding scales with).
    `out_dtype`: the floating type the output is stored in (its rounding comes off the margin).
    `mask` (like x, True = missing): coded as zero, not bounded. `stack`: the spatial axis along which
    the planes lie (the others make each plane). `predictions`, `bases`: the ones to try (all)."""
    if not (math.isfinite(bound) and bound >= 0) or (bound == 0 and not quantum):
        raise InputError("--max-error must be a positive number (0, lossless, only for integer data)")
    valid = np.ones(x.shape, dtype=bool) if mask is None else ~mask
    # On a grid of values, the output is snapped to the grid: within B < E' + u/2 before snapping is within
    # E' after it, E' the largest multiple of u not above E (what JPEG-LS's NEAR is)
    half = grid_bound(bound, quantum) + quantum / 2 if quantum else bound
    rounding = 0.0
    if not quantum and out_dtype is not None and np.dtype(out_dtype).kind == "f" and valid.any():
        rounding = float(np.spacing(np.dtype(out_dtype).type(np.abs(x[valid]).max())))
    best: ResidualLayer | None = None
    for base, pred in ((BASE_NETWORK, p), (BASE_ZERO, np.zeros_like(x))):
        if base not in bases:
            continue
        spare = rounding + (span * DISAGREEMENT if base == BASE_NETWORK else 0.0)
        step = 2 * (half * (1 - MARGIN) - spare)
        if step <= half:
            smallest = spare / (0.5 - MARGIN) - (quantum / 2 if quantum else 0.0)
            raise InputError(f"--max-error {bound:g} is below what this data's storage precision and value range "
                             f"allow (the smallest bound here is {smallest:.3g})")
        q = np.where(valid, np.rint((x - pred) / step), 0.0)
        if q.size and np.abs(q).max() > MAX_MAGNITUDE:
            if base == BASE_ZERO and best is not None:
                continue
            raise InputError(f"--max-error {bound:g} is too small for this data's range")
        q = q.astype(np.int64)
        crc = _crc(reconstruct(pred, q, step, quantum, offset), valid, quantum, offset) if quantum and not bound \
            else 0
        field = planes(q, stack)
        differences = np.diff(field, axis=0, prepend=0)
        for predictor, coded in ((PLANES, field), (PLANE_DIFFERENCES, differences), (INTERPOLATED, field),
                                 (INTERPOLATED_DIFFERENCES, differences)):
            if predictor not in predictions:
                continue
            data = encode_field(coded, interpolation=predictor in (INTERPOLATED, INTERPOLATED_DIFFERENCES))
            layer = ResidualLayer(float(bound), step, float(quantum), float(offset), crc, data, predictor, base,
                                  stack)
            if best is None or len(layer.field) < len(best.field):
                best = layer
    assert best is not None
    return best


def grid_bound(bound: float, quantum: float) -> float:
    """The largest multiple of `quantum` not above `bound` (the error a grid of values can keep to)."""
    return math.floor(bound / quantum * (1 + 1e-12)) * quantum


def apply_layer(layer: ResidualLayer, p: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Decoder: the network's decode `p` (*spatial, C) in the data's units -> the bounded values.
    Lossless outputs are checked against the layer's CRC-32."""
    if layer.stack >= stacks(p.ndim - 1):
        raise FormatError("corrupted residual section (no such axis)")
    field = decode_field(layer.field, planes(p, layer.stack).shape,
                         layer.predictor in (INTERPOLATED, INTERPOLATED_DIFFERENCES))
    if layer.predictor in (PLANE_DIFFERENCES, INTERPOLATED_DIFFERENCES):
        field = np.cumsum(field, axis=0)
        if field.size and np.abs(field).max() > MAX_MAGNITUDE:
            raise FormatError("corrupted residual (value out of range)")
    q = unplanes(field, p.shape, layer.stack)
    base = p if layer.base == BASE_NETWORK else np.zeros_like(p)
    with np.errstate(all="ignore"):  # a damaged header's extreme numbers: caught just below
        out = reconstruct(base, q, layer.step, layer.quantum, layer.offset)
        if not np.isfinite(out).all():
            raise FormatError("corrupted residual section (values out of range)")
        valid = np.ones(p.shape, dtype=bool) if mask is None else ~mask
        lossless_ok = not (layer.quantum and layer.bound == 0) or \
            _crc(out, valid, layer.quantum, layer.offset) == layer.crc
    if not lossless_ok:  # lossless: one right answer, checked
        raise FormatError("the residual layer does not reproduce the encoded values here (checksum "
                          "mismatch): the file is corrupted, or this machine evaluates the network too "
                          "differently")
    return out


def reconstruct(p: np.ndarray, q: np.ndarray, step: float, quantum: float, offset: float) -> np.ndarray:
    out = p + step * q
    if quantum:
        out = offset + quantum * np.rint((out - offset) / quantum)
    return out


def _crc(values: np.ndarray, valid: np.ndarray, quantum: float, offset: float) -> int:
    k = np.rint((values[valid] - offset) / quantum).astype("<i8")
    return zlib.crc32(k.tobytes())
