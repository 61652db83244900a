"""The base network: a SIREN whose hidden layers are shifted by a per-patch latent.

Shapes: B patches, N coordinates per patch, I coordinate dims, C output features,
W hidden width, L sine layers, D latent dims.

Besides the forward pass, this module writes out the gradient of the per-patch MSE with
respect to the latents by hand, with ordinary differentiable tensor ops. That is the inner
loop of meta-learning and the hot loop of encoding: on the CPU it is several times faster
than autograd's double backward, and the outer step can still differentiate through it
(second-order meta-learning), because every op in it is itself differentiable.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .patching import CellLayout
from .spec import MODULATIONS, SirenConfig


class LatentModulatedSiren(nn.Module):
    """`sin(w0 (W_i h + b_i + s_i))` for every sine layer; shifts `s = A z + c` from latent z.

    With `cfg.modulation == "scale-shift"` the latent map also gives scales g (its second half of
    rows): `sin(w0 ((1 + g_i) (W_i h + b_i) + s_i))`, twice the modulations per latent dimension."""

    def __init__(self, cfg: SirenConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w, L = cfg.width, cfg.depth
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        dims = [cfg.input_features] + [w] * L
        for i in range(L):
            n_in = dims[i]
            # SIREN init: first layer U(-1/n, 1/n), later U(-sqrt(6/n)/w0, sqrt(6/n)/w0).
            bound = 1.0 / n_in if i == 0 else math.sqrt(6.0 / n_in) / cfg.w0
            self.weights.append(nn.Parameter(torch.empty(w, n_in).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(w).uniform_(-bound, bound)))
        bound = math.sqrt(6.0 / w) / cfg.w0
        self.out_weight = nn.Parameter(torch.empty(cfg.out_dim, w).uniform_(-bound, bound))
        self.out_bias = nn.Parameter(torch.zeros(cfg.out_dim))
        # Latent map: one linear layer from z to the shifts of all sine layers. Zero bias, so
        # z = 0 gives the unmodulated base network that encoding starts from.
        self.film = cfg.modulation == "scale-shift"
        self.latent_map = nn.Linear(cfg.latent_dim, w * L * (2 if self.film else 1))
        nn.init.zeros_(self.latent_map.bias)
        if cfg.meta_sgd:
            self.inner_lr = nn.Parameter(torch.empty(cfg.latent_dim).uniform_(0.005, 0.1))
        else:
            self.register_buffer("inner_lr", torch.full((cfg.latent_dim,), 1e-2))

    # The number type of the hidden layers' products in forward_keeping and latent_grad_from (the
    # encoder's steps); set per phase by `hidden_products`. float32 everywhere else.
    hidden_dtype: torch.dtype = torch.float32

    @contextmanager
    def hidden_products(self, dtype: torch.dtype) -> Iterator[None]:
        """The encoder's steps inside run their hidden-layer products in `dtype` (float32 sums inside the
        kernels); the coordinates' layer, whose products are the sines' phases, stays float32."""
        saved, self.hidden_dtype = self.hidden_dtype, dtype
        try:
            yield
        finally:
            self.hidden_dtype = saved

    def _hidden(self, h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.hidden_dtype == torch.float32:
            return h @ weight
        return (h.to(self.hidden_dtype) @ weight.to(self.hidden_dtype)).float()

    def scaled(self, coords: torch.Tensor) -> torch.Tensor:
        return coords if self.cfg.coord_scale == 1.0 else coords * self.cfg.coord_scale

    def learning_rates(self) -> torch.Tensor:
        """Per-dimension inner learning rates (meta-SGD), clipped to [0, 1] as in functa."""
        return self.inner_lr.clamp(0.0, 1.0)

    def shifts(self, latents: torch.Tensor) -> list[torch.Tensor]:
        """latents (B, D) -> L tensors of shape (B, 1, W) (the shifts; scale-shift: then the scales)."""
        s = self.latent_map(latents)  # (B, L*W), scale-shift (B, 2*L*W)
        return [t.unsqueeze(1) for t in s.split(self.cfg.width, dim=1)]

    def _modulated(self, h: torch.Tensor, layers: list[torch.Tensor]) -> torch.Tensor:
        """The sine layers with per-layer modulations (shifts, then scales for scale-shift), each
        broadcasting against (…, W)."""
        depth = self.cfg.depth
        for i, (W, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            a = h @ W.T + b
            if self.film:
                a = a * (1 + layers[depth + i])
            h = torch.sin(self.cfg.w0 * (a + layers[i]))
        return h @ self.out_weight.T + self.out_bias + 0.5

    def forward(self, coords: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """coords (B, N, I) or (N, I) shared, latents (B, D) -> features (B, N, C)."""
        return self._modulated(self.scaled(coords), self.shifts(latents))

    def forward_points(self, coords: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
        """Evaluate at M points, each with its own modulations: coords (M, I), shifts (M, L*W) (the
        latent map's output: scale-shift (M, 2*L*W)) -> (M, C).

        Used by decoding at arbitrary coordinates, where points of different patches mix.
        """
        return self._modulated(self.scaled(coords), list(shifts.split(self.cfg.width, dim=-1)))

    def loss_and_latent_grad(
        self, coords: torch.Tensor, latents: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-patch MSE (B,) and its gradient with respect to the latents (B, D).

        The backward pass of the SIREN written out by hand (see the module docstring).
        """
        if not torch.is_grad_enabled():
            return self._loss_and_latent_grad_inplace(coords, latents, targets)
        w0, depth = self.cfg.w0, self.cfg.depth
        mods = self.shifts(latents)
        pre = []  # pre-activations w0*(W h + b + s), kept for the cosines of the backward pass
        affine = []  # scale-shift: W h + b, what the scales multiply
        h = self.scaled(coords)
        for i, (W, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            a = h @ W.T + b
            if self.film:
                affine.append(a)
                a = a * (1 + mods[depth + i])
            u = w0 * (a + mods[i])  # (B, N, W)
            pre.append(u)
            h = torch.sin(u)
        out = h @ self.out_weight.T + self.out_bias + 0.5  # (B, N, C)
        err = out - targets
        n = err.shape[1] * err.shape[2]
        loss = err.pow(2).mean(dim=(1, 2))  # (B,)
        g_h = (err * (2.0 / n)) @ self.out_weight  # (B, N, W)
        g_shifts, g_scales = [], []
        for i in range(len(pre) - 1, -1, -1):
            g_u = g_h * (w0 * torch.cos(pre[i]))  # d/ds_i, (B, N, W)
            g_shifts.append(g_u.sum(dim=1))  # (B, W)
            if self.film:
                g_scales.append((g_u * affine[i]).sum(dim=1))
                g_u = g_u * (1 + mods[depth + i])
            if i > 0:
                g_h = g_u @ self.weights[i]
        g_s = torch.cat(g_shifts[::-1] + g_scales[::-1], dim=1)  # (B, L*W), scale-shift (B, 2*L*W)
        return loss, g_s @ self.latent_map.weight  # (B, D)

    def _loss_and_latent_grad_inplace(self, coords: torch.Tensor, latents: torch.Tensor, targets: torch.Tensor
                                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """The same, for encoding (no graph to keep): w0 folded into the weights and the activations'
        cosines taken in place. The (B, N, W) activations are the encoder's memory traffic; this makes
        fewer passes over them than the differentiable version above."""
        err, pre = self.forward_keeping(coords, latents)
        err.sub_(targets)  # (B, N, C)
        n = err.shape[1] * err.shape[2]
        loss = err.pow(2).mean(dim=(1, 2))
        return loss, self.latent_grad_from(pre, err, 2.0 / n)

    def patch_mse(self, coords: torch.Tensor, latents: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-patch MSE (B,), no gradient: the loss of loss_and_latent_grad without grad, by the same
        arithmetic, for a step whose gradient would go unused."""
        out, _ = self.forward_keeping(coords, latents)
        return out.sub_(targets).pow(2).mean(dim=(1, 2))

    def forward_keeping(self, coords: torch.Tensor, latents: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Outputs (B, N, C) and the pre-activations latent_grad_from needs (no graph; w0 folded in;
        scale-shift: then each layer's W h + b, then the modulations)."""
        w0, width, depth = self.cfg.w0, self.cfg.width, self.cfg.depth
        shifts = self.latent_map(latents)  # (B, L*W), scale-shift (B, 2*L*W)
        pre, affine = [], []
        h = self.scaled(coords)
        for i, (W, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            shift = shifts[:, i * width : (i + 1) * width]
            if self.film:
                a = (h @ W.T if i == 0 else self._hidden(h, W.T)) + b  # (N, W) or (B, N, W)
                affine.append(a)
                scale = 1 + shifts[:, (depth + i) * width : (depth + i + 1) * width].unsqueeze(1)
                u = (a * scale).add_(shift.unsqueeze(1)).mul_(w0)
            else:
                u = h @ (W.T * w0) if i == 0 else self._hidden(h, W.T * w0)  # (N, W) shared coordinates, else (B, N, W)
                bias = ((shift + b) * w0).unsqueeze(1)  # (B, 1, W)
                u = u + bias if u.dim() == 2 else u.add_(bias)
            pre.append(u)
            h = torch.sin(u)
        out = h @ self.out_weight.T
        return out.add_(self.out_bias + 0.5), pre + affine + ([shifts] if self.film else [])

    def latent_grad_from(self, pre: list[torch.Tensor], g_out: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """The gradient (B, D) with respect to the latents of a loss whose gradient with respect to the
        outputs is scale * g_out (B, N, C), by the hand-written backward pass; consumes `pre` (in place)."""
        w0, width, depth = self.cfg.w0, self.cfg.width, self.cfg.depth
        affine, mods = (pre[depth : 2 * depth], pre[-1]) if self.film else ([], None)
        g_h = g_out @ (self.out_weight * scale)  # (B, N, W)
        g_shifts, g_scales = [], []
        for i in range(depth - 1, -1, -1):
            g_u = pre[i].cos_().mul_(g_h)  # d/ds_i divided by w0
            g_shifts.append(g_u.sum(dim=1) * w0)
            if self.film:
                g_scales.append((g_u * affine[i]).sum(dim=1) * w0)
                g_u = g_u.mul_(1 + mods[:, (depth + i) * width : (depth + i + 1) * width].unsqueeze(1))
            if i > 0:
                g_h = self._hidden(g_u, self.weights[i] * w0)
        g_s = torch.cat(g_shifts[::-1] + g_scales[::-1], dim=1)
        return g_s @ self.latent_map.weight

    def zero_latents(self, coords: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Where encoding starts: a zero latent per patch of `targets`, (B, D)."""
        return torch.zeros(targets.shape[0], self.cfg.latent_dim, device=targets.device, dtype=targets.dtype)

    def inner_loop(
        self,
        coords: torch.Tensor,
        targets: torch.Tensor,
        steps: int,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`steps` SGD steps on the latents from zero (or `latents`), meta-SGD rates.

        Differentiable with respect to the network when called with grad enabled.
        """
        if latents is None:
            latents = self.zero_latents(coords, targets)
        lr = self.learning_rates()
        for _ in range(steps):
            _, g = self.loss_and_latent_grad(coords, latents, targets)
            latents = latents - lr * g
        return latents


class GridModulatedSiren(LatentModulatedSiren):
    """The same modulated SIREN, fed by a 2-D grid of latents instead of one latent per patch.

    One latent per cell of `cell` x `cell` samples, at the cell's centre; every sample takes the
    linear interpolation of the four nearest latents (patching.CellLayout), so latents are shared
    across cell borders and the output is continuous everywhere: no seams, any resolution. The
    input is the position within the cell as harmonics (patching.cell_harmonics); where a sample is
    in the picture only the latents say. Latents of a region are (B, Gy * Gx, D), row-major.

    The inner-loop gradient is again written out by hand; it is that of the squared error summed
    over the samples and divided by cell^2 * C, so a latent's step does not depend on how big
    the region is (training crops, whole images).
    """

    def pixel_latents(self, layout: CellLayout, latents: torch.Tensor) -> torch.Tensor:
        """(B, Gy * Gx, D) -> (B, H * W, D) interpolated at every sample of the layout."""
        (gy, gx), (h, w) = layout.nodes, layout.shape
        z = latents.reshape(latents.shape[0], gy, gx, -1)
        z = torch.einsum("xk,bgkd->bgxd", layout.col_weights, z)
        z = torch.einsum("yg,bgxd->byxd", layout.row_weights, z)
        return z.reshape(latents.shape[0], h * w, -1)

    def _node_gradient(self, layout: CellLayout, g: torch.Tensor) -> torch.Tensor:
        """Transpose of pixel_latents: (B, H * W, D) -> (B, Gy * Gx, D)."""
        (h, w), b = layout.shape, g.shape[0]
        g = torch.einsum("xk,byxd->bykd", layout.col_weights, g.reshape(b, h, w, -1))
        g = torch.einsum("yg,bykd->bgkd", layout.row_weights, g)
        return g.reshape(b, -1, g.shape[-1])

    def forward(self, layout: CellLayout, latents: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """latents (B, Gy * Gx, D) -> features (B, H * W, C) at the layout's samples."""
        s = self.latent_map(self.pixel_latents(layout, latents))  # (B, N, L*W)
        return self.forward_points(layout.features, s)

    def loss_and_latent_grad(  # type: ignore[override]
        self, layout: CellLayout, latents: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-region MSE (B,) and the gradient (B, Gy * Gx, D) of SSE / (cell^2 C) by the latents."""
        w0, width = self.cfg.w0, self.cfg.width
        shifts = self.latent_map(self.pixel_latents(layout, latents)).split(width, dim=-1)
        pre = []
        h = layout.features
        for W, b, s in zip(self.weights, self.biases, shifts, strict=True):
            u = w0 * (h @ W.T + b + s)  # (B, N, W)
            pre.append(u)
            h = torch.sin(u)
        out = h @ self.out_weight.T + self.out_bias + 0.5
        err = out - targets
        loss = err.pow(2).mean(dim=(1, 2))
        g_h = (err * (2.0 / (self.cfg.cell**2 * err.shape[2]))) @ self.out_weight
        a = self.latent_map.weight  # (L*W, D)
        g_z = None
        for i in range(len(pre) - 1, -1, -1):
            g_u = g_h * (w0 * torch.cos(pre[i]))
            part = g_u @ a[i * width : (i + 1) * width]  # (B, N, D)
            g_z = part if g_z is None else g_z + part
            if i > 0:
                g_h = g_u @ self.weights[i]
        return loss, self._node_gradient(layout, g_z)

    def zero_latents(self, layout: CellLayout, targets: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """A zero latent per cell of every region of `targets`, (B, Gy * Gx, D). The base class's
        inner_loop then runs unchanged on the grid."""
        gy, gx = layout.nodes
        return torch.zeros(targets.shape[0], gy * gx, self.cfg.latent_dim, device=targets.device,
                           dtype=targets.dtype)


def build_network(cfg: SirenConfig) -> LatentModulatedSiren:
    """The base network a config describes: latents per patch, or on a grid (cfg.cell > 0)."""
    if cfg.modulation not in MODULATIONS or (cfg.cell and cfg.modulation != "shift"):
        raise ValueError(f"modulation {cfg.modulation!r}: shift, or scale-shift for patch networks")
    if cfg.cell:
        if cfg.in_dim != 2 or cfg.frequencies < 1:
            raise ValueError("a latent grid needs 2-D data and at least one cell harmonic")
        return GridModulatedSiren(cfg)
    return LatentModulatedSiren(cfg)


class Siren(nn.Module):
    """A plain SIREN (COIN): `sin(w0 (W_i h + b_i))` for `depth` layers, then a linear layer + 0.5.

    Overfitted to one file in COIN mode; its weights are the file's payload. Same init as above.
    """

    def __init__(self, in_dim: int, out_dim: int, width: int, depth: int, w0: float = 30.0) -> None:
        super().__init__()
        self.w0 = w0
        dims = [in_dim] + [width] * depth
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i in range(depth):
            n_in = dims[i]
            bound = 1.0 / n_in if i == 0 else math.sqrt(6.0 / n_in) / w0
            self.weights.append(nn.Parameter(torch.empty(width, n_in).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(width).uniform_(-bound, bound)))
        bound = math.sqrt(6.0 / width) / w0
        self.out_weight = nn.Parameter(torch.empty(out_dim, width).uniform_(-bound, bound))
        self.out_bias = nn.Parameter(torch.zeros(out_dim))

    def tensors(self) -> list[torch.Tensor]:
        """Every parameter in the order the bitstream stores them: W_0, b_0, ..., W_out, b_out."""
        out: list[torch.Tensor] = []
        for W, b in zip(self.weights, self.biases, strict=True):
            out += [W, b]
        return out + [self.out_weight, self.out_bias]

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """coords (N, I) -> features (N, C)."""
        h = coords
        for W, b in zip(self.weights, self.biases, strict=True):
            h = torch.sin(self.w0 * (h @ W.T + b))
        return h @ self.out_weight.T + self.out_bias + 0.5
