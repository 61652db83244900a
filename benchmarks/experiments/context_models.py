"""Context models for the latents' entropy coder, compared by code length on photos (never Kodak).

Fits every photo of `--data` (centre crops of at most `--crop`) with each network's shipped encoder
(its SGD steps and refinement) once and keeps the latents in `--cache`. Then, for each codec and
each context model, the photos are split into `--folds` folds: the prior is trained on the windows
of the other folds' photos and the adaptation weight chosen on them, and the fold's photos are coded
for real (plain rounding), so every number is the length of a real stream of a photo the prior did
not see.

    python benchmarks/experiments/context_models.py --codecs CODECS [--cache runs/ctx-fits.pt] [--folds 4]

Prints one Markdown row per codec: bits per latent component under each model, and the change of
the whole payload against the shipped neighbour-mean model.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from coinpp import codec as codecs
from coinpp import entropy, modalities
from coinpp.encoder import Encoder
from coinpp.modalities import Signal
from coinpp.training.data import load_folder
from coinpp.training.export import ADAPT_CHOICES
from coinpp.training.tables import frequency_table


def photos(data: str, height: int, width: int) -> list[Signal]:
    train_s, val_s, _ = load_folder(data, "image", 0, 0)
    out = []
    for v in train_s + val_s:
        h, w = v.shape[:2]
        ch, cw = min(h, height) // 32 * 32, min(w, width) // 32 * 32
        a, b = (h - ch) // 2, (w - cw) // 2
        out.append(Signal(np.ascontiguousarray(v[a : a + ch, b : b + cw]), {"channels": 3}))
    return out


def fitted(codec: codecs.Codec, signals: list[Signal], cache: Path | None, fits: dict, refine: bool = True,
           tag: str = "") -> list[np.ndarray]:
    """Each photo's latents by the codec's encoder (its SGD steps, and its refinement unless `refine`
    is False), fitted once and kept in `fits` (saved to `cache` after every photo)."""
    e = Encoder(codec, modalities.get("image"))
    key = f"{e.fit_key()}|{e.refine_key() if refine else 'none'}{tag}"
    for i, s in enumerate(signals):
        if f"{key}:{i}" not in fits:
            t = time.perf_counter()
            z = e.fit([s])[0]
            z = e.refine(z, s) if refine else z
            fits[f"{key}:{i}"] = z.detach().cpu().numpy()
            print(f"  fitted photo {i} ({s.values.shape[0]}x{s.values.shape[1]}) in {time.perf_counter() - t:.1f} s",
                  flush=True)
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                torch.save(fits, cache)
    return [fits[f"{key}:{i}"] for i in range(len(signals))]


def neighbours(grid: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Left and upper neighbours' symbols of every patch (R, Q, D), as entropy.neighbour_mean sees
    them: a missing one is the other, both missing the middle level."""
    left = np.full_like(grid, levels // 2)
    up = left.copy()
    left[:, 1:], up[1:] = grid[:, :-1], grid[:-1]
    left[:, 0] = np.where(np.arange(grid.shape[0])[:, None] > 0, up[:, 0], left[:, 0])
    up[0, 1:] = left[0, 1:]
    return left, up


def activity(grid: np.ndarray, levels: int) -> np.ndarray:
    """Per patch (R, Q): the summed |symbol - middle| of both neighbours over all dimensions."""
    left, up = neighbours(grid, levels)
    return (np.abs(left - levels // 2) + np.abs(up - levels // 2)).sum(axis=2)


def symbol_grids(codec: codecs.Codec, data: str, cache: Path | None) -> list[np.ndarray]:
    """The (R, Q, D) symbol grids of the training photos' centre crops (384 x 512 at most) as the
    codec's encoder fits them (kept in `cache`), rounded plainly."""
    signals = photos(data, 384, 512)
    fits = torch.load(cache, weights_only=False) if cache is not None and cache.is_file() else {}
    latents = fitted(codec, signals, cache, fits)
    return [codec.quantizer.quantize(z).astype(np.int64).reshape(s.values.shape[0] // 32, s.values.shape[1] // 32, -1)
            for z, s in zip(latents, signals, strict=True)]


def own_activity(grid: np.ndarray, levels: int, first: int) -> np.ndarray:
    """Per patch and dimension (R, Q, D): summed |symbol - middle| of the patch's own components
    before it, among the first `first` (coded first; the rest see all of them)."""
    a = np.abs(grid - levels // 2)
    c = np.cumsum(a, axis=2) - a  # strictly before
    c[..., first:] = c[..., first - 1 : first]  + a[..., first - 1 : first]
    return c


def classes(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    return np.searchsorted(thresholds, values, side="right")


def contexts(model: str, grid: np.ndarray, levels: int, thresholds: np.ndarray | None) -> np.ndarray:
    left, up = neighbours(grid, levels)
    kind, _, arg = model.partition(":")
    if kind == "mean":
        k = int(arg)
        return entropy.context_buckets((left + up + 1) // 2, levels, k)
    if kind == "mean-act":  # mean bucket x neighbour activity class
        k, _ = map(int, arg.split("x"))
        b = entropy.context_buckets((left + up + 1) // 2, levels, k)
        return b + k * classes(activity(grid, levels), thresholds)[..., None]
    if kind == "mean-own":  # mean bucket x class of the patch's own earlier components
        k, _, first = map(int, arg.split("x"))
        b = entropy.context_buckets((left + up + 1) // 2, levels, k)
        return b + k * classes(own_activity(grid, levels, first), thresholds)
    if kind == "resid":  # the residual against the neighbour mean, with classes of |left - up|
        n = int(arg)
        return np.minimum(np.abs(left - up), n - 1)
    if kind == "pair":  # left bucket x upper bucket
        k = int(arg)
        return entropy.context_buckets(left, levels, k) * k + entropy.context_buckets(up, levels, k)
    raise ValueError(model)


def n_contexts(model: str) -> int:
    kind, _, arg = model.partition(":")
    nums = [int(x) for x in arg.split("x")]
    if kind in ("mean", "resid"):
        return nums[0]
    if kind in ("mean-act", "mean-own"):
        return nums[0] * nums[1]
    return nums[0] ** 2


def feature(model: str, grid: np.ndarray, levels: int) -> np.ndarray | None:
    kind, _, arg = model.partition(":")
    if kind == "mean-act":
        return activity(grid, levels).ravel()
    if kind == "mean-own":
        first = int(arg.split("x")[2])
        return own_activity(grid, levels, first)[..., 1:].ravel()
    return None


def symbols_of(model: str, grid: np.ndarray, levels: int) -> tuple[np.ndarray, int]:
    """What is coded, and its alphabet: the symbols, or their residuals against the neighbour mean."""
    if model.startswith("resid"):
        left, up = neighbours(grid, levels)
        return grid - (left + up + 1) // 2 + levels - 1, 2 * levels - 1
    return grid, levels


def train_prior(model: str, grids: list[np.ndarray], levels: int) -> tuple[np.ndarray, np.ndarray | None]:
    c = n_contexts(model)
    thresholds = None
    values = [feature(model, g, levels) for g in grids]
    if values[0] is not None:  # equal-count classes of the feature on the training grids
        n = int(model.partition(":")[2].split("x")[1])
        thresholds = np.quantile(np.concatenate(values), np.arange(1, n) / n).astype(np.int64)
    d = grids[0].shape[2]
    alphabet = symbols_of(model, grids[0], levels)[1]
    counts = np.zeros((d, c, alphabet), dtype=np.int64)
    dims = np.arange(d)
    for g in grids:
        k = contexts(model, g, levels, thresholds).reshape(-1, d)
        s = symbols_of(model, g, levels)[0].reshape(-1, d)
        np.add.at(counts, (np.broadcast_to(dims, k.shape), k, s), 1)
    prior = np.zeros((d, c, alphabet), dtype=np.int32)
    for j in range(d):
        for b in range(c):
            sym = np.repeat(np.arange(alphabet), counts[j, b]).reshape(-1, 1).astype(np.int32)
            prior[j, b] = frequency_table(sym, alphabet)[0]
    return prior, thresholds


def code_bits(model: str, grid: np.ndarray, levels: int, prior: np.ndarray, thresholds, adapt: int) -> float:
    """Ideal adaptive code length (bits) of one grid: -log2 of the integer rows the coder would use."""
    d = grid.shape[2]
    k = contexts(model, grid, levels, thresholds).reshape(-1, d)
    return context_bits(k, symbols_of(model, grid, levels)[0].reshape(-1, d), prior, adapt)


def context_bits(k: np.ndarray, s: np.ndarray, prior: np.ndarray, adapt: int) -> float:
    """Ideal adaptive code length of symbols s (N, D), each coded in context k (N, D) with the shipped
    coder's integer rows (the context's prior row plus what that context has seen)."""
    d = s.shape[1]
    dims = np.arange(d)
    inc = (1 << entropy.TABLE_PRECISION) // adapt
    seen = np.zeros(prior.shape, dtype=np.int64)
    p = prior.astype(np.int64)
    bits = 0.0
    for n in range(len(s)):
        rows = entropy.adaptive_rows(p[dims, k[n]] + inc * seen[dims, k[n]])
        bits -= np.log2(rows[dims, s[n]] / (1 << entropy.TABLE_PRECISION)).sum()
        seen[dims, k[n], s[n]] += 1
    return bits


def shipped_bits(train: list[np.ndarray], test: list[np.ndarray], levels: int) -> float:
    """Code length of the `test` grids under the shipped model (neighbour mean, 8 buckets), its prior
    counted on the `train` grids and its adaptation weight the one that codes them shortest."""
    prior, th = train_prior("mean:8", train, levels)
    adapt = min(ADAPT_CHOICES[1:6], key=lambda a: sum(code_bits("mean:8", g, levels, prior, th, a) for g in train[::3]))
    return sum(code_bits("mean:8", g, levels, prior, th, adapt) for g in test)


# mean:K  the shipped model (K buckets of the neighbours' mean); mean:1 no context, adaptation only;
# pair:K  K buckets of the left times K of the upper neighbour; mean-act:KxC  and C classes of the
# neighbours' summed |symbol - middle| over all dimensions; mean-own:KxCxF  and C classes of the same
# patch's own first F components (coded first); resid:C  the residual against the neighbours' mean,
# C classes of |left - up|.
MODELS = ["mean:8", "mean:1", "mean:4", "mean:16", "pair:4", "mean-act:8x2", "mean-act:8x3", "mean-act:8x4",
          "mean-own:8x3x4", "mean-own:8x3x8", "resid:1", "resid:2", "resid:4"]


def compare(name: str, grids: list[np.ndarray], levels: int, folds: int) -> None:
    models = MODELS
    n = len(grids)
    fold_of = np.arange(n) % folds
    total = {}
    for m in models:
        bits = 0.0
        for f in range(folds):
            train = [g for g, h in zip(grids, fold_of, strict=True) if h != f]
            test = [g for g, h in zip(grids, fold_of, strict=True) if h == f]
            prior, th = train_prior(m, train, levels)
            # the adaptation weight: the one that codes the training photos shortest (as export does
            # with its validation photos)
            adapt = min(ADAPT_CHOICES[1:6],
                        key=lambda a: sum(code_bits(m, g, levels, prior, th, a) for g in train[::3]))
            bits += sum(code_bits(m, g, levels, prior, th, adapt) for g in test)
        total[m] = bits
        comps = sum(g.size for g in grids)
        print(f"  {name} {m}: {bits / comps:.4f} bits per component, {100 * (bits / total[models[0]] - 1):+.2f} %",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codecs", required=True)
    ap.add_argument("--data", default="../shared/data/train-images")
    ap.add_argument("--crop", default="384x512", help="Centre crops of at most HxW")
    ap.add_argument("--cache", type=Path, default=None, help="Keep the fitted latents here (torch file)")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--fit-only", action="store_true")
    args = ap.parse_args()
    signals = photos(args.data, *map(int, args.crop.split("x")))
    fits = torch.load(args.cache, weights_only=False) if args.cache is not None and args.cache.is_file() else {}
    for name in args.codecs.split(","):
        codec = codecs.load(name)
        print(f"{name}: {len(signals)} photos", flush=True)
        latents = fitted(codec, signals, args.cache, fits)
        if args.fit_only:
            continue
        shape = [(s.values.shape[0] // 32, s.values.shape[1] // 32) for s in signals]
        grids = [codec.quantizer.quantize(z).astype(np.int64).reshape(*g, -1)
                 for z, g in zip(latents, shape, strict=True)]
        compare(name, grids, codec.quantizer.levels, args.folds)


if __name__ == "__main__":
    main()
