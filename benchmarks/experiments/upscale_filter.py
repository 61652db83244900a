"""A restoration filter for decodes finer than coded (images): does it beat resizing?

    python benchmarks/experiments/upscale_filter.py pairs --out runs/upfilter     # decodes of the training photos
    python benchmarks/experiments/upscale_filter.py train --out runs/upfilter --steps 3000

Pairs: each training photo (never Kodak) scaled to 768 pixels on its long side (Kodak's size), halved
with Lanczos, coded with the default image codec, and decoded (a) on its own grid, post-filtered, then
resized bicubically to 1.5x and 2x, and (b) by the network evaluated on those finer grids; the target
is the photo at that size. The filter sees (a) and (b) and corrects (a). The last four photos are held
out; the script prints the held-out PSNR of (a), (b) and the filter's output per scale.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from coinpp import codec as codecs
from coinpp import modalities
from coinpp.bitstream import parse
from coinpp.decoder import Decoder
from coinpp.encoder import Encoder
from coinpp.modalities import Resolution
from coinpp.upfilter import UpFilter, UpFilterSpec, apply, upsample

SCALES = (1.5, 2.0)
HELD_OUT = 4


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
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    if a.what == "pairs":
        make_pairs(a.data, a.out, a.device)
    else:
        train(a.out, a.steps, a.channels, a.layers, a.crop, a.batch, a.lr, a.seed)


if __name__ == "__main__":
    sys.exit(main())
