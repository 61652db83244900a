"""Do the 29 training photos limit the image network? Its fit on crops it was trained on against crops
it never saw.

    python benchmarks/experiments/data_limit.py runs/rate-aware/shipped/best runs/rate-aware/control/best

Each argument is a training checkpoint. For each: the pooled PSNR after 10 SGD steps (unquantized, as
training validates) on 1024 random 32x32 crops of the training photos, of the 3 held-out photos
(`coin train`'s split, seed 0) and of Kodak (the test set). A network that had memorised its photos would
fit their crops far better than the held-out photos'; content differs between the sets too, so the
held-out and Kodak gaps bound what more photos could buy rather than measure it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from coinpp.training.data import load_folder, sampler_for
from coinpp.training.meta import load_checkpoint, psnr_from_mse, training_points, validation_errors

CROPS = 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoints", nargs="+")
    args = ap.parse_args()
    train_s, val_s, _ = load_folder("../shared/data/train-images", "image", 3, 0)
    kodak = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255
             for p in sorted(Path("../shared/data/kodak").glob("kodim*.png"))]
    sets = {"training photos": train_s, "held-out photos": val_s, "Kodak": kodak}
    for ck in args.checkpoints:
        net, state, _ = load_checkpoint(Path(ck))
        net.eval()
        coords = training_points(net.cfg, (32, 32))
        row = []
        for name, signals in sets.items():
            crops = sampler_for(signals, (32, 32), 4242, None).sample(CROPS)
            mse, _ = validation_errors(net, coords, crops, 10)
            row.append(f"{name} {psnr_from_mse(torch.tensor(mse)).item():.2f} dB")
        print(f"{ck}: " + ", ".join(row), flush=True)


if __name__ == "__main__":
    main()
