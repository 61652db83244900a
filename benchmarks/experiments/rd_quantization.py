"""Rate-distortion optimised quantization: what each lambda buys, on held-out photos (never Kodak).

The encoder may round a latent component to the farther of its two nearest levels when that saves
more bits (under the neighbour context's adaptive row the decoder will use) than lambda times the
squared error it adds (`entropy.encode_context_rd`); files stay plain streams. For every codec and
lambda this fits the photos that `coin postfilter` and `coin train` hold out (centre crops of at
most 512x768), refines the latents as the codec says (`--no-refine`: not), codes them for real and
decodes them with and without the codec's post-filter (`--views`: averaged over that many views).

    python benchmarks/experiments/rd_quantization.py --codecs CODECS [--lambdas 0,0.05,0.1,0.2] [--cache runs/rd.pt]
        [--views 1] [--no-refine] [--set 0.1] [--every 2 --crop 256x256]

Prints one Markdown row per codec and lambda, then each lambda's BD-rate against lambda 0 for the
codecs as one family. Fitted (and refined) latents are shared by codecs with the same network
(and refinement) and kept in `--cache`. `--every K` takes every K-th of all the photos of `--data`
instead (as benchmarks/experiments/refine_rate.py does; three photos proved a poor guide for encoder settings).
`--set L` writes lambda L into each codec's config (encoder-only, outside the hash) with what was
measured.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from context_models import fitted, photos  # the same photos, crops and fit cache as refine_rate.py

from coinpp import codec as codecs
from coinpp import modalities
from coinpp.bitstream import parse
from coinpp.decoder import Decoder
from coinpp.encoder import Encoder
from coinpp.evaluation.rd import bd_rate
from coinpp.modalities import Signal
from coinpp.presets import EncoderPreset
from coinpp.training.data import load_folder


def held_out_images(data: str, height: int, width: int) -> tuple[list[Signal], list[str]]:
    _, val_s, names = load_folder(data, "image", 3, 0)  # the held-out photos of coin train / postfilter
    out = []
    for v in val_s:
        h, w = v.shape[:2]
        ch, cw = min(h, height), min(w, width)
        a, b = (h - ch) // 2, (w - cw) // 2
        out.append(Signal(np.ascontiguousarray(v[a : a + ch, b : b + cw]), {"channels": 3}))
    return out, names


def psnr(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    se = sum(((a.astype(np.float64) - b) ** 2).sum() for a, b in pairs)
    return -10 * math.log10(se / sum(a.size for a, _ in pairs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codecs", required=True)
    ap.add_argument("--data", default="../shared/data/train-images")
    ap.add_argument("--lambdas", default="0,0.05,0.1,0.2")
    ap.add_argument("--cache", type=Path, default=None, help="Keep the fitted latents here (torch file)")
    ap.add_argument("--crop", default="512x768", help="Centre crops of at most HxW")
    ap.add_argument("--views", type=int, default=None, help="Post-filter views (default: the codec's)")
    ap.add_argument("--no-refine", action="store_true", help="Skip the codecs' encoder-side refinement")
    ap.add_argument("--set", type=float, default=None, metavar="L", help="Write lambda L into the codecs")
    ap.add_argument("--every", type=int, default=None, help="Every K-th of all the photos, not the held-out ones")
    args = ap.parse_args()
    names = args.codecs.split(",")
    lambdas = [float(x) for x in args.lambdas.split(",")]
    if 0.0 not in lambdas:
        lambdas.insert(0, 0.0)
    if args.set is not None and args.set not in lambdas:
        raise SystemExit("--set needs a lambda that is measured (one of --lambdas)")
    image = modalities.get("image")
    crop = tuple(map(int, args.crop.split("x")))
    if args.every is None:
        signals, names_of = held_out_images(args.data, *crop)
        on = f"the 3 held-out photos ({', '.join(names_of)})"
    else:
        signals = photos(args.data, *crop)[:: args.every]
        on = f"{len(signals)} photos of {args.data} (one in {args.every})"
    fits = torch.load(args.cache, weights_only=False) if args.cache is not None and args.cache.is_file() else {}
    pixels = sum(s.values.shape[0] * s.values.shape[1] for s in signals)
    results: dict[tuple[str, float], tuple[float, float, float]] = {}
    print(f"{on} (centre crops up to {args.crop}, {pixels} pixels)", flush=True)
    print("| codec | lambda | bpp | PSNR, normative | PSNR, post-filtered |\n|---|---|---|---|---|")
    for name in names:
        codec = codecs.load(name)
        tag = f"|{args.crop}|" + ("held-out" if args.every is None else f"every{args.every}")
        latents = [torch.from_numpy(z) for z in fitted(codec, signals, args.cache, fits, not args.no_refine, tag)]
        for lam in lambdas:
            nbytes, plain, filtered = 0, [], []
            encoder = Encoder(codec, image, codec.preset().with_setting("round.rd_lambda", lam), device="cpu")
            for i, s in enumerate(signals):
                enc = encoder.pack(latents[i], s)
                nbytes += len(enc.data)
                p = parse(enc.data)
                for out, pf in ((plain, False), (filtered, True)):
                    out.append((image.to_network(Decoder("cpu", postfilter=pf, postfilter_views=args.views).decode(p),
                                                 3), s.values))
            bpp, normative, post = results[(name, lam)] = (8 * nbytes / pixels, psnr(plain), psnr(filtered))
            print(f"| `{name}` | {lam:g} | {bpp:.4f} | {normative:.3f} dB | {post:.3f} dB |", flush=True)
    print("\n| lambda | BD-rate vs lambda 0, normative | post-filtered |\n|---|---|---|")
    bd = {}
    for lam in lambdas[1:]:
        cells = []
        for col in (1, 2):
            base = [(results[(n, 0.0)][0], results[(n, 0.0)][col]) for n in names]
            test = [(results[(n, lam)][0], results[(n, lam)][col]) for n in names]
            cells.append(bd_rate(base, test))
        bd[lam] = cells
        print(f"| {lam:g} | " + " | ".join("–" if c is None else f"{c:+.2f} %" for c in cells) + " |")
    if args.set is not None:
        for name in names:
            codec = codecs.load(name)
            cfg = json.loads((codec.folder / "config.json").read_text())
            preset = EncoderPreset.from_list("default", cfg["presets"]["default"])
            cfg["presets"]["default"] = preset.with_setting("round.rd_lambda", args.set).to_list()
            (codec.folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        print(f"lambda {args.set:g} written into {len(names)} codec configs", flush=True)


if __name__ == "__main__":
    main()
