"""The held-out training photos the encoder experiments measure on (never Kodak), and how they judge.

`coin train` and `coin postfilter` hold the same three photos out (seed 0), so a setting chosen on
them was never trained on.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import malloc, modalities
from ..modalities import Signal
from ..training.data import load_folder


def held_out(data: str, height: int, width: int) -> list[Signal]:
    """Centre crops (multiples of 32) of the photos `coin train` and `coin postfilter` hold out."""
    _, val_s, _ = load_folder(data, "image", 3, 0)
    out = []
    for v in val_s:
        h, w = v.shape[:2]
        ch, cw = min(h, height) // 32 * 32, min(w, width) // 32 * 32
        a, b = (h - ch) // 2, (w - cw) // 2
        out.append(Signal(np.ascontiguousarray(v[a : a + ch, b : b + cw]), {"channels": 3}))
    return out


def psnr(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """PSNR of the 8-bit outputs over all pixels of all pairs, as `coin bench` judges images."""
    se = sum(((np.round(np.clip(a, 0, 1) * 255) - np.round(b * 255)) ** 2).sum() for a, b in pairs)
    return 10 * math.log10(255**2 * sum(a.size for a, _ in pairs) / se)


def prepare(data: str, crop: str) -> tuple[modalities.Modality, list[Signal], int]:
    """The encoder experiments' set-up: the heap tuned as the CLI does, seeded, the held-out crops
    (announced) and their pixel count."""
    malloc.tune()
    torch.manual_seed(0)
    signals = held_out(data, *map(int, crop.split("x")))
    pixels = sum(s.values.shape[0] * s.values.shape[1] for s in signals)
    print(f"{len(signals)} held-out photos, centre crops up to {crop}, {pixels} pixels")
    return modalities.get("image"), signals, pixels
