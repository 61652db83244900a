"""Encoder-side levers for the speech codecs, each measured alone on whole clips: the clip's level
(a gain so its peak fills the quantizer's range, undone after decoding), more SGD steps, Adam
refinement with the rate term, and rate-distortion rounding. Prints per variant the mean kbps, PSNR,
SNR, the lowest SNR of any clip and the encode seconds per second of audio.

    python benchmarks/experiments/speech_levers.py --codecs speech-klt-6x128-l64-b5 \
        --variants base,gain,sgd20,adam10,round1 [--data ../shared/data/speech/train --files 6]

Variants join with "+": base, gain, sgdN (N SGD steps), adamN[rL] (N Adam steps through the quantizer,
rate term L), roundL (rate-distortion rounding at L; codecs with the neighbour context).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from coinpp import codec as codecs
from coinpp import modalities
from coinpp.bitstream import parse
from coinpp.decoder import Decoder
from coinpp.encoder import Encoder
from coinpp.modalities.base import Signal
from coinpp.presets import AdamPhase, RoundPhase

PEAK = 0.95  # the gained clip's peak, below full scale


def variant_preset(codec: codecs.Codec, variant: str):
    preset = codec.preset("default")
    for part in variant.split("+"):
        if part.startswith("sgd"):
            preset = preset.with_sgd_steps(int(part[3:]))
        elif part.startswith("adam"):
            steps, _, lam = part[4:].partition("r")
            preset = preset.with_phase(AdamPhase(int(steps), 0.25, "quantizer-step", True, float(lam or 0)))
        elif part.startswith("round"):
            preset = preset.with_phase(RoundPhase(float(part[5:])))
    return preset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--codecs", required=True)
    ap.add_argument("--variants", default="base,gain")
    ap.add_argument("--data", default="../shared/data/speech/test")
    ap.add_argument("--files", type=int, default=0)
    a = ap.parse_args()
    m = modalities.get("audio")
    files = sorted(Path(a.data).glob("*.flac"))
    files = files[: a.files] if a.files else files
    signals = [m.read(f) for f in files]
    seconds = sum(s.spatial[0] / s.meta["sample_rate"] for s in signals)
    dec = Decoder("cpu")
    for name in a.codecs.split(","):
        codec = codecs.load(name)
        for variant in a.variants.split(","):
            gain = "gain" in variant.split("+")
            preset = variant_preset(codec, variant.replace("gain", "").strip("+") or "base")
            enc = Encoder(codec, m, preset, device="cpu")
            kbps, psnr, snr, t = [], [], [], 0.0
            for s in signals:
                g = PEAK / max(float(np.abs(s.values * 2 - 1).max()), 1e-6) if gain else 1.0
                coded = Signal(((s.values * 2 - 1) * g + 1) / 2, s.meta)
                t0 = time.perf_counter()
                e = enc.encode(coded)
                t += time.perf_counter() - t0
                out = dec.decode(parse(e.data))
                out = Signal((((out.values * 2 - 1) / g) + 1) / 2, out.meta)
                q = m.quality(s, out)
                kbps.append(m.rate(len(e.data) + (1 if gain else 0), s.spatial, s.meta)["kbps"])
                psnr.append(q["psnr"])
                snr.append(q["snr"])
            print(f"{name} {variant:>12} kbps {np.mean(kbps):6.2f} psnr {np.mean(psnr):6.2f} snr {np.mean(snr):6.2f} "
                  f"min-snr {np.min(snr):6.2f} enc-s/s {t / seconds:.3f}", flush=True)


if __name__ == "__main__":
    main()
