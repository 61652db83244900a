"""What each image lever buys on Kodak, one lever at a time against the same baseline codec.

The baseline is the faithful COIN++ codec `image-6x128-l64` (CPU-trained, 10 SGD steps, static
per-dimension tables). Every row changes one thing and is measured at the baseline's four bit
depths (b3-b6): real coded bytes, PSNR of the real decode, encode time. Rows:

    baseline        image-6x128-l64, 10 meta-SGD steps, per-dimension static tables
    sgd-20          20 SGD steps instead of 10
    adam-10         10 SGD steps + 10 Adam steps (lr 0.5 quantizer steps)
    qat-10          10 SGD steps + 10 Adam steps through the quantizer (straight-through)
    shared-table    one table for every dimension (COIN++'s single histogram)
    context         the neighbour-context adaptive coder, prior = the static table (untrained)
    gpu-training    the network of the new default (H200, 11 min), 10 SGD steps, static tables
    all-with-refinement  that network + 8 Adam steps through the quantizer + the trained context
    all             the new default family's l64 codecs as shipped: GPU network, trained context
    grid16-l16      lever 4: a 5x64 network fed by a grid of 16-dim latents, one per 16x16 cell,
                    interpolated between cell centres (the same 1/16 latent per pixel as the
                    baseline's 64 per 32x32 patch), CPU-trained, 10 SGD steps, static tables
    grid16-l16-context  the same codecs as shipped, with their trained neighbour context
    grid8-l4-context    a 4-dim latent per 8x8 cell (again 1/16 latent per pixel), 20 SGD steps, context
    grid8-l8-context    an 8-dim latent per 8x8 cell (1/8 latent per pixel), 20 SGD steps, context
    allocate        as `all`, with quantizer steps for equal output distortion per dimension
                    (same geometric mean step, so about the same rate; codecs image-ctxa-6x128-l64)
    grid16-l16-allocate  as `grid16-l16-context`, with those steps (image-grid16a-5x64-l16)
    decorrelate     as `all`, coding the principal components of the latents (learned from the
                    training latents) with one step instead of the latent dimensions (image-klt-6x128-l64)
    grid16-l16-decorrelate  as `grid16-l16-context`, with that transform (image-klt-grid16-5x64-l16)
    postfilter      as `decorrelate`, decoded through the codecs' post-filter (a small CNN that restores
                    the network's output on the image's own grid; every other row is the normative
                    decode, without it)

BD-rates are against JPEG and JPEG2000 on the same files (their rows in benchmarks/results/kodak).
Writes benchmarks/results/kodak-levers/levers.json and levers.md.

    python benchmarks/experiments/image_levers.py [--files N] [--rows a,b,...]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file

from coinpp import codec as codecs
from coinpp import entropy, modalities
from coinpp.decoder import decode_bytes
from coinpp.encoder import Encoder
from coinpp.evaluation.rd import bd_rate, interpolate_psnr
from coinpp.fit import fit_latents, refine_latents
from coinpp.patching import patch_coordinates, split

BASELINE = "image-6x128-l64"
NEW = "image-ctx-6x128-l64"  # the new default family's l64 network
# Rows measured with the codecs' own encoder, as shipped: the family each uses.
AS_SHIPPED = {"grid16-l16": "image-grid16-5x64-l16", "grid16-l16-context": "image-grid16-5x64-l16",
              "grid8-l4-context": "image-grid8-5x64-l4", "grid8-l8-context": "image-grid8-5x64-l8",
              "allocate": "image-ctxa-6x128-l64", "grid16-l16-allocate": "image-grid16a-5x64-l16",
              "decorrelate": "image-klt-6x128-l64", "grid16-l16-decorrelate": "image-klt-grid16-5x64-l16",
              "postfilter": "image-klt-6x128-l64"}
POSTFILTER = {"postfilter"}  # rows decoded through the codec's post-filter
STATIC_TABLES = {"grid16-l16"}  # measured with the codec's static tables instead of its context
KODAK = Path("../shared/data/kodak")
OUT = Path("benchmarks/results/kodak-levers")
BITS = (3, 4, 5, 6)
ROWS = ("baseline", "sgd-20", "adam-10", "qat-10", "shared-table", "context", "gpu-training", "all-with-refinement",
        "all", "allocate", "grid16-l16", "grid16-l16-context", "grid16-l16-allocate", "grid8-l4-context",
        "grid8-l8-context", "decorrelate", "grid16-l16-decorrelate", "postfilter")

ap = argparse.ArgumentParser()
ap.add_argument("--files", type=int, default=8, help="every (24/N)-th Kodak image (24: all)")
ap.add_argument("--rows", default=",".join(ROWS))
args = ap.parse_args()
files = sorted(KODAK.glob("kodim*.png"))[:: max(1, 24 // args.files)][: args.files]
rows_wanted = args.rows.split(",")
image = modalities.get("image")
OUT.mkdir(parents=True, exist_ok=True)
cache = OUT / "rows.csv"  # one line per (row, bits, file): an interrupted run resumes
done = {(r["row"], r["bits"], r["file"]) for r in csv.DictReader(cache.open())} if cache.exists() else set()


def family(prefix: str) -> dict[int, codecs.Codec]:
    return {b: codecs.load(f"{prefix}-b{b}") for b in BITS if f"{prefix}-b{b}" in codecs.available()}


def static_table(c: codecs.Codec) -> np.ndarray:
    """The codec's static per-dimension table (kept in its tables beside a context prior)."""
    return load_file(str(c.folder / "tables.safetensors"))["table"].astype(np.int32)


def shared_table(c: codecs.Codec) -> np.ndarray:
    """The per-dimension tables pooled into one: every row sums to 2^16 from the same number of
    training symbols, so their mean is the histogram of all training symbols together."""
    pooled = static_table(c).astype(np.int64).sum(axis=0, keepdims=True)
    return entropy.adaptive_rows(pooled).astype(np.int32)


def decoded_row(row: str, bits: int, path: Path, signal: modalities.Signal, data: bytes, nbytes: int,
                t_enc: float) -> dict:
    """Decode the real file and make the row: rate from `nbytes`, PSNR of the decode, times."""
    t1 = time.perf_counter()
    decoded, _ = decode_bytes(data, device="cpu", postfilter=row in POSTFILTER)
    t_dec = time.perf_counter() - t1
    return {"row": row, "bits": bits, "file": path.name, "bytes": nbytes,
            "bpp": 8 * nbytes / (signal.spatial[0] * signal.spatial[1]),
            "psnr": image.quality(signal, decoded)["psnr"], "encode_s": t_enc, "decode_s": t_dec}


def measure_as_shipped(row: str, path: Path) -> list[dict]:
    """Rows whose codecs encode as shipped (a latent grid fits one grid over the whole image)."""
    signal = image.read(path)
    net_family = family(AS_SHIPPED[row])
    first = next(iter(net_family.values()))
    t0 = time.perf_counter()
    latents = Encoder(first, image, device="cpu").fit([signal])[0]
    t_fit = time.perf_counter() - t0
    out = []
    for bits, c in net_family.items():
        t1 = time.perf_counter()
        enc = Encoder(c, image, device="cpu").pack(latents, signal)
        t_enc = t_fit + time.perf_counter() - t1
        nbytes = len(enc.data)
        if row in STATIC_TABLES:  # static per-dimension tables instead of the context
            grid = (1, *split(signal.values[..., :1], c.patch)[1].counts)
            nbytes += len(entropy.encode(enc.symbols, static_table(c))) - len(c.entropy.encode(enc.symbols, grid))
        out.append(decoded_row(row, bits, path, signal, enc.data, nbytes, t_enc))
    return out


def measure(row: str, path: Path) -> list[dict]:
    if row in AS_SHIPPED:
        return measure_as_shipped(row, path)
    signal = image.read(path)
    net_family = family(NEW if row in ("gpu-training", "all", "all-with-refinement") else BASELINE)
    first = next(iter(net_family.values()))
    targets = split(image.to_network(signal, 3), first.patch)[0]
    coords = patch_coordinates(first.patch)
    t0 = time.perf_counter()
    latents = fit_latents(first.net, coords, targets, 20 if row == "sgd-20" else 10, "cpu")
    t_fit = time.perf_counter() - t0
    if row == "adam-10":
        latents = refine_latents(first.net, coords, targets, latents, 11, 0.5 * first.quantizer.step, None, "cpu")
        t_fit = time.perf_counter() - t0
    out = []
    for bits, c in net_family.items():
        t1 = time.perf_counter()
        z = latents
        if row == "qat-10":
            z = refine_latents(c.net, coords, targets, latents, 11, 0.5 * c.quantizer.step, c.quantizer, "cpu")
        elif row == "all-with-refinement":
            z = refine_latents(c.net, coords, targets, latents, 8, 0.25 * c.quantizer.step, c.quantizer, "cpu")
        encoder = Encoder(c, image, device="cpu")
        if row == "all":
            z = encoder.refine(latents, signal)  # as shipped (no refinement)
        enc = encoder.pack(z, signal)
        t_enc = t_fit + time.perf_counter() - t1
        grid = (1, *split(signal.values[..., :1], c.patch)[1].counts)
        nbytes = len(enc.data)
        table = static_table(c)
        static = len(entropy.encode(enc.symbols, table))
        if isinstance(c.entropy, entropy.NeighbourContext) and row == "gpu-training":  # their own static tables
            nbytes += static - len(c.entropy.encode(enc.symbols, grid))
        if row == "shared-table":
            nbytes += len(entropy.encode(enc.symbols, np.repeat(shared_table(c), table.shape[0], 0))) - static
        elif row == "context":
            model = entropy.NeighbourContext(np.repeat(table[:, None, :], 8, axis=1), 16)
            nbytes += len(entropy.encode_context(enc.symbols, grid, model)) - static
        out.append(decoded_row(row, bits, path, signal, enc.data, nbytes, t_enc))
    return out


torch.set_num_threads(2)
for row in rows_wanted:
    for path in files:
        if all((row, str(b), path.name) in done for b in BITS if b in family(BASELINE)):
            continue
        new = measure(row, path)
        first = not cache.exists()
        with cache.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(new[0]))
            if first:
                w.writeheader()
            w.writerows(new)
        print(row, path.name, " ".join(f"b{r['bits']} {r['bpp']:.3f}/{r['psnr']:.2f}" for r in new), flush=True)

# Summary: mean over the files per (row, bits); anchors from the main Kodak run on the same files.
names = {p.name for p in files}
measured = [r for r in csv.DictReader(cache.open()) if r["file"] in names]
anchors = {}
for r in csv.DictReader(Path("benchmarks/results/kodak/rows.csv").open()):
    if r["codec"] in ("jpeg", "jpeg2000") and r["file"] in names:
        anchors.setdefault(r["codec"], {}).setdefault(r["setting"], []).append((float(r["bpp"]), float(r["psnr"])))
anchor_curves = {k: sorted(tuple(np.mean(v, axis=0)) for v in s.values() if len(v) == len(names))
                 for k, s in anchors.items()}
table = []
for row in ROWS:
    pts = []
    for b in BITS:
        rs = [r for r in measured if r["row"] == row and int(r["bits"]) == b]
        if len(rs) == len(names):
            pts.append({"bits": b, **{k: float(np.mean([float(r[k]) for r in rs]))
                                      for k in ("bpp", "psnr", "encode_s", "decode_s")}})
    if not pts:
        continue
    curve = [(p["bpp"], p["psnr"]) for p in pts]
    table.append({"row": row, "points": pts,
                  "bd_rate_vs_jpeg": bd_rate(anchor_curves["jpeg"], curve),
                  "bd_rate_vs_jpeg2000": bd_rate(anchor_curves["jpeg2000"], curve),
                  "bd_rate_vs_baseline": bd_rate([(p["bpp"], p["psnr"]) for p in table[0]["points"]], curve)
                  if table else 0.0,
                  "psnr_at_0.25bpp": interpolate_psnr(pts, 0.25),
                  "encode_s": float(np.mean([p["encode_s"] for p in pts])),
                  "decode_s": float(np.mean([p["decode_s"] for p in pts]))})
doc = {"files": sorted(names), "device": "cpu", "rows": table,
       "command": f"python benchmarks/experiments/image_levers.py --files {args.files}"}
(OUT / "levers.json").write_text(json.dumps(doc, indent=1) + "\n")


def fmt(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


lines = ["| lever | BD-rate vs baseline | vs JPEG | vs JPEG2000 | PSNR @ 0.25 bpp | rate range (bpp) |",
         "|---|---|---|---|---|---|"]
for t in table:
    rates = [p["bpp"] for p in t["points"]]
    lines.append(f"| {t['row']} | {fmt(t['bd_rate_vs_baseline'], '+.1f')} % | {fmt(t['bd_rate_vs_jpeg'], '+.1f')} % "
                 f"| {fmt(t['bd_rate_vs_jpeg2000'], '+.1f')} % | {fmt(t['psnr_at_0.25bpp'], '.2f')} dB "
                 f"| {min(rates):.3f}–{max(rates):.3f} |")
(OUT / "levers.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
