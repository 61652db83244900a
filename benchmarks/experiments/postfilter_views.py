"""Post-filter gain with its output averaged over 1, 2, 4 or 8 flipped/transposed views of the image,
measured on held-out decoded crops (never Kodak), and its cost in filter time per megapixel.

    python benchmarks/experiments/postfilter_views.py --data ../shared/data/train-images --cache runs/views.npz \
        --codecs image-klt-6x128-l64-b4,image-klt-6x128-l64-b5 [--views 1,2,4,8] [--crops 16 --seed 7]

The crops are random crops of the photos `coin postfilter` holds out of DATA (the same seeded
choice, `--val-files 3`), drawn with another seed than the filters' own validation crops, so no
filter or view count was chosen on them. They are encoded and decoded (without the filter) by each
codec once and kept in `--cache`; a later run with the same codecs reads them back.

Prints one Markdown row per codec: PSNR of the crops without the filter, the gain with each view
count, and seconds per megapixel of filtering (torch's threads). `--set N` then makes each codec's
filter average N views when decoding and records the measured gains in its config and model card
(the weights and the codec hash do not change).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from coinpp import codec as codecs
from coinpp.postfilter import apply
from coinpp.training.data import load_folder
from coinpp.training.postfilter import decoded_crops, install, load_pairs, save_pairs


def psnr(pairs: list[tuple[np.ndarray, np.ndarray]], outputs: list[np.ndarray]) -> float:
    se = sum(((np.clip(y, 0, 1) - o / 255.0) ** 2).sum() for y, (_, o) in zip(outputs, pairs, strict=True))
    n = sum(o.size for _, o in pairs)
    return -10 * math.log10(se / n)


def held_out_crops(names: list[str], data: str, crops: int, size: int, seed: int, cache: Path | None
                   ) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    key = {"codecs": {n: codecs.load(n).hash.hex() for n in names}, "data": str(Path(data).resolve()),
           "crops": crops, "size": size, "seed": seed, "part": "views"}
    if cache is not None:
        got = load_pairs(cache, key)
        if got is not None:
            return got
    _, val_s, val_names = load_folder(data, "image", 3, 0)  # coin postfilter's held-out photos (seed 0)
    print(f"decoding {crops} crops of {', '.join(val_names)} with each codec", flush=True)
    pairs = decoded_crops(names, val_s, crops, size, seed)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_pairs(cache, pairs, key)
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codecs", required=True, help="Comma-separated image codecs with post-filters")
    ap.add_argument("--data", default="../shared/data/train-images")
    ap.add_argument("--cache", type=Path, default=None, help="Keep the decoded crops here (.npz)")
    ap.add_argument("--crops", type=int, default=16, help="Crops per held-out photo")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=7, help="Crop seed (the filters validated on seed 1)")
    ap.add_argument("--views", default="1,2,4,8")
    ap.add_argument("--set", type=int, default=None, metavar="N", help="Make the filters average N views")
    args = ap.parse_args()
    names = args.codecs.split(",")
    pairs = held_out_crops(names, args.data, args.crops, args.size, args.seed, args.cache)
    counts = [int(v) for v in args.views.split(",")]
    print("| codec | crops | PSNR without | " + " | ".join(f"{v} view{'s' * (v > 1)}" for v in counts)
          + " | s per megapixel (" + ", ".join(map(str, counts)) + ") |")
    print("|---|---|---|" + "---|" * len(counts) + "---|")
    for name in names:
        codec = codecs.load(name)
        net = codec.postfilter
        if net is None:
            raise SystemExit(f"{name} has no post-filter")
        items = pairs[name]
        base = psnr(items, [d for d, _ in items])
        gains, secs = [], []
        for v in counts:
            t0 = time.perf_counter()
            outs = [apply(net, d, views=v) for d, _ in items]
            secs.append((time.perf_counter() - t0) / (sum(d.shape[0] * d.shape[1] for d, _ in items) / 1e6))
            gains.append(psnr(items, outs) - base)
        print(f"| `{name}` | {len(items)} | {base:.2f} dB | " + " | ".join(f"{g:+.3f} dB" for g in gains)
              + " | " + ", ".join(f"{s:.2f}" for s in secs) + " |", flush=True)
        if args.set is not None:
            net.views = args.set
            training = {**codec.spec.config["postfilter"]["training"], "views_measured": {
                "on": f"{len(items)} crops of the held-out photos (`python benchmarks/experiments/postfilter_views.py "
                      f"--codecs {name} --crops {args.crops} --size {args.size} --seed {args.seed} "
                      f"--views {args.views} --set {args.set}`, which set the views)",
                "gain_db": {str(v): round(g, 3) for v, g in zip(counts, gains, strict=True)}}}
            install(codec.folder, net, training)
    if args.set is not None:
        print(f"the filters now average {args.set} views", flush=True)


if __name__ == "__main__":
    main()
