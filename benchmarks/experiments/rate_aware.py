"""Rate-aware meta-learning (`coin train --quant-step --rate-weight`) against the same minutes of
plain training, both warm-started from the default family's network, on Kodak.

    python benchmarks/experiments/rate_aware.py runs/rate-aware/shipped/best runs/rate-aware/control/best \
        runs/rate-aware/q34-r004/best [--files 8]

Each argument is a training checkpoint (path without suffix; `coin train --init image-klt-6x128-l64-b5
--steps 0 --out runs/rate-aware/shipped` makes one of the shipped network as it is). Every network is
exported the same way as the shipped family (principal components, b4/b5/b6 at clip 3.0/3.5/4.0, the
8-bucket neighbour context, rate-distortion rounding λ 0.1) and encoded with the shipped default preset
without its post-filter phase; decoded without the post-filter (none of the new networks has one yet).
So the rows differ only in the network. Latents are fitted once per image with the b5 codec and packed
at each bit depth. Real file sizes, PSNR of the real decode; BD-rate against the first argument, and PSNR
at 0.15 bpp (this l64 network's b4-b6 span about 0.10-0.20 bpp on Kodak, so not 0.25).

Writes benchmarks/experiments/rate_aware.json (and resumes from --rows).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

import numpy as np

from coinpp import codec as codecs
from coinpp import modalities
from coinpp.decoder import decode_bytes
from coinpp.encoder import Encoder
from coinpp.evaluation.rd import bd_rate, interpolate_psnr
from coinpp.training.data import load_folder as load_training_folder
from coinpp.training.export import export_codecs

KODAK = Path("../shared/data/kodak")
TRAIN = "../shared/data/train-images"
SHIPPED = "image-klt-6x128-l64-b5"
BITS = (4, 5, 6)
CLIPS = [3.0, 3.5, 4.0]
ROOT = Path("runs/rate-aware")
# The exported codecs must be found by name when their files are decoded.
os.environ["COIN_CODECS_PATH"] = os.pathsep.join(
    [str((ROOT / "codecs").resolve())] + [p for p in os.environ.get("COIN_CODECS_PATH", "").split(os.pathsep) if p])


def family(checkpoint: str) -> dict[int, codecs.Codec]:
    """The checkpoint's codecs b4-b6 (exported once), with the shipped default preset less its filter phase."""
    tag = Path(checkpoint).parent.name
    folder = ROOT / "codecs"
    names = {b: f"ra-{tag}-b{b}" for b in BITS}
    if not all((folder / n).exists() for n in names.values()):
        train_s, val_s, _ = load_training_folder(TRAIN, "image", 3, 0)
        export_codecs(Path(checkpoint), train_s, folder, f"ra-{tag}", list(BITS), 10, table_patches=5568,
                      device="cpu", clip_std=CLIPS, context=8, val_signals=val_s, decorrelate=True,
                      rd_lambda=0.1, refine={"steps": 7, "latent_lr": 0.0017, "quantized": False,
                                             "rate_lambda": 1e-5})  # for its rate model; preset replaced below
    shipped = json.loads((Path("codecs") / SHIPPED / "config.json").read_text())["presets"]["default"]
    out = {}
    for b, n in names.items():
        config_path = folder / n / "config.json"
        config = json.loads(config_path.read_text())
        rounding = [p for p in config["presets"]["default"] if p["phase"] == "round"]
        config["presets"] = {"default": [p for p in shipped if p["phase"] not in ("filter", "round")] + rounding}
        config_path.write_text(json.dumps(config, indent=2))
        out[b] = codecs.load_folder(folder / n)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--files", type=int, default=8, help="every (24/N)-th Kodak image (24: all)")
    ap.add_argument("--rows", default=str(ROOT / "rows.csv"), help="per-image rows (an interrupted run resumes)")
    args = ap.parse_args()
    files = sorted(KODAK.glob("kodim*.png"))[:: max(1, 24 // args.files)][: args.files]
    image = modalities.get("image")
    cache = Path(args.rows)
    rows = list(csv.DictReader(cache.open())) if cache.exists() else []
    done = {(r["net"], r["file"]) for r in rows}
    for ck in args.checkpoints:
        fam = family(ck)
        for path in files:
            if (ck, path.name) in done:
                continue
            signal = image.read(path)
            t0 = time.perf_counter()
            latents = Encoder(fam[5], image, device="cpu").fit([signal])[0]
            t_fit = time.perf_counter() - t0
            for b, c in fam.items():
                enc = Encoder(c, image, device="cpu").pack(latents, signal)
                decoded, _ = decode_bytes(enc.data, device="cpu", postfilter=False)
                rows.append({"net": ck, "bits": b, "file": path.name,
                             "bpp": 8 * len(enc.data) / (signal.spatial[0] * signal.spatial[1]),
                             "psnr": image.quality(signal, decoded)["psnr"], "fit_s": t_fit})
            with cache.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
            print(ck, path.name, [f"{r['bpp']:.3f}/{r['psnr']:.2f}" for r in rows[-3:]], f"{t_fit:.1f} s", flush=True)
    names = [f.name for f in files]
    curves = {}
    for ck in args.checkpoints:
        pts = []
        for b in BITS:
            sel = [r for r in rows if r["net"] == ck and int(r["bits"]) == b and r["file"] in names]
            pts.append((float(np.mean([float(r["bpp"]) for r in sel])),
                        float(np.mean([float(r["psnr"]) for r in sel]))))
        curves[ck] = pts
    base = curves[args.checkpoints[0]]
    summary = {"files": names, "curves": curves, "bd_rate_vs_first": {}, "psnr_at_0.15": {},
               "fit_s": {ck: float(np.mean([float(r["fit_s"]) for r in rows if r["net"] == ck and r["file"] in names]))
                         for ck in args.checkpoints}}
    for ck, pts in curves.items():
        summary["bd_rate_vs_first"][ck] = bd_rate(base, pts)
        summary["psnr_at_0.15"][ck] = interpolate_psnr([{"bpp": r, "psnr": q} for r, q in pts], 0.15)
        print(f"{ck}: " + ", ".join(f"{a:.4f} bpp {q:.2f} dB" for a, q in pts)
              + f"; BD-rate {summary['bd_rate_vs_first'][ck] or 0:+.2f} %; fit {summary['fit_s'][ck]:.1f} s")
    Path("benchmarks/experiments/rate_aware.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
