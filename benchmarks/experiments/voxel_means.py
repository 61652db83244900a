"""The MRI decode as the mean of the network over each voxel: does it beat sampling voxel centres?

    python benchmarks/experiments/voxel_means.py --out runs/voxel-means.json

The MRI network (`mri-any-5x128-l16`) was meta-learned with sub-sample supervision: its patch is the
2x2x2 block means of a finer crop and the outer loss also scores it at the crop's voxels. Its value at
a voxel centre is one estimate of that voxel; the mean of its values at the voxel's k^3 sub-voxel
centres is another. Each test volume is coded once per rung (`coin bench mri`'s files and rungs) and
decoded both ways; printed per file and rung: bpp, PSNR of the centre decode and of the means (k = 2, 3).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from coinpp import codec as codecs
from coinpp import modalities
from coinpp.bitstream import parse
from coinpp.decoder import Decoder
from coinpp.encoder import Encoder, encode_each
from coinpp.evaluation.bench import read_signal, suite_files
from coinpp.modalities import Signal


def block_mean(v: np.ndarray, k: int) -> np.ndarray:
    s = v.shape
    return v.reshape(s[0] // k, k, s[1] // k, k, s[2] // k, k, *s[3:]).mean(axis=(1, 3, 5))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rungs", default="mri-any-5x128-l16-b3,mri-any-5x128-l16-b4,mri-any-5x128-l16-b5,"
                                       "mri-any-5x128-l16-b6")
    ap.add_argument("--factors", default="2,3")
    ap.add_argument("--files", type=int, default=0)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    suite, files = suite_files("mri", Path("../shared/data"))
    files = files[: a.files] if a.files else files
    m = modalities.get("mri")
    encoders = [Encoder(codecs.load(n), m, device="cpu") for n in a.rungs.split(",")]
    dec = Decoder("cpu")
    rows = []
    for path in files:
        signal = read_signal(m, path, suite)
        for result in encode_each(signal, encoders):
            p = parse(result.encoded.data)
            native = dec.decode(p)
            shape = tuple(p.file.shape)
            row = {"file": path.name, "codec": result.encoder.codec.name,
                   "bpp": m.rate(len(result.encoded.data), signal.spatial, signal.meta)["bpp"],
                   "centre": m.quality(signal, native)["psnr"]}
            for k in (int(f) for f in a.factors.split(",")):
                fine = dec._decode_patches(p, tuple(k * s for s in shape), None)
                means = Signal(block_mean(fine.values, k).astype(np.float32), native.meta)
                row[f"means{k}"] = m.quality(signal, means)["psnr"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
