"""`coin bench`: rate-distortion of coin codecs and baselines on a suite, with plots and BD-rates."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import click
import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .. import codec as codecs
from .. import modalities
from ..errors import InputError
from ..evaluation import baselines as baseline_codecs
from ..evaluation import bench as benchmod
from ..evaluation import bounded
from ..evaluation import upscale as upscale_eval
from ..evaluation.plots import load_published, plot, plot_bounded, plot_rmse
from ..evaluation.rd import at_rmse, bd_report, curves
from ..ladders import ladder_for
from .common import DEVICE, console, parse_list


@click.command()
@click.argument("suite")
@click.option("--codecs", "codec_list",
              help="Comma-separated: coin codec names ('default': the suite's default codec) and baselines "
                   "(default: kodak: default,jpeg,jpeg2000,webp,avif,hevc-444,jpegxl; speech: default,mp3,opus).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Results folder; rows already in it are not measured again (resume).")
@click.option("--anchor", help="Anchor of the BD-rate table (default: kodak jpeg, speech mp3).")
@click.option("--data-root", default="../shared/data", show_default=True, type=click.Path(file_okay=False),
              help="Where named suites (kodak, speech) live.")
@click.option("--reference", default="../shared/reference", show_default=True, type=click.Path(file_okay=False),
              help="Published curves to overlay (dashed) and to compare against.")
@click.option("--limit", type=int, help="Only the first N files.")
@click.option("--record-in-codecs", is_flag=True, help="Write the measured points into the codecs' cards.")
@click.option("--no-postfilter", "no_postfilter", is_flag=True,
              help="Measure the normative decode: skip the codecs' post-filters (use a separate --out).")
@click.option("--preset", type=click.Choice(["fast", "default", "max"]), default="default", show_default=True,
              help="The coin codecs' encoder preset (use a separate --out for each).")
@click.option("--max-error", "max_errors",
              help="MRI and climate: measure at these maximum errors instead (comma-separated, in the data's "
                   "units; 0 = lossless): file size of coin with its residual layer against SZ3, ZFP, JPEG-LS, "
                   "JPEG 2000 lossless and gzip, each decode's largest error measured.")
@click.option("--upscale", "upscale",
              help="Decoding finer than coded, against ground truth: code each file reduced by these factors "
                   "(comma-separated; images halved and decoded at each factor) and compare coin's finer decode "
                   "and the standard resamplers of its ordinary decode with the real full-resolution file.")
@DEVICE
def bench(suite: str, codec_list: str, out: str, anchor: str, data_root: str, reference: str, limit: int | None,
          record_in_codecs: bool, no_postfilter: bool, preset: str, max_errors: str | None, upscale: str | None,
          device: str) -> None:
    """Rate-distortion of coin codecs and baselines on SUITE (a named suite or a folder):
    real file sizes, PSNR, times; JSON, CSV, a plot and a BD-rate table."""
    if upscale is not None:
        spec, files = benchmod.suite_files(suite, Path(data_root))
        codec_name = None if codec_list in (None, "default") else codec_list.strip()
        if codec_name is not None and "," in codec_name:
            raise InputError("--upscale measures one coin codec (--codecs NAME; default: the suite's default)")
        bench_upscale(spec, files[:limit], parse_list(upscale, "--upscale", float, 1.0, 16.0), codec_name,
                      Path(out), device)
        return
    if max_errors is not None:
        spec, files = benchmod.suite_files(suite, Path(data_root))
        bench_bounded(spec, files[:limit], parse_bounds(max_errors), codec_list, Path(out), device)
        return
    if (no_postfilter or preset != "default") and record_in_codecs:  # the cards give what coin writes by default
        raise InputError("--record-in-codecs records the default preset's post-filtered output: not with "
                         "--no-postfilter or another --preset")
    t_start = time.perf_counter()
    spec, files = benchmod.suite_files(suite, Path(data_root))
    files = files[:limit]
    anchor = anchor or spec.anchor
    out_dir = Path(out)
    names = [n.strip() for n in (codec_list or spec.codecs).split(",") if n.strip()]
    baselines = [baseline_codecs.BY_NAME[n] for n in names if n in baseline_codecs.BY_NAME]
    wrong = [b.name for b in baselines if b.modality != spec.modality]
    if wrong:
        raise InputError(f"baselines {', '.join(wrong)} are not for {spec.modality}")
    coin_names = [codecs.default_for(spec.modality) if n == "default" else n
                  for n in names if n not in baseline_codecs.BY_NAME]
    for n in coin_names:
        if codecs.load(n).modality != spec.modality:  # unknown names fail here, before any work
            raise InputError(f"codec {n} is not a {spec.modality} codec")
    runnable = []
    for b in baselines:
        why = b.check()
        if why:
            click.echo(f"coin: warning: skipping baseline {b.name}: {why}", err=True)
        else:
            runnable.append(b)
    if any(b.name == "hevc-444" for b in runnable):
        console.print("note: HEVC intra 4:4:4 (libheif/x265) stands in for BPG, which has no package here")
    rows, n_new = measure(spec, files, coin_names, runnable, out_dir, device, not no_postfilter, t_start, preset)
    wanted = set(coin_names) | {b.name for b in runnable}
    rows = [r for r in rows if r["codec"] in wanted and r["file"] in {p.name for p in files}]
    decode = "; normative decode, post-filter skipped" if no_postfilter else ""
    desc = {n: f"coin codec {n} (real file sizes, headers included{decode})" for n in coin_names}
    desc.update({b.name: b.description for b in runnable})
    summary = benchmod.write_results(out_dir, rows, desc, spec)
    measured = curves(summary)
    published = load_published(Path(reference), spec)
    coin_curves = {re.sub(r"-b\d+$", "", n) for n in coin_names}
    what = "images" if spec.modality == "image" else "files"
    plot(measured, published, out_dir / "rd.png", f"{spec.name}: {len(files)} {what}",
         max_bpp=spec.max_rate if published else None, suite=spec, coin_curves=coin_curves)

    print_points(summary, spec)
    if spec.target_rmse is not None:
        meta = benchmod.read_signal(modalities.get(spec.modality), files[0], spec).meta
        print_at_rmse(summary, spec, meta, out_dir, coin_names)
        units = str(meta["attrs"].get("units", ""))
        plot_rmse(summary, out_dir / "rmse.png", f"{spec.name}: {', '.join(p.name for p in files)}",
                  coin_curves, units, spec.target_rmse)
    report = bd_report(measured, published, anchor, spec.published_comparable, coin_curves)
    if report["vs_anchor"]:
        bt = Table("codec", f"BD-rate vs {anchor}")
        for name, value in report["vs_anchor"].items():
            bt.add_row(name, "no overlap" if value is None else f"{value:+.1f} %")
        console.print(bt)
    (out_dir / "bd-rate.json").write_text(json.dumps(report, indent=1) + "\n")
    wall = time.perf_counter() - t_start
    console.print(f"{len(files)} files, {len(rows)} rows ({n_new} new) in {wall:.0f} s; "
                  f"results, rd.png and bd-rate.json in {out}")
    if record_in_codecs:
        command = "coin bench " + " ".join(sys.argv[2:]).replace(" --record-in-codecs", "")
        for name in benchmod.record_in_codecs(summary, spec.name, command, spec.unit):
            console.print(f"recorded in codec {name}")


def measure(spec: benchmod.Suite, files: list[Path], coin_names: list[str], runnable: list, out_dir: Path,
            device: str, postfilter: bool, t_start: float, preset: str = "default") -> tuple[list[dict], int]:
    """Every row of the suite, those already in `out_dir` kept (resume): file by file, so an interrupted
    run keeps whole files. Returns (all rows, how many this run measured)."""
    previous = benchmod.read_rows(out_dir)
    done = {(r["codec"], r["setting"], r["file"]) for r in previous}
    total = len(files) * (len(coin_names) + sum(len(b.settings) for b in runnable))
    rows, n_new = list(previous), 0
    with Progress(TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("bench", total=total)

        def tick(what: str) -> None:
            progress.update(task, advance=1, description=what)

        for i, path in enumerate(files, 1):
            new = (benchmod.coin_rows([path], coin_names, device, tick, done, spec, postfilter=postfilter,
                                      preset=preset) if coin_names else [])
            for b in runnable:
                new += benchmod.baseline_rows([path], b, done, tick, spec)
            benchmod.append_rows(out_dir, new)
            rows += new
            n_new += len(new)
            if new and not console.is_terminal:  # a log file sees no progress bar: a line per file instead
                console.print(f"{path.name}: {len(new)} rows ({i}/{len(files)} files, "
                              f"{time.perf_counter() - t_start:.0f} s)")
    return rows, n_new


def print_points(summary: dict, spec: benchmod.Suite) -> None:
    extra = {"audio": ["snr", "pesq", "stoi"], "climate": ["rmse", "max_error"], "image": ["ms_ssim"]}.get(
        spec.modality, [])
    t = Table("codec", "setting", spec.unit, "PSNR dB", *extra, "encode s", "decode s")
    for codec, pts in summary.items():
        for p in pts:
            t.add_row(codec, p["setting"], f"{p['bpp']:.4f}", f"{p['psnr']:.2f}",
                      *[f"{p.get(k, float('nan')):.4g}" for k in extra], f"{p['encode_s']:.2f}", f"{p['decode_s']:.2f}")
    console.print(t)


def print_at_rmse(summary: dict, spec: benchmod.Suite, meta: dict, out_dir: Path, coin_names: list[str]) -> None:
    """Each curve's rate and compression ratio at the suite's target RMSE (interpolated), and each
    coin point against the other curves; recorded in at-rmse-<target>.json."""
    bits_raw = 8 * np.dtype(meta.get("dtype", "<f4")).itemsize
    rec = at_rmse(summary, spec.target_rmse, bits_raw, set(coin_names) & set(summary))
    t = Table("curve", f"{spec.unit} at RMSE {spec.target_rmse:g}", "compression ratio")
    for name, c in rec["curves"].items():
        t.add_row(name, "outside the measured range" if c is None else f"{c['rate']:.4f}",
                  "" if c is None else f"{c['ratio']:.0f}x")
    console.print(t)
    if rec["coin_points_matched"]:
        mt = Table("coin point", "RMSE", spec.unit, *[f"{o} / coin" for o in rec["others"]])
        for row in rec["coin_points_matched"]:
            mt.add_row(row["codec"], f"{row['rmse']:.4g}", f"{row['rate']:.4f}",
                       *["-" if row[f"{o}_over_coin"] is None else f"{row[f'{o}_over_coin']:.2f}x"
                         for o in rec["others"]])
        console.print(mt)
    (out_dir / f"at-rmse-{spec.target_rmse:g}.json").write_text(json.dumps({**rec, "unit": spec.unit}, indent=1) + "\n")


def parse_bounds(text: str) -> list[float]:
    try:
        bounds = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--max-error {text!r}: expected numbers, e.g. 0.1,0.5,1") from None
    if not bounds or any(not (b >= 0 and b < float("inf")) for b in bounds):
        raise InputError("--max-error needs numbers >= 0")
    return bounds


def bench_upscale(spec: benchmod.Suite, files: list[Path], scales: list[float], codec_name: str | None,
                  out_dir: Path, device: str) -> None:
    """coin's finer decode against resampling its ordinary decode, both against ground truth. Rows in
    upscale.json, a table in upscale.md, image crops in crops-<scale>x.png (truth, coin, resamplers)."""
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, path in enumerate(files):
        new, outputs = upscale_eval.measure_file(spec, path, scales, codec_name, device)
        for r in new:
            console.print(f"{path.name} {r['scale']:g}x {r['method']}: PSNR {r['psnr']:.2f} dB, RMSE {r['rmse']:.4g}, "
                          f"max error {r['max_error']:.4g}")
        rows += new
        (out_dir / "upscale.json").write_text(json.dumps(rows, indent=1) + "\n")
        if i == 0 and spec.modality == "image":
            for s, outs in outputs.items():
                Image.fromarray(upscale_eval.crop_strip(outs)).save(out_dir / f"crops-{s:g}x.png")
                (out_dir / f"crops-{s:g}x.txt").write_text(f"{path.name}, left to right: {', '.join(outs)}\n")
    table = upscale_eval.summary_table(rows)
    (out_dir / "upscale.md").write_text(table)
    console.print(table)


def bench_bounded(spec: benchmod.Suite, files: list[Path], bounds: list[float], codec_list: str | None,
                  out_dir: Path, device: str) -> None:
    """File size at equal maximum error: coin (every rung tried, the smallest file kept, as `coin encode
    --max-error` does) against the bounded and lossless codecs of the modality. Rows in bounded.json,
    a table in bounded.md, a plot in bounded.png."""
    modality = modalities.get(spec.modality)
    if spec.modality not in bounded.BY_MODALITY:
        raise InputError(f"--max-error applies to MRI and climate suites, not {spec.modality}")
    names = [n.strip() for n in (codec_list or "").split(",") if n.strip()]
    coin_names = list(ladder_for(spec.modality).rungs) if not names or names == ["default"] else names
    runnable = []
    for b in bounded.BY_MODALITY[spec.modality]:
        why = b.check()
        if why:
            click.echo(f"coin: warning: skipping {b.name}: {why}", err=True)
        else:
            runnable.append(b)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in files:
        signal = benchmod.read_signal(modality, path, spec)
        stored = bounded.stored(modality, signal)
        mask = modality.missing(signal.meta, signal.spatial)
        usable = [b for b in bounds if b or stored.integer]
        new = bounded.measure_coin(modality, signal, coin_names, usable, device, codecs.load)
        for bound in usable:
            for b in runnable:
                if (b.lossless_only and bound) or (b.integer_only and not stored.integer):
                    continue
                new.append(bounded.measure_baseline(b, signal.exact, bound, stored, mask) | {"bound": bound})
        new.sort(key=lambda r: (r["bound"], r["codec"] != "coin"))
        for r in new:
            r |= {"file": path.name, "kept": r["max_error"] <= r["bound"] + 1e-9}
            console.print(f"{path.name} bound {r['bound']:g}: {r['codec']} {r['bytes']:,} bytes, max error "
                          f"{r['max_error']:.4g}{'' if r['kept'] else ' (over the bound)'}")
        rows += new
        (out_dir / "bounded.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out_dir / "bounded.md").write_text(bounded.figure_rows(rows))
    plot_bounded(rows, out_dir / "bounded.png", f"{spec.name}: {', '.join(p.name for p in files)}")
    console.print(bounded.figure_rows(rows))
