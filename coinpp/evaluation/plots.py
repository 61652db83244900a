"""Rate-distortion plots, with published curves overlaid (dashed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from .bench import SUITES, Suite

matplotlib.use("Agg")


def load_published(reference: Path, suite: Suite | None = None) -> dict[str, list[tuple[float, float]]]:
    """Published curves of a suite; the files are JSON5-ish (trailing commas), parsed leniently."""
    out = {}
    for label, rel in (suite or SUITES["kodak"]).published.items():
        path = reference / rel
        if not path.is_file():
            continue
        doc = json.loads(re.sub(r",\s*([\]}])", r"\1", path.read_text()))
        res = doc["results"]
        psnr = res.get("psnr-rgb", res.get("psnr"))
        out[label] = sorted(zip(res["bpp"], psnr, strict=True))
    return out


def plot(measured: dict[str, list[tuple[float, float]]], published: dict[str, list[tuple[float, float]]],
         path: Path, title: str, max_bpp: float | None = None, suite: Suite | None = None,
         coin_curves: set[str] | None = None) -> None:
    """RD plot: measured curves solid (coin thick), published ones dashed; x up to max_bpp
    (default: the largest measured rate)."""
    if max_bpp is None:
        max_bpp = max((r for pts in measured.values() for r, _ in pts), default=1.0) * 1.05
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    ax.set_prop_cycle(color=plt.cm.tab20.colors)  # more series than the default cycle has colours
    for name, pts in measured.items():
        pts = [p for p in pts if p[0] <= max_bpp]
        coin = name in coin_curves if coin_curves is not None else name.startswith("image-")
        ax.plot(*zip(*pts, strict=True), marker="o", lw=2.5 if coin else 1.3, ms=5 if coin else 3,
                label=f"coin {name}" if coin else name, zorder=3 if coin else 2)
    for name, pts in published.items():
        pts = [p for p in pts if p[0] <= max_bpp]
        if pts:
            ax.plot(*zip(*pts, strict=True), ls="--", lw=1, marker=".", alpha=0.8, label=name)
    kind = suite.modality if suite is not None else "image"
    ax.set_xlabel({"audio": "kbps", "climate": "bits per value", "mri": "bits per voxel"}.get(kind, "bits per pixel")
                  + " (real file sizes)")
    ax.set_ylabel({"audio": "PSNR (dB, waveform in [0, 1])", "climate": "PSNR (dB over the file's value range)",
                   "mri": "PSNR (dB, whole volume, intensities in [0, 1])"}.get(kind, "PSNR (dB, 8-bit RGB)"))
    ax.set_title(title)
    ax.set_xlim(0, max_bpp)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_rmse(summary: dict[str, list[dict]], path: Path, title: str, coin_curves: set[str], units: str = "",
              target: float | None = None) -> None:
    """Climate: RMSE in the variable's units against bits per value, both logarithmic, so codecs
    hundreds of times apart in rate share one plot; coin codecs of one network joined."""
    joined: dict[str, list[tuple[float, float]]] = {}
    for codec, pts in summary.items():
        joined.setdefault(re.sub(r"-b\d+$", "", codec), []).extend((p["bpp"], p["rmse"]) for p in pts if "rmse" in p)
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    for name, pts in joined.items():
        coin = name in coin_curves
        ax.plot(*zip(*sorted(pts), strict=True), marker="o", lw=2.5 if coin else 1.3, ms=5 if coin else 3,
                label=f"coin {name}" if coin else name, zorder=3 if coin else 2)
    if target is not None:
        ax.axhline(target, color="grey", ls=":", lw=1, label=f"RMSE {target:g}{units and ' ' + units}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("bits per value (real file sizes; 32 = raw float32)")
    ax.set_ylabel(f"RMSE{f' ({units})' if units else ''}")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_bounded(rows: list[dict], path: Path, title: str) -> None:
    """Climate and MRI: bits per value against the maximum error asked, one panel per file."""
    files = sorted({r["file"] for r in rows})
    fig, axes = plt.subplots(1, len(files), figsize=(6 * len(files), 4.5), dpi=110, squeeze=False)
    for ax, f in zip(axes[0], files, strict=True):
        for codec in dict.fromkeys(r["codec"] for r in rows):
            pts = sorted((max(r["bound"], 0.01), r["bits_per_value"]) for r in rows if r["file"] == f
                         and r["codec"] == codec)
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", lw=2.5 if codec == "coin" else 1.3, label=codec)
        ax.set_xscale("log")
        ax.set_xlabel("maximum error (data units; 0 plotted at 0.01)")
        ax.set_ylabel("bits per value")
        ax.set_title(f, fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
