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

from .. import codec as codecs
from .. import modalities
from ..decoder import decode_bytes
from ..device import hardware_description
from ..encoder import Encoder, encode_each
from ..errors import InputError
from ..modalities import Modality, Signal
from ..modalities.image import to_uint8
from ..training.cards import write_card
from .baselines import Baseline
from .metrics import extra_measures
from .rd import matched


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
            **modality.quality(signal, decoded), **extra_measures(modality, signal, decoded)}


def coin_rows(files: list[Path], codec_names: list[str], device: str = "auto",
              tick: Callable[[str], None] = lambda s: None,
              done: set[tuple[str, str, str]] | None = None, suite: Suite | None = None,
              postfilter: bool = True, preset: str = "default") -> list[dict]:
    """One row per (file, codec): bytes, rate, quality, encode and decode seconds. Rows in `done`
    (codec, setting, file) are skipped, so an interrupted run resumes. `postfilter=False` measures
    the normative decode (what the bitstream alone defines), skipping the codecs' post-filters.
    Codecs of one network fit each file once (encoder.encode_each); each row's encode time counts
    the shared work in full."""
    done = done or set()
    suite = suite or SUITES["kodak"]
    modality = modalities.get(suite.modality)
    encoders = [Encoder(codecs.load(n), modality, preset, device=device) for n in codec_names]
    rows = []
    for path in files:
        todo = [e for e in encoders if (e.codec.name, f"b{e.codec.bits}", path.name) not in done]
        for e in encoders:
            if e not in todo:
                tick(f"{path.name} {e.codec.name}")
        if not todo:
            continue
        signal = read_signal(modality, path, suite)
        for result in encode_each(signal, todo):
            c = result.encoder.codec
            t0 = time.perf_counter()
            decoded, _ = decode_bytes(result.encoded.data, device=device, postfilter=postfilter)
            t_dec = time.perf_counter() - t0
            rows.append({"codec": c.name, "setting": f"b{c.bits}", "file": path.name,
                         **_measures(modality, suite.unit, len(result.encoded.data), signal, decoded),
                         "encode_s": result.seconds, "decode_s": t_dec})
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
        for k in ("bpp", "psnr", "snr", "ms_ssim", "pesq", "stoi", "rmse", "max_error", "encode_s", "decode_s",
                  "bytes"):
            if all(r.get(k) not in (None, "") for r in rs):
                point[k] = float(np.mean([float(r[k]) for r in rs]))
        out.setdefault(codec, []).append(point)
    for pts in out.values():
        pts.sort(key=lambda p: p["bpp"])
    return out








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
        for k in ("snr", "ms_ssim", "pesq", "stoi", "rmse", "max_error"):
            if all(k in p for p in pts):
                res[k.replace("_", "-") if k == "ms_ssim" else k] = [p[k] for p in pts]  # CompressAI: "ms-ssim"
        res.update({"setting": [p["setting"] for p in pts], "encode_s": [p["encode_s"] for p in pts],
                    "decode_s": [p["decode_s"] for p in pts], "files": [p["files"] for p in pts]})
        doc = {"name": codec, "unit": suite.unit, "description": descriptions.get(codec, codec), "results": res}
        (out / f"{codec}.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    if suite.anchor in summary:
        (out / f"matched-{suite.anchor}.json").write_text(json.dumps(matched(summary, suite.anchor), indent=1)
                                                          + "\n")
    return summary


def record_in_codecs(summary: dict[str, list[dict]], suite: str, command: str, unit: str = "bpp") -> list[str]:
    """Write the measured point of each coin codec into its config.json ("measured", with this machine)
    and write its model card again from the config. Neither is part of the codec hash, so files
    written before stay decodable."""
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
                           "decode_s": round(p["decode_s"], 2), "hardware": hardware_description(),
                           "command": command}
        for k in ("snr", "rmse", "max_error"):
            if k in p:
                cfg["measured"][k if k != "snr" else "snr_db"] = round(p[k], 4)
        tmp = cfg_path.with_name(cfg_path.name + ".tmp")
        tmp.write_text(json.dumps(cfg, indent=2) + "\n")
        tmp.replace(cfg_path)
        write_card(folder)
        done.append(name)
    codecs.clear_cache()
    return done












FIELDS = ["codec", "setting", "file", "bytes", "bpp", "psnr", "snr", "ms_ssim", "pesq", "stoi", "rmse", "max_error",
          "encode_s", "decode_s"]


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
        for k in ("bpp", "psnr", "snr", "ms_ssim", "pesq", "stoi", "rmse", "max_error", "encode_s", "decode_s"):
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
