"""Where an encode's time goes: seconds, arithmetic and achieved FLOP/s of each phase of a codec's
encoder on one image, against this machine's measured matmul rate (float32 and bfloat16).

    python benchmarks/encode_profile.py [IMAGE] [--codec image-klt-6x128-l64-b5] [--preset default]

FLOPs count the matrix products of the SIREN (forward and the hand-written backward) and the post-
filter's convolutions, per pixel the network or the filter sees; sines, cosines and element-wise work
are not counted, so a phase's share of the peak also says how much time goes to them. Prints a
Markdown table (the README of benchmarks/results/encode-profile/ records one run).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from coinpp import codec as codecs
from coinpp import malloc, modalities
from coinpp.encoder import Encoder
from coinpp.modalities import Signal


def matmul_rate(m: int, k: int, n: int, dtype: torch.dtype, seconds: float = 1.5) -> float:
    """GFLOP/s of an (m, k) @ (k, n) product, best of repeated runs for about `seconds`."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    a @ b  # warm up
    best, t_end = math.inf, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        best = min(best, (time.perf_counter() - t0) / 10)
    return 2 * m * k * n / best / 1e9


def siren_flops(codec: codecs.Codec) -> tuple[float, float]:
    """(forward, forward + backward) matmul FLOPs per sample of the codec's SIREN."""
    cfg = codec.net.cfg
    w, layers = cfg.width, cfg.depth
    forward = 2 * (cfg.input_features * w + (layers - 1) * w * w + w * cfg.out_dim)
    backward = 2 * (cfg.out_dim * w + (layers - 1) * w * w)  # to every shift, not to the first layer's input
    return forward, forward + backward


def filter_flops(codec: codecs.Codec) -> float:
    """Forward convolution FLOPs per pixel of the codec's post-filter (its input gradient costs as much)."""
    f = codec.postfilter.cfg
    c = f.channels
    return 2 * 9 * ((3 + 4) * c + (f.layers - 2) * c * c + c * 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image", nargs="?", default="../shared/data/kodak/kodim01.png")
    ap.add_argument("--codec", default="image-klt-6x128-l64-b5")
    ap.add_argument("--preset", default="default")
    args = ap.parse_args()
    malloc.tune()  # as the CLI does
    torch.set_num_threads(2)
    image = modalities.get("image")
    signal: Signal = image.read(args.image)
    codec = codecs.load(args.codec)
    e = Encoder(codec, image, args.preset, device="cpu")
    h, w = signal.spatial
    ph, pw = codec.patch
    padded = math.ceil(h / ph) * ph * math.ceil(w / pw) * pw  # the samples the network sees
    fwd, both = siren_flops(codec)
    p = e.preset
    times = {}
    t0 = time.perf_counter()
    z = e.fit([signal])[0]
    times["fit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    z = e.refine(z, signal)
    times["adam"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    z = e.through_filter(z, signal)
    times["filter"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    enc = e.pack(z, signal)
    times["round and code"] = time.perf_counter() - t0
    flops = {"fit": padded * both * (p.half_steps / 2 + p.sgd_steps - p.half_steps),
             "adam": padded * (both * (p.adam.steps - 1) + fwd) if p.adam else 0.0,
             "filter": 0.0, "round and code": 0.0}
    if p.filter is not None and codec.postfilter is not None:
        views = p.filter.views or codec.postfilter.views
        per_step = padded * both + h * w * 2 * filter_flops(codec) * views
        flops["filter"] = per_step * (p.filter.steps - 1) + padded * fwd + h * w * filter_flops(codec) * views
    narrow32 = matmul_rate(4096, 128, 128, torch.float32)
    narrow16 = matmul_rate(4096, 128, 128, torch.bfloat16)
    big32 = matmul_rate(2048, 2048, 2048, torch.float32)
    big16 = matmul_rate(2048, 2048, 2048, torch.bfloat16)
    total = sum(times.values())
    print(f"{args.codec}, preset {args.preset}, {args.image.split('/')[-1]} ({w}x{h}): {len(enc.data):,} bytes, "
          f"encode {total:.1f} s ({total / (h * w / 1e6):.1f} s per megapixel), {torch.get_num_threads()} threads")
    print(f"matmul rate here: 4096x128 @ 128x128 {narrow32:.0f} GFLOP/s float32, {narrow16:.0f} bfloat16; "
          f"2048^3 {big32:.0f} float32, {big16:.0f} bfloat16\n")
    print("| phase | seconds | share | GFLOP | GFLOP/s | of the SIREN-shaped float32 peak |\n|---|---|---|---|---|---|")
    for phase, secs in times.items():
        g = flops[phase] / 1e9
        rate = g / secs if secs else 0.0
        print(f"| {phase} | {secs:.2f} | {secs / total:.0%} | {g:.1f} | {rate:.1f} | "
              f"{rate / narrow32:.0%} |" if g else f"| {phase} | {secs:.2f} | {secs / total:.0%} | – | – | – |")


if __name__ == "__main__":
    main()
