"""Decoder-side filter for images decoded finer than they were coded (`coin decode --scale 2`).

Between pixel centres the base network was never asked to be anything: evaluated on a finer grid it
shows its patch borders and a ripple inside each patch, and a plain bicubic resize of the ordinary
(post-filtered) decode is better. This filter works on the output grid, at any scale: it sees that
bicubic resize and the network's own finer decode, and adds a correction to the resize, learned from
photos coded at half size and decoded at 1.5x and 2x against the real photos.

Like the post-filter it is not part of the bitstream (symbols, latents and the network's output are
unchanged; `coin decode --no-postfilter` gives the network's own finer decode). Weights live beside the
codec (`upfilter.safetensors`), checked against the SHA-256 in its config.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from .postfilter import file_sha256, tiles
from .spec import UpFilterSpec

FILE = "upfilter.safetensors"
TILE = 256  # output pixels per tile side: bounds memory on large outputs


class UpFilter(nn.Module):
    """(B, 3, H, W) bicubic resize of the own-grid decode and (B, 3, H, W) the network's decode on the
    same grid -> the corrected resize (not clipped)."""

    def __init__(self, cfg: UpFilterSpec) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        convs = [nn.Conv2d(6, c, 3, padding=1)]
        convs += [nn.Conv2d(c, c, 3, padding=1) for _ in range(cfg.layers - 2)]
        convs.append(nn.Conv2d(c, 3, 3, padding=1))
        with torch.no_grad():  # near the identity on the resize, as the post-filter starts
            convs[-1].weight.mul_(0.1)
            convs[-1].bias.zero_()
        self.convs = nn.ModuleList(convs)

    @property
    def halo(self) -> int:
        return self.cfg.layers

    def forward(self, resized: torch.Tensor, network: torch.Tensor) -> torch.Tensor:
        x = torch.cat([resized, network], dim=1)
        for conv in self.convs[:-1]:
            x = torch.relu(conv(x))
        return resized + self.convs[-1](x)


def upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, *size) bicubic, sample centres spanning the same extent (as the decoder's
    finer grids do)."""
    return F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False)


@torch.no_grad()
def apply(net: UpFilter, resized: np.ndarray, network: np.ndarray, device: torch.device | str = "cpu",
          tile: int = TILE) -> np.ndarray:
    """(H, W, 3) resized own-grid decode and network decode -> filtered (H, W, 3) float32, not clipped;
    tiled with a halo as wide as the receptive field (the same result as all at once)."""
    h, w, _ = resized.shape
    net = net.to(device)
    a = torch.from_numpy(np.ascontiguousarray(resized, dtype=np.float32)).permute(2, 0, 1).to(device)
    b = torch.from_numpy(np.ascontiguousarray(network, dtype=np.float32)).permute(2, 0, 1).to(device)
    out = np.empty((h, w, 3), dtype=np.float32)
    for (ya, yb, xa, xb), (y0, x0, ty, tx) in tiles(h, w, tile, net.halo):
        y = net(a[None, :, ya:yb, xa:xb], b[None, :, ya:yb, xa:xb])[0]
        y = y[:, y0 - ya : y0 - ya + ty, x0 - xa : x0 - xa + tx]
        out[y0 : y0 + ty, x0 : x0 + tx] = y.permute(1, 2, 0).cpu().numpy()
    return out


def finer(net: UpFilter, own: np.ndarray, network: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """The filtered finer decode: `own` (h, w, 3), the post-filtered decode on the file's grid, resized to
    the grid of `network` (H, W, 3), the network's decode there, and corrected."""
    resized = upsample(torch.from_numpy(np.ascontiguousarray(own, dtype=np.float32)).permute(2, 0, 1)[None],
                       network.shape[:2])[0].permute(1, 2, 0).numpy()
    return apply(net, resized, network, device)


def load(folder: Path, entry: UpFilterSpec) -> UpFilter:
    """The filter a codec's spec names; ValueError when it is missing or does not match."""
    path = Path(folder) / FILE
    if file_sha256(path) != entry.sha256:
        raise ValueError(f"{FILE} fails its SHA-256 check")
    net = UpFilter(entry)
    net.load_state_dict(load_file(str(path)))
    return net.eval().requires_grad_(False)
