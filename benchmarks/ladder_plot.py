"""The README's Kodak plot: the image ladder as one curve against the standard codecs, from a
`coin bench kodak` results folder, with the published COIN++ curve dashed.

    python benchmarks/ladder_plot.py [--summary benchmarks/results/kodak/summary.json]
                                     [--out benchmarks/results/kodak/ladder.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from coinpp import ladders
from coinpp.evaluation.bench import SUITES
from coinpp.evaluation.plots import load_published, plot

BASELINES = ("jpeg", "jpeg2000", "webp", "avif", "hevc-444", "jpegxl")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--summary", type=Path, default=Path("benchmarks/results/kodak/summary.json"))
    ap.add_argument("--reference", type=Path, default=Path("../shared/reference"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/kodak/ladder.png"))
    args = ap.parse_args()
    summary = json.loads(args.summary.read_text())
    ladder = ladders.ladders().by_modality["image"]
    curves = {"ladder (-q 1..7)": sorted((p["bpp"], p["psnr"]) for n in ladder.rungs for p in summary[n])}
    curves |= {b: [(p["bpp"], p["psnr"]) for p in summary[b]] for b in BASELINES if b in summary}
    published = {k: v for k, v in load_published(args.reference, SUITES["kodak"]).items() if "COIN++" in k}
    plot(curves, published, args.out, f"Kodak, {summary[ladder.default][0]['files']} images: coin's image ladder "
         "and standard codecs", max_bpp=0.8, suite=SUITES["kodak"], coin_curves={"ladder (-q 1..7)"})
    print(args.out)


if __name__ == "__main__":
    main()
