"""Patch stage: cut a signal into non-overlapping patches and put them back; patch coordinates.

Signals are channels-last arrays of shape (*spatial, C). Far edges are reflect-padded up to
a multiple of the patch shape; `merge` crops the padding away again.

Coordinates are pixel centres in [-1, 1] per axis: a patch of n samples covers its cell
exactly, so evaluating it at s*n centres gives s-times denser samples of the same cell and
neighbouring patches meet without a seam.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


def pixel_centres(n: int) -> torch.Tensor:
    """n pixel-centre coordinates of the cell [-1, 1]: -1 + (2k + 1) / n."""
    return (torch.arange(n, dtype=torch.float64) * 2 + 1) / n - 1


def patch_coordinates(shape: tuple[int, ...]) -> torch.Tensor:
    """Coordinates of a patch sampled on `shape`: (prod(shape), len(shape)) float32."""
    axes = [pixel_centres(n) for n in shape]
    grid = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(grid, dim=-1).reshape(-1, len(shape)).float()


def checkerboard(shape: tuple[int, ...], parity: int) -> torch.Tensor:
    """Indices (into patch_coordinates(shape)'s rows) of the samples whose index sum has the given
    parity: half of the patch, spread over all of it (a checkerboard in 2-D)."""
    grid = np.indices(shape).sum(axis=0).reshape(-1)
    return torch.from_numpy(np.flatnonzero(grid % 2 == parity % 2))


@dataclass(frozen=True)
class PatchGrid:
    """How a signal of `shape` (spatial) is tiled by patches of `patch` (spatial)."""

    shape: tuple[int, ...]
    patch: tuple[int, ...]

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(math.ceil(s / p) for s, p in zip(self.shape, self.patch, strict=True))

    @property
    def padded(self) -> tuple[int, ...]:
        return tuple(c * p for c, p in zip(self.counts, self.patch, strict=True))

    @property
    def padding(self) -> tuple[int, ...]:
        return tuple(q - s for q, s in zip(self.padded, self.shape, strict=True))

    @property
    def num_patches(self) -> int:
        return math.prod(self.counts)


def split(signal: np.ndarray, patch: tuple[int, ...]) -> tuple[np.ndarray, PatchGrid]:
    """(*spatial, C) -> (P, prod(patch), C) patches in row-major patch order, and the grid."""
    spatial, channels = signal.shape[:-1], signal.shape[-1]
    grid = PatchGrid(tuple(spatial), tuple(patch))
    pad = [(0, p) for p in grid.padding] + [(0, 0)]
    # Reflect needs the pad to be smaller than the axis; 'symmetric' then covers tiny axes.
    mode = "reflect" if all(p < s for p, s in zip(grid.padding, spatial, strict=True)) else "symmetric"
    x = np.pad(signal, pad, mode=mode) if any(grid.padding) else signal
    # (c0*p0, c1*p1, ..., C) -> (c0, p0, c1, p1, ..., C) -> (c0, c1, ..., p0, p1, ..., C)
    d = len(patch)
    inter = [v for cp in zip(grid.counts, patch, strict=True) for v in cp]
    x = x.reshape(*inter, channels)
    order = [2 * i for i in range(d)] + [2 * i + 1 for i in range(d)] + [2 * d]
    x = x.transpose(order)
    return np.ascontiguousarray(x.reshape(grid.num_patches, math.prod(patch), channels)), grid


def merge(patches: np.ndarray, grid: PatchGrid, scale: int | tuple[int, ...] = 1) -> np.ndarray:
    """Inverse of `split` for patches sampled `scale` times denser; crops the padding.

    patches: (P, prod(patch * scale), C). With scale s the output covers the same area at s
    samples per input sample; the crop keeps round(shape * s) samples per axis.
    """
    d = len(grid.patch)
    scales = (scale,) * d if isinstance(scale, int) else tuple(scale)
    sp = tuple(p * s for p, s in zip(grid.patch, scales, strict=True))
    channels = patches.shape[-1]
    x = patches.reshape(*grid.counts, *sp, channels)
    order = [v for i in range(d) for v in (i, d + i)] + [2 * d]
    x = x.transpose(order).reshape(*[c * p for c, p in zip(grid.counts, sp, strict=True)], channels)
    crop = tuple(slice(0, s * k) for s, k in zip(grid.shape, scales, strict=True))
    return x[crop]


# Latent grids (GridModulatedSiren): one latent per cell of `cell` x `cell` samples, placed at the
# cell's centre and interpolated linearly in between (clamped past the outer centres), so the
# latents of neighbouring cells blend and the decoded signal has no seams at any resolution.


def sample_centres(size: int, out_size: int) -> np.ndarray:
    """Centres of `out_size` samples spanning an axis of `size` input samples, in input units."""
    return (np.arange(out_size, dtype=np.float64) + 0.5) * (size / out_size)


def interpolation_weights(centres: np.ndarray, cell: int, nodes: int) -> np.ndarray:
    """(len(centres), nodes) weights that interpolate latents at cell centres (k + 1/2) * cell
    linearly at `centres` (input sample units); past the outer centres the edge latent holds."""
    j = centres / cell - 0.5
    j0 = np.floor(j)
    t = j - j0
    rows = np.arange(len(centres))
    w = np.zeros((len(centres), nodes))
    np.add.at(w, (rows, np.clip(j0.astype(np.int64), 0, nodes - 1)), 1.0 - t)
    np.add.at(w, (rows, np.clip(j0.astype(np.int64) + 1, 0, nodes - 1)), t)
    return w


def cell_harmonics(centres: np.ndarray, cell: int, frequencies: int) -> np.ndarray:
    """(len(centres), 2F): sin and cos of 2 pi k u, k = 1..F, u the position in cells. Periodic in
    the cell, so the same within every cell and continuous across cell borders."""
    angle = 2 * np.pi * np.outer(centres / cell, np.arange(1, frequencies + 1))
    return np.concatenate([np.sin(angle), np.cos(angle)], axis=1)


@dataclass
class CellLayout:
    """Where a 2-D latent grid is evaluated: rows x cols samples, with the grid's interpolation
    weights and the cell harmonics per axis (both separable)."""

    row_weights: torch.Tensor  # (H, Gy)
    col_weights: torch.Tensor  # (W, Gx)
    row_harmonics: torch.Tensor  # (H, 2F)
    col_harmonics: torch.Tensor  # (W, 2F)

    @classmethod
    def build(cls, row_centres: np.ndarray, col_centres: np.ndarray, nodes: tuple[int, int], cell: int,
              frequencies: int) -> CellLayout:
        ry, rx = (torch.from_numpy(interpolation_weights(c, cell, n)).float()
                  for c, n in zip((row_centres, col_centres), nodes, strict=True))
        fy, fx = (torch.from_numpy(cell_harmonics(c, cell, frequencies)).float() for c in (row_centres, col_centres))
        return cls(ry, rx, fy, fx)

    @classmethod
    def for_region(cls, shape: tuple[int, int], cell: int, frequencies: int,
                   out_shape: tuple[int, int] | None = None) -> CellLayout:
        """The whole region of `shape` samples, its grid of ceil(shape / cell) latents, sampled on
        `out_shape` (default: the samples themselves)."""
        out_shape = out_shape or shape
        nodes = tuple(math.ceil(s / cell) for s in shape)
        return cls.build(*(sample_centres(s, o) for s, o in zip(shape, out_shape, strict=True)), nodes, cell,
                         frequencies)

    @property
    def shape(self) -> tuple[int, int]:
        return self.row_weights.shape[0], self.col_weights.shape[0]

    @property
    def nodes(self) -> tuple[int, int]:
        return self.row_weights.shape[1], self.col_weights.shape[1]

    @property
    def features(self) -> torch.Tensor:
        """(H * W, 4F): the row's harmonics, then the column's, for every sample (row-major)."""
        (h, w), f = self.shape, self.row_harmonics.shape[1]
        return torch.cat([self.row_harmonics[:, None, :].expand(h, w, f),
                          self.col_harmonics[None, :, :].expand(h, w, f)], dim=-1).reshape(h * w, 2 * f)

    def rows(self, start: int, stop: int) -> CellLayout:
        """The band of sample rows [start, stop)."""
        return CellLayout(self.row_weights[start:stop], self.col_weights, self.row_harmonics[start:stop],
                          self.col_harmonics)

    def to(self, device: torch.device | str) -> CellLayout:
        return CellLayout(*(t.to(device) for t in (self.row_weights, self.col_weights, self.row_harmonics,
                                                   self.col_harmonics)))


def row_bands(layout: CellLayout, samples: int) -> list[tuple[int, int]]:
    """Bands of whole rows of the layout, each of at most `samples` samples (at least one row)."""
    rows, cols = layout.shape
    step = max(1, samples // max(1, cols))
    return [(a, min(rows, a + step)) for a in range(0, rows, step)]
