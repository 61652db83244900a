"""MRI at 2x: where does the network's finer decode lose to trilinear, inside its patches or at their borders?

    python benchmarks/experiments/border_split.py --files 2

Each test volume is reduced and coded as `coin bench mri --upscale 2` does (evaluation/upscale.py).
The finer voxels are split by the coded voxel they lie in: on a patch's outermost layer along some
axis (where the finer decode blends two patches' networks) or inside. Printed per file: the squared
error of coin's finer decode F and of the trilinear resize T of the ordinary decode in each class,
and the PSNR of a hybrid that takes F inside and T on the border layers (an upper bound of how much
a better border would buy).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from coinpp import codec as codecs
from coinpp import modalities
from coinpp.bitstream import parse
from coinpp.decoder import Decoder
from coinpp.encoder import Encoder
from coinpp.evaluation.bench import read_signal, suite_files
from coinpp.evaluation.upscale import CASES, _as_truth, measure


def border_mask(shape: tuple[int, ...], patch: tuple[int, ...], f: int) -> np.ndarray:
    """True where a finer voxel lies in a coded voxel on its patch's outermost layer along some axis."""
    mask = np.zeros(shape, dtype=bool)
    for axis, (n, p) in enumerate(zip(shape, patch, strict=True)):
        pos = (np.arange(n) // f) % p
        edge = (pos == 0) | (pos == p - 1)
        mask |= edge.reshape([-1 if a == axis else 1 for a in range(len(shape))])
    return mask


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=0)
    ap.add_argument("--data", default="../shared/data")
    args = ap.parse_args()
    suite, files = suite_files("mri", Path(args.data))
    files = files[: args.files] if args.files else files
    m = modalities.get("mri")
    codec = codecs.load(codecs.default_for("mri"))
    for path in files:
        signal = read_signal(m, path, suite)
        with tempfile.TemporaryDirectory() as tmp:
            case = CASES["mri"](m, signal, [2.0], Path(tmp))[0]
        p = parse(Encoder(codec, m, device="cpu").encode(case.low).data)
        dec = Decoder("cpu")
        native = dec.decode(p)
        finer = _as_truth(m, dec.decode(p, m.target(p.meta, p.file.shape, case.resolution)))
        tri = np.asarray(case.resamplers["trilinear"](native), np.float64)
        edge = border_mask(case.truth.shape, tuple(p.file.patch), 2)
        busy = case.truth != 0
        row = {"file": path.name, "border_fraction": round(float(edge.mean()), 3)}
        for name, v in (("coin", finer), ("trilinear", tri)):
            e2 = (v - case.truth) ** 2
            row[name] = round(measure(case, v)["psnr"], 3)
            row[f"{name}_mse_border"] = float(e2[edge].mean())
            row[f"{name}_mse_inside"] = float(e2[~edge].mean())
            row[f"{name}_mse_inside_busy"] = float(e2[~edge & busy].mean())
        hybrid = np.where(edge, tri, finer)
        row["hybrid"] = round(measure(case, hybrid)["psnr"], 3)
        row["peak"] = case.peak
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
