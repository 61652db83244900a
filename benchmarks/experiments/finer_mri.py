"""Does an MRI network know what lies between its voxels? Unquantized, on a crop of a held-out volume.

    python benchmarks/experiments/finer_mri.py mri-5x128-l16-b4 mri-any-5x128-l16-b4

A 96³ crop of MR_Gd (intensities over its range) is reduced to 48³ block means; each network's latents
are fitted to the 48³ patches (10 SGD steps, not quantized) and evaluated on the 48³ grid and on the 96³
grid; the 96³ decode is compared with the real crop, as is trilinear resampling of the 48³ decode.
"""

from __future__ import annotations

import argparse

import nibabel as nib
import numpy as np
from scipy import ndimage

from coinpp import codec as codecs
from coinpp.fit import fit_latents
from coinpp.patching import patch_coordinates, split
from coinpp.synthesis import evaluate_grid


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10 * np.log10(np.mean((np.clip(a, 0, 1) - b) ** 2)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("codecs", nargs="+")
    ap.add_argument("--volume", default="../shared/data/mri/MR_Gd.nii.gz")
    a = ap.parse_args()
    vol = np.asarray(nib.load(a.volume).dataobj, dtype=np.float64)[40:136, 40:136, 32:128]
    lo, hi = vol.min(), np.percentile(vol, 99.99)
    fine_truth = np.clip((vol - lo) / (hi - lo), 0, 1)
    coarse = fine_truth.reshape(48, 2, 48, 2, 48, 2).mean(axis=(1, 3, 5))
    for name in a.codecs:
        codec = codecs.load(name)
        patch = codec.patch
        targets, _ = split(coarse[..., None].astype(np.float32), patch)
        z = fit_latents(codec.net, patch_coordinates(patch), targets, 10, "cpu")
        own = evaluate_grid(codec.net, z, coarse.shape, patch, coarse.shape, "cpu")[..., 0]
        fine = evaluate_grid(codec.net, z, coarse.shape, patch, fine_truth.shape, "cpu")[..., 0]
        tri = ndimage.zoom(np.clip(own, 0, 1), 2, order=1, mode="nearest", grid_mode=True)
        print(f"{name}: own grid {psnr(own, coarse):.2f} dB, finer decode {psnr(fine, fine_truth):.2f} dB, "
              f"trilinear of the own-grid decode {psnr(tri, fine_truth):.2f} dB")


if __name__ == "__main__":
    main()
