"""Entropy stage: symbols <-> bytes with constriction's range coder and integer tables.

A table is one row of integer frequencies per latent dimension, every entry >= 1 and every
row summing to exactly 2^TABLE_PRECISION. The coder sees these as dyadic fractions
(frequency / 2^16), which are exact in floating point, so encoder and decoder build the same
fixed-point model on every machine: which symbol is read never depends on a float computed
from decoded data.
"""

from __future__ import annotations

import constriction
import numpy as np

from .errors import FormatError

TABLE_PRECISION = 16  # rows sum to 2^16


def frequency_table(symbols: np.ndarray, levels: int, prior: float = 1.0) -> np.ndarray:
    """Per-dimension integer table (D, levels) from training symbols (N, D).

    Additive smoothing (`prior` counts per symbol, Laplace at 1) and a floor of 1 keep every
    symbol codable; rows are rescaled to sum to 2^TABLE_PRECISION exactly (largest-remainder
    rounding).
    """
    n, d = symbols.shape
    total = 1 << TABLE_PRECISION
    if levels > total // 2:
        raise ValueError("too many levels for the table precision")
    table = np.zeros((d, levels), dtype=np.int64)
    for j in range(d):
        counts = np.bincount(symbols[:, j], minlength=levels)[:levels].astype(np.float64) + prior
        spare = total - levels  # every symbol gets 1, the rest is shared by the counts
        share = counts / counts.sum() * spare
        row = np.floor(share).astype(np.int64)
        remainder = spare - row.sum()
        row[np.argsort(-(share - row), kind="stable")[:remainder]] += 1
        table[j] = row + 1
    assert (table.sum(axis=1) == total).all() and table.min() >= 1
    return table.astype(np.int32)


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
