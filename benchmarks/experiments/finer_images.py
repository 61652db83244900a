"""Does an image network know what lies between its pixels? Unquantized, on held-out training photos.

    python benchmarks/experiments/finer_images.py image-klt-6x128-l64-b5 runs/finer-img/l64/best

Each network is a codec name or a training checkpoint (path without suffix). A 512x512 centre crop of
each photo `coin train` holds out with seed 0 is halved with PIL's Lanczos filter (as `coin bench
--upscale` halves Kodak); the latents are fitted to the halved crop's patches (10 SGD steps, not
quantized, no post-filter) and the network is evaluated on the halved grid and on the full one. The
full decode is compared with the real crop, as are bicubic and Lanczos upscales of the halved decode.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from coinpp import codec as codecs
from coinpp.fit import fit_latents
from coinpp.patching import patch_coordinates, split
from coinpp.synthesis import evaluate_grid

HELD_OUT = ("skimage_chelsea.png", "unsplash_bruna-branco-7r1HxvVC7AY.png", "unsplash_prachi-palwe-NLqNQ10ppe0.png")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10 * np.log10(np.mean((np.clip(a, 0, 1) - b) ** 2)))


def resize(x: np.ndarray, size: tuple[int, int], how: int) -> np.ndarray:
    """Per channel in float, so no 8-bit rounding enters the comparison."""
    return np.stack([np.asarray(Image.fromarray(x[..., c].astype(np.float32), mode="F").resize(size, how))
                     for c in range(x.shape[-1])], axis=-1)


def network(name: str):
    if Path(name + ".safetensors").exists():
        from coinpp.training.meta import load_checkpoint  # experiments may use training code

        net, state, _ = load_checkpoint(Path(name))
        return net, tuple(state["config"]["patch"])
    codec = codecs.load(name)
    return codec.net, tuple(codec.patch)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("networks", nargs="+")
    ap.add_argument("--data", default="../shared/data/train-images")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    crops = []
    for name in HELD_OUT:
        img = np.asarray(Image.open(Path(a.data) / name).convert("RGB"), dtype=np.float32) / 255
        h, w = img.shape[:2]
        s = min(a.size, h, w) // 4 * 4
        crops.append(img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s])
    for name in a.networks:
        net, patch = network(name)
        rows = []
        for truth in crops:
            s = truth.shape[0]
            coarse = resize(truth, (s // 2, s // 2), Image.LANCZOS)
            targets, _ = split(coarse.astype(np.float32), patch)
            z = fit_latents(net, patch_coordinates(patch), targets, a.steps, "cpu")
            own = np.clip(evaluate_grid(net, z, coarse.shape[:2], patch, coarse.shape[:2], "cpu"), 0, 1)
            fine = evaluate_grid(net, z, coarse.shape[:2], patch, truth.shape[:2], "cpu")
            rows.append((psnr(own, coarse), psnr(fine, truth), psnr(resize(own, (s, s), Image.BICUBIC), truth),
                         psnr(resize(own, (s, s), Image.LANCZOS), truth)))
        r = np.array(rows)
        print(f"{name}: own grid {r[:, 0].mean():.2f} dB; full grid: finer decode {r[:, 1].mean():.2f}, "
              f"bicubic {r[:, 2].mean():.2f}, Lanczos {r[:, 3].mean():.2f} dB "
              f"(finer - Lanczos {np.mean(r[:, 1] - r[:, 3]):+.2f}; per photo "
              + ", ".join(f"{d:+.2f}" for d in r[:, 1] - r[:, 3]) + ")")


if __name__ == "__main__":
    main()
