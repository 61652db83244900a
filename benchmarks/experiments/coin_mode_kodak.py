"""COIN mode on three Kodak images at 0.3 bpp, next to the COIN++ codecs and JPEG 2000 on the same images.

The .coin files come from (this CPU, 240 s each):
    coin encode ../shared/data/kodak/kodimNN.png -o runs/coin-kodimNN.coin --method coin --bpp 0.3 \
        --iters 1000000 --time-limit 240 --force --device cpu          [--weight-bits 12|10, kodim01 only]
This script decodes them again, reads the per-image COIN++ and JPEG 2000 rows of
benchmarks/results/kodak/rows.csv and writes benchmarks/results/coin/kodak-0.3bpp.json.
"""

import csv
import json
from pathlib import Path

from coinpp import modalities
from coinpp.decoder import decode_bytes

image = modalities.get("image")
kodak = Path("../shared/data/kodak")
out = {"setting": "COIN, --bpp 0.3, Adam lr 2e-4, 65536 random points per step, 240 s per image on the 2-core CPU",
       "coin": [], "weight_bits_kodim01": []}
for name in ("kodim01", "kodim02", "kodim03", "kodim01-w12", "kodim01-w10"):
    path = Path(f"runs/coin-{name}.coin")
    data = path.read_bytes()
    stem = name.split("-")[0]
    sig = image.read(kodak / f"{stem}.png")
    dec, parsed = decode_bytes(data, device="cpu")
    f = parsed.file
    bpp = len(data) * 8 / (sig.spatial[0] * sig.spatial[1])
    row = {"file": f"{stem}.png", "bytes": len(data), "bpp": round(bpp, 4),
           "psnr": round(image.quality(sig, dec)["psnr"], 2), "arch": f.arch.tag, "weights": f.arch.params,
           "weight_bits": f.weight_bits}
    (out["coin"] if "-" not in name else out["weight_bits_kodim01"]).append(row)
out["weight_bits_kodim01"].insert(0, out["coin"][0])
rows = list(csv.DictReader(open("benchmarks/results/kodak/rows.csv")))
files = {r["file"] for r in out["coin"]}
for codec, setting in (("image-6x128-l64-b5", "b5"), ("image-6x128-l64-b6", "b6"), ("jpeg2000", "0.3bpp")):
    out[f"{codec} {setting}"] = [
        {"file": r["file"], "bpp": round(float(r["bpp"]), 4), "psnr": round(float(r["psnr"]), 2)}
        for r in rows if r["codec"] == codec and r["setting"] == setting and r["file"] in files]
for key in [k for k in out if isinstance(out[k], list) and out[k] and "psnr" in out[k][0]]:
    pts = out[key] if key != "weight_bits_kodim01" else []
    if pts:
        out[f"mean {key}"] = {"bpp": round(sum(p["bpp"] for p in pts) / len(pts), 4),
                              "psnr": round(sum(p["psnr"] for p in pts) / len(pts), 2)}
out["published COIN (24 images, 50k iterations on a GPU)"] = {"bpp": 0.3074, "psnr": 26.41}
Path("benchmarks/results/coin").mkdir(parents=True, exist_ok=True)
Path("benchmarks/results/coin/kodak-0.3bpp.json").write_text(json.dumps(out, indent=1) + "\n")
print(json.dumps({k: v for k, v in out.items() if k.startswith("mean") or k.startswith("published")}, indent=1))
