"""Synthesis: the decoder evaluates the base network at whatever sample positions are asked for.

Each position finds its patch and its coordinate inside that patch's cell (pixel centres, see
patching.py); a latent grid interpolates latents between cell centres; fields with absolute
coordinates (climate) evaluate every field's latent at the same points.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .device import pick_device
from .modalities import Placement
from .model import GridModulatedSiren, LatentModulatedSiren
from .patching import CellLayout, row_bands

EVAL_CHUNK = 1 << 15  # points per chunk when evaluating


def _axis_samples(size: int, out_size: int, patch: int, place: tuple[float, float] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """For `out_size` samples spanning an axis of `size` input samples (or placed at (first centre,
    step) in input samples): the patch index and the coordinate inside that patch's cell [-1, 1] of
    each output sample centre (beyond the cell for a sample outside the input: the network extended)."""
    if place is None:
        centre = (np.arange(out_size, dtype=np.float64) + 0.5) * (size / out_size)  # input pixel units
    else:
        centre = place[0] + np.arange(out_size, dtype=np.float64) * place[1]
    k = np.clip(np.floor(centre / patch).astype(np.int64), 0, math.ceil(size / patch) - 1)
    local = 2.0 * (centre - k * patch) / patch - 1.0
    return k, local


@torch.no_grad()
def evaluate_grid(net: LatentModulatedSiren, latents: torch.Tensor, shape: tuple[int, ...],
                  patch: tuple[int, ...], out_shape: tuple[int, ...], device: str = "auto",
                  chunk: int = EVAL_CHUNK, placement: Placement | None = None) -> np.ndarray:
    """Decode the signal of spatial `shape` onto a regular grid of `out_shape` samples (spanning the
    signal, or at `placement`).

    Returns (*out_shape, C) float32 (not clipped).
    """
    dev = pick_device(device)
    net = net.to(dev)
    counts = [math.ceil(s / p) for s, p in zip(shape, patch, strict=True)]
    places = placement or (None,) * len(shape)
    axes = [_axis_samples(s, o, p, a) for s, o, p, a in zip(shape, out_shape, patch, places, strict=True)]
    shifts = net.latent_map(latents.to(dev))  # (P, L*W)
    n = math.prod(out_shape)
    out = np.empty((n, net.cfg.out_dim), dtype=np.float32)
    for start in range(0, n, chunk):  # each chunk's samples found from the axes: memory bounded by the chunk
        idx = np.unravel_index(np.arange(start, min(start + chunk, n)), out_shape)
        pid = np.ravel_multi_index([k[i] for (k, _), i in zip(axes, idx, strict=True)], counts)
        c = np.stack([loc[i] for (_, loc), i in zip(axes, idx, strict=True)], axis=-1).astype(np.float32)
        s = shifts[torch.from_numpy(pid).to(dev)]
        out[start : start + len(c)] = net.forward_points(torch.from_numpy(c).to(dev), s).cpu().numpy()
    return out.reshape(*out_shape, net.cfg.out_dim)


@torch.no_grad()
def evaluate_fields(net: LatentModulatedSiren, latents: torch.Tensor, coords: torch.Tensor, device: str = "auto",
                    chunk: int = EVAL_CHUNK) -> np.ndarray:
    """Every latent (F, D) evaluated at the same points coords (N, I) -> (F, N, C) float32."""
    dev = pick_device(device)
    net = net.to(dev)
    coords = coords.to(dev)
    per = max(1, chunk // max(1, coords.shape[0]))  # fields per chunk
    out = [net(coords, part.to(dev)).cpu() for part in latents.split(per)]
    return torch.cat(out).numpy() if out else np.zeros((0, coords.shape[0], net.cfg.out_dim), np.float32)


@torch.no_grad()
def evaluate_latent_grid(net: GridModulatedSiren, latents: torch.Tensor, shape: tuple[int, int],
                         out_shape: tuple[int, int], device: str = "auto", chunk: int = EVAL_CHUNK) -> np.ndarray:
    """Decode a latent grid (Gy * Gx, D) of a region of `shape` samples onto `out_shape` samples
    spanning it; (*out_shape, C) float32, not clipped."""
    dev = pick_device(device)
    net = net.to(dev)
    layout = CellLayout.for_region(tuple(shape), net.cfg.cell, net.cfg.frequencies, tuple(out_shape)).to(dev)
    z = latents.to(dev).unsqueeze(0)
    out = np.empty((math.prod(out_shape), net.cfg.out_dim), dtype=np.float32)
    cols = out_shape[1]
    for a, b in row_bands(layout, chunk):
        out[a * cols : b * cols] = net(layout.rows(a, b), z)[0].cpu().numpy()
    return out.reshape(*out_shape, net.cfg.out_dim)
