"""A learned entropy model for the latents' principal components, against the shipped coder, by code length.

Issue 43's first lever: each component's distribution predicted from what is already decoded. Here the
distribution is a discretized Laplace about a per-component centre whose scale is predicted, per
component, by a log-linear model of integer features of the left and upper patches and of the patch's
own earlier components; the parameters are fitted by maximum likelihood on the other folds' photos and
the fold's photos are scored by their ideal code length (-log2 of the model's probability, floored at
2^-16 as an integer table would be). The shipped coder (neighbour-mean buckets, adapted to the file) is
scored as `context_models.py` does, on the same photos and folds.

    python benchmarks/experiments/parametric_entropy.py --codecs image-klt-6x128-l64-b5 --cache runs/ctx-fits.pt

Features (all from decoded symbols, so a decoder can form them): `same` |left_d| + |up_d| of the same
component; `all` the neighbours' summed |symbol - middle| over every component; `own` the patch's own
earlier components' summed magnitude.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from context_models import context_bits, neighbours, shipped_bits, symbol_grids  # noqa: E402

from coinpp import codec as codecs  # noqa: E402
from coinpp.training.export import ADAPT_CHOICES  # noqa: E402
from coinpp.training.tables import frequency_table  # noqa: E402

FLOOR = 2.0**-16
FEATURE_SETS = {"none": (), "same": ("same",), "all": ("all",), "own": ("own",), "same+all": ("same", "all"),
                "same+all+own": ("same", "all", "own"), "same+all+own8": ("same", "all", "own8"),
                "same+all+own16": ("same", "all", "own16"), "own+near": ("own", "near"),
                "own+near+nearlast": ("own", "near", "nearlast"),
                "own+ownlast+near+nearlast": ("own", "ownlast", "near", "nearlast")}
FILE_CENTRE = False  # --file-centre: each photo's per-component median sent as side information
SIDE_BITS = 6  # what one such median costs (a small signed integer)
FIT_CENTRE = True  # --middle: every component's Laplace about the middle level instead
INTEGER_LOG = False  # --integer-log: features by Mitchell's integer log2 (what an integer decoder computes)


def log1p(n: np.ndarray) -> np.ndarray:
    if not INTEGER_LOG:
        return np.log1p(n)
    x = np.asarray(n, dtype=np.int64) + 1
    e = np.floor(np.log2(x)).astype(np.int64)  # the bit length - 1 (exact for these small integers)
    frac = ((x - (1 << e)) << 8) >> e
    return (256 * e + frac) / 256.0


def features(grid: np.ndarray, levels: int, names: tuple[str, ...]) -> np.ndarray:
    """(R*Q, D, F) log(1 + feature) per patch and component, and a constant."""
    mid = levels // 2
    left, up = neighbours(grid, levels)
    a = np.abs(grid - mid).astype(np.float64)
    cols = [np.ones(grid.shape)]
    for n in names:
        if n == "same":
            cols.append(log1p(np.abs(left - mid) + np.abs(up - mid)))
        elif n == "all":
            nb = (np.abs(left - mid) + np.abs(up - mid)).sum(axis=2, keepdims=True)
            cols.append(np.broadcast_to(log1p(nb), grid.shape))
        elif n == "own":
            cols.append(log1p(np.cumsum(a, axis=2) - a))
        elif n == "ownlast":
            cols.append(log1p(np.concatenate([np.zeros_like(a[..., :1]), a[..., :-1]], 2)))
        elif n in ("near", "nearlast"):
            # component-major order: every patch's earlier components are known, so all four neighbours'
            # (near: summed over the components before this one; nearlast: the one just before)
            c = np.cumsum(a, axis=2) - a if n == "near" else np.concatenate([np.zeros_like(a[..., :1]), a[..., :-1]], 2)
            pad = np.pad(c, ((1, 1), (1, 1), (0, 0)))
            ones = np.pad(np.ones(grid.shape[:2]), 1)
            total = pad[:-2, 1:-1] + pad[2:, 1:-1] + pad[1:-1, :-2] + pad[1:-1, 2:]
            count = (ones[:-2, 1:-1] + ones[2:, 1:-1] + ones[1:-1, :-2] + ones[1:-1, 2:])[..., None]
            cols.append(log1p((total * 4) // count))
        elif n.startswith("own"):  # the first K components coded one by one, the rest as a block after them
            k = int(n[3:])
            c = np.cumsum(a, axis=2) - a
            c[..., k:] = c[..., k - 1 : k] + a[..., k - 1 : k]
            cols.append(log1p(c))
    d = grid.shape[2]
    return np.stack(cols, axis=-1).reshape(-1, d, len(cols))


def nll_bits(theta: torch.Tensor, centre: torch.Tensor, x: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """Code length (bits) of centred symbols x (N, D) under discretized Laplaces, log-scale phi @ theta."""
    b = torch.exp((phi * theta).sum(-1))
    def cdf(v):
        z = (v - centre) / b
        return torch.where(z < 0, 0.5 * torch.exp(z.clamp(max=0)), 1 - 0.5 * torch.exp(-z.clamp(min=0)))
    p = cdf(x + 0.5) - cdf(x - 0.5)
    return -torch.log2(p.clamp_min(0) + FLOOR).sum()


def centred(g: np.ndarray, levels: int) -> np.ndarray:
    """The values the Laplace sees: about the middle level, or (--file-centre) about the photo's own
    per-component median, sent as side information."""
    v = g.reshape(-1, g.shape[2]) - levels // 2
    return v - np.rint(np.median(v, axis=0)).astype(np.int64) if FILE_CENTRE else v


def fit(grids: list[np.ndarray], levels: int, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.concatenate([centred(g, levels) for g in grids])).double()
    phi = torch.from_numpy(np.concatenate([features(g, levels, names) for g in grids]))
    d, f = phi.shape[1], phi.shape[2]
    theta = torch.zeros(d, f, dtype=torch.float64)
    theta[:, 0] = torch.log(x.abs().mean(0) + 0.5)
    centre = x.median(0).values.clone() if FIT_CENTRE else torch.zeros(d, dtype=torch.float64)
    theta.requires_grad_(True)
    centre.requires_grad_(FIT_CENTRE)
    opt = torch.optim.LBFGS([theta, centre] if FIT_CENTRE else [theta], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nll_bits(theta, centre, x, phi) / x.numel()
        loss.backward()
        return loss

    opt.step(closure)
    return theta.detach(), centre.detach()


def scale_classes(theta: torch.Tensor, g: np.ndarray, levels: int, names: tuple[str, ...],
                  thresholds: np.ndarray) -> np.ndarray:
    log_b = (torch.from_numpy(features(g, levels, names)) * theta).sum(-1).numpy()  # (N, D)
    return np.searchsorted(thresholds, log_b)


def adaptive_classes(grids: list[np.ndarray], fold_of: np.ndarray, folds: int, levels: int, names: tuple[str, ...],
                     n_classes: int) -> float:
    """The predicted log-scale cut into classes (equal counts on the training folds), each class a
    context of the shipped adaptive coder with a prior counted on the training folds."""
    bits = 0.0
    for f in range(folds):
        train = [g for g, h in zip(grids, fold_of, strict=True) if h != f]
        test = [g for g, h in zip(grids, fold_of, strict=True) if h == f]
        theta, _ = fit(train, levels, names)
        d = train[0].shape[2]
        log_b = np.concatenate([(torch.from_numpy(features(g, levels, names)) * theta).sum(-1).numpy() for g in train])
        thresholds = np.quantile(log_b, np.arange(1, n_classes) / n_classes)
        counts = np.zeros((d, n_classes, levels), dtype=np.int64)
        for g in train:
            k = scale_classes(theta, g, levels, names, thresholds)
            np.add.at(counts, (np.broadcast_to(np.arange(d), k.shape), k, g.reshape(-1, d)), 1)
        prior = np.zeros((d, n_classes, levels), dtype=np.int32)
        for j in range(d):
            for c in range(n_classes):
                sym = np.repeat(np.arange(levels), counts[j, c]).reshape(-1, 1).astype(np.int32)
                prior[j, c] = frequency_table(sym, levels)[0]
        coded = [(scale_classes(theta, g, levels, names, thresholds), g.reshape(-1, d)) for g in train[::3]]
        adapt = min(ADAPT_CHOICES[1:6], key=lambda a: sum(context_bits(k, s, prior, a) for k, s in coded))
        bits += sum(context_bits(scale_classes(theta, g, levels, names, thresholds), g.reshape(-1, d), prior, adapt)
                    for g in test)
    return bits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codecs", required=True)
    ap.add_argument("--data", default="../shared/data/train-images")
    ap.add_argument("--crop", default="384x512")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--classes", default="", help="Also: the predicted scale cut into these many classes "
                    "(comma-separated), each a context of the shipped adaptive coder")
    ap.add_argument("--sets", default=",".join(FEATURE_SETS), help="Feature sets to try")
    ap.add_argument("--integer-log", action="store_true")
    ap.add_argument("--middle", action="store_true")
    ap.add_argument("--file-centre", action="store_true")
    args = ap.parse_args()
    global INTEGER_LOG, FIT_CENTRE
    global FILE_CENTRE
    INTEGER_LOG, FIT_CENTRE, FILE_CENTRE = args.integer_log, not args.middle, args.file_centre
    for name in args.codecs.split(","):
        codec = codecs.load(name)
        levels = codec.quantizer.levels
        grids = symbol_grids(codec, args.data, args.cache)
        fold_of = np.arange(len(grids)) % args.folds
        comps = sum(g.size for g in grids)
        shipped = 0.0
        for f in range(args.folds):
            train = [g for g, h in zip(grids, fold_of, strict=True) if h != f]
            test = [g for g, h in zip(grids, fold_of, strict=True) if h == f]
            shipped += shipped_bits(train, test, levels)
        print(f"{name}: shipped (neighbour mean, 8 buckets, adapted) {shipped / comps:.4f} bits per component",
              flush=True)
        for c in [int(x) for x in args.classes.split(",") if x]:
            for label in args.sets.split(","):
                bits = adaptive_classes(grids, fold_of, args.folds, levels, FEATURE_SETS[label], c)
                print(f"  {c} classes of the scale from {label}, adapted: {bits / comps:.4f} bits per component, "
                      f"{100 * (bits / shipped - 1):+.2f} %", flush=True)
        for label in args.sets.split(","):
            names = FEATURE_SETS[label]
            bits = 0.0
            for f in range(args.folds):
                train = [g for g, h in zip(grids, fold_of, strict=True) if h != f]
                test = [g for g, h in zip(grids, fold_of, strict=True) if h == f]
                theta, centre = fit(train, levels, names)
                for g in test:
                    x = torch.from_numpy(centred(g, levels)).double()
                    bits += nll_bits(theta, centre, x, torch.from_numpy(features(g, levels, names))).item()
                    bits += SIDE_BITS * g.shape[2] if FILE_CENTRE else 0
            print(f"  Laplace, log-scale from {label}: {bits / comps:.4f} bits per component, "
                  f"{100 * (bits / shipped - 1):+.2f} %", flush=True)


if __name__ == "__main__":
    main()
