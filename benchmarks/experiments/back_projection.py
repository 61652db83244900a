"""Back-projection: does making the finer decode agree with the ordinary decode beat resizing?

    python benchmarks/experiments/back_projection.py mri
    python benchmarks/experiments/back_projection.py kodak --files 6

Each test file is reduced and coded as `coin bench SUITE --upscale 2` does (evaluation/upscale.py).
The network's finer decode F is then corrected so that reducing it as the benchmark reduced the truth
(MRI: block means; images: Lanczos halving) gives the ordinary decode N:

    F' = F + R(N - D(F))     (D: the reduction; R: trilinear / cubic-spline / Lanczos resize)

repeated `--rounds` times. Printed per file and as the mean over files: PSNR of N resized (the
baselines), of F, and of F'.
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


def block_mean(v: np.ndarray, f: int) -> np.ndarray:
    s = v.shape
    return v.reshape(s[0] // f, f, s[1] // f, f, s[2] // f, f).mean(axis=(1, 3, 5))


def psnr_of(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    return round(20 * np.log10(peak / np.sqrt(np.mean((a - b) ** 2))), 3)


def zoom(v: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    import scipy.ndimage
    return scipy.ndimage.zoom(v, [t / n for t, n in zip(shape, v.shape, strict=True)], order=order,
                              mode="nearest", grid_mode=True)


def pil_resize(v: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Float RGB (H, W, 3) resized per channel with PIL's Lanczos in float mode (no rounding)."""
    from PIL import Image
    return np.stack([np.asarray(Image.fromarray(v[..., c].astype(np.float32), mode="F").resize(size, Image.LANCZOS))
                     for c in range(v.shape[-1])], axis=-1).astype(np.float64)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("suite", choices=["mri", "kodak"])
    ap.add_argument("--files", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    suite, files = suite_files(args.suite, Path(args.data))
    if args.files:
        files = files[: args.files]
    m = modalities.get(suite.modality)
    codec = codecs.load(codecs.default_for(m.name))
    rows = []
    for path in files:
        signal = read_signal(m, path, suite)
        with tempfile.TemporaryDirectory() as tmp:
            case = CASES[m.name](m, signal, [2.0], Path(tmp))[0]
        p = parse(Encoder(codec, m, device="cpu").encode(case.low).data)
        dec = Decoder("cpu")
        native = dec.decode(p)
        finer = _as_truth(m, dec.decode(p, m.target(p.meta, p.file.shape, case.resolution)))
        n = _as_truth(m, native)
        out = {name: np.asarray(r(native), np.float64) for name, r in case.resamplers.items()}
        out["coin"] = finer
        if m.name == "mri":
            low_truth = block_mean(case.truth, 2)
            smooth = block_mean(finer, 2)  # the network's finer decode averaged over each coded voxel
            print("own grid vs the reduced truth: N", round(measure(case, case.truth)["psnr"], 1),
                  "N", psnr_of(n, low_truth, case.peak), "block means of F", psnr_of(smooth, low_truth, case.peak),
                  flush=True)
            out["tri-of-F-means"] = zoom(smooth, finer.shape, 1)
            for order, name in ((1, "tri"), (3, "spline")):
                f = finer.copy()
                for r in range(args.rounds):
                    f = f + zoom(n - block_mean(f, 2), f.shape, order)
                    out[f"bp-{name}-{r + 1}"] = f.copy()
        else:
            size = (case.truth.shape[1], case.truth.shape[0])
            low = (n.shape[1], n.shape[0])
            f = finer.copy()
            for r in range(args.rounds):
                f = f + pil_resize(n - pil_resize(f, low), size)
                out[f"bp-lanczos-{r + 1}"] = np.clip(np.rint(f), 0, 255)
        row = {"file": path.name}
        for name, v in out.items():
            e = measure(case, v)
            row[name] = round(e["psnr"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {k: round(float(np.mean([r[k] for r in rows])), 3) for k in rows[0] if k != "file"}
    print("mean PSNR over the files", json.dumps(summary))
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "mean_psnr": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
