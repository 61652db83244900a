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
