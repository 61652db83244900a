"""A Laplace model per latent component whose scale is predicted from the decoded neighbours and whose
centre and scale also adapt to the file as it is read, against the shipped coder (ideal code lengths).

    python benchmarks/experiments/adaptive_scales.py --cache runs/ctx-fits.pt --kodak 1,5,13,20

The patches are read in raster order, as the shipped coder reads them (one call per patch). Per
component d, the prediction is log2 b = θ_d · [1, log2(1 + |left_d| + |up_d|), log2(1 + the neighbours'
summed magnitude)] (fitted on training photos, as `parametric_entropy.py`); the file then corrects it:
the centre is the running mean of the component's symbols so far, weighted against the training centre
as if that were A symbols, and the scale is multiplied by the running mean of |x - centre| / b, likewise
started at 1 with weight A. Kodak symbols come from the shipped encoder (cached in --kodak-cache).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from context_models import neighbours, shipped_bits, symbol_grids  # noqa: E402

from coinpp import codec as codecs  # noqa: E402
from coinpp import modalities  # noqa: E402
from coinpp.encoder import Encoder  # noqa: E402

FLOOR = 2.0**-16
ADAPT = "both"  # --adapt: what follows the file (centre, scale or both)


def features(grid: np.ndarray, levels: int) -> np.ndarray:
    """(R*Q, D, 3): a constant, log2(1 + |left| + |up|) of the same component, log2(1 + the neighbours'
    magnitude over all components)."""
    mid = levels // 2
    left, up = neighbours(grid, levels)
    same = np.abs(left - mid) + np.abs(up - mid)
    total = same.sum(axis=2, keepdims=True)
    f = [np.ones(grid.shape), np.log2(1 + same), np.broadcast_to(np.log2(1 + total), grid.shape)]
    return np.stack(f, -1).reshape(-1, grid.shape[2], 3)


def laplace_bits(x: np.ndarray, centre: np.ndarray, b: np.ndarray) -> np.ndarray:
    def cdf(v):
        z = (v - centre) / b
        return np.where(z < 0, 0.5 * np.exp(np.minimum(z, 0)), 1 - 0.5 * np.exp(-np.maximum(z, 0)))

    return -np.log2(np.maximum(cdf(x + 0.5) - cdf(x - 0.5), 0) + FLOOR)


def fit(grids: list[np.ndarray], levels: int) -> tuple[np.ndarray, np.ndarray]:
    x = torch.from_numpy(np.concatenate([g.reshape(-1, g.shape[2]) for g in grids]) - levels // 2).double()
    phi = torch.from_numpy(np.concatenate([features(g, levels) for g in grids]))
    theta = torch.zeros(x.shape[1], 3, dtype=torch.float64)
    theta[:, 0] = torch.log2(x.abs().mean(0) + 0.5)
    centre = x.mean(0).clone()
    theta.requires_grad_(True)
    centre.requires_grad_(True)
    opt = torch.optim.LBFGS([theta, centre], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        b = torch.exp2((phi * theta).sum(-1))

        def cdf(v):
            z = (v - centre) / b
            return torch.where(z < 0, 0.5 * torch.exp(z.clamp(max=0)), 1 - 0.5 * torch.exp(-z.clamp(min=0)))

        loss = -torch.log2((cdf(x + 0.5) - cdf(x - 0.5)).clamp_min(0) + FLOOR).mean()
        loss.backward()
        return loss

    opt.step(closure)
    return theta.detach().numpy(), centre.detach().numpy()


def adaptive_bits(g: np.ndarray, levels: int, theta: np.ndarray, centre0: np.ndarray, weight: float) -> float:
    """Code length of one grid, patch by patch in raster order, the centre and scale adapting."""
    x = g.reshape(-1, g.shape[2]) - levels // 2
    b_pred = np.exp2((features(g, levels) * theta).sum(-1))
    n = 0
    sum_x = np.zeros(x.shape[1])
    sum_r = np.zeros(x.shape[1])
    bits = 0.0
    for p in range(len(x)):
        c = (weight * centre0 + sum_x) / (weight + n) if weight and ADAPT in ("centre", "both") else centre0
        r = (weight + sum_r) / (weight + n) if weight and ADAPT in ("scale", "both") else 1.0
        bits += laplace_bits(x[p], c, b_pred[p] * r).sum()
        sum_x += x[p]
        sum_r += np.abs(x[p] - c) / b_pred[p]
        n += 1
    return bits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", default="image-klt-6x128-l64-b5")
    ap.add_argument("--data", default="../shared/data/train-images")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--kodak", default="1,5,13,20")
    ap.add_argument("--kodak-dir", default="../shared/data/kodak")
    ap.add_argument("--kodak-cache", type=Path, default=Path("runs/kodak-symbols.npz"))
    ap.add_argument("--weights", default="0,8,32,128")
    ap.add_argument("--adapt", default="both", choices=["centre", "scale", "both"])
    args = ap.parse_args()
    global ADAPT
    ADAPT = args.adapt
    codec = codecs.load(args.codec)
    levels = codec.quantizer.levels
    grids = symbol_grids(codec, args.data, args.cache)
    weights = [float(w) for w in args.weights.split(",")]
    ship, ours = 0.0, {w: 0.0 for w in weights}
    for f in range(4):
        train = [g for i, g in enumerate(grids) if i % 4 != f]
        test = [g for i, g in enumerate(grids) if i % 4 == f]
        theta, centre = fit(train, levels)
        ship += shipped_bits(train, test, levels)
        for w in weights:
            ours[w] += sum(adaptive_bits(g, levels, theta, centre, w) for g in test)
    for w in weights:
        print(f"training photos, adaptation weight {w:g}: {100 * (ours[w] / ship - 1):+.2f} % vs shipped")
    image = modalities.get("image")
    kodak = dict(np.load(args.kodak_cache)) if args.kodak_cache.is_file() else {}
    names = [f"kodim{int(n):02d}" for n in args.kodak.split(",") if n]
    for name in names:
        if name not in kodak:
            sig = image.read(Path(args.kodak_dir) / f"{name}.png")
            sym = Encoder(codec, image, device="cpu").encode(sig).symbols
            kodak[name] = sym.reshape(-(-sig.values.shape[0] // 32), -(-sig.values.shape[1] // 32), -1)
            args.kodak_cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(args.kodak_cache, **kodak)
    if names:
        theta, centre = fit(grids, levels)
        ship = shipped_bits(grids, [kodak[n].astype(np.int64) for n in names], levels)
        for w in weights:
            b = sum(adaptive_bits(kodak[n].astype(np.int64), levels, theta, centre, w) for n in names)
            print(f"Kodak {','.join(names)}, adaptation weight {w:g}: {100 * (b / ship - 1):+.2f} % vs shipped")


if __name__ == "__main__":
    main()
