"""Rate-distortion measurement: coin codecs and baselines on the same files, real file sizes.

Rows are per file and setting; summaries are means over files, written in the JSON schema of
CompressAI's results (name, description, results with parallel lists) plus a CSV of the rows.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from . import codec as codecs
from . import modalities
from .errors import InputError
from .modalities.image import to_uint8
from .pipeline import decode_bytes, fit_signal, pack

SUITES = {"kodak": "kodak"}  # suite name -> folder under the shared data root


def suite_files(suite: str, data_root: Path) -> list[Path]:
    folder = data_root / SUITES[suite] if suite in SUITES else Path(suite)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder (suites: {', '.join(SUITES)}, or a folder)")
    m = modalities.get("image")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in m.extensions)
    if not files:
        raise InputError(f"{folder}: no image files")
    return files


def _network_key(codec: codecs.Codec) -> str:
    """Codecs that share weights, patch and steps fit identical latents: fit once for all."""
    h = hashlib.sha256((codec.folder / "weights.safetensors").read_bytes())
    return f"{h.hexdigest()}:{codec.patch}:{codec.steps}"


def coin_rows(files: list[Path], codec_names: list[str], device: str = "auto",
              tick: Callable[[str], None] = lambda s: None) -> list[dict]:
    """One row per (file, codec): bytes, bpp, PSNR, encode and decode seconds."""
    image = modalities.get("image")
    loaded = [codecs.load(n) for n in codec_names]
    groups: dict[str, list[codecs.Codec]] = {}
    for c in loaded:
        groups.setdefault(_network_key(c), []).append(c)
    rows = []
    for path in files:
        signal = image.read(path)
        for group in groups.values():
            t0 = time.perf_counter()
            latents = fit_signal(signal, image, group[0], device=device)
            t_fit = time.perf_counter() - t0
            for c in group:
                t0 = time.perf_counter()
                enc = pack(latents, signal, image, c)
                t_enc = t_fit + time.perf_counter() - t0
                t0 = time.perf_counter()
                decoded, _ = decode_bytes(enc.data, device=device)
                t_dec = time.perf_counter() - t0
                rows.append({"codec": c.name, "setting": f"b{c.bits}", "file": path.name,
                             "bytes": len(enc.data), **image.rate(len(enc.data), signal.spatial),
                             **image.quality(signal, decoded), "encode_s": t_enc, "decode_s": t_dec})
                tick(f"{path.name} {c.name}")
    return rows


def jpeg_rows(files: list[Path], qualities: Iterable[int]) -> list[dict]:
    """Pillow JPEG (default 4:2:0) at each quality; size is the real encoded size."""
    image = modalities.get("image")
    rows = []
    for path in files:
        signal = image.read(path)
        arr = to_uint8(signal.values)
        im = Image.fromarray(arr if arr.shape[2] == 3 else arr[:, :, 0])
        for q in qualities:
            buf = io.BytesIO()
            t0 = time.perf_counter()
            im.save(buf, format="JPEG", quality=q)
            t_enc = time.perf_counter() - t0
            t0 = time.perf_counter()
            dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert(im.mode), dtype=np.float32) / 255
            t_dec = time.perf_counter() - t0
            dec = dec.reshape(arr.shape)
            decoded = modalities.Signal(dec, signal.meta)
            n = len(buf.getvalue())
            rows.append({"codec": "jpeg", "setting": f"q{q}", "file": path.name, "bytes": n,
                         **image.rate(n, signal.spatial), **image.quality(signal, decoded),
                         "encode_s": t_enc, "decode_s": t_dec})
    return rows


def summarize(rows: list[dict]) -> dict[str, list[dict]]:
    """codec -> list of points (mean over files per setting), sorted by rate."""
    by: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        by.setdefault((r["codec"], r["setting"]), []).append(r)
    out: dict[str, list[dict]] = {}
    for (codec, setting), rs in by.items():
        point = {"setting": setting, "files": len(rs)}
        for k in ("bpp", "psnr", "encode_s", "decode_s", "bytes"):
            point[k] = float(np.mean([r[k] for r in rs]))
        out.setdefault(codec, []).append(point)
    for pts in out.values():
        pts.sort(key=lambda p: p["bpp"])
    return out


def interpolate_psnr(points: list[dict], bpp: float) -> float | None:
    """PSNR of a curve at `bpp` (linear in bpp); None outside the measured range."""
    xs = [p["bpp"] for p in points]
    if not xs or bpp < min(xs) or bpp > max(xs):
        return None
    return float(np.interp(bpp, xs, [p["psnr"] for p in points]))


def matched(summary: dict[str, list[dict]], anchor: str = "jpeg") -> list[dict]:
    """Each coin point next to the anchor's PSNR at the same rate (interpolated on its curve)."""
    rows = []
    for codec, pts in summary.items():
        if codec == anchor or anchor not in summary:
            continue
        for p in pts:
            a = interpolate_psnr(summary[anchor], p["bpp"])
            rows.append({"codec": codec, "bpp": p["bpp"], "psnr": p["psnr"], f"{anchor}_psnr": a,
                         "delta_db": None if a is None else p["psnr"] - a,
                         f"{anchor}_min_bpp": min(q["bpp"] for q in summary[anchor])})
    return rows


def write_results(out: Path, rows: list[dict], descriptions: dict[str, str]) -> dict[str, list[dict]]:
    """rows.csv, summary.json, and one <codec>.json per codec in CompressAI's schema."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "rows.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    summary = summarize(rows)
    for codec, pts in summary.items():
        doc = {"name": codec, "description": descriptions.get(codec, codec),
               "results": {"bpp": [p["bpp"] for p in pts], "psnr-rgb": [p["psnr"] for p in pts],
                           "setting": [p["setting"] for p in pts], "encode_s": [p["encode_s"] for p in pts],
                           "decode_s": [p["decode_s"] for p in pts], "files": [p["files"] for p in pts]}}
        (out / f"{codec}.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    if "jpeg" in summary:
        (out / "matched-jpeg.json").write_text(json.dumps(matched(summary), indent=1) + "\n")
    return summary


def record_in_codecs(summary: dict[str, list[dict]], suite: str, command: str) -> list[str]:
    """Write the measured point of each coin codec into its config.json ("measured") and model card.

    Neither is part of the codec hash, so files written before stay decodable.
    """
    from .device import hardware_description

    done = []
    for name, pts in summary.items():
        folders = codecs.available()
        if name not in folders or len(pts) != 1:
            continue
        p, folder = pts[0], folders[name]
        cfg_path = folder / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["measured"] = {"data": suite, "files": p["files"], "bpp": round(p["bpp"], 4),
                           "psnr_db": round(p["psnr"], 3), "encode_s": round(p["encode_s"], 2),
                           "decode_s": round(p["decode_s"], 2), "command": command}
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
        card_path = folder / "MODEL_CARD.md"
        card = card_path.read_text().split("\n## Measured")[0].rstrip() + "\n"
        card += (f"\n## Measured on {suite} ({p['files']} files)\n\n"
                 f"- rate {p['bpp']:.4f} bpp (real file sizes, headers included)\n"
                 f"- PSNR {p['psnr']:.2f} dB (8-bit RGB output, mean over files)\n"
                 f"- encode {p['encode_s']:.1f} s, decode {p['decode_s']:.2f} s per file on "
                 f"{hardware_description()}\n- reproduce: `{command}`\n")
        card_path.write_text(card)
        done.append(name)
    codecs._load_cached.cache_clear()
    return done
