"""Photos at 2x: what halving alone costs, without coding.

    python benchmarks/experiments/halving_bound.py

Each Kodak photo is halved with Lanczos (as `coin bench kodak --upscale 2` does) and the uncoded half
enlarged again with Lanczos; printed: the mean PSNR against the full photos. Set beside the coded
path's 23.29 dB it says how much of the finer decode's error is the halving's and how much the coding's.
Measured: 29.63 dB over the 24 photos.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/kodak")
    a = ap.parse_args()
    psnrs = []
    for path in sorted(Path(a.data).glob("*.png")):
        full = Image.open(path).convert("RGB")
        w, h = full.size
        half = full.resize((round(w / 2), round(h / 2)), Image.LANCZOS)
        back = np.asarray(half.resize((w, h), Image.LANCZOS), dtype=np.float64)
        psnrs.append(10 * math.log10(255**2 / np.mean((back - np.asarray(full, dtype=np.float64)) ** 2)))
        print(f"{path.name} {psnrs[-1]:.2f} dB")
    print(f"mean over {len(psnrs)} photos: {np.mean(psnrs):.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
