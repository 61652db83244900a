"""Learning integer entropy tables from training symbols (the runtime only reads them: entropy.py)."""

from __future__ import annotations

import numpy as np

from ..entropy import TABLE_PRECISION, context_buckets, neighbour_mean


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
    return table.astype(np.int32)

def context_prior(grids: list[np.ndarray], levels: int, buckets: int, prior: float = 1.0) -> np.ndarray:
    """Trained prior (D, K, levels) from training symbol grids (R, Q, D), each a whole image:
    per dimension and bucket, the table of the symbols seen in that context."""
    d = grids[0].shape[2]
    pairs = []
    for g in grids:
        g = g.astype(np.int64)
        for r in range(g.shape[0]):
            for q in range(g.shape[1]):
                pairs.append((context_buckets(neighbour_mean(g, r, q, levels), levels, buckets), g[r, q]))
    k = np.stack([p[0] for p in pairs])  # (N, D)
    s = np.stack([p[1] for p in pairs])
    out = np.zeros((d, buckets, levels), dtype=np.int32)
    for b in range(buckets):
        for j in range(d):
            sel = s[k[:, j] == b, j]
            out[j, b] = frequency_table(sel.reshape(-1, 1).astype(np.int32), levels, prior)[0] if len(sel) else \
                frequency_table(np.zeros((0, 1), np.int32), levels, prior)[0]
    return out
