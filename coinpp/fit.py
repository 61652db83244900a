"""Fit stage (encoding's hot loop) and its inverse, evaluation at any coordinates.

Encoding: K SGD steps on every patch's latent from zero with the base network frozen, using
the meta-learned per-dimension rates; all patches of a file (or of many files) in one batch,
cut into chunks to bound memory.

Decoding: the network is evaluated at whatever sample positions are asked for; each position
finds its patch and its coordinate inside that patch's cell (pixel centres, see patching.py).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .device import pick_device
from .malloc import bounded_heap
from .model import GridModulatedSiren, LatentModulatedSiren
from .patching import CellLayout, patch_coordinates, row_bands
from .postfilter import (
    POSITION_FEATURES,
    TILE,
    PostFilter,
    apply,
    from_view,
    tiles,
    to_view,
    usable_views,
    view_positions,
)
from .quantize import Quantizer

FIT_CHUNK = 64  # patches per chunk: past ~16-64 the CPU gains nothing and memory grows
# A GPU needs far larger batches to be busy (about 3 MB per 32x32 patch at width 128): this is what
# lets folder mode fill it with the patches of many small files. Not measured here (no GPU).
FIT_CHUNK_CUDA = 1024
# At most this much autograd graph of the post-filter kept by loss_and_input_grad between its passes.
KEEP_GRAPH_BYTES = 2 << 30
# Steps through the post-filter keep the network's activations of a whole image up to this size
# (filtered_loss_and_latent_grad).
KEEP_ACTIVATIONS_BYTES = 3 << 30
# Latent grids: samples per band of rows in the fit. The gradient is summed over bands, so memory
# stays bounded (about 1.5 kB per sample at width 64) whatever the image size.
# Images of more values than this run their steps through the filter with large arrays mapped on their
# own (malloc.bounded_heap): their whole-image arrays of tens to hundreds of MB fragment the tuned heap.
# Smaller images (Kodak: 1.2 M values) keep the tuned heap, as page faults would cost them time.
BOUNDED_HEAP_VALUES = 1 << 22
BAND_SAMPLES = 1 << 16
BAND_SAMPLES_CUDA = 1 << 21


@torch.no_grad()
def fit_latents(net: LatentModulatedSiren, coords: torch.Tensor, targets: np.ndarray | torch.Tensor,
                steps: int, device: str = "auto", chunk: int | None = None,
                subsets: list[torch.Tensor] | None = None) -> torch.Tensor:
    """targets (P, N, C) in [0, 1], coords (N, I) -> latents (P, D) on the CPU.

    With `subsets`, step k < len(subsets) takes its gradient on the samples subsets[k] (indices into
    N) alone: the mean squared error of a spread-out half of each patch estimates that of the whole,
    at half the cost, and the first steps' large moves do not need the rest (pipeline.fit_signals).
    """
    dev = pick_device(device)
    chunk = chunk or (FIT_CHUNK_CUDA if dev.type == "cuda" else FIT_CHUNK)
    net = net.to(dev)
    coords = coords.to(dev)
    subsets = [s.to(dev) for s in subsets or []][:steps]
    t = torch.as_tensor(targets, dtype=torch.float32)
    out = []
    for part in t.split(chunk):
        part = part.to(dev)
        z = None
        for idx in subsets:
            z = net.inner_loop(coords[idx], part[:, idx], 1, z)
        out.append(net.inner_loop(coords, part, steps - len(subsets), z).cpu())
    return torch.cat(out) if out else torch.zeros(0, net.cfg.latent_dim)


@dataclass(frozen=True)
class RatePenalty:
    """A differentiable stand-in for a latent's code length, for rate-aware refinement.

    Each coded value y_j (a principal component with a basis, else the dimension itself) is taken
    as Laplace-distributed about `centre_j` with mean absolute deviation `scale_j`, so it costs
    |y_j - centre_j| / (scale_j ln 2) bits plus a constant; `lam` converts bits into the loss's
    units (per-patch MSE per bit). Minimising MSE + lam * bits is the encoder's Lagrangian.
    """

    lam: float
    centre: np.ndarray  # (D,) of the coded values
    scale: np.ndarray  # (D,) > 0, same units
    basis: np.ndarray | None = None  # (D, D): coded values y = (z - origin) basis^T
    origin: np.ndarray | None = None  # (D,)

    @classmethod
    def from_latents(cls, quantizer: Quantizer, latents: np.ndarray | torch.Tensor, lam: float) -> RatePenalty:
        """Centre and scale of every coded value from fitted training latents (N, D): the median and
        the mean absolute deviation about it (the Laplace fit), whatever the bit depth."""
        z = latents.detach().cpu().numpy() if isinstance(latents, torch.Tensor) else np.asarray(latents)
        y = quantizer.coefficients(z)
        centre = np.median(y, axis=0)
        return cls(float(lam), centre, np.maximum(np.abs(y - centre).mean(axis=0), 1e-6), quantizer.basis,
                   quantizer.centre)

    @classmethod
    def from_spec(cls, quantizer: Quantizer, spec: dict) -> RatePenalty:
        """From a codec's refine entry: rate_lambda, rate_centres and rate_scales (lists of D)."""
        return cls(float(spec["rate_lambda"]), np.asarray(spec["rate_centres"], dtype=np.float64),
                   np.asarray(spec["rate_scales"], dtype=np.float64), quantizer.basis, quantizer.centre)

    def spec(self) -> dict:
        """The codec refine entries from_spec reads (five significant digits: JSON, not bit-exact)."""
        return {"rate_lambda": self.lam, "rate_centres": [float(f"{x:.5g}") for x in self.centre],
                "rate_scales": [float(f"{x:.5g}") for x in self.scale]}

    def __call__(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, D) latents -> penalty (P,) and its gradient (P, D)."""
        dev = z.device
        y = z
        if self.basis is not None:
            basis = torch.as_tensor(self.basis, dtype=z.dtype, device=dev)
            y = (z - torch.as_tensor(self.origin, dtype=z.dtype, device=dev)) @ basis.T
        w = torch.as_tensor(self.lam / (self.scale * math.log(2)), dtype=z.dtype, device=dev)
        d = y - torch.as_tensor(self.centre, dtype=z.dtype, device=dev)
        g = torch.sign(d) * w
        return (d.abs() * w).sum(dim=1), g @ basis if self.basis is not None else g


@torch.no_grad()
def refine_latents(net: LatentModulatedSiren, coords: torch.Tensor, targets: np.ndarray | torch.Tensor,
                   latents: torch.Tensor, steps: int, lr: np.ndarray, quantizer: Quantizer | None = None,
                   device: str = "auto", chunk: int | None = None,
                   penalty: RatePenalty | None = None, settle: float = 0.0,
                   subsets: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Adam on the latents after the meta-learned SGD steps, optionally quantization-aware.

    With a quantizer, every gradient is taken at the quantized latents and passed straight
    through the rounding, so the latents move to where their *quantized* values fit the patch.
    `lr` (D,) is per dimension (the codec sets it as a fraction of each dimension's quantizer
    step). Each patch keeps the best latent it visited, judged on the loss at its quantized
    value, so refinement never ends worse than it started. With a `penalty`, the loss is the
    MSE plus the penalty's rate term, so Adam does not spend bits for little distortion.
    With `settle` > 0, a patch whose loss fell by less than that fraction of its best loss in a
    step stops there (flat sky settles in a step or two, foliage goes on), and the steps left
    run on the others only. With `subsets`, step k < len(subsets) takes its gradient on the samples
    subsets[k] alone (half of each patch: half the arithmetic), and is not judged (its loss is the
    half's); the starting latent is judged on the whole patch instead.
    """
    dev = pick_device(device)
    chunk = chunk or (FIT_CHUNK_CUDA if dev.type == "cuda" else FIT_CHUNK)
    net = net.to(dev)
    coords = coords.to(dev)
    subsets = [s.to(dev) for s in subsets or []][: max(steps - 1, 0)]  # the last evaluation is whole
    t = torch.as_tensor(targets, dtype=torch.float32)
    rate = torch.as_tensor(lr, dtype=torch.float32, device=dev)
    b1, b2, eps = 0.9, 0.999, 1e-12
    out = []
    for part, z0 in zip(t.split(chunk), latents.split(chunk), strict=True):
        part, z = part.to(dev), z0.to(dev).clone()
        result, rows = z.clone(), torch.arange(len(z), device=dev)  # rows: the patches still refined
        m, v = torch.zeros_like(z), torch.zeros_like(z)
        best, best_loss = z.clone(), torch.full((len(z),), float("inf"), device=dev)
        if subsets:  # the start judged on the whole patch, as the half steps are not
            at = quantize_ste(quantizer, z) if quantizer is not None else z
            best_loss = net.patch_mse(coords, at, part) + (penalty(z)[0] if penalty is not None else 0.0)
        for k in range(1, steps + 1):
            at = quantize_ste(quantizer, z) if quantizer is not None else z
            if k == steps:  # the last evaluation only judges the last update: no gradient
                loss = net.patch_mse(coords, at, part)
                if penalty is not None:
                    loss = loss + penalty(z)[0]
                better = loss < best_loss
                best[better] = z[better]
                break
            half = subsets[k - 1] if k <= len(subsets) else None
            if half is None:
                loss, g = net.loss_and_latent_grad(coords, at, part)
            else:
                loss, g = net.loss_and_latent_grad(coords[half], at, part[:, half])
            if penalty is not None:
                extra, g_extra = penalty(z)
                loss, g = loss + extra, g + g_extra
            settled = loss >= (1 - settle) * best_loss if settle > 0 and half is None else None
            if half is None:
                better = loss < best_loss
                best[better], best_loss[better] = z[better], loss[better]
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            z = z - rate * (m / (1 - b1**k)) / ((v / (1 - b2**k)).sqrt() + eps)
            if settled is not None and bool(settled.any()):
                result[rows[settled]] = best[settled]
                going = ~settled
                z, m, v, best, best_loss, part, rows = (a[going] for a in (z, m, v, best, best_loss, part, rows))
                if not len(rows):
                    break
        result[rows] = best
        out.append(result.cpu())
    return torch.cat(out) if out else latents


def _patches_to_image(out: torch.Tensor, patch: tuple[int, int], shape: tuple[int, int]) -> torch.Tensor:
    """Network outputs (P, N, C) of the patches in row-major order -> the (C, H, W) image they tile."""
    (ph, pw), (h, w), c = patch, shape, out.shape[-1]
    rows, cols = math.ceil(h / ph), math.ceil(w / pw)
    return out.reshape(rows, cols, ph, pw, c).permute(4, 0, 2, 1, 3).reshape(c, rows * ph, cols * pw)[:, :h, :w]


@torch.no_grad()
def filtered_loss(net: LatentModulatedSiren, postfilter: PostFilter, patch: tuple[int, int], goal: torch.Tensor,
                  latents: torch.Tensor, views: int | None = None, chunk: int = FIT_CHUNK) -> float:
    """filtered_loss_and_latent_grad's loss alone: no activations kept, no backward passes."""
    coords = patch_coordinates(patch).to(latents.device)
    # forward_keeping, not forward: the same arithmetic (w0 folded in) as the steps' own losses
    outs = [net.forward_keeping(coords, part)[0] for part in latents.split(chunk)]
    image = _patches_to_image(torch.cat(outs), patch, tuple(goal.shape[1:]))
    mean = apply(postfilter, image.clamp(0, 1).permute(1, 2, 0).cpu().numpy(), latents.device, views=views)
    err = torch.from_numpy(mean).permute(2, 0, 1).to(goal.device) - goal
    return float(err.double().pow(2).sum()) / (patch[0] * patch[1] * goal.shape[0])


@torch.no_grad()
def filtered_loss_and_latent_grad(net: LatentModulatedSiren, postfilter: PostFilter, patch: tuple[int, int],
                                  goal: torch.Tensor, latents: torch.Tensor, views: int | None = None,
                                  chunk: int = FIT_CHUNK) -> tuple[float, torch.Tensor]:
    """The post-filtered image's squared error against goal (C, H, W), in per-patch-MSE units (each
    squared error over the values of a patch), and its gradient with respect to the latents (P, D)."""
    dev = latents.device
    coords = patch_coordinates(patch).to(dev)
    c, h, w = goal.shape
    (ph, pw), rows, cols = patch, math.ceil(h / patch[0]), math.ceil(w / patch[1])
    # Keep the activations for the backward pass when they fit (2.6 MB per 32x32 patch at width 128,
    # 1 GB for a Kodak image); else evaluate the network again then (a fifth more time per step).
    keep = len(latents) * ph * pw * net.cfg.width * net.cfg.depth * 4 <= KEEP_ACTIVATIONS_BYTES
    outs, kept = [], []
    for part in latents.split(chunk):
        if keep:
            o, pre = net.forward_keeping(coords, part)
            outs.append(o)
            kept.append(pre)
        else:
            outs.append(net(coords, part))
    image = _patches_to_image(torch.cat(outs), patch, (h, w))
    inside = (image >= 0) & (image <= 1)  # the decoder clips before filtering: no gradient outside
    loss, g_image = loss_and_input_grad(postfilter, image.clamp(0, 1), goal, views)
    g = torch.zeros(c, rows * ph, cols * pw, device=dev)
    g[:, :h, :w] = g_image * inside
    g = g.reshape(c, rows, ph, cols, pw).permute(1, 3, 2, 4, 0).reshape(rows * cols, ph * pw, c)
    scale = 1.0 / (ph * pw * c)  # per-patch-MSE units
    if keep:
        grad = torch.cat([net.latent_grad_from(pre, gp, scale) for pre, gp in zip(kept, g.split(chunk), strict=True)])
    else:
        grad = torch.cat([net.latent_grad_from(net.forward_keeping(coords, zp)[1], gp, scale)
                          for zp, gp in zip(latents.split(chunk), g.split(chunk), strict=True)])
    return loss * scale, grad


@torch.no_grad()
def refine_through_filter(net: LatentModulatedSiren, postfilter: PostFilter, patch: tuple[int, int],
                          target: np.ndarray, latents: torch.Tensor, steps: int, lr: float,
                          penalty: RatePenalty | None = None, views: int | None = None, device: str = "auto",
                          chunk: int | None = None) -> torch.Tensor:
    """Adam on all of an image's latents at once, the loss what the decoder will show: the squared
    error of the post-filtered image (`views` as decoding averages them) plus the rate term.

    The per-patch refinement fits each patch to its own pixels; the filter then changes them, most of
    all at patch borders, which no per-patch loss sees. Here the filter's gradient with respect to the
    decoded image (postfilter.loss_and_input_grad) is passed back through the network by its hand-
    written backward pass (model.latent_grad_from). The loss is in per-patch-MSE units (summed over
    patches), so `lr` and the rate term weigh as in refine_latents. target (H, W, 3) in [0, 1];
    latents (P, D) of its patches in row-major order. Keeps the latents of the lowest loss seen, so
    it never ends worse than it started.
    """
    dev = pick_device(device)
    chunk = chunk or (FIT_CHUNK_CUDA if dev.type == "cuda" else FIT_CHUNK)
    net, postfilter = net.to(dev), postfilter.to(dev)
    h, w, c = target.shape
    if math.ceil(h / patch[0]) * math.ceil(w / patch[1]) != len(latents) or c != net.cfg.out_dim:
        raise ValueError("latents do not tile the image")
    goal = torch.as_tensor(np.ascontiguousarray(target), dtype=torch.float32, device=dev).permute(2, 0, 1)
    z = latents.to(dev).clone()
    m, v = torch.zeros_like(z), torch.zeros_like(z)
    best, best_loss = z.clone(), math.inf
    heap = bounded_heap() if goal.numel() > BOUNDED_HEAP_VALUES else contextlib.nullcontext()
    with heap:
        for k in range(1, steps + 1):
            if k == steps:  # the last evaluation only judges the last update: its gradient would go unused
                loss = filtered_loss(net, postfilter, patch, goal, z, views, chunk)
                if penalty is not None:
                    loss += float(penalty(z)[0].sum())
                if loss < best_loss:
                    best = z.clone()
                break
            loss, grad = filtered_loss_and_latent_grad(net, postfilter, patch, goal, z, views, chunk)
            if penalty is not None:
                extra, g_extra = penalty(z)
                loss, grad = loss + float(extra.sum()), grad + g_extra
            if loss < best_loss:
                best, best_loss = z.clone(), loss
            m.mul_(0.9).add_(grad, alpha=0.1)
            v.mul_(0.999).addcmul_(grad, grad, value=0.001)
            z = z - lr * (m / (1 - 0.9**k)) / ((v / (1 - 0.999**k)).sqrt() + 1e-12)
    return best.cpu()


@torch.no_grad()
def fit_grid(net: GridModulatedSiren, values: np.ndarray, steps: int, device: str = "auto",
             band: int | None = None) -> torch.Tensor:
    """values (H, W, C) in [0, 1] -> the region's latent grid (ceil(H / cell) * ceil(W / cell), D)
    on the CPU, row-major: `steps` SGD steps from zero with the meta-learned rates, each on the
    gradient of the whole region (summed over bands of rows)."""
    dev = pick_device(device)
    band = band or (BAND_SAMPLES_CUDA if dev.type == "cuda" else BAND_SAMPLES)
    net = net.to(dev)
    h, w, c = values.shape
    layout = CellLayout.for_region((h, w), net.cfg.cell, net.cfg.frequencies).to(dev)
    targets = torch.as_tensor(np.ascontiguousarray(values), dtype=torch.float32).reshape(1, h * w, c).to(dev)
    gy, gx = layout.nodes
    z = torch.zeros(1, gy * gx, net.cfg.latent_dim, device=dev)
    bands = row_bands(layout, band)
    lr = net.learning_rates()
    for _ in range(steps):
        g = torch.zeros_like(z)
        for a, b in bands:
            g += net.loss_and_latent_grad(layout.rows(a, b), z, targets[:, a * w : b * w])[1]
        z = z - lr * g
    return z[0].cpu()


def quantize_ste(quantizer: Quantizer, latents: torch.Tensor) -> torch.Tensor:
    """Quantize-dequantize with a straight-through gradient (for refinement)."""
    dev = latents.device
    low = torch.as_tensor(quantizer.low, device=dev)
    step = torch.as_tensor(quantizer.step, device=dev)
    y = latents
    if quantizer.basis is not None:
        basis, centre = torch.as_tensor(quantizer.basis, device=dev), torch.as_tensor(quantizer.centre, device=dev)
        y = (latents - centre) @ basis.T
    q = torch.clamp(torch.round((y - low) / step), 0, quantizer.levels - 1) * step + low
    if quantizer.basis is not None:
        q = q @ basis + centre
    return latents + (q - latents).detach()


def loss_and_input_grad(net: PostFilter, image: torch.Tensor, target: torch.Tensor, views: int | None = None,
                        tile: int | None = None, keep_bytes: int | None = None) -> tuple[float, torch.Tensor]:
    """For an encoder that sees the filter: the squared error of `apply`'s output (the average over
    `views`, not clipped) against `target`, summed over all values, and its gradient with respect to
    `image`. image and target (3, H, W) on the filter's device, image in [0, 1].

    Tiled as `apply` is: each tile's outputs are differentiated against the tile plus a halo as wide
    as the receptive field and the halos' gradients summed, so the gradient is the whole image's (up
    to float rounding) with memory bounded by the tile. The error needs every view's output before
    any backward pass can start; where the graphs of all views and tiles fit in `keep_bytes` (default
    KEEP_GRAPH_BYTES; a Kodak image at 4 views needs about 1 GB) they are kept from one forward pass
    over whole views, else the image is walked tile by tile, every view of a tile at once, which bounds
    the memory by one tile's graphs whatever the image size (large photos).
    """
    views = net.views if views is None else views
    tile = TILE if tile is None else tile  # (read here, not at import: a test walks tiny tiles)
    period = net.cfg.period
    _, h, w = image.shape
    chosen = usable_views(period)[:views]
    kept = graph_bytes(net, h, w, views, tile) <= (KEEP_GRAPH_BYTES if keep_bytes is None else keep_bytes)
    if not kept:
        return _loss_and_input_grad_by_tiles(net, image, target, chosen, tile)
    graphs = []
    total = torch.zeros_like(image)
    for view in chosen:  # every view's graphs kept from this one forward pass
        x = to_view(image, view)
        out = torch.empty_like(x)
        graphs.append(list(_tile_graphs(net, x, view, (h, w), tile)))
        for _, y, _, (y0, x0) in graphs[-1]:
            out[:, y0 : y0 + y.shape[1], x0 : x0 + y.shape[2]] = y.detach()
        total += from_view(out, view)
    err = total / views - target
    scaled = err * (2.0 / views)  # d(sum of err^2)/d(each view's output)
    grad = torch.zeros_like(image)
    for i, view in enumerate(chosen):
        e = to_view(scaled, view)
        g = torch.zeros_like(to_view(image, view))
        for region, y, (ya, xa), (y0, x0) in graphs[i]:
            ty, tx = y.shape[1], y.shape[2]
            (g_region,) = torch.autograd.grad(y, region, grad_outputs=e[:, y0 : y0 + ty, x0 : x0 + tx])
            g[:, ya : ya + region.shape[2], xa : xa + region.shape[3]] += g_region[0]
        graphs[i] = []  # spent: free them as we go
        grad += from_view(g, view)
    return float(err.double().pow(2).sum()), grad


def _view_origin(view: tuple[bool, bool, bool], shape: tuple[int, int], rows: tuple[int, int],
                 cols: tuple[int, int]) -> tuple[int, int]:
    """Where the source region rows x cols starts in a view's coordinates (its first row and column)."""
    transpose, flip_rows, flip_cols = view
    ranges, sizes = (rows, cols), shape
    a, b = (1, 0) if transpose else (0, 1)  # the source axis behind the view's rows and columns
    vy = sizes[a] - ranges[a][1] if flip_rows else ranges[a][0]
    vx = sizes[b] - ranges[b][1] if flip_cols else ranges[b][0]
    return vy, vx


def _loss_and_input_grad_by_tiles(net: PostFilter, image: torch.Tensor, target: torch.Tensor,
                                  chosen: tuple[tuple[bool, bool, bool], ...], tile: int) -> tuple[float, torch.Tensor]:
    """loss_and_input_grad one source tile at a time: the tile with its halo, seen in every view (its
    phase features those of the view's coordinates), averaged, its error and its gradient. Holds the
    graphs of one tile's views, and no whole-image array but the gradient."""
    _, h, w = image.shape
    n = len(chosen)
    grad = torch.zeros_like(image)
    loss = 0.0
    for (ya, yb, xa, xb), (y0, x0, ty, tx) in tiles(h, w, tile, net.halo):
        outs, leaves = [], []
        with torch.enable_grad():
            for view in chosen:
                leaf = to_view(image[:, ya:yb, xa:xb], view).detach().requires_grad_(True)  # (3, hv, wv)
                vy, vx = _view_origin(view, (h, w), (ya, yb), (xa, xb))
                pos = view_positions(net.cfg.period, view, (h, w), vy, vx, leaf.shape[1], leaf.shape[2], image.device)
                y = from_view(net(leaf[None], pos)[0], view)  # back in the source's orientation
                outs.append(y[:, y0 - ya : y0 - ya + ty, x0 - xa : x0 - xa + tx])
                leaves.append(leaf)
        total = torch.zeros_like(outs[0])
        for y in outs:
            total += y.detach()
        err = total / n - target[:, y0 : y0 + ty, x0 : x0 + tx]
        loss += float(err.double().pow(2).sum())
        scaled = err * (2.0 / n)
        for y, leaf, view in zip(outs, leaves, chosen, strict=True):
            (g,) = torch.autograd.grad(y, leaf, grad_outputs=scaled)
            grad[:, ya:yb, xa:xb] += from_view(g, view)
    return loss, grad


def graph_bytes(net: PostFilter, h: int, w: int, views: int, tile: int = TILE) -> int:
    """About what the autograd graphs of `views` views of an (h, w) image take (bytes): each
    convolution saves its input (the first the RGB and position features, the others the previous
    ReLU's output), over every tile with its halo."""
    r = net.halo
    rows, cols = math.ceil(h / tile), math.ceil(w / tile)
    pixels = (h + 2 * r * rows) * (w + 2 * r * cols)  # each tile's halo counted once per tile (upper bound)
    channels = 3 + POSITION_FEATURES + net.cfg.channels * (net.cfg.layers - 1) + 3
    return pixels * channels * 4 * views


def _tile_graphs(net: PostFilter, x: torch.Tensor, view: tuple[bool, bool, bool], source_shape: tuple[int, int],
                 tile: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, tuple[int, int], tuple[int, int]]]:
    """The filter on each tile of the view x (3, vh, vw), with its graph: (region, the tile's output,
    (ya, xa) where the region starts, (y0, x0) where the tile starts); region requires grad."""
    for (ya, yb, xa, xb), (y0, x0, ty, tx) in tiles(x.shape[1], x.shape[2], tile, net.halo):
        pos = view_positions(net.cfg.period, view, source_shape, ya, xa, yb - ya, xb - xa, x.device)
        with torch.enable_grad():  # (left before the yield: the caller runs in its own grad mode)
            region = x[None, :, ya:yb, xa:xb].detach().requires_grad_(True)
            y = net(region, pos)[0, :, y0 - ya : y0 - ya + ty, x0 - xa : x0 - xa + tx]
        yield region, y, (ya, xa), (y0, x0)
