"""Fit stage (encoding's hot loop) and its inverse, evaluation at any coordinates.

Encoding: K SGD steps on every patch's latent from zero with the base network frozen, using
the meta-learned per-dimension rates; all patches of a file (or of many files) in one batch,
cut into chunks to bound memory.

Decoding: the network is evaluated at whatever sample positions are asked for; each position
finds its patch and its coordinate inside that patch's cell (pixel centres, see patching.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .device import pick_device
from .model import GridModulatedSiren, LatentModulatedSiren
from .patching import CellLayout, patch_coordinates
from .postfilter import PostFilter, apply, loss_and_input_grad
from .quantize import Quantizer

FIT_CHUNK = 64  # patches per chunk: past ~16-64 the CPU gains nothing and memory grows
# A GPU needs far larger batches to be busy (about 3 MB per 32x32 patch at width 128): this is what
# lets folder mode fill it with the patches of many small files. Not measured here (no GPU).
FIT_CHUNK_CUDA = 1024
EVAL_CHUNK = 1 << 15  # points per chunk when evaluating
# Steps through the post-filter keep the network's activations of a whole image up to this size
# (filtered_loss_and_latent_grad).
KEEP_ACTIVATIONS_BYTES = 3 << 30
# Latent grids: samples per band of rows in the fit. The gradient is summed over bands, so memory
# stays bounded (about 1.5 kB per sample at width 64) whatever the image size.
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
                   penalty: RatePenalty | None = None) -> torch.Tensor:
    """Adam on the latents after the meta-learned SGD steps, optionally quantization-aware.

    With a quantizer, every gradient is taken at the quantized latents and passed straight
    through the rounding, so the latents move to where their *quantized* values fit the patch.
    `lr` (D,) is per dimension (the codec sets it as a fraction of each dimension's quantizer
    step). Each patch keeps the best latent it visited, judged on the loss at its quantized
    value, so refinement never ends worse than it started. With a `penalty`, the loss is the
    MSE plus the penalty's rate term, so Adam does not spend bits for little distortion.
    """
    dev = pick_device(device)
    chunk = chunk or (FIT_CHUNK_CUDA if dev.type == "cuda" else FIT_CHUNK)
    net = net.to(dev)
    coords = coords.to(dev)
    t = torch.as_tensor(targets, dtype=torch.float32)
    rate = torch.as_tensor(lr, dtype=torch.float32, device=dev)
    b1, b2, eps = 0.9, 0.999, 1e-12
    out = []
    for part, z0 in zip(t.split(chunk), latents.split(chunk), strict=True):
        part, z = part.to(dev), z0.to(dev).clone()
        m, v = torch.zeros_like(z), torch.zeros_like(z)
        best, best_loss = z.clone(), torch.full((len(z),), float("inf"), device=dev)
        for k in range(1, steps + 1):
            at = quantizer.quantize_ste(z) if quantizer is not None else z
            if k == steps:  # the last evaluation only judges the last update: no gradient
                loss = net.patch_mse(coords, at, part)
                if penalty is not None:
                    loss = loss + penalty(z)[0]
                better = loss < best_loss
                best[better] = z[better]
                break
            loss, g = net.loss_and_latent_grad(coords, at, part)
            if penalty is not None:
                extra, g_extra = penalty(z)
                loss, g = loss + extra, g + g_extra
            better = loss < best_loss
            best[better], best_loss[better] = z[better], loss[better]
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            z = z - rate * (m / (1 - b1**k)) / ((v / (1 - b2**k)).sqrt() + eps)
        out.append(best.cpu())
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


def _axis_samples(size: int, out_size: int, patch: int) -> tuple[np.ndarray, np.ndarray]:
    """For `out_size` samples spanning an axis of `size` input samples: the patch index and
    the coordinate inside that patch's cell [-1, 1] of each output sample centre."""
    centre = (np.arange(out_size, dtype=np.float64) + 0.5) * (size / out_size)  # input pixel units
    k = np.minimum(np.floor(centre / patch).astype(np.int64), math.ceil(size / patch) - 1)
    local = 2.0 * (centre - k * patch) / patch - 1.0
    return k, local


@torch.no_grad()
def evaluate_grid(net: LatentModulatedSiren, latents: torch.Tensor, shape: tuple[int, ...],
                  patch: tuple[int, ...], out_shape: tuple[int, ...], device: str = "auto",
                  chunk: int = EVAL_CHUNK) -> np.ndarray:
    """Decode the signal of spatial `shape` onto a regular grid of `out_shape` samples.

    Returns (*out_shape, C) float32 (not clipped).
    """
    dev = pick_device(device)
    net = net.to(dev)
    counts = [math.ceil(s / p) for s, p in zip(shape, patch, strict=True)]
    axes = [_axis_samples(s, o, p) for s, o, p in zip(shape, out_shape, patch, strict=True)]
    ks = np.meshgrid(*[a[0] for a in axes], indexing="ij")
    pid = np.ravel_multi_index([k.reshape(-1) for k in ks], counts)
    locs = np.meshgrid(*[a[1] for a in axes], indexing="ij")
    coords = np.stack([c.reshape(-1) for c in locs], axis=-1).astype(np.float32)
    shifts = net.latent_map(latents.to(dev))  # (P, L*W)
    out = np.empty((coords.shape[0], net.cfg.out_dim), dtype=np.float32)
    for start in range(0, coords.shape[0], chunk):
        sl = slice(start, start + chunk)
        c = torch.from_numpy(coords[sl]).to(dev)
        s = shifts[torch.from_numpy(pid[sl]).to(dev)]
        out[sl] = net.forward_points(c, s).cpu().numpy()
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


def _row_bands(layout: CellLayout, samples: int) -> list[tuple[int, int]]:
    rows, cols = layout.shape
    step = max(1, samples // max(1, cols))
    return [(a, min(rows, a + step)) for a in range(0, rows, step)]


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
    bands = _row_bands(layout, band)
    lr = net.learning_rates()
    for _ in range(steps):
        g = torch.zeros_like(z)
        for a, b in bands:
            g += net.loss_and_latent_grad(layout.rows(a, b), z, targets[:, a * w : b * w])[1]
        z = z - lr * g
    return z[0].cpu()


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
    for a, b in _row_bands(layout, chunk):
        out[a * cols : b * cols] = net(layout.rows(a, b), z)[0].cpu().numpy()
    return out.reshape(*out_shape, net.cfg.out_dim)
