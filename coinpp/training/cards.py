"""Model cards: written from a codec's config.json alone, in the same sections every time (model,
intended use, training data and licences, training procedure and hardware, encoder presets,
evaluation data, metrics and results, limitations).

Export, `coin postfilter` and `coin bench --record-in-codecs` rewrite the card whenever they change
the config, so the card never disagrees with it.

    python -m coinpp.training.cards codecs codecs-legacy    # rewrite every card in these folders
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..presets import EncoderPreset
from ..spec import SirenConfig, default_phases

# Training data by what the config's "data" names: (what it is, its licences).
TRAINING_DATA = {
    "train-images": ("32 photographs: 24 Unsplash photos downscaled to 1024 pixels on the long side, 7 scikit-image "
                     "samples and 1 matplotlib sample; none of them from the Kodak set",
                     "Unsplash licence (free use, no redistribution as a competing collection); the scikit-image "
                     "and matplotlib samples are public domain or CC0 (one, ihc, 'no known copyright restrictions')"),
    "speech": ("48 LibriSpeech clips (train-clean-100, 48 speakers, 10 minutes, 16 kHz mono)",
               "CC BY 4.0: LibriSpeech (Panayotov et al., 2015)"),
    "mri": ("a T1-weighted volume and an MR angiography of one subject, and the MNI ICBM152 2009a template; "
            "a 4-D EPI series held out for validation",
            "CC BY-NC 4.0 (Chris Rorden, McCausland Center for Brain Imaging) for the subject's scans; the "
            "template's licence is not stated by its distributor (nilearn); the EPI series is nibabel's (MIT)"),
    "era5": ("ERA5 hourly 2 m temperature over the UK (58-50 N, 10 W-2 E, 0.25 degrees), 1-24 March 2019: the first "
             "80 % of the hours",
             "Copernicus licence, attribution: Generated using Copernicus Climate Change Service information 2019"),
    "ncep": ("NCEP/NCAR Reanalysis 1 air temperature, 17 pressure levels on the 2.5-degree globe: daily means of "
             "four days of 2022 and monthly means of January and February 2022",
             "US-government data; credit: NCEP-NCAR Reanalysis 1 data provided by the NOAA PSL, Boulder, Colorado"),
}
EVALUATION_DATA = {
    "kodak": "the 24 Kodak images (768x512 and 512x768), never trained on",
    "speech": "the 15 LibriSpeech test-other clips (16 kHz), never trained on",
    "mri": "two volumes never trained on: a contrast-enhanced T1 (MR_Gd) and a T2-weighted head scan (T2w_axial)",
    "climate": "the last 20 % of the ERA5 hours (115 hourly fields), never trained on",
    "climate-global": "the last of the NCEP daily fields (17 levels), never trained on",
}
QUALITY_NOTE = {"image": "8-bit RGB output", "audio": "waveform normalised to [0, 1]",
                "mri": "whole volume, intensities normalised to [0, 1]", "climate": "over the file's value range"}
LIMITATIONS = {
    "image": "Trained on 32 photographs: photos unlike them (text, line art, medical or satellite images) code "
             "worse. At the same rate JPEG 2000 and HEVC still give higher PSNR on Kodak. Decoding at a finer "
             "resolution than coded is about as good as resizing the ordinary decode with Lanczos, not better.",
    "audio": "Trained on 10 minutes of read English speech at 16 kHz: music, noise and other rates code worse. "
             "PSNR is measured on the waveform; MP3 and Opus are perceptual codecs and may sound better at the "
             "same rate.",
    "mri": "Trained on three volumes: sequences, anatomies and scanners unlike them code worse. Lossy at 25-28 dB: "
           "for previews and thumbnails, not for diagnosis.",
    "climate": "Fitted to the fields of its training data: another region, variable or level needs its own codec "
               "(the UK codec gives about 18 K RMSE on global fields). The error is not bounded: single values can "
               "be off by several times the RMSE.",
}


def data_key(config: dict) -> str:
    data, name = str(config.get("training", {}).get("data", "")), config["name"]
    if name.startswith("ncep") or "ncep" in data:
        return "ncep"
    if name.startswith("era5") or "era5" in data:
        return "era5"
    return {"image": "train-images", "audio": "speech", "mri": "mri"}.get(config["modality"], "")


def model_text(config: dict) -> str:
    arch = SirenConfig.from_dict(config["model"])
    t = config.get("training", {})
    patch = config["patch"]
    if arch.cell:
        layout = (f"a latent grid, one latent per {arch.cell}x{arch.cell} cell at its centre, interpolated between "
                  f"centres (the network sees {arch.frequencies} harmonics of the position in its cell)")
    elif config["modality"] == "climate":
        layout = "one latent per whole field, the network seeing each point's place on the sphere"
    else:
        layout = f"one latent per {'x'.join(map(str, patch))}{'-sample' if len(patch) == 1 else ''} patch"
    quant = (f"{config['bits']}-bit symbols of the latent's principal components (one quantizer step)"
             if config.get("transform") == "principal-components" else
             f"{config['bits']}-bit symbols per latent dimension (mean ± {t.get('quantizer_clip_std', 3)} std)")
    if "context" in config:
        by = "the patch before's symbol" if len(patch) == 1 else "its left and upper neighbours"
        coding = (f"each symbol's table chosen by {by} ({config['context']['buckets']} buckets) and adapted "
                  "to the file")
    elif config["modality"] == "climate":
        coding = "each field coded as its difference from the one before"
    else:
        coding = "one static table per coded value"
    net = "GridModulatedSiren" if arch.cell else "LatentModulatedSiren"
    return (f"COIN++ {config['modality']} codec. {net} {arch.tag}: {arch.depth} sine layers of width {arch.width} "
            f"(w0 {arch.w0:g}) {'scaled and shifted' if arch.modulation == 'scale-shift' else 'shifted'} by a "
            f"{arch.latent_dim}-dimensional latent, {layout}. {quant}; entropy "
            f"coding with integer tables, {coding}."
            + supersample_text(config) + postfilter_text(config.get("postfilter")))


def supersample_text(config: dict) -> str:
    k = config.get("supersample", 1)
    if k == 1:
        return ""
    unit = {"mri": "voxel", "image": "pixel"}.get(config["modality"], "sample")
    return (f" Each decoded {unit} is the mean of the network at the centres of {k ** len(config['patch'])} equal "
            f"parts of the {unit} ({k} per axis), on any grid.")


def postfilter_text(entry: dict | None) -> str:
    if not entry:
        return ""
    if entry.get("kind") == "fir":
        return (f" A post-filter (a {entry['taps']}-tap linear filter fitted to the codec's decodes, or one the "
                "encoder fitted to the file and stored in it) restores the waveform at the file's own rate; "
                "`coin decode --no-postfilter` skips it.")
    if entry.get("kind") == "volume":
        side = entry["taps"]
        return (f" A post-filter (a linear filter over each voxel's {side}x{side}x{side} neighbourhood, fitted to the "
                "codec's decodes) restores the volume on its own grid; onto a finer grid that decode is "
                "interpolated trilinearly. `coin decode --no-postfilter` skips both.")
    return (" A post-filter (a small CNN) restores images decoded onto their own grid (onto a finer grid, they get "
            "its own-grid correction, resampled); `coin decode --no-postfilter` skips it.")


def use_text(config: dict, rung: str) -> str:
    return (f"{rung} Encode with `coin encode FILE -o FILE.coin --codec {config['name']}`; files name their codec "
            "and carry its hash, so they decode with this codec only.")


VALIDATION = {"pooled-with-finer": "unquantized; the patch and the finer crop weighted as in training",
              "quantized-with-rate": "the outer loss on held-out crops, latents rounded, rate included"}


def training_text(config: dict) -> str:
    t = config.get("training", {})
    lines = [] if not t else [
             f"- {t.get('steps', '?')} outer steps of meta-learning (best at step {t.get('best_step', '?')}), "
             f"batch {t.get('batch', '?')}, {t.get('inner_steps', '?')} inner steps"
             + (f" (the first {t['half_inner']} on alternate halves of each patch)" if t.get("half_inner") else "")
             + ", Adam at "
             f"{t.get('outer_lr', '?')} with cosine decay over the last 30 %, seed {t.get('seed', 0)}",
             f"- {t.get('wall_time_s', 0) / 60:.0f} minutes on {t.get('hardware', 'unknown hardware')}",
             f"- validation PSNR ({VALIDATION.get(t.get('val_metric'), 'unquantized')}) "
             f"{t.get('val_psnr_db', float('nan')):.2f} dB",
             f"- quantizer and entropy tables from {t.get('table_patches', '?')} training "
             f"{'fields' if config['modality'] == 'climate' else 'crops'}"]
    if t.get("init"):
        lines.insert(1, f"- started from the network of `{t['init']}` (its own training not counted below)")
    if t.get("quant_step"):
        lines.insert(1, f"- rate-aware meta-learning: the fitted latents took uniform noise of one quantizer step "
                        f"({t['quant_step']:g}) in the outer loss, which also paid {t.get('rate_weight', 0):g} (MSE "
                        f"per bit per sample) times their code length under a Laplace per latent dimension")
    if t.get("finer"):
        made = ("their Lanczos-3 reduction" if t.get("finer_filter") == "lanczos" else "their block means")
        lines.insert(1, f"- sub-sample supervision: crops {t['finer']}x finer per axis, the patch {made}; "
                        f"the outer loss also scores the network between the patch's samples against the "
                        f"crop (weight {t.get('finer_weight', 1.0)}), so a finer decode has learned what lies there")
    pf = (config.get("postfilter") or {}).get("training")
    if pf and config["postfilter"].get("kind") == "fir":
        lines.append(f"- post-filter: {config['postfilter']['taps']} taps by least squares from the decodes of "
                     f"{pf.get('clips')} training clips to the originals, {pf.get('wall_time_s', 0) / 60:.0f} minutes "
                     f"on {pf.get('hardware', 'unknown hardware')}; {pf.get('val_psnr_gain_db', 0):+.3f} dB on "
                     f"{pf.get('val_clips')} held-out clips" + (f"; `{pf['command']}`" if pf.get("command") else ""))
    elif pf and config["postfilter"].get("kind") == "volume":
        side = config["postfilter"]["taps"]
        lines.append(f"- post-filter: {side}x{side}x{side} taps and a constant by least squares from the decodes of "
                     f"{pf.get('volumes')} training volumes at half resolution to the volumes, "
                     f"{pf.get('wall_time_s', 0) / 60:.0f} minutes on {pf.get('hardware', 'unknown hardware')}; "
                     f"{pf.get('val_psnr_gain_db', 0):+.3f} dB on {pf.get('val_volumes')} held-out volume"
                     + ("s" if pf.get("val_volumes") != 1 else "")
                     + (f"; `{pf['command']}`" if pf.get("command") else ""))
    elif pf:
        views = config["postfilter"].get("views", 1)
        lines.append(f"- post-filter: {config['postfilter']['layers']} convolutions (3x3, "
                     f"{config['postfilter']['channels']} channels), {pf.get('steps')} Adam steps on "
                     f"{pf.get('crops')} decoded {pf.get('crop_size')}-pixel crops of the training photos"
                     + (f" starting from `{pf['init']}`'s filter" if pf.get("init") else "") + ", "
                     f"{pf.get('wall_time_s', 0) / 60:.0f} minutes on {pf.get('hardware', 'unknown hardware')}; "
                     f"{pf.get('val_psnr_gain_db', 0):+.3f} dB on held-out crops"
                     + (f", {pf['val_psnr_gain_views_db']:+.3f} dB averaged over {views} views as decoding does"
                        if "val_psnr_gain_views_db" in pf else "")
                     + (f"; `{pf['command']}`" if pf.get("command") else ""))
        if "views_measured" in pf:
            gains = pf["views_measured"]["gain_db"]
            lines.append(f"- post-filter gain by views averaged, on {pf['views_measured']['on']}: "
                         + ", ".join(f"{v} {'view' if v == '1' else 'views'} {g:+.3f} dB" for v, g in gains.items()))
    return "\n".join(lines) or "Not recorded."


def presets_text(config: dict) -> str:
    items = (config.get("presets") or {"default": default_phases(config)})["default"]
    preset = EncoderPreset.from_list("default", items)
    words = [f"{preset.sgd_steps} meta-learned SGD steps"
             + (f" (the first {preset.half_steps} on alternate halves of each patch's samples)"
                if preset.half_steps else "")]
    if preset.adam is not None:
        a = preset.adam
        words.append(f"{a.steps} Adam evaluations at {a.lr:g}"
                     + (" quantizer steps" if a.lr_unit == "quantizer-step" else "")
                     + (" through the quantizer" if a.quantized else "")
                     + (f" with a rate term of {a.rate_lambda:g} MSE per bit" if a.rate_lambda else ""))
    if preset.filter is not None:
        words.append(f"{preset.filter.steps} Adam evaluations on the post-filtered image's error")
    if preset.rd_lambda:
        words.append(f"rate-distortion rounding (λ {preset.rd_lambda:g})")
    fast = ("`--preset fast` skips the steps through the post-filter; " if preset.filter is not None else "")
    return (f"Default: {', then '.join(words)}. {fast}`--preset max` doubles the "
            f"{'Adam and filter' if preset.adam is not None else 'SGD'} steps. Every preset writes files that decode "
            "the same way.")


def results_text(config: dict) -> str:
    m = config.get("measured")
    if not m:
        return "Not measured."
    unit = m.get("unit", "bpp")
    lines = [f"- rate {m[unit]:.4g} {unit} (real file sizes, headers included)",
             f"- PSNR {m['psnr_db']:.2f} dB ({QUALITY_NOTE.get(config['modality'], '')}"
             + (", through the post-filter" if "postfilter" in config else "") + ", mean over files)"]
    if "snr_db" in m:
        lines.append(f"- SNR {m['snr_db']:.2f} dB")
    if "rmse" in m:
        lines.append(f"- RMSE {m['rmse']:.4g}, largest error {m['max_error']:.4g} (the variable's units)")
    lines.append(f"- encode {m['encode_s']:.1f} s, decode {m['decode_s']:.2f} s per file"
                 + (f" on {m['hardware']}" if m.get("hardware") else ""))
    if m.get("command"):
        lines.append(f"- reproduce: `{m['command']}`")
    return "\n".join(lines)


def model_card(config: dict, rung: str = "") -> str:
    """The card of a codec from its config; `rung` says where it stands among the installed codecs."""
    data = TRAINING_DATA.get(data_key(config))
    m = config.get("measured") or {}
    return "\n".join([
        f"# {config['name']}", "", "## Model", "", model_text(config), "",
        "## Intended use", "", use_text(config, rung), "",
        "## Training data", "", (f"{data[0]}.\n\nLicences: {data[1]}." if data else "Not recorded."), "",
        "## Training procedure and hardware", "", training_text(config), "",
        "## Encoder presets", "", presets_text(config), "",
        "## Evaluation data", "", sentence(EVALUATION_DATA.get(m.get("data", ""), "not measured")), "",
        "## Metrics and results", "", results_text(config), "",
        "## Limitations", "", LIMITATIONS.get(config["modality"], ""), ""])


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def rung_text(name: str, root: Path) -> str:
    """Where a codec stands, from its root's ladders.json."""
    path = root / "ladders.json"
    if root.name == "codecs-legacy" or not path.is_file():
        return ("A codec of an earlier family, kept so that files it wrote still decode; the ladders of "
                "`coin codecs` are better at every rate." if root.name == "codecs-legacy" else "")
    doc = json.loads(path.read_text())
    also = doc.pop("also", {})
    for modality, lad in doc.items():
        if name in lad["rungs"]:
            q = lad["rungs"].index(name) + 1
            default = " (the default)" if lad["default"] == name else ""
            return f"Rung {q} of {len(lad['rungs'])} of the {modality} ladder: `coin encode -q {q}`{default}."
    return f"Off the ladders: {also[name]}." if name in also else ""


def write_card(folder: Path) -> None:
    """Rewrite a codec folder's MODEL_CARD.md from its config.json (atomically)."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    path = folder / "MODEL_CARD.md"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(model_card(config, rung_text(config["name"], folder.parent)))
    tmp.replace(path)


if __name__ == "__main__":
    for root in map(Path, sys.argv[1:]):
        for cfg in sorted(root.glob("*/config.json")):
            write_card(cfg.parent)
            print(cfg.parent)
