"""Patch seams against a latent grid: the same Kodak crop decoded by two codecs at about the same rate.

    python benchmarks/experiments/seams.py [--image kodim23] [--codecs image-ctx-6x128-l64-b4,image-grid8-5x64-l4-b4]
                               [--box X,Y,W,H] [--zoom 3] [--out benchmarks/results/kodak-levers/seams.png]

Writes one PNG: the original crop, then each codec's decode of the whole image cropped the same
way, enlarged `--zoom` times (nearest neighbour), each labelled with its rate and PSNR on the whole
image.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from coinpp import codec as codecs
from coinpp import modalities
from coinpp.decoder import decode_bytes
from coinpp.encoder import encode_signal
from coinpp.modalities.image import to_uint8

ap = argparse.ArgumentParser()
ap.add_argument("--image", default="kodim23")
ap.add_argument("--codecs", default="image-ctx-6x128-l64-b4,image-grid8-5x64-l4-b4")
ap.add_argument("--box", default="250,60,160,120", help="x,y,width,height of the crop")
ap.add_argument("--zoom", type=int, default=3)
ap.add_argument("--out", default="benchmarks/results/kodak-levers/seams.png")
args = ap.parse_args()
torch.set_num_threads(2)
image = modalities.get("image")
signal = image.read(Path("../shared/data/kodak") / f"{args.image}.png")
x, y, w, h = (int(v) for v in args.box.split(","))


def crop(values: np.ndarray) -> Image.Image:
    tile = Image.fromarray(to_uint8(values[y : y + h, x : x + w]))
    return tile.resize((w * args.zoom, h * args.zoom), Image.NEAREST)


tiles = [(crop(signal.values), f"{args.image} original")]
for name in args.codecs.split(","):
    enc = encode_signal(signal, image, codecs.load(name), device="cpu")
    decoded, _ = decode_bytes(enc.data, device="cpu")
    bpp = image.rate(len(enc.data), signal.spatial)["bpp"]
    psnr = image.quality(signal, decoded)["psnr"]
    tiles.append((crop(decoded.values), f"{name}: {bpp:.3f} bpp, {psnr:.2f} dB"))
    print(tiles[-1][1], flush=True)
pad = 22
sheet = Image.new("RGB", (sum(t.width for t, _ in tiles) + 8 * (len(tiles) - 1), h * args.zoom + pad), "white")
draw = ImageDraw.Draw(sheet)
left = 0
for tile, label in tiles:
    sheet.paste(tile, (left, pad))
    draw.text((left + 2, 4), label, fill="black")
    left += tile.width + 8
Path(args.out).parent.mkdir(parents=True, exist_ok=True)
sheet.save(args.out)
print(f"wrote {args.out}")
