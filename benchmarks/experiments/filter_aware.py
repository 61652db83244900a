"""Encoder steps that see the post-filter: what they buy, on the held-out training photos (never Kodak).

The shipped encoder fits each patch's latent to the patch (SGD, then Adam with a rate term), and the
decoder's post-filter then corrects the whole image. Here, after the codec's own refinement, `--steps`
more Adam steps minimise the error of the *filtered* image (one view, as decoding's first view)
plus the same rate term, the gradient flowing through the filter and the network into every latent.
The control spends the same number of extra Adam steps on the plain per-patch loss.

    python benchmarks/experiments/filter_aware.py --codecs image-klt-6x128-l64-b5 --steps 3,6 [--crop 512x768]

Prints a Markdown row per codec and variant: bpp, PSNR post-filtered (the codec's views) and
normative, encode seconds per photo, and the BD-rate of each variant's curve against the codec's
own encoder when more than one codec is given.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from coinpp import codec as codecs
from coinpp.bitstream import parse
from coinpp.decoder import Decoder
from coinpp.encoder import Encoder
from coinpp.evaluation.heldout import prepare, psnr
from coinpp.evaluation.rd import bd_rate
from coinpp.fit import refine_latents, refine_through_filter
from coinpp.patching import patch_coordinates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codecs", required=True)
    ap.add_argument("--data", default="../shared/data/train-images")
    ap.add_argument("--crop", default="512x768")
    ap.add_argument("--own-steps", type=int, default=None, help="Adam evaluations of the codecs' own refinement "
                    "instead of their configured ones (the baseline row keeps them)")
    ap.add_argument("--variants", default="plain:3@1,aware:3@0.3",
                    help="Extra steps after the codec's own encoder, each KIND:STEPS@LR_SCALE[@VIEWS]: KIND plain "
                         "(the per-patch loss) or aware (the filtered image's); LR_SCALE of the codec's latent_lr; "
                         "VIEWS the filter views the loss averages")
    args = ap.parse_args()
    image, signals, pixels = prepare(args.data, args.crop)
    names = args.codecs.split(",")
    results: dict[tuple[str, str], tuple[float, ...]] = {}
    print("| codec | encoder | bpp | PSNR post-filtered | normative | one view | encode s/photo |\n"
          "|---|---|---|---|---|---|---|", flush=True)
    for name in names:
        c = codecs.load(name)
        own = Encoder(c, image, "fast", device="cpu")  # the codec's encoder up to its steps through the filter
        lr = own.preset.adam.lr
        penalty = own.rate_penalty(own.preset.adam.rate_lambda)
        coords = patch_coordinates(c.patch)
        base, t_base = [], 0.0
        for s in signals:
            t = time.perf_counter()
            with torch.no_grad():
                base.append(own.refine(own.fit([s])[0], s))
            t_base += time.perf_counter() - t
        variants: list[tuple[str, list[torch.Tensor], float]] = [("own", base, t_base)]
        prefix = "own" if args.own_steps is None else f"own with {args.own_steps} Adam"
        if args.own_steps is not None:  # the variants start from a shorter (or longer) own refinement
            short = Encoder(c, image, own.preset.with_setting("adam.steps", args.own_steps), device="cpu")
            base, t_base = [], 0.0
            for s in signals:
                t = time.perf_counter()
                with torch.no_grad():
                    base.append(short.refine(short.fit([s])[0], s))
                t_base += time.perf_counter() - t
            variants.append((f"own with {args.own_steps} Adam", base, t_base))
        for item in args.variants.split(","):
            kind, rest = item.split(":")
            n, scale, views = rest.split("@") + ["1"] * (3 - len(rest.split("@")))
            n, lr_n, views = int(n), lr * float(scale), int(views)
            t = time.perf_counter()
            if kind == "plain":
                with torch.no_grad():
                    zs = [refine_latents(c.net, coords, own.patch_targets(s), z, n + 1,
                                         np.full(c.net.cfg.latent_dim, lr_n, np.float32), None, "cpu", penalty=penalty)
                          for z, s in zip(base, signals, strict=True)]
            else:
                zs = [refine_through_filter(c.net, c.postfilter, c.patch, s.values, z, n + 1, lr_n, penalty, views,
                                            "cpu") for z, s in zip(base, signals, strict=True)]
            label = f"{prefix} + {n} {kind} Adam at {scale}x lr" + (f", {views} views" if kind != "plain" else "")
            variants.append((label, zs, t_base + time.perf_counter() - t))
        for label, zs, secs in variants:
            nbytes, plain, filtered, one = 0, [], [], []
            for z, s in zip(zs, signals, strict=True):
                enc = own.pack(z.detach(), s)
                nbytes += len(enc.data)
                p = parse(enc.data)
                with torch.no_grad():
                    plain.append((image.to_network(Decoder("cpu", postfilter=False).decode(p), 3), s.values))
                    filtered.append((image.to_network(Decoder("cpu").decode(p), 3), s.values))
                    one.append((image.to_network(Decoder("cpu", postfilter_views=1).decode(p), 3), s.values))
            r = results[(name, label)] = (8 * nbytes / pixels, psnr(filtered), psnr(plain), psnr(one))
            print(f"| `{name}` | {label} | {r[0]:.4f} | {r[1]:.3f} dB | {r[2]:.3f} dB | {r[3]:.3f} dB "
                  f"| {secs / len(signals):.1f} |", flush=True)
    if len(names) > 1:
        labels = sorted({lab for _, lab in results} - {"own"})
        print("\n| encoder | BD-rate vs own, post-filtered |\n|---|---|")
        for lab in labels:
            a = [(results[(n, "own")][0], results[(n, "own")][1]) for n in names]
            b = [(results[(n, lab)][0], results[(n, lab)][1]) for n in names]
            gain = bd_rate(a, b)
            print(f"| {lab} | {'–' if gain is None else f'{gain:+.2f} %'} |", flush=True)


if __name__ == "__main__":
    main()
