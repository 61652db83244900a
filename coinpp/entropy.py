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


def frequency_table(symbols: np.ndarray, levels: int) -> np.ndarray:
    """Per-dimension integer table (D, levels) from training symbols (N, D).

    Laplace smoothing (+1 count) and a floor of 1 keep every symbol codable; rows are
    rescaled to sum to 2^TABLE_PRECISION exactly (largest-remainder rounding).
    """
    n, d = symbols.shape
    total = 1 << TABLE_PRECISION
    if levels > total // 2:
        raise ValueError("too many levels for the table precision")
    table = np.zeros((d, levels), dtype=np.int64)
    for j in range(d):
        counts = np.bincount(symbols[:, j], minlength=levels)[:levels].astype(np.float64) + 1.0
        spare = total - levels  # every symbol gets 1, the rest is shared by the counts
        share = counts / counts.sum() * spare
        row = np.floor(share).astype(np.int64)
        remainder = spare - row.sum()
        row[np.argsort(-(share - row), kind="stable")[:remainder]] += 1
        table[j] = row + 1
    assert (table.sum(axis=1) == total).all() and table.min() >= 1
    return table.astype(np.int32)


def _probabilities(table: np.ndarray, dims: np.ndarray) -> np.ndarray:
    # Exact: integers below 2^16 divided by 2^16 are representable in float32.
    return table[dims].astype(np.float32) / np.float32(1 << TABLE_PRECISION)


def encode(symbols: np.ndarray, table: np.ndarray) -> bytes:
    """(P, D) symbols -> bytes; dimension d of every patch is coded with table row d."""
    p, d = symbols.shape
    if table.shape[0] != d:
        raise ValueError("table does not match the latent size")
    flat = symbols.reshape(-1).astype(np.int32)
    dims = np.tile(np.arange(d), p)
    coder = constriction.stream.queue.RangeEncoder()
    model = constriction.stream.model.Categorical(perfect=False)
    coder.encode(flat, model, _probabilities(table, dims))
    return coder.get_compressed().astype("<u4").tobytes()


def decode(data: bytes, num_patches: int, table: np.ndarray) -> np.ndarray:
    """bytes -> (P, D) int32 symbols. Corrupt data raises FormatError."""
    if len(data) % 4:
        raise FormatError("corrupted payload (length is not a whole number of words)")
    d = table.shape[0]
    words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
    dims = np.tile(np.arange(d), num_patches)
    try:
        coder = constriction.stream.queue.RangeDecoder(words)
        model = constriction.stream.model.Categorical(perfect=False)
        flat = coder.decode(model, _probabilities(table, dims))
    except Exception as e:  # constriction reports invalid data with its own exception types
        raise FormatError(f"corrupted payload ({e})") from None
    return np.asarray(flat, dtype=np.int32).reshape(num_patches, d)
