"""Encoder-side fitting recipes on held-out photos (never Kodak): SGD steps, then Adam or
quantization-aware Adam, at a given gradient budget.

A variant is `sgdK` (K meta-learned SGD steps from zero), optionally followed by `+adamN` (N Adam
evaluations on the unquantized latents at `--latent-lr` for every dimension, each patch keeping its
best: `refine_latents`) or `+qatN` (the same through each codec's quantizer, lr a quarter of its step).
Each variant's latents are coded by every codec of the network (`--bits`), with rate-distortion
rounding at `--lambdas`, and decoded with and without the post-filter; the unquantized PSNR says how
well the fit itself did.

    python benchmarks/experiments/encoder_refinement.py --network image-klt-6x128-l64 --bits 4,5,6 \
        --variants sgd10,sgd10+adam5,sgd4+adam7 --latent-lr 0.0017 [--lambdas 0,0.1] [--views 1]
"""

from __future__ import annotations

import argparse
import re

import numpy as np
from rd_quantization import held_out_images, psnr

from coinpp import codec as codecs
from coinpp import modalities
from coinpp.bitstream import parse
from coinpp.decoder import Decoder
from coinpp.encoder import Encoder
from coinpp.fit import fit_latents, refine_latents
from coinpp.patching import patch_coordinates
from coinpp.synthesis import evaluate_grid


def fitted(variant: str, codec: codecs.Codec, targets: np.ndarray, latent_lr: float):
    m = re.fullmatch(r"sgd(\d+)(?:\+(adam|qat)(\d+))?", variant)
    if m is None:
        raise SystemExit(f"bad variant {variant!r} (sgdK, sgdK+adamN or sgdK+qatN)")
    coords = patch_coordinates(codec.patch)
    z = fit_latents(codec.net, coords, targets, int(m.group(1)), "cpu")
    if m.group(2) == "adam":
        lr = np.full(codec.net.cfg.latent_dim, latent_lr, np.float32)
        z = refine_latents(codec.net, coords, targets, z, int(m.group(3)), lr, None, "cpu")
    elif m.group(2) == "qat":
        q = codec.quantizer
        z = refine_latents(codec.net, coords, targets, z, int(m.group(3)), 0.25 * q.latent_step, q, "cpu")
    return z


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", required=True, help="Codec name without -bN, e.g. image-klt-6x128-l64")
    ap.add_argument("--bits", default="5")
    ap.add_argument("--variants", default="sgd10,sgd10+adam10")
    ap.add_argument("--latent-lr", type=float, default=0.0017)
    ap.add_argument("--lambdas", default="0,0.1")
    ap.add_argument("--views", type=int, default=1, help="Post-filter views")
    ap.add_argument("--data", default="../shared/data/train-images")
    ap.add_argument("--crop", default="512x768", help="Centre crops of at most HxW")
    args = ap.parse_args()
    image = modalities.get("image")
    signals, photos = held_out_images(args.data, *map(int, args.crop.split("x")))
    pixels = sum(s.values.shape[0] * s.values.shape[1] for s in signals)
    cs = [codecs.load(f"{args.network}-b{b}") for b in args.bits.split(",")]
    print(f"held-out photos: {', '.join(photos)} (centre crops up to {args.crop})")
    print("| variant | codec | lambda | bpp | PSNR, normative | post-filtered | unquantized |")
    print("|---|---|---|---|---|---|---|")
    for variant in args.variants.split(","):
        first = Encoder(cs[0], image)
        shared = None if "qat" in variant else [fitted(variant, cs[0], first.patch_targets(s), args.latent_lr)
                                                 for s in signals]
        for c in cs:
            zs = shared or [fitted(variant, c, Encoder(c, image).patch_targets(s), args.latent_lr) for s in signals]
            unq = psnr([(np.clip(evaluate_grid(c.net, z, s.spatial, c.patch, s.spatial), 0, 1), s.values)
                        for z, s in zip(zs, signals, strict=True)])
            for lam in (float(x) for x in args.lambdas.split(",")):
                nbytes, plain, filtered = 0, [], []
                encoder = Encoder(c, image, c.preset().with_setting("round.rd_lambda", lam))
                for z, s in zip(zs, signals, strict=True):
                    enc = encoder.pack(z, s)
                    nbytes += len(enc.data)
                    p = parse(enc.data)
                    plain.append((image.to_network(Decoder("cpu", postfilter=False).decode(p), 3), s.values))
                    filtered.append((image.to_network(Decoder("cpu", postfilter_views=args.views).decode(p), 3),
                                     s.values))
                print(f"| {variant} | `{c.name}` | {lam:g} | {8 * nbytes / pixels:.4f} | {psnr(plain):.3f} dB | "
                      f"{psnr(filtered):.3f} dB | {unq:.3f} dB |", flush=True)


if __name__ == "__main__":
    main()
