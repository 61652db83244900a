"""Encoder settings against the shipped ones, on the held-out training photos (never Kodak).

Each variant overrides entries of the codecs' configs (encoder-only entries: the files decode the
same way) and runs the whole shipped encoder with them: the SGD fit, the per-patch Adam, the steps
through the post-filter, rate-distortion rounding. Every file is decoded with the post-filter.

    python benchmarks/encoder_settings.py --codecs image-klt-6x128-l64-b5 \
        --variant half4:encode_half_steps=4 --variant views2:refine.filter_views=2

A variant is NAME:KEY=VALUE[,KEY=VALUE...]: KEY a config entry, dotted for one inside another
(refine.steps, rdo.lambda), VALUE a JSON value. Prints a Markdown row per codec and variant (bpp,
PSNR, encode seconds per photo, all photos and codecs encoded in turn so that the machine's drift
falls on every variant alike), and with more than one codec the BD-rate of each variant's curve against the shipped one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch
from filter_aware import prepare, psnr

from coinpp import codec as codecs
from coinpp.bench import bd_rate
from coinpp.pipeline import decode_parsed, encode_signal, parse


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, body = text.partition(":")
    if not name or not body:
        raise SystemExit(f"--variant {text!r}: expected NAME:KEY=VALUE[,KEY=VALUE...]")
    overrides = {}
    for item in body.split(","):
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    return name, overrides


def with_overrides(c: codecs.Codec, overrides: dict) -> codecs.Codec:
    config = json.loads(json.dumps(c.config))
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        entry = config
        for parent in parents:
            entry = entry.setdefault(parent, {})
        entry[leaf] = value
    return dataclasses.replace(c, config=config)


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
        runs = {label: (with_overrides(base, o), 0, [], 0.0) for label, o in variants}
        for s in signals:
            for label, (c, nbytes, pairs, secs) in list(runs.items()):
                t = time.perf_counter()
                data = encode_signal(s, image, c, device="cpu").data
                secs += time.perf_counter() - t
                with torch.no_grad():
                    pairs.append((image.to_network(decode_parsed(parse(data), device="cpu"), 3), s.values))
                runs[label] = (c, nbytes + len(data), pairs, secs)
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
