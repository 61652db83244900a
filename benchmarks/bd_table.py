"""The README's Kodak BD-rate table: each coin family (a chosen set of shipped rate points) against
every measured and published curve, from `benchmarks/results/kodak/summary.json`.

`coin bench` joins codecs that differ only in their bit depth into one curve; a family here may mix
latent sizes too (the default image family is l32-b4, l64-b4...b6, l128-b4...b6), which is why this
table is computed apart. Prints a Markdown table and the PSNR at 0.25 bpp of each family.

    python benchmarks/bd_table.py [--summary benchmarks/results/kodak/summary.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from coinpp.evaluation import rd
from coinpp.evaluation.bench import SUITES
from coinpp.evaluation.plots import load_published

FAMILIES = {
    "`image-klt-6x128` (default family: l32-b4, l64-b4…b6, l128-b4…b6)": [
        "image-klt-6x128-l32-b4", "image-klt-6x128-l64-b4", "image-klt-6x128-l64-b5", "image-klt-6x128-l64-b6",
        "image-klt-6x128-l128-b4", "image-klt-6x128-l128-b5", "image-klt-6x128-l128-b6"],
    "`image-ctx-6x128` (previous default family, five points)": [
        "image-ctx-6x128-l32-b4", "image-ctx-6x128-l64-b4", "image-ctx-6x128-l64-b5", "image-ctx-6x128-l128-b5",
        "image-ctx-6x128-l128-b6"],
    "`image-klt-grid16-5x64-l16` (b3–b6)": [f"image-klt-grid16-5x64-l16-b{b}" for b in range(3, 7)],
    "`image-grid16-5x64-l16` (b3–b6)": [f"image-grid16-5x64-l16-b{b}" for b in range(3, 7)],
    "`image-6x128-l64` (b3–b6)": [f"image-6x128-l64-b{b}" for b in range(3, 7)],
}
ANCHORS = {
    "`image-6x128-l64` (faithful baseline)": "image-6x128-l64",
    "`image-ctx-6x128` (previous default family)": "ctx-family",
    "`image-grid16-5x64-l16`": "image-grid16-5x64-l16",
    "JPEG (Pillow)": "jpeg",
    "JPEG 2000 (OpenJPEG 9/7 + colour transform)": "jpeg2000",
    "HEVC intra 4:4:4 (libheif/x265, in place of BPG)": "hevc-444",
    "WebP": "webp",
    "AVIF": "avif",
    "JPEG XL": "jpegxl",
    "COIN++ (published)": "COIN++ (published)",
    "COIN (published)": "COIN (published)",
}


def family_curve(summary: dict, names: list[str]) -> list[tuple[float, float]]:
    missing = [n for n in names if n not in summary]
    if missing:
        raise SystemExit(f"not in the summary: {', '.join(missing)}")
    return sorted((p["bpp"], p["psnr"]) for n in names for p in summary[n])


def fmt(v: float | None) -> str:
    if v is None:
        return "no overlap"
    return f"{v:+.1f} %".replace("-", "−") if abs(v) < 100 else f"{v:+.0f} %".replace("-", "−")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--summary", type=Path, default=Path("benchmarks/results/kodak/summary.json"))
    ap.add_argument("--reference", type=Path, default=Path("../shared/reference"))
    args = ap.parse_args()
    summary = json.loads(args.summary.read_text())
    curves = {**rd.curves(summary), **load_published(args.reference, SUITES["kodak"])}
    families = {label: family_curve(summary, names) for label, names in FAMILIES.items()}
    curves["ctx-family"] = families["`image-ctx-6x128` (previous default family, five points)"]
    print("| against | " + " | ".join(FAMILIES) + " |")
    print("|---|" + "---|" * len(FAMILIES))
    for label, key in ANCHORS.items():
        cells = []
        for pts in families.values():
            same = sorted(curves[key]) == pts
            cells.append("—" if same else fmt(rd.bd_rate(curves[key], pts)))
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()
    for fam, pts in families.items():
        q = rd.interpolate_psnr([{"bpp": r, "psnr": p} for r, p in pts], 0.25)
        print(f"PSNR at 0.25 bpp, {fam}: " + ("out of range" if q is None else f"{q:.2f} dB"))


if __name__ == "__main__":
    main()
