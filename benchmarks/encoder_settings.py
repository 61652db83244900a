"""Encoder settings against the shipped ones, on the held-out training photos (never Kodak).

Each variant changes settings of the codecs' default encoder preset (encoder-only: the files decode
the same way) and runs the whole encoder with them: the SGD fit, the per-patch Adam, the steps
through the post-filter, rate-distortion rounding. Every file is decoded with the post-filter.

    python benchmarks/encoder_settings.py --codecs image-klt-6x128-l64-b5 \
        --variant half4:sgd.half=4 --variant views2:filter.views=2

A variant is NAME:KEY=VALUE[,KEY=VALUE...]: KEY a preset setting KIND.FIELD (sgd.steps, sgd.half,
adam.steps, adam.lr, filter.steps, filter.views, round.rd_lambda; spec.EncoderPreset.with_setting),
VALUE a JSON value; the variant NAME "fast" alone runs the codecs' fast preset. Prints a Markdown
row per codec and variant (bpp, PSNR, encode seconds per photo, all photos and codecs encoded in
turn so that the machine's drift falls on every variant alike), and with more than one codec the
BD-rate of each variant's curve against the shipped one.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from coinpp import codec as codecs
from coinpp.bitstream import parse
from coinpp.decoder import Decoder
from coinpp.encoder import Encoder
from coinpp.evaluation.heldout import prepare, psnr
from coinpp.evaluation.rd import bd_rate
from coinpp.presets import EncoderPreset


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, body = text.partition(":")
    if name == "fast" and not body:
        return name, {}
    if not name or not body:
        raise SystemExit(f"--variant {text!r}: expected NAME:KEY=VALUE[,KEY=VALUE...]")
    overrides = {}
    for item in body.split(","):
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    return name, overrides


def variant_preset(c: codecs.Codec, label: str, overrides: dict) -> EncoderPreset:
    preset = c.preset("fast" if label == "fast" else "default")
    for key, value in overrides.items():
        preset = preset.with_setting(key, value)
    return preset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codecs", required=True)
    ap.add_argument("--data", default="../shared/data/train-images")
    ap.add_argument("--crop", default="512x768")
    ap.add_argument("--variant", action="append", default=[], help="NAME:KEY=VALUE[,KEY=VALUE...] (repeatable)")
    args = ap.parse_args()
    image, signals, pixels = prepare(args.data, args.crop)
    variants = [("shipped", {})] + [parse_variant(v) for v in args.variant]
    names = args.codecs.split(",")
    print("| codec | encoder | bpp | PSNR post-filtered | encode s/photo |\n|---|---|---|---|---|", flush=True)
    results: dict[tuple[str, str], tuple[float, float]] = {}
    for name in names:
        base = codecs.load(name)
        runs = {label: (Encoder(base, image, variant_preset(base, label, o), device="cpu"), 0, [], 0.0)
                for label, o in variants}
        for s in signals:
            for label, (e, nbytes, pairs, secs) in list(runs.items()):
                t = time.perf_counter()
                data = e.encode(s).data
                secs += time.perf_counter() - t
                with torch.no_grad():
                    pairs.append((image.to_network(Decoder("cpu").decode(parse(data)), 3), s.values))
                runs[label] = (e, nbytes + len(data), pairs, secs)
        for label, (_, nbytes, pairs, secs) in runs.items():
            r = results[(name, label)] = (8 * nbytes / pixels, psnr(pairs))
            print(f"| `{name}` | {label} | {r[0]:.4f} | {r[1]:.3f} dB | {secs / len(signals):.1f} |", flush=True)
    if len(names) > 1:
        print("\n| encoder | BD-rate vs shipped |\n|---|---|")
        for label, _ in variants[1:]:
            gain = bd_rate([results[(n, "shipped")] for n in names], [results[(n, label)] for n in names])
            print(f"| {label} | {'–' if gain is None else f'{gain:+.2f} %'} |", flush=True)


if __name__ == "__main__":
    main()
