"""MRI at 2x: can a filter learned from the codec's decodes beat trilinear interpolation of the ordinary
decode, and what does a filter on the own grid buy?

    python benchmarks/experiments/volume_upscale.py code [--codec mri-mean-5x128-l16-b4]
    python benchmarks/experiments/volume_upscale.py linear [--side 3]
    python benchmarks/experiments/volume_upscale.py cnn [--minutes 40]
    python benchmarks/experiments/volume_upscale.py code-full | fit-scale

`code`: every MRI volume of the data folder halved (2x2x2 block means, as `coin bench mri --upscale 2`
does) and coded with the codec; kept per volume in --cache: the truth, the halved volume, its ordinary
decode N and the network's finer decode F (the `--no-postfilter` decode at the original voxel size).
The three training volumes of the MRI network and its validation series fit; `MR_Gd` and `T2w_axial`
(the test volumes) are scored.

`linear`: least-squares filters fitted on the training volumes' decodes, scored on the test volumes,
PSNR over each volume's range: on the own grid (side^3 taps and a constant, N -> the halved volume;
what `coin postfilter` installs) and at 2x (per output phase, side^3 taps of N and a constant, and with
F's value added). Printed beside them: F, trilinear of N, trilinear of the filtered N, and trilinear
of the uncoded halved volume (what halving alone loses).

`cnn`: a 3-D CNN (16 channels, 3x3x3 convolutions, residual) trained on crops of the same pairs, with an
own-grid head and a 2x head (8 phases onto trilinear of N), Adam 1e-3 with a cosine decay over
--minutes, batch 8 crops of 20^3 decoded voxels; the test volumes scored every 500 steps.

`code-full`: every volume coded at its own resolution (the decode without a post-filter kept); `fit-scale`:
the own-grid filter fitted on the training volumes' decodes at half resolution (what `coin postfilter`
does) and at their own, each scored on the test volumes at their own resolution.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from coinpp import codec as codecs
from coinpp import modalities
from coinpp.bitstream import parse
from coinpp.decoder import Decoder
from coinpp.encoder import Encoder
from coinpp.evaluation.upscale import mri_cases
from coinpp.postfilter import VolumeFilter, apply_volume, fit_volume
from coinpp.resample import linear
from coinpp.spec import PostFilterSpec

TRAIN = ["chris_t1", "chris_MRA", "mni_icbm152_t1_tal_nlin_sym_09a_converted", "example4d"]
TEST = ["MR_Gd", "T2w_axial"]


def psnr(a: np.ndarray, b: np.ndarray, span: float) -> float:
    return float(10 * np.log10(span**2 / np.mean((a - b) ** 2)))


def code(args: argparse.Namespace) -> None:
    m = modalities.get("mri")
    codec = codecs.load(args.codec)
    args.cache.mkdir(parents=True, exist_ok=True)
    decoder = Decoder("cpu", postfilter=False)
    for name in TEST + TRAIN:
        signal = m.read(args.data / f"{name}.nii.gz")
        with tempfile.TemporaryDirectory() as tmp:
            case = mri_cases(m, signal, [2], Path(tmp))[0]
        t0 = time.time()
        p = parse(Encoder(codec, m, device="cpu").encode(case.low).data)
        n = m.units(decoder.decode(p))[..., 0]
        f = m.units(decoder.decode(p, m.target(p.meta, p.file.shape, case.resolution)))[..., 0]
        s = n.shape
        np.savez(args.cache / f"{codec.name}-{name}.npz", truth=case.truth[: 2 * s[0], : 2 * s[1], : 2 * s[2]],
                 low=m.units(case.low)[..., 0], N=n, F=f[: 2 * s[0], : 2 * s[1], : 2 * s[2]], span=case.peak)
        print(f"{name}: {s} coded and decoded in {time.time() - t0:.0f} s", flush=True)


def code_full(args: argparse.Namespace) -> None:
    """Every volume coded at its own resolution: the truth and the decode without a post-filter."""
    m = modalities.get("mri")
    codec = codecs.load(args.codec)
    args.cache.mkdir(parents=True, exist_ok=True)
    for name in TEST + TRAIN:
        signal = m.read(args.data / f"{name}.nii.gz")
        t0 = time.time()
        p = parse(Encoder(codec, m, device="cpu").encode(signal).data)
        n = m.units(Decoder("cpu", postfilter=False).decode(p))[..., 0]
        np.savez(args.cache / f"full-{codec.name}-{name}.npz", truth=signal.exact[..., 0], N=n,
                 span=float(signal.meta["high"] - signal.meta["low"]))
        print(f"{name}: {n.shape} coded and decoded in {time.time() - t0:.0f} s", flush=True)


def fit_scale(args: argparse.Namespace) -> None:
    """The own-grid filter fitted on the training volumes' decodes at half resolution (as `coin postfilter`
    fits it) or at their own, scored on the test volumes at their own resolution."""
    fits = {}
    for prefix, target in (("", "low"), ("full-", "truth")):
        pairs = [(d["N"] / d["span"], d[target] / d["span"]) for d in (load(args, n, prefix) for n in TRAIN)]
        fits[prefix or "half-"] = fit_volume(pairs, args.side)
    for name in TEST:
        d = load(args, name, "full-")
        s = float(d["span"])
        line = f"{name} at its own resolution: N {psnr(d['N'], d['truth'], s):.2f}"
        for label, (taps, offset) in fits.items():
            f = VolumeFilter(PostFilterSpec(kind="volume", taps=args.side), taps, offset)
            g = np.clip(apply_volume(f, (d["N"] / s)[..., None])[..., 0], 0, 1) * s
            line += f", filter fitted {label.rstrip('-')} {psnr(g, d['truth'], s):.2f}"
        print(line, flush=True)


def load(args: argparse.Namespace, name: str, prefix: str = "") -> dict:
    z = np.load(args.cache / f"{prefix}{args.codec}-{name}.npz")
    return {k: z[k] for k in z.files}


def shifted(v: np.ndarray, r: int) -> list[np.ndarray]:
    """Every (2r + 1)^3 shift of v, the faces extended by their edge voxels."""
    p = np.pad(v, r, mode="edge")
    s = v.shape
    return [p[r + i : r + i + s[0], r + j : r + j + s[1], r + k : r + k + s[2]]
            for i in range(-r, r + 1) for j in range(-r, r + 1) for k in range(-r, r + 1)]


def phase_features(d: dict, r: int, with_f: bool, a: int, b: int, c: int) -> np.ndarray:
    cols = [x.ravel() for x in shifted(d["N"] / d["span"], r)]
    if with_f:
        cols.append((d["F"][a::2, b::2, c::2] / d["span"]).ravel())
    return np.stack(cols + [np.ones(d["N"].size)], axis=1)


def linear_filters(args: argparse.Namespace) -> None:
    train, test = [load(args, n) for n in TRAIN], [load(args, n) for n in TEST]
    r = args.side // 2
    taps, offset = fit_volume([(d["N"] / d["span"], d["low"] / d["span"]) for d in train], args.side)
    own = VolumeFilter(PostFilterSpec(kind="volume", taps=args.side), taps, offset)
    upsamplers = {}
    for with_f in (False, True):
        weights = {}
        for phase in np.ndindex(2, 2, 2):
            gram, cross = 0.0, 0.0
            for d in train:
                x = phase_features(d, r, with_f, *phase)
                gram = gram + x.T @ x
                cross = cross + x.T @ (d["truth"][phase[0]::2, phase[1]::2, phase[2]::2].ravel() / d["span"])
            weights[phase] = np.linalg.solve(gram + 1e-7 * np.trace(gram) / len(gram) * np.eye(len(gram)), cross)
        upsamplers[with_f] = weights
    for name, d in zip(TEST, test, strict=True):
        s = float(d["span"])
        g = apply_volume(own, (d["N"] / s)[..., None])[..., 0] * s
        line = (f"{name}: own grid N {psnr(d['N'], d['low'], s):.2f}, filtered {psnr(g, d['low'], s):.2f} | 2x: "
                f"F {psnr(d['F'], d['truth'], s):.2f}, trilinear of N "
                f"{psnr(linear(d['N'][..., None], d['truth'].shape)[..., 0], d['truth'], s):.2f}, of the filtered N "
                f"{psnr(linear(g[..., None], d['truth'].shape)[..., 0], d['truth'], s):.2f}; uncoded, trilinear of "
                f"the halved volume {psnr(linear(d['low'][..., None], d['truth'].shape)[..., 0], d['truth'], s):.2f}")
        for with_f, weights in upsamplers.items():
            out = np.empty_like(d["truth"])
            for phase, w in weights.items():
                out[phase[0]::2, phase[1]::2, phase[2]::2] = (phase_features(d, r, with_f, *phase) @ w).reshape(
                    d["N"].shape) * s
            line += f", least squares on N{' and F' if with_f else ''} {psnr(out, d['truth'], s):.2f}"
        print(line, flush=True)


def cnn(args: argparse.Namespace) -> None:
    import torch
    import torch.nn.functional as fn
    from torch import nn

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)  # the crops' draws (the schedule follows the clock, so runs differ in steps)

    def tensors(name: str) -> dict:
        d = load(args, name)
        lo, s = float(d["low"].min()), float(d["span"])
        return {k: torch.from_numpy(((d[k] - lo) / s).astype(np.float32)) for k in ("N", "low", "truth")}

    class Net(nn.Module):
        def __init__(self, c: int, layers: int) -> None:
            super().__init__()
            self.inp = nn.Conv3d(1, c, 3, padding=1)
            self.body = nn.ModuleList([nn.Conv3d(c, c, 3, padding=1) for _ in range(layers)])
            self.own, self.up = nn.Conv3d(c, 1, 3, padding=1), nn.Conv3d(c, 8, 3, padding=1)
            for head in (self.own, self.up):
                nn.init.zeros_(head.bias)
                head.weight.data.mul_(0.1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = torch.relu(self.inp(x))
            for conv in self.body:
                h = h + torch.relu(conv(h))
            b, _, dd, hh, ww = x.shape  # 8 phases -> each voxel's 2x2x2 finer voxels
            up = self.up(h).view(b, 2, 2, 2, dd, hh, ww).permute(0, 4, 1, 5, 2, 6, 3)
            up = up.reshape(b, 1, 2 * dd, 2 * hh, 2 * ww)
            return x + self.own(h), fn.interpolate(x, scale_factor=2, mode="trilinear") + up

    train, test = [tensors(n) for n in TRAIN], [tensors(n) for n in TEST]
    net = Net(args.channels, args.layers)
    opt = torch.optim.Adam(net.parameters(), args.lr)

    def score() -> str:
        out = []
        with torch.no_grad():
            for name, d in zip(TEST, test, strict=True):
                own, up = net(d["N"][None, None])
                tri = fn.interpolate(d["N"][None, None], scale_factor=2, mode="trilinear")

                def db(a: torch.Tensor, b: torch.Tensor) -> float:
                    return float(-10 * torch.log10(((a - b) ** 2).mean()))

                out.append(f"{name} own {db(d['N'], d['low']):.2f} -> {db(own[0, 0], d['low']):.2f}, "
                           f"2x trilinear {db(tri[0, 0], d['truth']):.2f} cnn {db(up[0, 0], d['truth']):.2f}")
        return "; ".join(out)

    print("start:", score(), flush=True)
    t0, step, total = time.time(), 0, args.minutes * 60
    while time.time() - t0 < total:
        for g in opt.param_groups:
            g["lr"] = args.lr * 0.5 * (1 + np.cos(np.pi * (time.time() - t0) / total))
        xs, ls, ts = [], [], []
        while len(xs) < 8:
            d = train[np.random.randint(len(train))]
            s, c = d["N"].shape, 20
            if min(s) < c:
                continue
            i, j, k = (np.random.randint(0, n - c + 1) for n in s)
            if float(d["N"][i : i + c, j : j + c, k : k + c].max()) < 0.02:
                continue
            xs.append(d["N"][i : i + c, j : j + c, k : k + c])
            ls.append(d["low"][i : i + c, j : j + c, k : k + c])
            ts.append(d["truth"][2 * i : 2 * i + 2 * c, 2 * j : 2 * j + 2 * c, 2 * k : 2 * k + 2 * c])
        own, up = net(torch.stack(xs)[:, None])
        loss = fn.mse_loss(own, torch.stack(ls)[:, None]) + fn.mse_loss(up, torch.stack(ts)[:, None])
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 500 == 0:
            print(f"step {step} ({time.time() - t0:.0f} s):", score(), flush=True)
    print(f"end, step {step}:", score(), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["code", "linear", "cnn", "code-full", "fit-scale"])
    ap.add_argument("--codec", default="mri-mean-5x128-l16-b4")
    ap.add_argument("--data", type=Path, default=Path("../shared/data/mri"))
    ap.add_argument("--cache", type=Path, default=Path("runs/volume-upscale"))
    ap.add_argument("--side", type=int, default=3)
    ap.add_argument("--minutes", type=float, default=40)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    modes = {"code": code, "linear": linear_filters, "cnn": cnn, "code-full": code_full, "fit-scale": fit_scale}
    modes[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
