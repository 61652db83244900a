"""A rate term in the encoder's Adam refinement: what each weight buys, on photos (never Kodak).

Fits every photo of `--data` (centre crops of at most `--crop`; `--every K` keeps every K-th photo)
with the network's SGD steps once (kept in `--cache`), then refines the latents with the codecs'
Adam settings and the loss MSE + lambda * bits, the bits a Laplace stand-in (fit.RatePenalty) whose
centres and scales are those of the photos' own SGD-fitted latents (training photos, like the codecs'
tables), the same for every bit depth, so all the codecs listed share one refinement per lambda.
Each codec then codes the refined latents for real (its own rate-distortion rounding) and decodes
them through its post-filter (`--views`).

    python benchmarks/experiments/refine_rate.py --codecs image-klt-6x128-l128-b5,image-klt-6x128-l128-b6 \
        --rate-lambdas 0,1e-6,2e-6,4e-6 [--cache runs/refine-rate.pt] [--every 2] [--views 1] [--set L]
        [--results runs/l128.json] [--family-with runs/l64.json,...]

Prints a Markdown row per codec and lambda (bpp, PSNR normative and post-filtered), then the
BD-rate of the codecs as one curve against lambda 0, then the best lambda per codec: every
assignment of the measured lambdas to the codecs (and to those of earlier runs' `--results`
files named in `--family-with`, other networks of the same family), the curve they make against
all at lambda 0 (in theory the best weight is the slope of the distortion-rate curve where a
codec sits, which differs ten-fold across a family; measured for l64, one weight did as well).
`--set L` writes lambda L, with the centres and scales, into every listed codec's refine entry
(encoder-only, outside the codec hash); `--set L1,L2,...` one per codec, in `--codecs` order
(codecs with different weights no longer share one refinement).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from context_models import fitted, photos  # the same photos, crops and fit cache

from coinpp import codec as codecs
from coinpp import modalities
from coinpp.bitstream import parse
from coinpp.decoder import Decoder
from coinpp.encoder import Encoder
from coinpp.evaluation.rd import bd_rate
from coinpp.fit import RatePenalty, refine_latents
from coinpp.patching import patch_coordinates
from coinpp.presets import AdamPhase, EncoderPreset
from coinpp.spec import RateModel


def psnr(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    se = sum(((a.astype(np.float64) - b) ** 2).sum() for a, b in pairs)
    return -10 * math.log10(se / sum(a.size for a, _ in pairs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codecs", required=True, help="Codecs of one network with the same refinement")
    ap.add_argument("--data", default="../shared/data/train-images")
    ap.add_argument("--crop", default="256x256")
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--rate-lambdas", default="0,1e-6,2e-6,4e-6")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--views", type=int, default=1)
    ap.add_argument("--set", default=None, metavar="L[,L...]",
                    help="Write rate lambda L into the codecs (one for all, or one per codec)")
    ap.add_argument("--steps", type=int, default=None, help="Adam evaluations instead of the codecs' own")
    ap.add_argument("--results", type=Path, default=None, help="Save the measured points (JSON)")
    ap.add_argument("--family-with", default="", help="Earlier --results files to choose per-codec weights with")
    args = ap.parse_args()
    names = args.codecs.split(",")
    chosen = [codecs.load(n) for n in names]
    first = chosen[0]
    adam = first.preset().adam
    if adam is None or adam.lr_unit != "latent" or adam.quantized:
        raise SystemExit(f"{first.name} has no Adam phase with one latent rate")
    if args.steps is not None:
        adam = dataclasses.replace(adam, steps=args.steps)
    image = modalities.get("image")
    encoder = Encoder(first, image, device="cpu")
    signals = photos(args.data, *map(int, args.crop.split("x")))[:: args.every]
    pixels = sum(s.values.shape[0] * s.values.shape[1] for s in signals)
    fits = torch.load(args.cache, weights_only=False) if args.cache is not None and args.cache.is_file() else {}
    sgd = [torch.from_numpy(z) for z in fitted(first, signals, args.cache, fits, refine=False,
                                               tag=f"|{args.crop}|every{args.every}")]
    print(f"{len(signals)} photos, centre crops up to {args.crop}, {pixels} pixels; refinement "
          f"{adam.steps} Adam at {adam.lr}", flush=True)
    print("| codec | rate lambda | bpp | PSNR, normative | PSNR, post-filtered | refine s |\n|---|---|---|---|---|---|")
    lambdas = [float(x) for x in args.rate_lambdas.split(",")]
    coords = patch_coordinates(first.patch)
    lr = np.full(first.net.cfg.latent_dim, adam.lr, dtype=np.float32)
    results = {}
    scales = RatePenalty.from_latents(first.quantizer, torch.cat(sgd), 1.0)
    for lam in lambdas:
        penalty = dataclasses.replace(scales, lam=lam) if lam else None
        t = time.perf_counter()
        refined = [refine_latents(first.net, coords, encoder.patch_targets(s), z, adam.steps, lr,
                                  None, "cpu", penalty=penalty)
                   for z, s in zip(sgd, signals, strict=True)]
        t_refine = time.perf_counter() - t
        for c in chosen:
            nbytes, plain, filtered = 0, [], []
            packer = Encoder(c, image, device="cpu")
            for z, s in zip(refined, signals, strict=True):
                enc = packer.pack(z, s)
                nbytes += len(enc.data)
                p = parse(enc.data)
                plain.append((image.to_network(Decoder("cpu", postfilter=False).decode(p), 3), s.values))
                filtered.append((image.to_network(Decoder("cpu", postfilter_views=args.views).decode(p), 3),
                                 s.values))
            r = results[(c.name, lam)] = (8 * nbytes / pixels, psnr(plain), psnr(filtered))
            print(f"| `{c.name}` | {lam:g} | {r[0]:.4f} | {r[1]:.3f} dB | {r[2]:.3f} dB | {t_refine:.0f} |", flush=True)
    print("\n| rate lambda | BD-rate vs 0, normative | post-filtered |\n|---|---|---|")
    bd = {}
    for lam in lambdas[1:]:
        cells = []
        for col in (1, 2):
            base = [(results[(n, lambdas[0])][0], results[(n, lambdas[0])][col]) for n in names]
            test = [(results[(n, lam)][0], results[(n, lam)][col]) for n in names]
            cells.append(bd_rate(base, test) if len(names) > 1 else None)
        print(f"| {lam:g} | " + " | ".join("–" if c is None else f"{c:+.2f} %" for c in cells) + " |", flush=True)
        bd[lam] = cells
    points = {n: {f"{lam:g}": list(results[(n, lam)]) for lam in lambdas} for n in names}
    if args.results is not None:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(points, indent=1) + "\n")
    for f in filter(None, args.family_with.split(",")):
        points.update(json.loads(Path(f).read_text()))
    per_codec = best_per_codec(points)
    if per_codec is not None:
        weights, gain = per_codec
        print("\nbest weight per codec, post-filtered, against every codec at lambda 0: "
              + ", ".join(f"`{n}` {w}" for n, w in weights.items()) + f": {gain:+.2f} % BD-rate", flush=True)
    if args.set is not None:
        chosen_lams = [float(x) for x in args.set.split(",")]
        chosen_lams = chosen_lams * len(chosen) if len(chosen_lams) == 1 else chosen_lams
        if len(chosen_lams) != len(chosen) or not all(lam in lambdas[1:] for lam in chosen_lams):
            raise SystemExit("--set needs one measured, nonzero lambda, or one per codec")
        for c, lam_c in zip(chosen, chosen_lams, strict=True):
            cfg = json.loads((c.folder / "config.json").read_text())
            # the Adam phase measured (the first codec's) with the rate term, also for a codec that had none
            preset = EncoderPreset.from_list("default", cfg["presets"]["default"])
            cfg["presets"]["default"] = preset.with_phase(AdamPhase(adam.steps, adam.lr, rate_lambda=lam_c)).to_list()
            cfg["rate_model"] = RateModel(scales.centre, scales.scale).to_dict()
            (c.folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        print(f"rate lambda {args.set} written into {len(chosen)} codec configs", flush=True)


def best_per_codec(points: dict[str, dict[str, list[float]]]) -> tuple[dict[str, str], float] | None:
    """The assignment of one measured weight to each codec whose points, as one curve, have the
    lowest post-filtered BD-rate against every codec at weight 0; None with fewer than two codecs."""
    if len(points) < 2 or not all("0" in p for p in points.values()):
        return None
    names = sorted(points, key=lambda n: points[n]["0"][0])
    base = [tuple(points[n]["0"][::2]) for n in names]
    best = None
    for combo in itertools.product(*(sorted(points[n]) for n in names)):
        gain = bd_rate(base, [tuple(points[n][w][::2]) for n, w in zip(names, combo, strict=True)])
        if gain is not None and (best is None or gain < best[1]):
            best = (dict(zip(names, combo, strict=True)), gain)
    return best


if __name__ == "__main__":
    main()
