"""Encoder steps that see the post-filter: what they buy, on the held-out training photos (never Kodak).

The shipped encoder fits each patch's latent to the patch (SGD, then Adam with a rate term), and the
decoder's post-filter then corrects the whole image. Here, after the codec's own refinement, `--steps`
more Adam steps minimise the error of the *filtered* image (one view, as decoding's first view)
plus the same rate term, the gradient flowing through the filter and the network into every latent.
The control spends the same number of extra Adam steps on the plain per-patch loss.

    python benchmarks/filter_aware.py --codecs image-klt-6x128-l64-b5 --steps 3,6 [--crop 512x768]

Prints a Markdown row per codec and variant: bpp, PSNR post-filtered (the codec's views) and
normative, encode seconds per photo, and the BD-rate of each variant's curve against the codec's
own encoder when more than one codec is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

import numpy as np
import torch

from coinpp import codec as codecs
from coinpp import malloc, modalities
from coinpp.bench import bd_rate
from coinpp.fit import RatePenalty, refine_latents, refine_through_filter
from coinpp.modalities import Signal
from coinpp.patching import patch_coordinates
from coinpp.pipeline import _patch_targets, decode_parsed, fit_signal, pack, parse, refine_signal
from coinpp.train import load_folder


def held_out(data: str, height: int, width: int) -> list[Signal]:
    """Centre crops (multiples of 32) of the photos `coin train` and `coin postfilter` hold out."""
    _, val_s, _ = load_folder(data, "image", 3, 0)
    out = []
    for v in val_s:
        h, w = v.shape[:2]
        ch, cw = min(h, height) // 32 * 32, min(w, width) // 32 * 32
        a, b = (h - ch) // 2, (w - cw) // 2
        out.append(Signal(np.ascontiguousarray(v[a : a + ch, b : b + cw]), {"channels": 3}))
    return out


def psnr(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """PSNR of the 8-bit outputs over all pixels of all pairs, as `coin bench` judges images."""
    se = sum(((np.round(np.clip(a, 0, 1) * 255) - np.round(b * 255)) ** 2).sum() for a, b in pairs)
    return 10 * math.log10(255**2 * sum(a.size for a, _ in pairs) / se)


def prepare(data: str, crop: str) -> tuple[modalities.Modality, list[Signal], int]:
    """The encoder experiments' set-up: the heap tuned as the CLI does, seeded, the held-out crops
    (announced) and their pixel count."""
    malloc.tune()
    torch.manual_seed(0)
    signals = held_out(data, *map(int, crop.split("x")))
    pixels = sum(s.values.shape[0] * s.values.shape[1] for s in signals)
    print(f"{len(signals)} held-out photos, centre crops up to {crop}, {pixels} pixels")
    return modalities.get("image"), signals, pixels


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
        spec = c.refine or {}
        lr = float(spec["latent_lr"])
        penalty = RatePenalty.from_spec(c.quantizer, spec) if spec.get("rate_lambda") else None
        coords = patch_coordinates(c.patch)
        base, t_base = [], 0.0
        for s in signals:
            t = time.perf_counter()
            with torch.no_grad():
                base.append(refine_signal(fit_signal(s, image, c, device="cpu"), s, image, c, device="cpu",
                                          through_postfilter=False))
            t_base += time.perf_counter() - t
        variants: list[tuple[str, list[torch.Tensor], float]] = [("own", base, t_base)]
        prefix = "own" if args.own_steps is None else f"own with {args.own_steps} Adam"
        if args.own_steps is not None:  # the variants start from a shorter (or longer) own refinement
            short = {**spec, "steps": args.own_steps}
            c_short = dataclasses.replace(c, config={**c.config, "refine": short})
            base, t_base = [], 0.0
            for s in signals:
                t = time.perf_counter()
                with torch.no_grad():
                    base.append(refine_signal(fit_signal(s, image, c_short, device="cpu"), s, image, c_short,
                                              device="cpu", through_postfilter=False))
                t_base += time.perf_counter() - t
            variants.append((f"own with {args.own_steps} Adam", base, t_base))
        for item in args.variants.split(","):
            kind, rest = item.split(":")
            n, scale, views = rest.split("@") + ["1"] * (3 - len(rest.split("@")))
            n, lr_n, views = int(n), lr * float(scale), int(views)
            t = time.perf_counter()
            if kind == "plain":
                with torch.no_grad():
                    zs = [refine_latents(c.net, coords, _patch_targets(s, image, c), z, n + 1,
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
                enc = pack(z.detach(), s, image, c)
                nbytes += len(enc.data)
                p = parse(enc.data)
                with torch.no_grad():
                    plain.append((image.to_network(decode_parsed(p, device="cpu", postfilter=False), 3), s.values))
                    filtered.append((image.to_network(decode_parsed(p, device="cpu"), 3), s.values))
                    one.append((image.to_network(decode_parsed(p, device="cpu", postfilter_views=1), 3), s.values))
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
