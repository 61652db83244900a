"""Rate-distortion measurement: coin codecs and baselines on the same files, real file sizes.

Rows are per file and setting; summaries are means over files, written in the JSON schema of
CompressAI's results (name, description, results with parallel lists) plus a CSV of the rows.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import codec as codecs
from . import modalities
from .baselines import Baseline
from .errors import InputError
from .modalities import Modality, Signal
from .modalities.image import to_uint8
from .pipeline import decode_bytes, fit_signal, pack, refine_signal, refine_through_postfilter


@dataclass(frozen=True)
class Suite:
    """A named benchmark: which data, which modality, the rate unit and what to compare against."""

    name: str
    modality: str
    folder: str  # under the shared data root
    unit: str  # rate unit, a key of the modality's rate(): bpp or kbps
    anchor: str  # default BD-rate anchor
    codecs: str  # default --codecs
    published: dict[str, str]  # label -> file under the reference folder
    max_rate: float | None = None  # x-axis limit of the plot when published curves are drawn
    files: tuple[str, ...] = ()  # only these files of the folder (default: all of the modality)
    # Use only the last fraction of each file's fields: the hours a climate codec was not trained on.
    holdout: float = 0.0
    target_rmse: float | None = None  # report each curve's compression ratio at this RMSE
    # Published curves measured on other data in another normalisation are drawn, not BD-rated.
    published_comparable: bool = True


PUBLISHED_KODAK = {
    "COIN++ (published)": "coinpp/kodak/coinpp.json",
    "COIN (published)": "coinpp/kodak/coin.json",
    "BPG 4:4:4 (published)": "coinpp/kodak/bpg_444_x265_ycbcr.json",
    "VTM (published)": "coinpp/kodak/vtm.json",
    "JPEG2000 (published)": "compressai-kodak/jpeg2000.json",
}
PUBLISHED_SPEECH = {  # LibriSpeech test-clean in the papers; our clips are test-other (see the README)
    "COIN++ (published)": "coinpp/librispeech/coinpp.json",
    "MP3 (published)": "coinpp/librispeech/mp3.json",
}
PUBLISHED_ERA5 = {  # global ERA5 46x90 in the papers, PSNR over that data set's range: not comparable in dB
    "COIN++ (published, global ERA5)": "coinpp/era5/coinpp.json",
    "JPEG2000 (published, global ERA5)": "coinpp/era5/jpeg2000.json",
}
PUBLISHED_FASTMRI = {  # FastMRI brain slices in the papers: other scans, other normalisation
    "COIN++ (published, FastMRI)": "coinpp/fastmri/coinpp.json",
    "JPEG2000 (published, FastMRI)": "coinpp/fastmri/jpeg2000.json",
}
SUITES = {
    "kodak": Suite("kodak", "image", "kodak", "bpp", "jpeg", "default,jpeg,jpeg2000,webp,avif,hevc-444,jpegxl",
                   PUBLISHED_KODAK, 1.0),
    "speech": Suite("speech", "audio", "speech/test", "kbps", "mp3", "default,mp3,opus", PUBLISHED_SPEECH, 40.0),
    # The test volumes: never trained on (the MRI codecs train on the other four, see their model cards).
    "mri": Suite("mri", "mri", "mri", "bpp", "jpeg2000-slices", "default,jpeg-slices,jpeg2000-slices",
                 PUBLISHED_FASTMRI, 0.4, files=("MR_Gd.nii.gz", "T2w_axial.nii.gz"), published_comparable=False),
    "climate": Suite("climate", "climate", "climate", "bits/value", "sz3", "default,zfp,sz3,jpeg2000-map",
                     PUBLISHED_ERA5, 0.3, files=("era5_t2m_uk_2019-03-01_24.nc",), holdout=0.2, target_rmse=0.5,
                     published_comparable=False),
    # NCEP/NCAR daily air temperature, 17 pressure levels on the 2.5-degree globe: the last day held out.
    "climate-global": Suite("climate-global", "climate", "climate", "bits/value", "sz3", "default,zfp,sz3,jpeg2000-map",
                            {}, files=("ncep_r1_air_2022_day5.nc",), holdout=0.2, target_rmse=0.5,
                            published_comparable=False),
}


def suite_files(suite: str, data_root: Path) -> tuple[Suite, list[Path]]:
    """A named suite or a folder (its modality from the first file type found in it)."""
    if suite in SUITES:
        spec = SUITES[suite]
        folder = data_root / spec.folder
    else:
        folder = Path(suite)
        spec = None
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder (suites: {', '.join(SUITES)}, or a folder)")
    if spec is None:
        kinds = []
        for p in sorted(folder.iterdir()):
            try:
                kinds.append(modalities.for_path(p).name)
            except InputError:
                continue
        if not kinds:
            raise InputError(f"{folder}: no files coin can code")
        base = next(s for s in SUITES.values() if s.modality == kinds[0])
        # A folder is measured whole (no file list, no held-out part) with its modality's defaults.
        spec = dataclasses.replace(base, name=folder.name, folder=str(folder), published={}, files=(), holdout=0.0)
    m = modalities.get(spec.modality)
    files = sorted(p for p in folder.iterdir() if m.extension_of(p)
                   and (not spec.files or p.name in spec.files))
    if not files:
        raise InputError(f"{folder}: no {spec.modality} files")
    return spec, files


def read_signal(modality: Modality, path: Path, suite: Suite) -> Signal:
    """A suite's test signal: the file, or only its held-out last fields (climate)."""
    signal = modality.read(path)
    if suite.holdout:
        dims = signal.meta["dims"]
        per = math.prod(d["size"] for d in dims[1:-2])
        start = modality.held_out_start(signal.meta, suite.holdout) // per
        signal = modality.fields(signal, start, dims[0]["size"])
    return signal


def _to_native(modality: Modality, signal: Signal) -> object:
    """What a baseline codec takes: 8-bit images, (waveform in [-1, 1], sample rate), or climate
    fields (F, lat, lon) float32 in the variable's units."""
    if modality.name == "image":
        return to_uint8(signal.values)
    if modality.name == "climate":
        return np.ma.getdata(modality.physical(signal)).astype(np.float32).reshape(signal.values.shape[:-1])
    if modality.name == "mri":
        return to_uint8(signal.values)
    return signal.values.astype(np.float64) * 2 - 1, signal.meta["sample_rate"]


def _from_native(modality: Modality, decoded: np.ndarray, signal: Signal) -> Signal:
    if modality.name in ("image", "mri"):
        return Signal(decoded.reshape(signal.values.shape).astype(np.float32) / 255, signal.meta)
    if modality.name == "climate":  # not clipped: the baselines' own errors are measured as they are
        m = signal.meta
        values = (decoded.astype(np.float64) - m["low"]) / (m["high"] - m["low"] if m["high"] > m["low"] else 1.0)
        return Signal(values.reshape(signal.values.shape).astype(np.float32), m)
    wave = align(decoded, signal.values.astype(np.float64) * 2 - 1)
    return Signal(((np.clip(wave, -1, 1) + 1) / 2).astype(np.float32), signal.meta)


def align(decoded: np.ndarray, original: np.ndarray, max_lag: int = 4096) -> np.ndarray:
    """Trim an audio decoder's output to the original: drop the encoder delay (the lag of best
    correlation, up to max_lag samples) and cut or zero-pad to the original length."""
    n = min(len(original), 1 << 15)
    ref = original[:n, 0]
    lags = range(0, min(max_lag, max(0, len(decoded) - n)) + 1)
    scores = [float(np.dot(ref, decoded[k : k + n, 0])) for k in lags]
    lag = int(np.argmax(scores)) if scores else 0
    out = decoded[lag : lag + len(original)]
    if len(out) < len(original):
        out = np.concatenate([out, np.zeros((len(original) - len(out), out.shape[1]))])
    if out.shape[1] != original.shape[1]:
        raise InputError("a baseline decoder changed the channel count")
    return out


def _measures(modality: Modality, unit: str, nbytes: int, signal: Signal, decoded: Signal) -> dict:
    """Row fields: rate (in the suite's unit, under the schema's 'bpp' key) and quality."""
    return {"bytes": nbytes, "bpp": modality.rate(nbytes, signal.spatial, signal.meta)[unit],
            **modality.quality(signal, decoded)}


def coin_rows(files: list[Path], codec_names: list[str], device: str = "auto",
              tick: Callable[[str], None] = lambda s: None,
              done: set[tuple[str, str, str]] | None = None, suite: Suite | None = None,
              postfilter: bool = True) -> list[dict]:
    """One row per (file, codec): bytes, rate, quality, encode and decode seconds. Rows in `done`
    (codec, setting, file) are skipped, so an interrupted run resumes. `postfilter=False` measures
    the normative decode (what the bitstream alone defines), skipping the codecs' post-filters."""
    done = done or set()
    suite = suite or SUITES["kodak"]
    image = modalities.get(suite.modality)
    loaded = [codecs.load(n) for n in codec_names]
    groups: dict[str, list[codecs.Codec]] = {}
    for c in loaded:
        groups.setdefault(codecs.fit_key(c), []).append(c)
    rows = []
    for path in files:
        signal = None
        for group in groups.values():
            todo = [c for c in group if (c.name, f"b{c.bits}", path.name) not in done]
            for c in group:
                if c not in todo:
                    tick(f"{path.name} {c.name}")
            if not todo:
                continue
            group = todo
            if signal is None:
                signal = read_signal(image, path, suite)
            t0 = time.perf_counter()
            latents = fit_signal(signal, image, group[0], device=device)
            t_fit = time.perf_counter() - t0
            refined: dict[str, tuple] = {}  # codecs that refine alike refine once
            for c in group:
                if c.refine_key not in refined:
                    t0 = time.perf_counter()
                    refined[c.refine_key] = (refine_signal(latents, signal, image, c, device, through_postfilter=False),
                                             time.perf_counter() - t0)
                z, t_refine = refined[c.refine_key]
                t0 = time.perf_counter()
                z = refine_through_postfilter(z, signal, image, c, device)  # each codec's own filter
                enc = pack(z, signal, image, c)
                t_enc = t_fit + t_refine + time.perf_counter() - t0
                t0 = time.perf_counter()
                decoded, _ = decode_bytes(enc.data, device=device, postfilter=postfilter)
                t_dec = time.perf_counter() - t0
                rows.append({"codec": c.name, "setting": f"b{c.bits}", "file": path.name,
                             **_measures(image, suite.unit, len(enc.data), signal, decoded),
                             "encode_s": t_enc, "decode_s": t_dec})
                tick(f"{path.name} {c.name}")
    return rows


def baseline_rows(files: list[Path], baseline: Baseline, done: set[tuple[str, str, str]] | None = None,
                  tick: Callable[[str], None] = lambda s: None, suite: Suite | None = None) -> list[dict]:
    """One row per (file, setting) of a baseline codec; sizes are the real encoded byte counts."""
    suite = suite or SUITES["kodak"]
    modality = modalities.get(suite.modality)
    done = done or set()
    rows = []
    for path in files:
        signal = None
        for setting in baseline.settings:
            label = baseline.label(setting)
            if (baseline.name, label, path.name) in done:
                tick(f"{path.name} {baseline.name}")
                continue
            if signal is None:
                signal = read_signal(modality, path, suite)
                native = _to_native(modality, signal)
            t0 = time.perf_counter()
            data = baseline.encode(native, setting)
            t_enc = time.perf_counter() - t0
            t0 = time.perf_counter()
            dec = baseline.decode(data)
            t_dec = time.perf_counter() - t0
            decoded = _from_native(modality, dec, signal)
            rows.append({"codec": baseline.name, "setting": label, "file": path.name,
                         **_measures(modality, suite.unit, len(data), signal, decoded),
                         "encode_s": t_enc, "decode_s": t_dec})
            tick(f"{path.name} {baseline.name}")
    return rows


def summarize(rows: list[dict]) -> dict[str, list[dict]]:
    """codec -> list of points (mean over files per setting), sorted by rate."""
    by: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        by.setdefault((r["codec"], r["setting"]), []).append(r)
    out: dict[str, list[dict]] = {}
    for (codec, setting), rs in by.items():
        point = {"setting": setting, "files": len(rs)}
        for k in ("bpp", "psnr", "snr", "rmse", "max_error", "encode_s", "decode_s", "bytes"):
            if all(r.get(k) not in (None, "") for r in rs):
                point[k] = float(np.mean([float(r[k]) for r in rs]))
        out.setdefault(codec, []).append(point)
    for pts in out.values():
        pts.sort(key=lambda p: p["bpp"])
    return out


def rate_at_rmse(points: list[dict], rmse: float) -> float | None:
    """Rate of a curve at `rmse` (log rate linear in log RMSE between the two nearest points);
    None outside the measured range."""
    pts = sorted((p["rmse"], p["bpp"]) for p in points if p.get("rmse", 0) > 0 and p["bpp"] > 0)
    if len(pts) < 2 or not pts[0][0] <= rmse <= pts[-1][0]:
        return None
    e, r = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.exp(np.interp(np.log(rmse), e, r)))


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


def write_results(out: Path, rows: list[dict], descriptions: dict[str, str],
                  suite: Suite | None = None) -> dict[str, list[dict]]:
    """summary.json and one <codec>.json per codec in CompressAI's schema (rows.csv is appended
    as the run goes, see append_rows). As in the published LibriSpeech files, the 'bpp' field
    holds the suite's rate unit (kbps for audio)."""
    suite = suite or SUITES["kodak"]
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows)
    for codec, pts in summary.items():
        res = {"bpp": [p["bpp"] for p in pts], ("psnr-rgb" if suite.modality == "image" else "psnr"):
               [p["psnr"] for p in pts]}
        for k in ("snr", "rmse", "max_error"):
            if all(k in p for p in pts):
                res[k] = [p[k] for p in pts]
        res.update({"setting": [p["setting"] for p in pts], "encode_s": [p["encode_s"] for p in pts],
                    "decode_s": [p["decode_s"] for p in pts], "files": [p["files"] for p in pts]})
        doc = {"name": codec, "unit": suite.unit, "description": descriptions.get(codec, codec), "results": res}
        (out / f"{codec}.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    if suite.anchor in summary:
        (out / f"matched-{suite.anchor}.json").write_text(json.dumps(matched(summary, suite.anchor), indent=1)
                                                          + "\n")
    return summary


QUALITY_NOTE = {"image": "8-bit RGB output", "audio": "waveform normalised to [0, 1]",
                "mri": "whole volume, intensities normalised to [0, 1]", "climate": "over the file's value range"}


def record_in_codecs(summary: dict[str, list[dict]], suite: str, command: str, unit: str = "bpp",
                     modality: str = "image") -> list[str]:
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
        cfg["measured"] = {"data": suite, "files": p["files"], "unit": unit, unit: round(p["bpp"], 4),
                           "psnr_db": round(p["psnr"], 3), "encode_s": round(p["encode_s"], 2),
                           "decode_s": round(p["decode_s"], 2), "command": command}
        for k in ("snr", "rmse", "max_error"):
            if k in p:
                cfg["measured"][k if k != "snr" else "snr_db"] = round(p[k], 4)
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
        card_path = folder / "MODEL_CARD.md"
        # Replace the "Measured" section only: sections after it (the post-filter's) stay.
        head, _, rest = card_path.read_text().partition("\n## Measured")
        nxt = rest.find("\n## ")
        tail = rest[nxt:].rstrip() + "\n" if rest and nxt >= 0 else ""
        card = head.rstrip() + "\n"
        through = " through the codec's post-filter," if "postfilter" in cfg else ""
        quality = (f"- PSNR {p['psnr']:.2f} dB ({QUALITY_NOTE.get(modality, modality)},{through} mean over "
                   "files)\n")
        if "snr" in p:
            quality += f"- SNR {p['snr']:.2f} dB\n"
        if "rmse" in p:
            quality += f"- RMSE {p['rmse']:.4g}, maximum error {p['max_error']:.4g} (the variable's units)\n"
        card += (f"\n## Measured on {suite} ({p['files']} files)\n\n"
                 f"- rate {p['bpp']:.4f} {unit} (real file sizes, headers included)\n{quality}"
                 f"- encode {p['encode_s']:.1f} s, decode {p['decode_s']:.2f} s per file on "
                 f"{hardware_description()}\n- reproduce: `{command}`\n" + tail)
        tmp = card_path.with_name(card_path.name + ".tmp")
        tmp.write_text(card)
        tmp.replace(card_path)
        done.append(name)
    codecs._load_cached.cache_clear()
    return done


def curves(summary: dict[str, list[dict]]) -> dict[str, list[tuple[float, float]]]:
    """Rate-distortion curves: each baseline's points, and coin codecs that differ only in their
    bit depth (NAME-b3, NAME-b4, ...) joined into one curve NAME."""
    import re

    out: dict[str, list[tuple[float, float]]] = {}
    for codec, pts in summary.items():
        key = re.sub(r"-b\d+$", "", codec)
        out.setdefault(key, []).extend((p["bpp"], p["psnr"]) for p in pts)
    return {k: sorted(v) for k, v in out.items()}


def bd_rate(anchor: list[tuple[float, float]], test: list[tuple[float, float]]) -> float | None:
    """Bjøntegaard delta rate in percent (negative: test needs less rate for the same PSNR).

    Log-rate is interpolated piecewise-linearly over PSNR on the overlapping PSNR interval (the
    piecewise variant of the metric: it needs 2 points per curve where the cubic fit needs 4).
    Points that would make PSNR non-increasing in rate are dropped. None without overlap.
    """

    def monotone(curve):
        pts, best = [], -np.inf
        for r, q in sorted(curve):
            if q > best and r > 0:
                pts.append((r, q))
                best = q
        return np.log([p[0] for p in pts]), np.array([p[1] for p in pts])

    la, qa = monotone(anchor)
    lt, qt = monotone(test)
    if len(qa) < 2 or len(qt) < 2:
        return None
    lo, hi = max(qa.min(), qt.min()), min(qa.max(), qt.max())
    if hi <= lo:
        return None
    grid = np.linspace(lo, hi, 2001)
    diff = np.interp(grid, qt, lt) - np.interp(grid, qa, la)
    return float((np.exp(diff.mean()) - 1) * 100)


def load_published(reference: Path, suite: Suite | None = None) -> dict[str, list[tuple[float, float]]]:
    """Published curves of a suite; the files are JSON5-ish (trailing commas), parsed leniently."""
    import re

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    import re

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


FIELDS = ["codec", "setting", "file", "bytes", "bpp", "psnr", "snr", "rmse", "max_error", "encode_s", "decode_s"]


def read_rows(out: Path) -> list[dict]:
    """Rows of an earlier (possibly interrupted) run in `out`, for resuming."""
    path = out / "rows.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("bytes",):
            r[k] = int(r[k])
        for k in ("bpp", "psnr", "snr", "rmse", "max_error", "encode_s", "decode_s"):
            if r.get(k) not in (None, ""):
                r[k] = float(r[k])
    return rows


def append_rows(out: Path, rows: list[dict]) -> None:
    """Append finished rows at once, so an interrupted run keeps them."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "rows.csv"
    new = not path.is_file()
    # A results folder keeps the columns it was started with (image runs have no SNR column).
    fields = FIELDS if new else next(csv.reader(open(path, newline="")))
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerows(rows)
