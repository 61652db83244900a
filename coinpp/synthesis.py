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
    centre = _centres(size, out_size, place)
    k = np.clip(np.floor(centre / patch).astype(np.int64), 0, math.ceil(size / patch) - 1)
    return k, _local(centre, k, patch)


def _centres(size: int, out_size: int, place: tuple[float, float] | None) -> np.ndarray:
    if place is None:
        return (np.arange(out_size, dtype=np.float64) + 0.5) * (size / out_size)  # input pixel units
    return place[0] + np.arange(out_size, dtype=np.float64) * place[1]


def _local(centre: np.ndarray, k: np.ndarray, patch: int) -> np.ndarray:
    return 2.0 * (centre - k * patch) / patch - 1.0


def _axis_blend(size: int, out_size: int, patch: int, place: tuple[float, float] | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """As `_axis_samples`, and for samples between two patches' outermost input samples (within half
    an input sample of their border) the other patch too: (k, local, other k, its local, its weight).

    There each patch's network is extrapolating past its last sample, and the two disagree: the
    weights go linearly from one to the other across that gap, so neighbouring patches meet without a
    step. Input sample centres themselves get weight 0 for the other patch (the own grid is unchanged)."""
    centre = _centres(size, out_size, place)
    count = math.ceil(size / patch)
    k, local = _axis_samples(size, out_size, patch, place)
    offset = centre - k * patch  # input samples from the patch's start
    before = (offset < 0.5) & (k > 0)  # between the last sample of patch k - 1 and the first of k
    after = (offset > patch - 0.5) & (k < count - 1) & (centre < size - 0.5)
    other = np.where(before, k - 1, np.where(after, k + 1, k))
    weight = np.where(before, 0.5 - offset, np.where(after, offset - (patch - 0.5), 0.0))
    return k, local, other, _local(centre, other, patch), weight


@torch.no_grad()
def evaluate_grid(net: LatentModulatedSiren, latents: torch.Tensor, shape: tuple[int, ...],
                  patch: tuple[int, ...], out_shape: tuple[int, ...], device: str = "auto",
                  chunk: int = EVAL_CHUNK, placement: Placement | None = None, supersample: int = 1) -> np.ndarray:
    """Decode the signal of spatial `shape` onto a regular grid of `out_shape` samples (spanning the
    signal, or at `placement`). Off the signal's own grid, samples between two patches' outermost
    samples blend both patches' networks (`_axis_blend`), so patch borders leave no seam.

    `supersample` k > 1: each output sample is the mean of the network at the centres of the k^d
    equal sub-cells of its cell (the output grid k times finer per axis, blended as above, averaged
    over k x ... x k blocks). A network meta-learned with sub-sample supervision (`coin train
    --finer`) is trained between its samples as well as at them; averaging over the cell takes out part
    of its error at any single point.

    Returns (*out_shape, C) float32 (not clipped).
    """
    dev = pick_device(device)
    net = net.to(dev)
    counts = [math.ceil(s / p) for s, p in zip(shape, patch, strict=True)]
    k = supersample
    fine_shape = tuple(k * o for o in out_shape)
    places = [None if a is None else (a[0] + (1.0 / k - 1.0) * a[1] / 2, a[1] / k)  # the sub-cells' centres
              for a in (placement or (None,) * len(shape))]
    axes = [_axis_blend(s, o, p, a) for s, o, p, a in zip(shape, fine_shape, patch, places, strict=True)]
    if fine_shape == tuple(shape) and placement is None:
        for ax in axes:  # the own grid: every sample is a patch's own (no blending, bit-exact as coded)
            ax[4][:] = 0.0
    shifts = net.latent_map(latents.to(dev))  # (P, L*W)
    n = math.prod(out_shape)
    out = np.empty((n, net.cfg.out_dim), dtype=np.float32)
    offsets = np.stack(np.unravel_index(np.arange(k ** len(shape)), (k,) * len(shape)), axis=-1)
    for start in range(0, n, chunk):  # each chunk's samples found from the axes: memory bounded by the chunk
        idx = np.unravel_index(np.arange(start, min(start + chunk, n)), out_shape)
        if k == 1:
            out[start : start + len(idx[0])] = _evaluate_blended(net, shifts, axes, idx, counts, dev)
            continue
        total = np.zeros((len(idx[0]), net.cfg.out_dim), dtype=np.float64)
        for off in offsets:  # the same order on every machine: the sum is reproducible
            total += _evaluate_blended(net, shifts, axes, tuple(k * i + o for i, o in zip(idx, off, strict=True)),
                                       counts, dev)
        out[start : start + len(idx[0])] = total / len(offsets)
    return out.reshape(*out_shape, net.cfg.out_dim)


def _evaluate_blended(net: LatentModulatedSiren, shifts: torch.Tensor, axes: list, idx: tuple[np.ndarray, ...],
                      counts: list[int], dev: torch.device) -> np.ndarray:
    """The samples `idx` (per axis): each patch combination (own or other patch per axis) with a
    nonzero weight evaluated and summed, weights the product over the axes."""
    m = len(idx[0])
    total = np.zeros((m, net.cfg.out_dim), dtype=np.float32)
    for combo in range(1 << len(axes)):
        use = [(combo >> a) & 1 for a in range(len(axes))]
        w = np.ones(m)
        for (_, _, _, _, weight), i, u in zip(axes, idx, use, strict=True):
            w = w * (weight[i] if u else 1.0 - weight[i])
        sel = np.flatnonzero(w > 0)
        if not len(sel):
            continue
        pid = np.ravel_multi_index([(ax[2] if u else ax[0])[i[sel]] for ax, i, u in zip(axes, idx, use, strict=True)],
                                   counts)
        c = np.stack([(ax[3] if u else ax[1])[i[sel]] for ax, i, u in zip(axes, idx, use, strict=True)],
                     axis=-1).astype(np.float32)
        v = net.forward_points(torch.from_numpy(c).to(dev), shifts[torch.from_numpy(pid).to(dev)]).cpu().numpy()
        if combo == 0 and len(sel) == m and np.all(w == 1.0):
            total = v  # nothing blended in this chunk: exactly the patch's own output
        else:
            total[sel] += (w[sel, None] * v).astype(np.float32)
    return total


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
