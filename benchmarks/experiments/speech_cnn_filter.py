"""A convolutional waveform post-filter for speech: does it gain over the least-squares FIR?

    python benchmarks/experiments/speech_cnn_filter.py pairs CODEC --out runs/speechpf
    python benchmarks/experiments/speech_cnn_filter.py train CODEC[,CODEC] --out runs/speechpf --minutes 30
    python benchmarks/experiments/speech_cnn_filter.py test CODEC --out runs/speechpf

pairs: every training clip (the three held out by `coin train`'s seed 0 apart) coded and decoded by
the codec without its post-filter, saved as (decoded, original) waveforms. train: a 1-D CNN (the
decoded waveform and its phase inside the 200-sample patch in; a correction out) fitted to the pairs
of one or more codecs by Adam on random 1-second segments; printed: the held-out clips' PSNR gain of
the CNN and of a 33-tap least-squares FIR fitted to the same clips. test: the 15 test clips coded by
the codec, decoded without a filter, with the shipped FIR, and with the CNN (mean PSNR per clip).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from coinpp import codec as codecs
from coinpp import modalities
from coinpp.postfilter import WaveformFilter, apply_waveform, fit_waveform
from coinpp.spec import PostFilterSpec
from coinpp.training.data import load_folder
from coinpp.training.postfilter import waveform_gain_db

PERIOD = 200


class WaveNetFilter(nn.Module):
    """Residual dilated 1-D convolutions; input (B, 3, N): waveform, sin and cos of the patch phase."""

    def __init__(self, channels: int = 32, dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 1, 2, 4, 8),
                 kernel: int = 3) -> None:
        super().__init__()
        self.inp = nn.Conv1d(3, channels, 9, padding=4)
        self.blocks = nn.ModuleList(nn.Conv1d(channels, channels, kernel, dilation=d, padding=d * (kernel // 2))
                                    for d in dilations)
        self.out = nn.Conv1d(channels, 1, 9, padding=4)
        with torch.no_grad():
            self.out.weight.mul_(0.1)
            self.out.bias.zero_()

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        n = x.shape[-1]
        a = 2 * math.pi * (torch.arange(start, start + n, dtype=torch.float32) + 0.5) / PERIOD
        pos = torch.stack([a.sin(), a.cos()])[None].expand(len(x), -1, -1)
        h = torch.relu(self.inp(torch.cat([x, pos], dim=1)))
        for conv in self.blocks:
            h = h + torch.relu(conv(h))
        return x + self.out(h)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 20 * math.log10(2.0 / math.sqrt(max(np.mean((a - b) ** 2), 1e-20)))  # waveform in [-1, 1]: peak 2


def pairs_path(out: Path, name: str) -> Path:
    return out / f"pairs-{name}.npz"


def make_pairs(name: str, out: Path) -> None:
    from coinpp.cli.train import waveform_pair
    c = codecs.load(name)
    audio = modalities.get("audio")
    train_s, val_s, val_names = load_folder("../shared/data/speech/train", "audio", 3, 0)
    t0 = time.time()
    arrays = {}
    for tag, group in (("train", train_s), ("val", val_s)):
        for i, v in enumerate(group):
            dec, ref = waveform_pair(c, audio, v, "cpu")
            arrays[f"{tag}{i}_dec"], arrays[f"{tag}{i}_ref"] = dec.astype(np.float32), ref.astype(np.float32)
            print(tag, i, f"{psnr(dec, ref):.2f} dB", f"{time.time() - t0:.0f}s", flush=True)
    np.savez(pairs_path(out, name), **arrays)


def load_pairs(out: Path, name: str) -> tuple[list, list]:
    z = np.load(pairs_path(out, name))
    groups: dict[str, list] = {"train": [], "val": []}
    for tag in groups:
        i = 0
        while f"{tag}{i}_dec" in z:
            groups[tag].append((z[f"{tag}{i}_dec"].astype(np.float64), z[f"{tag}{i}_ref"].astype(np.float64)))
            i += 1
    return groups["train"], groups["val"]


@torch.no_grad()
def run(net: WaveNetFilter, dec: np.ndarray) -> np.ndarray:
    return net(torch.from_numpy(dec.astype(np.float32))[None, None])[0, 0].double().numpy()


def val_gain(net: WaveNetFilter, val: list) -> float:
    """Mean PSNR gain over the raw decode (the pair's third element, when the input went through a FIR)."""
    return float(np.mean([psnr(run(net, v[0]), v[1]) - psnr(v[-1] if len(v) > 2 else v[0], v[1]) for v in val]))


def fir_front(taps: np.ndarray, pairs: list) -> list:
    """The pairs with the decoded waveform put through the least-squares FIR first."""
    f = WaveformFilter(PostFilterSpec(kind="fir", taps=len(taps)), taps)
    return [(apply_waveform(f, ((d + 1) / 2)[:, None])[:, 0].astype(np.float64) * 2 - 1, r) for d, r in pairs]


def train(names: list[str], out: Path, minutes: float, lr: float, batch: int, seg: int, channels: int,
          seed: int, front: bool) -> None:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train_p, val_p = [], {}
    for n in names:
        t, v = load_pairs(out, n)
        taps = fit_waveform(t, 33)  # the FIR fitted to the same training clips, for comparison
        print(f"{n}: FIR 33 taps on all {len(t)} clips: {waveform_gain_db(taps, v):+.3f} dB held out", flush=True)
        if front:  # the CNN corrects the FIR's output; its gains are then printed against the raw decode
            np.save(out / f"fir-{n}.npy", taps)
            t, v = fir_front(taps, t), [(fd, r, d) for (fd, r), (d, _) in zip(fir_front(taps, v), v, strict=True)]
        train_p += t
        val_p[n] = v
    net = WaveNetFilter(channels)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    lengths = np.array([len(d) for d, _ in train_p], dtype=np.float64)
    t0, step, best = time.time(), 0, -1e9
    tag = "+".join(names) + f"-c{channels}" + ("-fir" if front else "")
    total_steps = None
    while True:
        elapsed = time.time() - t0
        if elapsed > minutes * 60:
            break
        frac = elapsed / (minutes * 60)
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * frac))
        xs, ys = [], []
        for i in rng.choice(len(train_p), batch, p=lengths / lengths.sum()):
            d, r = train_p[i]
            s = int(rng.integers(0, max(1, len(d) - seg))) // PERIOD * PERIOD  # phase features from 0
            xs.append(d[s : s + seg])
            ys.append(r[s : s + seg])
        m = min(len(x) for x in xs)
        x = torch.tensor(np.stack([a[:m] for a in xs]), dtype=torch.float32)[:, None]
        y = torch.tensor(np.stack([a[:m] for a in ys]), dtype=torch.float32)[:, None]
        loss = torch.mean((net(x) - y) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 500 == 0:
            gains = {n: round(val_gain(net, v), 3) for n, v in val_p.items()}
            mean = float(np.mean(list(gains.values())))
            if mean > best:
                best = mean
                torch.save(net.state_dict(), out / f"cnn-{tag}.pt")
            print(f"step {step} {time.time() - t0:.0f}s loss {loss.item():.3e} held-out gain {gains}", flush=True)
    print("best", best, "steps", step, total_steps)


def test(name: str, out: Path, channels: int, tag: str) -> None:
    from coinpp.cli.train import waveform_pair
    c = codecs.load(name)
    net = WaveNetFilter(channels)
    net.load_state_dict(torch.load(out / f"cnn-{tag}.pt"))
    audio = modalities.get("audio")
    files = sorted(Path("../shared/data/speech/test").glob("*.flac"))
    rows = []
    for f in files:
        sig = audio.read(f)
        dec, ref = waveform_pair(c, audio, sig.values, "cpu")
        fir = apply_waveform(c.postfilter, ((dec + 1) / 2)[:, None])[:, 0] * 2.0 - 1 if c.postfilter else dec
        front = fir_front(np.load(out / f"fir-{name}.npy"), [(dec, ref)])[0][0] if tag.endswith("-fir") else dec
        cnn = run(net, front)
        rows.append({"file": f.name, "none": psnr(dec, ref), "fir": psnr(np.clip(fir, -1, 1), ref),
                     "cnn": psnr(np.clip(cnn, -1, 1), ref)})
        print(json.dumps(rows[-1]), flush=True)
    mean = {k: round(float(np.mean([r[k] for r in rows])), 3) for k in ("none", "fir", "cnn")}
    print(name, tag, json.dumps(mean))
    (out / f"test-{name}-{tag}.json").write_text(json.dumps({"rows": rows, "mean": mean}, indent=1))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["pairs", "train", "test"])
    ap.add_argument("codecs")
    ap.add_argument("--out", default="runs/speechpf")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seg", type=int, default=8000)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--tag", default="")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fir-front", action="store_true")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    names = a.codecs.split(",")
    if a.what == "pairs":
        for n in names:
            make_pairs(n, out)
    elif a.what == "train":
        train(names, out, a.minutes, a.lr, a.batch, a.seg, a.channels, a.seed, a.fir_front)
    else:
        test(names[0], out, a.channels, a.tag or f"{names[0]}-c{a.channels}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
