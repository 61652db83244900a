"""Entropy stage: symbols <-> bytes with constriction's range coder and integer tables.

Three entropy models share one interface (`EntropyModel`): static per-dimension tables,
series deltas (each row after the first coded as its difference from the row before) and the
neighbour context (tables chosen by already decoded neighbours and adapted to the file). The
codec's specification picks one (spec.py).

A table is one row of integer frequencies per latent dimension, every entry >= 1 and every
row summing to exactly 2^TABLE_PRECISION. The coder sees these as dyadic fractions
(frequency / 2^16), which are exact in floating point, so encoder and decoder build the same
fixed-point model on every machine: which symbol is read never depends on a float computed
from decoded data. Nothing here imports torch. Learning the tables from training symbols is
training's business (training/tables.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import constriction
import numpy as np

from .errors import FormatError

TABLE_PRECISION = 16  # rows sum to 2^16

# A layout is (groups, *patches per axis): the patches of each channel group in raster order.
Layout = tuple[int, ...]


class EntropyModel:
    """symbols (P, D) int32 <-> bytes, for the P patches of a layout."""

    dims: int
    levels: int

    def encode(self, symbols: np.ndarray, layout: Layout) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes, layout: Layout) -> np.ndarray:
        """bytes -> (P, D) int32 symbols. Corrupt data raises FormatError."""
        raise NotImplementedError

    def encode_rd(self, positions: np.ndarray, layout: Layout, lam: float) -> tuple[bytes, np.ndarray]:
        """Encoder only: (P, D) positions in symbol units (Quantizer.positions) -> (bytes, the symbols
        chosen). Models that cannot weigh rate per value round to the nearest level whatever `lam`."""
        symbols = np.clip(np.rint(positions), 0, self.levels - 1).astype(np.int32)
        return self.encode(symbols, layout), symbols


@dataclass(frozen=True, eq=False)
class StaticTables(EntropyModel):
    """Dimension d of every patch coded with table row d."""

    table: np.ndarray  # (D, levels) int32

    @property
    def dims(self) -> int:  # type: ignore[override]
        return self.table.shape[0]

    @property
    def levels(self) -> int:  # type: ignore[override]
        return self.table.shape[1]

    def encode(self, symbols: np.ndarray, layout: Layout) -> bytes:
        _check_count(symbols, layout)
        return encode(symbols, self.table)

    def decode(self, data: bytes, layout: Layout) -> np.ndarray:
        return decode(data, math.prod(layout), self.table)


@dataclass(frozen=True, eq=False)
class SeriesDeltas(StaticTables):
    """The first patch coded with `table`, every later one as its difference from the one before
    (a series of fields, where consecutive latents are close)."""

    delta_table: np.ndarray = None  # type: ignore[assignment]  # (D, 2 * levels - 1) int32

    def encode(self, symbols: np.ndarray, layout: Layout) -> bytes:
        _check_count(symbols, layout)
        return encode(symbols, self.table, self.delta_table)

    def decode(self, data: bytes, layout: Layout) -> np.ndarray:
        return decode(data, math.prod(layout), self.table, self.delta_table)


def _check_count(symbols: np.ndarray, layout: Layout) -> None:
    if len(symbols) != math.prod(layout):
        raise ValueError("symbols do not match the patch layout")


def residuals(symbols: np.ndarray, levels: int) -> np.ndarray:
    """Symbols (P, D) -> each row minus the row before, shifted to [0, 2 * levels - 1): the
    alphabet of the previous-row context (row 0 is coded on its own)."""
    return (np.diff(symbols.astype(np.int64), axis=0) + levels - 1).astype(np.int32)


def _probabilities(table: np.ndarray, dims: np.ndarray) -> np.ndarray:
    # Exact: integers below 2^16 divided by 2^16 are representable in float32.
    return table[dims].astype(np.float32) / np.float32(1 << TABLE_PRECISION)


def encode(symbols: np.ndarray, table: np.ndarray, delta_table: np.ndarray | None = None) -> bytes:
    """(P, D) symbols -> bytes; dimension d of every patch is coded with table row d.

    With a `delta_table` (D, 2 * levels - 1), every row after the first is coded as its difference
    from the row before (a series of fields, where consecutive latents are close).
    """
    p, d = symbols.shape
    if table.shape[0] != d or (delta_table is not None and delta_table.shape != (d, 2 * table.shape[1] - 1)):
        raise ValueError("table does not match the latent size")
    coder = constriction.stream.queue.RangeEncoder()
    model = constriction.stream.model.Categorical(perfect=False)
    head = symbols if delta_table is None else symbols[:1]
    coder.encode(head.reshape(-1).astype(np.int32), model, _probabilities(table, np.tile(np.arange(d), len(head))))
    if delta_table is not None and p > 1:
        res = residuals(symbols, table.shape[1])
        coder.encode(res.reshape(-1), model, _probabilities(delta_table, np.tile(np.arange(d), p - 1)))
    return coder.get_compressed().astype("<u4").tobytes()


def decode(data: bytes, num_patches: int, table: np.ndarray, delta_table: np.ndarray | None = None) -> np.ndarray:
    """bytes -> (P, D) int32 symbols. Corrupt data raises FormatError."""
    if len(data) % 4:
        raise FormatError("corrupted payload (length is not a whole number of words)")
    d, levels = table.shape
    words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
    head = num_patches if delta_table is None else min(num_patches, 1)
    try:
        coder = constriction.stream.queue.RangeDecoder(words)
        model = constriction.stream.model.Categorical(perfect=False)
        flat = np.asarray(coder.decode(model, _probabilities(table, np.tile(np.arange(d), head))), dtype=np.int64)
        if delta_table is not None and num_patches > 1:
            res = np.asarray(coder.decode(model, _probabilities(delta_table, np.tile(np.arange(d), num_patches - 1))),
                             dtype=np.int64).reshape(num_patches - 1, d) - (levels - 1)
            flat = np.cumsum(np.concatenate([flat.reshape(1, d), res]), axis=0)
    except Exception as e:  # constriction reports invalid data with its own exception types
        raise FormatError(f"corrupted payload ({e})") from None
    if flat.size and (flat.min() < 0 or flat.max() >= levels):
        raise FormatError("corrupted payload (symbol out of range)")
    return flat.astype(np.int32).reshape(num_patches, d)


# --- Neighbour context, adapted to the file as it is read --------------------------------------
#
# The latents of one image are far more alike than those of the training set the static tables
# come from (on three held-out photos, 3.30 bits per 4-bit symbol under the static table against
# 2.23 for each image's own histogram), and a patch's latents are close to its neighbours'. So each
# symbol is coded with a table chosen by the mean of its already decoded left and upper
# neighbours (one of K buckets per dimension), and that table learns the file's statistics as it
# goes: a trained prior row plus `increment` for every symbol already seen in that bucket.
# Everything is integer arithmetic, so encoder and decoder build the same rows everywhere.


@dataclass(frozen=True, eq=False)
class NeighbourContext(EntropyModel):
    """Patch grids (2-D; 1-D as one row): each symbol's table chosen by its left and upper neighbours
    and adapted to the file as it is read."""

    prior: np.ndarray  # (D, K, levels) int32, rows summing to 2^TABLE_PRECISION
    adapt: int  # the prior weighs as much as this many symbols seen

    @property
    def buckets(self) -> int:
        return self.prior.shape[1]

    @property
    def levels(self) -> int:  # type: ignore[override]
        return self.prior.shape[2]

    @property
    def dims(self) -> int:  # type: ignore[override]
        return self.prior.shape[0]

    def encode(self, symbols: np.ndarray, layout: Layout) -> bytes:
        return encode_context(symbols, _grid(layout), self)

    def decode(self, data: bytes, layout: Layout) -> np.ndarray:
        return decode_context(data, _grid(layout), self)

    def encode_rd(self, positions: np.ndarray, layout: Layout, lam: float) -> tuple[bytes, np.ndarray]:
        return encode_context_rd(positions, _grid(layout), self, lam)


def _grid(layout: Layout) -> tuple[int, int, int]:
    """(groups, rows, cols); a 1-D layout (groups, patches) is one row: the left neighbour is the
    patch before (audio)."""
    if len(layout) == 2:
        return (layout[0], 1, layout[1])
    if len(layout) != 3:
        raise ValueError("the neighbour context needs 1-D or 2-D data")
    return layout  # type: ignore[return-value]


def context_buckets(prediction: np.ndarray, levels: int, buckets: int) -> np.ndarray:
    """Neighbour mean (any shape, ints in [0, levels)) -> bucket index in [0, buckets)."""
    return np.minimum(prediction.astype(np.int64) * buckets // levels, buckets - 1)


def neighbour_mean(grid: np.ndarray, r: int, q: int, levels: int) -> np.ndarray:
    """Rounded mean of the left and upper neighbours' symbols (R, Q, D) of patch (r, q); the
    middle level for the first patch."""
    if r and q:
        return (grid[r, q - 1] + grid[r - 1, q] + 1) // 2
    if q:
        return grid[r, q - 1]
    if r:
        return grid[r - 1, q]
    return np.full(grid.shape[2], levels // 2, dtype=np.int64)


def adaptive_rows(counts: np.ndarray) -> np.ndarray:
    """Integer counts (D, L) -> integer rows summing to 2^TABLE_PRECISION, every entry >= 1
    (floor of the share; what the floors leave goes to the most frequent symbol)."""
    levels = counts.shape[1]
    spare = (1 << TABLE_PRECISION) - levels
    rows = counts * spare // counts.sum(axis=1, keepdims=True)
    top = counts.argmax(axis=1)
    rows[np.arange(len(rows)), top] += spare - rows.sum(axis=1)
    return rows + 1


def _context_pass(grid_shape: tuple[int, int, int], model: NeighbourContext, step) -> None:
    """Walk the patches group by group in raster order; `step(g, r, q, rows)` codes one patch
    with the (D, L) integer rows its context gives and returns its symbols (D,)."""
    groups, rows_n, cols = grid_shape
    d = model.prior.shape[0]
    dims = np.arange(d)
    increment = (1 << TABLE_PRECISION) // model.adapt
    seen = np.zeros(model.prior.shape, dtype=np.int64)  # one history for the whole file
    prior = model.prior.astype(np.int64)
    for g in range(groups):
        done = np.zeros((rows_n, cols, d), dtype=np.int64)
        for r in range(rows_n):
            for q in range(cols):
                k = context_buckets(neighbour_mean(done, r, q, model.levels), model.levels, model.buckets)
                rows = adaptive_rows(prior[dims, k] + increment * seen[dims, k])
                s = step(g, r, q, rows)
                done[r, q] = s
                seen[dims, k, s] += 1


def encode_context(symbols: np.ndarray, grid_shape: tuple[int, int, int], model: NeighbourContext) -> bytes:
    """(P, D) symbols of (groups, rows, cols) patches in raster order -> bytes."""
    groups, rows_n, cols = grid_shape
    if symbols.shape != (groups * rows_n * cols, model.prior.shape[0]):
        raise ValueError("symbols do not match the patch grid or the context model")
    grid = symbols.astype(np.int64).reshape(groups, rows_n, cols, -1)
    return _encode_context(grid_shape, model, lambda g, r, q, rows: grid[g, r, q])


def encode_context_rd(positions: np.ndarray, grid_shape: tuple[int, int, int], model: NeighbourContext,
                      lam: float) -> tuple[bytes, np.ndarray]:
    """Rate-distortion optimised quantization, encoder only: (P, D) positions in symbol units
    (Quantizer.positions) -> (bytes, the (P, D) int32 symbols chosen).

    Each value takes the one of its two nearest levels with the lower (position - level)^2 + lam *
    bits, the bits those of the adaptive row the decoder will use for it (its context is built from
    the symbols already chosen). lam = 0 is plain rounding. A decoder needs nothing of this: the file
    holds ordinary symbols.
    """
    groups, rows_n, cols = grid_shape
    d = model.prior.shape[0]
    if positions.shape != (groups * rows_n * cols, d):
        raise ValueError("positions do not match the patch grid or the context model")
    if not (lam >= 0 and np.isfinite(lam)):
        raise ValueError("lam must be finite and >= 0")
    top = model.levels - 1
    u = np.asarray(positions, dtype=np.float64).reshape(groups, rows_n, cols, d)
    dims = np.arange(d)
    chosen = np.zeros(u.shape, dtype=np.int64)

    def choose(g: int, r: int, q: int, rows: np.ndarray) -> np.ndarray:
        x = u[g, r, q]
        if lam == 0:  # exactly Quantizer.quantize's rounding
            chosen[g, r, q] = np.clip(np.rint(x), 0, top)
            return chosen[g, r, q]
        lo = np.clip(np.floor(x), 0, top - 1).astype(np.int64)
        hi = lo + 1
        bits = np.log2(rows[dims, lo] / rows[dims, hi])  # bits(hi) - bits(lo)
        worse_lo = (x - lo) ** 2 - (x - hi) ** 2 - lam * bits  # cost(lo) - cost(hi)
        s = np.where(worse_lo > 0, hi, lo)
        chosen[g, r, q] = s
        return s

    data = _encode_context(grid_shape, model, choose)
    return data, chosen.reshape(-1, d).astype(np.int32)


def _encode_context(grid_shape: tuple[int, int, int], model: NeighbourContext, symbols_of) -> bytes:
    """Range-code the patches in context order; `symbols_of(g, r, q, rows)` gives each patch's (D,)
    symbols, knowing the integer rows they are coded with."""
    coder = constriction.stream.queue.RangeEncoder()
    cat = constriction.stream.model.Categorical(perfect=False)

    def step(g: int, r: int, q: int, rows: np.ndarray) -> np.ndarray:
        s = np.asarray(symbols_of(g, r, q, rows), dtype=np.int64)
        coder.encode(s.astype(np.int32), cat, rows.astype(np.float32) / np.float32(1 << TABLE_PRECISION))
        return s

    _context_pass(grid_shape, model, step)
    return coder.get_compressed().astype("<u4").tobytes()


def decode_context(data: bytes, grid_shape: tuple[int, int, int], model: NeighbourContext) -> np.ndarray:
    """bytes -> (P, D) int32 symbols. Corrupt data raises FormatError."""
    if len(data) % 4:
        raise FormatError("corrupted payload (length is not a whole number of words)")
    groups, rows_n, cols = grid_shape
    out = np.zeros((groups, rows_n, cols, model.prior.shape[0]), dtype=np.int64)
    try:
        coder = constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
        cat = constriction.stream.model.Categorical(perfect=False)

        def step(g: int, r: int, q: int, rows: np.ndarray) -> np.ndarray:
            s = np.asarray(coder.decode(cat, rows.astype(np.float32) / np.float32(1 << TABLE_PRECISION)),
                           dtype=np.int64)
            out[g, r, q] = s
            return s

        _context_pass(grid_shape, model, step)
    except Exception as e:  # constriction reports invalid data with its own exception types
        raise FormatError(f"corrupted payload ({e})") from None
    if out.size and (out.min() < 0 or out.max() >= model.levels):
        raise FormatError("corrupted payload (symbol out of range)")
    return out.reshape(-1, model.prior.shape[0]).astype(np.int32)
