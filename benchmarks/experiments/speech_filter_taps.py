"""Speech: how much would a waveform filter fitted to each clip gain over the codec's, and at what length?

    python benchmarks/experiments/speech_filter_taps.py --codec speech-ctx-6x128-l64-b6

Each test clip is encoded (without the file's own filter) and decoded without a post-filter; printed per
clip and as the mean: PSNR of the network's decode, through the codec's filter, through a least-squares
filter of 9, 17 and 33 taps fitted to that clip alone (in-sample, taps unquantized), and that clip's
filter on top of the codec's. Also each clip's share of energy per band (0-2, 2-4, 4-8 kHz).

Measured with `speech-ctx-6x128-l64-b6` (mean over the 15 clips): network 42.51 dB, codec filter 43.01,
the clip's own 9 / 17 / 33 taps 43.05 / 43.11 / 43.19, own 33 taps on top of the codec's 43.19.
2414-128291-0001 has 62 % of its energy above 2 kHz.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from coinpp import codec as codecs
from coinpp import modalities
from coinpp.decoder import decode_bytes
from coinpp.encoder import Encoder
from coinpp.evaluation.bench import read_signal, suite_files
from coinpp.postfilter import apply_waveform, fit_waveform

TAPS = (9, 17, 33)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of waveforms in [-1, 1] measured as the bench does, on [0, 1]."""
    return 10 * math.log10(1 / np.mean(((a - b) / 2) ** 2))


def bands(x: np.ndarray, rate: int) -> list[float]:
    power = np.abs(np.fft.rfft(x)) ** 2
    freq = np.fft.rfftfreq(len(x), 1 / rate)
    edges = ((0, 2e3), (2e3, 4e3), (4e3, 8e3 + 1))
    return [float(power[(freq >= a) & (freq < b)].sum() / power.sum()) for a, b in edges]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--codec", default="speech-ctx-6x128-l64-b6")
    ap.add_argument("--data", default="../shared/data")
    a = ap.parse_args()
    c = codecs.load(a.codec)
    m = modalities.get("audio")
    suite, files = suite_files("speech", Path(a.data))
    enc = Encoder(c, m, device="cpu", file_filter=False)
    rows = []
    for path in files:
        sig = read_signal(m, path, suite)
        raw, _ = decode_bytes(enc.encode(sig).data, device="cpu", postfilter=False)
        x = sig.values[:, 0].astype(np.float64) * 2 - 1
        y = raw.values[:, 0].astype(np.float64) * 2 - 1
        g = apply_waveform(c.postfilter, raw.values)[:, 0].astype(np.float64) * 2 - 1
        row = {"network": psnr(y, x), "codec filter": psnr(g, x)}
        for n in TAPS:
            own = apply_waveform(fit_waveform([(y, x)], n), raw.values)[:, 0].astype(np.float64) * 2 - 1
            row[f"own {n}"] = psnr(own, x)
        on_top = fit_waveform([(g, x)], TAPS[-1])
        row[f"codec + own {TAPS[-1]}"] = psnr(apply_waveform(on_top, (g[:, None] + 1) / 2)[:, 0] * 2.0 - 1, x)
        share = bands(x, int(sig.meta["sample_rate"]))
        rows.append(row)
        print(path.name, " ".join(f"{k} {v:.3f}" for k, v in row.items()),
              "energy 0-2/2-4/4-8 kHz " + " ".join(f"{s:.2f}" for s in share), flush=True)
    print("mean", " ".join(f"{k} {np.mean([r[k] for r in rows]):.3f}" for k in rows[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
