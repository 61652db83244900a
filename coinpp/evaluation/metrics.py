"""The measures the field reports beside PSNR, computed by the libraries the field uses: MS-SSIM
(`pytorch-msssim`, as CompressAI's results), wideband PESQ (`pesq`, ITU-T P.862.2) and STOI
(`pystoi`) for speech. A measure whose library is not installed, or that does not apply to a signal
(MS-SSIM below 161 pixels a side, PESQ at rates other than 16 kHz), is left out of the row."""

from __future__ import annotations

import numpy as np

from ..modalities import Modality, Signal
from ..modalities.image import to_uint8

MS_SSIM_MIN_SIDE = 161  # five scales of an 11-pixel window: (11 - 1) * 2^4 pixels at the finest


def extra_measures(modality: Modality, original: Signal, decoded: Signal) -> dict[str, float]:
    if modality.name == "image":
        return _ms_ssim(original, decoded)
    if modality.name == "audio":
        return _speech(original, decoded)
    return {}


def _ms_ssim(original: Signal, decoded: Signal) -> dict[str, float]:
    if min(original.spatial) < MS_SSIM_MIN_SIDE:
        return {}
    try:
        import torch
        from pytorch_msssim import ms_ssim
    except ImportError:
        return {}
    a, b = (torch.from_numpy(to_uint8(s.values).astype(np.float32)).permute(2, 0, 1)[None]
            for s in (original, decoded))
    return {"ms_ssim": float(ms_ssim(a, b, data_range=255.0))}


def _speech(original: Signal, decoded: Signal) -> dict[str, float]:
    rate = int(original.meta["sample_rate"])
    ref = original.values[:, 0].astype(np.float64) * 2 - 1
    deg = decoded.values[:, 0].astype(np.float64) * 2 - 1
    n = min(len(ref), len(deg))
    ref, deg = ref[:n], deg[:n]
    out = {}
    try:
        from pystoi import stoi

        out["stoi"] = float(stoi(ref, deg, rate, extended=False))
    except ImportError:
        pass
    if rate == 16000:
        try:
            from pesq import pesq
            from pesq.cypesq import PesqError
        except ImportError:
            return out
        try:
            out["pesq"] = float(pesq(rate, ref, deg, "wb"))
        except PesqError:  # e.g. no utterance found in a clip of silence
            pass
    return out
