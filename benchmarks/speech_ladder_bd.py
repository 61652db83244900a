"""BD-rate of a speech ladder as one curve (its rungs mix latent sizes, which `coin bench` keeps as
separate curves) against MP3, Opus and, optionally, another ladder measured in another results folder.
Also prints each rung next to MP3 and Opus at the same rate (interpolated in log-rate).

    python benchmarks/speech_ladder_bd.py benchmarks/results/speech-ctx4 \
        [--against benchmarks/results/speech-ctx3]

A ladder is every coin codec in the folder's summary.json (MP3 and Opus excluded).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from coinpp.evaluation import rd

BASELINES = ("mp3", "opus")


def load(folder: Path) -> dict[str, list[dict]]:
    return json.loads((folder / "summary.json").read_text())


def ladder(summary: dict[str, list[dict]]) -> list[tuple[float, float]]:
    return sorted((p["bpp"], p["psnr"]) for name, pts in summary.items() if name not in BASELINES for p in pts)


def at_rate(curve: list[tuple[float, float]], kbps: float) -> float | None:
    """PSNR of a baseline at `kbps`, linear in log-rate between its measured points; None outside."""
    rates = [r for r, _ in curve]
    if kbps < min(rates) or kbps > max(rates):
        return None
    return float(np.interp(np.log(kbps), np.log(rates), [q for _, q in curve]))


def fmt(v: float | None) -> str:
    return "no overlap" if v is None else f"{v:+.1f} %"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--against", type=Path, help="another results folder whose ladder to compare with")
    a = ap.parse_args()
    summary = load(a.folder)
    curve = ladder(summary)
    baselines = {b: sorted((p["bpp"], p["psnr"]) for p in summary[b]) for b in BASELINES if b in summary}
    for b, pts in baselines.items():
        print(f"ladder against {b}: {fmt(rd.bd_rate(pts, curve))}")
    if a.against:
        print(f"ladder against {a.against}: {fmt(rd.bd_rate(ladder(load(a.against)), curve))}")
    for name, pts in summary.items():
        if name in BASELINES:
            continue
        for p in pts:
            same = {b: at_rate(c, p["bpp"]) for b, c in baselines.items()}
            cells = "  ".join(f"{b} {'-' if v is None else f'{v:.2f}'}" for b, v in same.items())
            snr = p.get("snr", float("nan"))
            print(f"{name:28s} {p['bpp']:6.2f} kbps {p['psnr']:6.2f} dB  snr {snr:5.2f}  {cells}")


if __name__ == "__main__":
    main()
