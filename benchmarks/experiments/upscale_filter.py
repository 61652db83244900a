"""A restoration filter for decodes finer than coded (images): does it beat resizing?

    python benchmarks/experiments/upscale_filter.py pairs --out runs/upfilter     # decodes of the training photos
    python benchmarks/experiments/upscale_filter.py train --out runs/upfilter --steps 1500 --lr 5e-4

Pairs: each training photo (never Kodak) scaled to 768 pixels on its long side (Kodak's size), halved
with Lanczos, coded with the default image codec, and decoded (a) on its own grid, post-filtered, then
resized bicubically to 1.5x and 2x, and (b) by the network evaluated on those finer grids; the target
is the photo at that size. The filter sees (a) and (b) and corrects (a). The last four photos are held
out; the script prints the held-out PSNR of (a), (b) and the filter's output per scale.

Measured (32 channels, 6 layers, 1,500 Adam steps of 16 crops of 64 x 64, 7.5 min on the 2-core CPU;
`benchmarks/results/upscale/upscale-filter.json`): on the held-out photos the network's own finer decode
(b) is 0.22-0.24 dB below the bicubic resize (a), and the filter adds +0.01 dB to (a) at 1.5x and 2x.
At an outer rate of 2e-3 its units died (the output was the resize plus a constant). A filter after the
network does not find what the network does not know between its samples.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from coinpp import codec as codecs
from coinpp import modalities
from coinpp.bitstream import parse
from coinpp.decoder import Decoder
from coinpp.encoder import Encoder
from coinpp.modalities import Resolution
from coinpp.postfilter import tiles

SCALES = (1.5, 2.0)
HELD_OUT = 4
TILE = 256


@dataclass(frozen=True)
class UpFilterSpec:
    channels: int = 32
    layers: int = 6  # convolutions (3x3)


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


def make_pairs(data: Path, out: Path, device: str) -> None:
    m = modalities.get("image")
    codec = codecs.load(codecs.default_for("image"))
    encoder, decoder = Encoder(codec, m, device=device), Decoder(device)
    paths = sorted(p for p in data.iterdir() if p.suffix.lower() == ".png")
    out.mkdir(parents=True, exist_ok=True)
    for path in paths:
        dest = out / f"{path.stem}.npz"
        if dest.exists():
            continue
        t0 = time.perf_counter()
        img = Image.open(path).convert("RGB")
        k = 768 / max(img.size)
        full = img.resize((round(img.width * k), round(img.height * k)), Image.LANCZOS) if k < 1 else img
        small = full.resize((round(full.width / 2), round(full.height / 2)), Image.LANCZOS)
        tmp = out / "small.png"
        small.save(tmp)
        p = parse(encoder.encode(m.read(tmp)).data)
        native = decoder.decode(p).values
        arrays = {"native": native}
        for s in SCALES:
            size = (round(small.width * s), round(small.height * s))
            arrays[f"fine{s:g}"] = decoder.decode(p, m.target(p.meta, p.file.shape, Resolution(scale=s))).values
            truth = full if size == full.size else full.resize(size, Image.LANCZOS)
            arrays[f"truth{s:g}"] = np.asarray(truth, dtype=np.float32) / 255
        np.savez(dest, **arrays)
        print(f"{path.name}: {small.size} coded, {time.perf_counter() - t0:.1f} s", flush=True)


def load_pairs(out: Path) -> list[dict[str, np.ndarray]]:
    return [dict(np.load(f)) for f in sorted(out.glob("*.npz"))]


def inputs(pair: dict[str, np.ndarray], s: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(1, 3, H, W) the resized own-grid decode, the network's finer decode, the truth."""
    truth = torch.from_numpy(pair[f"truth{s:g}"]).permute(2, 0, 1)[None]
    fine = torch.from_numpy(pair[f"fine{s:g}"]).permute(2, 0, 1)[None]
    up = upsample(torch.from_numpy(pair["native"]).permute(2, 0, 1)[None], truth.shape[-2:])
    return up, fine, truth


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    a8 = (a.clamp(0, 1) * 255).round()
    return float(10 * torch.log10(255**2 / ((a8 - b * 255) ** 2).mean()))


def train(out: Path, steps: int, channels: int, layers: int, crop: int, batch: int, lr: float, seed: int) -> None:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    pairs = load_pairs(out)
    train_pairs, held = pairs[:-HELD_OUT], pairs[-HELD_OUT:]
    data = [inputs(p, s) for p in train_pairs for s in SCALES]
    spec = UpFilterSpec(channels, layers)
    net = UpFilter(spec)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        ups, fines, truths = [], [], []
        for k in rng.integers(0, len(data), size=batch):
            up, fine, truth = data[k]
            h, w = truth.shape[-2:]
            y, x = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
            cut = (slice(None), slice(None), slice(y, y + crop), slice(x, x + crop))
            parts = [up[cut], fine[cut], truth[cut]]
            if rng.random() < 0.5:
                parts = [t.flip(-1) for t in parts]
            ups.append(parts[0])
            fines.append(parts[1])
            truths.append(parts[2])
        pred = net(torch.cat(ups), torch.cat(fines))
        loss = ((pred - torch.cat(truths)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == steps:
            change = float((pred - torch.cat(ups)).abs().mean())  # 0: the filter passes the resize through
            print(f"step {step} loss {loss.item():.3e} correction {change:.2e} {time.perf_counter() - t0:.0f} s",
                  flush=True)
    result = {"steps": steps, "channels": channels, "layers": layers, "crop": crop, "batch": batch, "lr": lr,
              "train_s": round(time.perf_counter() - t0, 1), "held_out": {}}
    net.eval()
    for s in SCALES:
        rows = []
        for p in held:
            up, fine, truth = inputs(p, s)
            filtered = torch.from_numpy(apply(net, up[0].permute(1, 2, 0).numpy(), fine[0].permute(1, 2, 0).numpy()))
            rows.append((psnr(up, truth), psnr(fine, truth), psnr(filtered.permute(2, 0, 1)[None], truth)))
        mean = np.mean(rows, axis=0)
        result["held_out"][f"{s:g}"] = {"bicubic": round(float(mean[0]), 3), "network": round(float(mean[1]), 3),
                                        "filter": round(float(mean[2]), 3)}
        print(f"{s:g}x held out: bicubic of the own-grid decode {mean[0]:.2f} dB, network {mean[1]:.2f} dB, "
              f"filter {mean[2]:.2f} dB ({mean[2] - mean[0]:+.2f})", flush=True)
    from safetensors.torch import save_file

    save_file(net.state_dict(), str(out / f"upfilter-{channels}x{layers}.safetensors"))
    (out / f"upfilter-{channels}x{layers}.json").write_text(json.dumps(result, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["pairs", "train"])
    ap.add_argument("--data", default="../shared/data/train-images", type=Path)
    ap.add_argument("--out", default="runs/upfilter", type=Path)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    if a.what == "pairs":
        make_pairs(a.data, a.out, a.device)
    else:
        train(a.out, a.steps, a.channels, a.layers, a.crop, a.batch, a.lr, a.seed)


if __name__ == "__main__":
    sys.exit(main())
