"""Quantizer range (mean +- k std) per bit depth for the speech codec, measured on the 3 validation
files (never the test set): PSNR over whole files and the rate the entropy tables give.

    python benchmarks/experiments/speech_quantizer_range.py      (the shipped network, the shared training clips)
"""
import numpy as np
import torch

from coinpp import codec as codecs
from coinpp import modalities
from coinpp.fit import fit_latents
from coinpp.modalities.base import psnr
from coinpp.patching import patch_coordinates, split
from coinpp.quantize import Quantizer
from coinpp.synthesis import evaluate_grid
from coinpp.training.data import CropSampler, load_folder
from coinpp.training.tables import frequency_table

m = modalities.get("audio")
c = codecs.load("speech-6x128-l64-b6")
tr, va, names = load_folder("../shared/data/speech/train", "audio", 3, 0)
coords = patch_coordinates(c.patch)
train_lat = fit_latents(c.net, coords, CropSampler(tr, c.patch, seed=99).sample(4096), 10, "cpu").numpy()
vlat = [fit_latents(c.net, coords, split(v, c.patch)[0], 10, "cpu") for v in va]
for bits in (3, 4, 5, 6):
    for k in (3, 4, 5, 6):
        q = Quantizer.fit(train_lat, bits, clip_std=k)
        table = frequency_table(q.quantize(train_lat), q.levels).astype(np.float64)
        prob = table / table.sum(axis=1, keepdims=True)
        ps, bits_total, samples = [], 0.0, 0
        for v, lat in zip(va, vlat, strict=True):
            sym = q.quantize(lat)
            bits_total += float(-np.log2(prob[np.arange(sym.shape[1])[None, :], sym]).sum())
            samples += v.shape[0]
            deq = torch.from_numpy(q.dequantize(sym))
            out = evaluate_grid(c.net, deq, v.shape[:1], c.patch, v.shape[:1], "cpu")
            ps.append(psnr(np.clip(out, 0, 1), v))
        kbps = bits_total / (samples / 16000) / 1000
        print(bits, k, "psnr", round(float(np.mean(ps)), 2), "kbps", round(kbps, 2), flush=True)
