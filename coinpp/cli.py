"""The `coin` command line. Every user mistake ends as one line on stderr and exit status 1."""

from __future__ import annotations

import json
import math
import re
import sys
import time
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from . import codec as codecs
from . import modalities
from .errors import CoinError, InputError
from .files import atomic_write, atomic_write_bytes, check_writable
from .modalities import Signal

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

DEVICE = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                      help="Where to run the network (auto: CUDA when present).")
FORCE = click.option("--force", is_flag=True, help="Overwrite an existing output.")
HUGE = click.option("--allow-huge", is_flag=True, help="Lift the size caps for a trusted, very large file.")


def _read_coin(path: str) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    return p.read_bytes()


def _parse_size(text: str | None) -> tuple[int, ...] | None:
    """'WxH' (image convention) -> (H, W) spatial order."""
    if text is None:
        return None
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        raise InputError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 1536x1024") from None
    if len(parts) < 2 or min(parts) < 1:
        raise InputError(f"--size {text!r}: expected positive WIDTHxHEIGHT")
    return (parts[1], parts[0], *parts[2:])


def _parse_axis(text: str | None, option: str) -> tuple[float, float, int] | None:
    """'FIRST:LAST:N' -> (first, last, n)."""
    if text is None:
        return None
    try:
        a, b, n = text.split(":")
        first, last, count = float(a), float(b), int(n)
    except ValueError:
        raise InputError(f"{option} {text!r}: expected FIRST:LAST:N, e.g. 50:58:161") from None
    if count < 1 or not (math.isfinite(first) and math.isfinite(last)):
        raise InputError(f"{option} {text!r}: N must be positive and the ends finite")
    return first, last, count


class CoinGroup(click.Group):
    """Turns every CoinError into one line on stderr and exit status 1 (never a traceback)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CoinError as e:
            click.echo(f"coin: error: {e}", err=True)
            ctx.exit(e.exit_code)


@click.group(cls=CoinGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="coinpp", prog_name="coin")
def cli() -> None:
    """coin: store images as latent vectors of a meta-learned neural network (COIN++)."""


BATCH_OPTIONS = [
    click.option("--shard", help="Only this share of a folder: I/N with 0 <= I < N (for job arrays)."),
    click.option("--jobs", default=1, show_default=True, help="Threads reading files ahead (folders)."),
    click.option("--json", "as_json", is_flag=True, help="Print the folder report as JSON (stdout)."),
]


def batch_options(f):
    for option in reversed(BATCH_OPTIONS):
        f = option(f)
    return f


@cli.command()
@click.argument("input", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Output .coin file, a folder when INPUT is one, or - for stdout.")
@click.option("--modality", "modality_name", help="Modality of data read from stdin (INPUT '-'), e.g. image.")
@click.option("--method", type=click.Choice(["coin++", "coin"]), default="coin++", show_default=True,
              help="coin++: latents for a shipped base network; coin: overfit one small network to this file.")
@click.option("--codec", "codec_name", help="[coin++] Codec name (see `coin codecs`) or folder; default per modality.")
@click.option("--steps", type=int, help="[coin++] Gradient steps per patch (default: the codec's).")
@click.option("--bpp", type=float, help="[coin] Target bits per pixel/sample; picks the network size (default 0.3).")
@click.option("--arch", help="[coin] Network as LAYERSxWIDTH, e.g. 10x28 (instead of --bpp).")
@click.option("--iters", type=int, default=2000, show_default=True, help="[coin] Adam iterations.")
@click.option("--time-limit", type=float, help="[coin] Stop after this many seconds with the best so far.")
@click.option("--lr", type=float, default=None, help="[coin] Adam learning rate (default 2e-4 as published).")
@click.option("--weight-bits", type=int, default=16, show_default=True,
              help="[coin] 16: half floats; 8-15: uniform per-tensor ranges.")
@click.option("--batch-points", type=int,
              help="[coin] Random coordinates per step (default 65536; 0: all, as published).")
@click.option("--seed", type=int, default=0, show_default=True, help="[coin] Seed of init and sampling.")
@click.option("--fast", is_flag=True,
              help="[coin++] Skip the encoder's last steps, those through the post-filter (image codecs with "
                   "refine filter_steps): about half the default codec's encode time, a little less quality at "
                   "the same rate; the file decodes the same way.")
@click.option("--no-check", is_flag=True, help="Skip decoding the result to report its quality.")
@click.option("--var", help="NetCDF: the variable to code (default: the only latitude/longitude field).")
@batch_options
@DEVICE
@FORCE
def encode(input: str, output: str, modality_name: str | None, method: str, codec_name: str | None,
           steps: int | None, bpp: float | None, arch: str | None, iters: int, time_limit: float | None,
           lr: float | None, weight_bits: int, batch_points: int | None, seed: int, fast: bool, no_check: bool,
           var: str | None, shard: str | None, jobs: int, as_json: bool, device: str, force: bool) -> None:
    """Compress INPUT (a file, a folder, or - for stdin) into .coin.

    A folder is encoded recursively into the folder -o, mirroring its tree (a/b.png -> a/b.png.coin).
    """
    from .pipeline import decode_bytes, encode_signal

    if Path(input).is_dir():
        if var is not None:
            raise InputError("--var applies to single files")
        if method != "coin++":
            raise InputError("folders are encoded with --method coin++ (COIN fits one file at a time)")
        _encode_folder(input, output, codec_name, steps, not no_check, shard, jobs, as_json, device, force,
                       not fast)
        return
    if input == "-":
        if modality_name is None:
            raise InputError("reading stdin needs --modality (e.g. --modality image)")
        modality = modalities.get(modality_name)
    else:
        modality = modalities.for_path(Path(input))
    to_stdout = output == "-"
    if not to_stdout:
        check_writable(Path(output), force)
    if method == "coin++":
        given = [n for n, v in (("--bpp", bpp), ("--arch", arch), ("--time-limit", time_limit), ("--lr", lr),
                                ("--batch-points", batch_points)) if v is not None]
        if given:
            raise InputError(f"{', '.join(given)} only apply to --method coin")
    elif codec_name is not None or steps is not None or fast:
        raise InputError("--codec, --steps and --fast only apply to --method coin++")
    if var is not None and modality.name != "climate":
        raise InputError(f"--var applies to NetCDF files, not to {modality.name}")
    if method == "coin" and modality.absolute_coordinates:
        raise InputError(f"--method coin does not handle {modality.name} data yet; use coin++")
    options = {"var": var} if var is not None else {}
    signal = _read_stdin(modality, options) if input == "-" else modality.read(Path(input), **options)
    t0 = time.perf_counter()
    if method == "coin":
        data, label = _encode_overfit(signal, modality, bpp, arch, iters, time_limit, lr, weight_bits,
                                      batch_points, seed, device)
    else:
        codec = codecs.load(codec_name or codecs.default_for(modality.name))
        data = encode_signal(signal, modality, codec, steps, device, through_postfilter=not fast).data
        label = f"codec {codec.name}" + (", --fast" if fast else "")
    t_enc = time.perf_counter() - t0
    if to_stdout:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        atomic_write_bytes(Path(output), data, force)
    rate = modality.rate(len(data), signal.spatial, signal.meta)
    line = f"{input} -> {output}: {len(data):,} bytes, " + ", ".join(f"{v:.4f} {k}" for k, v in rate.items())
    if not no_check:
        decoded, _ = decode_bytes(data, device=device)
        line += ", " + modality.describe_quality(modality.quality(signal, decoded), signal.meta)
    (err_console if to_stdout else console).print(f"{line} ({label}, encode {t_enc:.1f} s)")


def _read_stdin(modality, options: dict) -> Signal:
    """Modalities read files, so stdin goes through a private temporary file."""
    import tempfile

    data = sys.stdin.buffer.read()
    if not data:
        raise InputError("stdin is empty")
    with tempfile.TemporaryDirectory(prefix="coin-") as tmp:
        path = Path(tmp) / ("stdin" + modality.extensions[0])
        path.write_bytes(data)
        return modality.read(path, **options)


def _encode_overfit(signal, modality, bpp, arch, iters, time_limit, lr, weight_bits, batch_points, seed,
                    device) -> tuple[bytes, str]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from . import overfit

    if bpp is not None and arch is not None:
        raise InputError("give --bpp or --arch, not both")
    if batch_points is not None and batch_points < 0:
        raise InputError("--batch-points must be 0 (all) or positive")
    if time_limit is not None and time_limit <= 0:
        raise InputError("--time-limit must be positive")
    if lr is not None and not 0 < lr < 1:
        raise InputError("--lr must be in (0, 1)")
    net_arch = overfit.parse_arch(arch, len(signal.spatial), signal.channels) if arch else None
    with Progress(TextColumn("fitting"), BarColumn(), TextColumn("{task.completed}/{task.total} it"),
                  TextColumn("best {task.fields[psnr]:.2f} dB"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), disable=not sys.stderr.isatty(), transient=True) as bar:
        task = bar.add_task("fit", total=iters, psnr=0.0)
        result = overfit.encode_signal(signal, modality, net_arch, bpp, iters, lr or overfit.DEFAULT_LR,
                                       time_limit, overfit.DEFAULT_BATCH_POINTS if batch_points is None
                                       else batch_points, weight_bits, seed, device,
                                       on_progress=lambda it, p: bar.update(task, completed=it, psnr=p))
    r = result.report
    label = (f"COIN {result.arch.tag}, {result.arch.params:,} weights at {weight_bits} bits, "
             f"{r.iterations} iterations, best at {r.best_iteration}")
    return result.data, label


@cli.command()
@click.argument("input", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Output file (format by extension), a folder when INPUT is one, or - for stdout.")
@click.option("--scale", type=float, help="Decode at SCALE times the original resolution (e.g. 2).")
@click.option("--size", help="Decode at this size, WIDTHxHEIGHT.")
@click.option("--sample-rate", type=int, help="Audio: decode at this sample rate, same duration (e.g. 48000).")
@click.option("--voxel-size", help="MRI: decode at this voxel size in mm, X,Y,Z (same field of view).")
@click.option("--grid", type=float, help="Climate: decode onto a regular grid of this spacing in degrees.")
@click.option("--lat", "lat_spec", help="Climate: latitudes FIRST:LAST:N (e.g. 50:58:161).")
@click.option("--lon", "lon_spec", help="Climate: longitudes FIRST:LAST:N (e.g. -10:2:241).")
@click.option("--ext", help="Output format for folders and stdout, e.g. png (default: the original's).")
@click.option("--no-postfilter", "no_postfilter", is_flag=True,
              help="Images: skip the codec's post-filter and write the network's own output (the normative "
                   "decode).")
@click.option("--postfilter-views", "postfilter_views", type=click.IntRange(1, 8), default=None,
              help="Images: average the post-filter over this many flipped/transposed views (1-8) instead of "
                   "the codec's choice: fewer decode faster, more gain a little.")
@batch_options
@DEVICE
@FORCE
@HUGE
def decode(input: str, output: str, scale: float | None, size: str | None, sample_rate: int | None,
           voxel_size: str | None, grid: float | None, lat_spec: str | None, lon_spec: str | None,
           ext: str | None, no_postfilter: bool, postfilter_views: int | None, shard: str | None, jobs: int,
           as_json: bool, device: str, force: bool, allow_huge: bool) -> None:
    """Decompress a .coin file (or a folder of them, or - for stdin), at its own or any other resolution."""
    import tempfile

    from .pipeline import decode_parsed, parse

    grid_options = (grid, lat_spec, lon_spec)
    resolution = (scale, size, sample_rate, voxel_size)
    if no_postfilter and postfilter_views is not None:
        raise InputError("give --no-postfilter or --postfilter-views, not both")
    if Path(input).is_dir():
        if any(v is not None for v in resolution + grid_options):
            raise InputError("--scale, --size, --sample-rate, --voxel-size, --grid, --lat and --lon apply to "
                             "single files")
        _decode_folder(input, output, ext, shard, jobs, as_json, device, force, not no_postfilter, postfilter_views)
        return
    if sum(v is not None for v in resolution) > 1:
        raise InputError("give one of --scale, --size, --sample-rate and --voxel-size")
    to_stdout = output == "-"
    if not to_stdout:
        check_writable(Path(output), force)
    data = sys.stdin.buffer.read() if input == "-" else _read_coin(input)
    parsed = parse(data, allow_huge)  # header only: refuse a wrong extension before decoding
    modality = parsed.modality
    suffix = ("." + ext.lstrip(".")) if ext else (modality.extensions[0] if to_stdout else
                                                 modality.extension_of(output) or Path(output).suffix)
    if suffix.lower() not in modality.extensions:
        raise InputError(f"{output}: {modality.name} cannot be written as {suffix or 'a file without extension'}; "
                         f"use one of {', '.join(modality.extensions)}")
    target_meta = None
    if modality.absolute_coordinates:
        if size is not None or sample_rate is not None:
            raise InputError(f"{modality.name}: use --grid, --lat/--lon or --scale instead of --size or --sample-rate")
        if grid is not None and scale is not None:
            raise InputError("give --grid or --scale, not both")
        new_lat, new_lon = modality.target_grid(parsed.meta, scale, grid, _parse_axis(lat_spec, "--lat"),
                                                _parse_axis(lon_spec, "--lon"))
        from .container import MAX_SAMPLES

        if not allow_huge and parsed.file.shape[0] * new_lat.size * new_lon.size > MAX_SAMPLES:  # before the mask
            raise InputError(f"requested grid of {new_lat.size}x{new_lon.size} points per field exceeds the "
                             "safety cap; pass --allow-huge")
        target_meta = modality.regridded(parsed.meta, new_lat, new_lon)
    elif any(v is not None for v in grid_options):
        raise InputError(f"--grid, --lat and --lon apply to climate data, not to {modality.name}")
    out_size = _parse_size(size)
    if voxel_size is not None:
        if modality.name != "mri":
            raise InputError(f"--voxel-size applies to MRI volumes, not to {modality.name}")
        try:
            sizes = tuple(float(v) for v in voxel_size.split(","))
        except ValueError:
            raise InputError(f"--voxel-size {voxel_size!r}: expected X,Y,Z in mm, e.g. 1,1,1") from None
        out_size = modality.shape_for_voxel_size(parsed.meta, parsed.file.shape, sizes)
    elif size is not None and modality.name == "mri":
        out_size = (out_size[1], out_size[0], *out_size[2:])  # volumes: X x Y x Z is already array order
    if sample_rate is not None:
        if "sample_rate" not in parsed.meta:
            raise InputError(f"--sample-rate applies to audio, not to {modality.name}")
        if not 1 <= sample_rate <= 1_000_000:
            raise InputError("--sample-rate must be between 1 and 1000000 Hz")
        out_size = (max(1, round(parsed.file.shape[0] * sample_rate / parsed.meta["sample_rate"])),)
    t0 = time.perf_counter()
    signal = decode_parsed(parsed, scale, out_size, device, allow_huge, target_meta, postfilter=not no_postfilter,
                           postfilter_views=postfilter_views)
    if sample_rate is not None:
        signal.meta["sample_rate"] = sample_rate
    t_dec = time.perf_counter() - t0
    if to_stdout:
        with tempfile.TemporaryDirectory(prefix="coin-") as tmp:
            path = Path(tmp) / ("out" + suffix)
            modality.write(signal, path)
            sys.stdout.buffer.write(path.read_bytes())
            sys.stdout.buffer.flush()
    else:
        atomic_write(Path(output), lambda tmp: modality.write(signal, tmp), force)
    shape = "x".join(map(str, reversed(signal.spatial)))
    if "sample_rate" in signal.meta:
        shape = f"{signal.spatial[0]} samples at {signal.meta['sample_rate']} Hz"
    if modality.absolute_coordinates:
        shape = f"{signal.spatial[0]} fields of {signal.spatial[1]} latitudes x {signal.spatial[2]} longitudes"
    if modality.name == "mri":
        zooms = "x".join(f"{z:.3g}" for z in modality.voxel_size(signal.meta))
        shape = f"{'x'.join(map(str, signal.spatial))} voxels of {zooms} mm"
    (err_console if to_stdout else console).print(f"{input} -> {output}: {shape} (decode {t_dec:.1f} s)")


def _run_batch(run, as_json: bool) -> None:
    """Run a folder job with a progress display, then print the summary (or JSON) and set the exit
    status: 1 if any file failed or the batch stopped early, 130 after Ctrl-C."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[io]}"), TimeRemainingColumn(), TextColumn("{task.fields[current]}"))
    with Progress(*columns, console=err_console, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("files", total=None, io="", current="")
        totals = {"in": 0, "out": 0, "done": 0}

        def on_event(kind: str, item, report) -> None:
            if bar.tasks[task].total is None:
                bar.update(task, total=sum(i.status not in ("exists", "unknown") for i in report.items))
            if kind == "start":
                bar.update(task, current=item.file)
                return
            totals["done"] += 1
            if item.status == "done":
                totals["in"] += item.bytes_in
                totals["out"] += item.bytes_out
            bar.update(task, completed=totals["done"],
                       io=f"{totals['in'] / 1e6:.1f} MB -> {totals['out'] / 1e6:.2f} MB")

        report = run(on_event)
    rec = report.to_dict()
    if as_json:
        click.echo(json.dumps(rec, indent=1))
    else:
        _print_summary(rec)
    if report.stopped == "interrupted":
        err_console.print("coin: interrupted; finished files are intact, rerun to resume")
        sys.exit(130)
    if report.failed or report.stopped:
        sys.exit(1)


def _print_summary(rec: dict) -> None:
    t = Table(title=f"coin {rec['command']} {rec['input']} -> {rec['output']}", show_header=False)
    t.add_row("files done", f"{rec['done']} of {rec['files']} in {rec['seconds']:.1f} s"
              + (f" ({rec['files_per_s']:.2f} files/s, {rec['mb_per_s']:.2f} MB/s)" if rec["done"] else ""))
    t.add_row("bytes", f"{rec['bytes_in']:,} -> {rec['bytes_out']:,}"
              + (f" (ratio {rec['ratio']:.1f})" if rec["ratio"] else ""))
    for k, v in rec["mean_quality"].items():  # RMSE and max error are in each file's own units
        t.add_row(f"mean {k.upper().replace('_', ' ')}", f"{v:.2f} dB" if k in ("psnr", "snr") else f"{v:.4g}")
    if rec["existing_skipped"]:
        t.add_row("already there", f"{rec['existing_skipped']} skipped (use --force to redo)")
    if rec["unknown_skipped"]:
        t.add_row("unknown type", ", ".join(rec["unknown_skipped"][:10])
                  + (f" and {len(rec['unknown_skipped']) - 10} more" if len(rec["unknown_skipped"]) > 10 else ""))
    for f in rec["failed"]:
        t.add_row("[red]failed[/red]", f"{f['file']}: {f['error']}")
    if rec["stopped"]:
        t.add_row("[red]stopped[/red]", f"{rec['stopped']}; {rec['not_run']} files not run")
    console.print(t)


def _shard_and_jobs(shard: str | None, jobs: int) -> tuple[int, int] | None:
    from .batch import parse_shard

    if jobs < 1:
        raise InputError("--jobs must be at least 1")
    return parse_shard(shard)


def _encode_folder(input, output, codec_name, steps, check, shard, jobs, as_json, device, force,
                   through_postfilter=True) -> None:
    from .batch import encode_tree

    shard_t = _shard_and_jobs(shard, jobs)
    _run_batch(lambda ev: encode_tree(Path(input), Path(output), codec_name, steps, force, check, device,
                                      shard_t, jobs, on_event=ev, through_postfilter=through_postfilter), as_json)


def _decode_folder(input, output, ext, shard, jobs, as_json, device, force, postfilter=True,
                   postfilter_views=None) -> None:
    from .batch import decode_tree

    shard_t = _shard_and_jobs(shard, jobs)
    _run_batch(lambda ev: decode_tree(Path(input), Path(output), ext, force, device, shard_t, jobs, on_event=ev,
                                      postfilter=postfilter, postfilter_views=postfilter_views), as_json)


@cli.command()
@click.argument("input", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@HUGE
def info(input: str, as_json: bool, allow_huge: bool) -> None:
    """Show what a .coin file holds: codec, shape, bits, size and rate."""
    from .pipeline import parse

    data = _read_coin(input)
    p = parse(data, allow_huge)
    f = p.file
    rate = p.modality.rate(len(data), f.shape, p.meta)
    if p.codec is None:  # COIN: the file holds its own network
        a = f.arch
        rec = {"file": input, "method": "coin", "modality": p.modality.name, "shape": list(f.shape),
               "channels": f.channels, "network": f"{a.tag} (sine layers x width)", "w0": a.w0,
               "weights": a.params, "weight_bits": f.weight_bits}
    else:
        rec = {"file": input, "method": "coin++", "codec": f.codec_name, "codec_hash": f.codec_hash.hex(),
               "modality": p.modality.name, "shape": list(f.shape), "channels": f.channels,
               "patch": list(f.patch), "patches": f.num_patches, "latent_dim": f.latent_dim, "bits": f.bits,
               "latents": "a grid, interpolated between cell centres (patch = cell)" if p.codec.net.cfg.cell
               else "one per patch",
               "coded_as": "principal components (codec's basis)" if p.codec.quantizer.basis is not None
               else "latent dimensions",
               "postfilter": (f"yes ({p.codec.postfilter.cfg.layers}-layer CNN, averaged over "
                              f"{p.codec.postfilter.views} view{'s' if p.codec.postfilter.views > 1 else ''}; "
                              "on its own grid; --no-postfilter skips it)") if p.codec.postfilter is not None
               else "no"}
    rec |= {"bytes": len(data), "payload_bytes": len(f.payload), "modality_fields_bytes": len(f.modality_meta),
            **p.modality.summary(p.meta), **{k: round(v, 6) for k, v in rate.items()}}
    if as_json:
        click.echo(json.dumps(rec))
        return
    t = Table(show_header=False, box=None)
    for k, v in rec.items():
        t.add_row(k, "x".join(map(str, v)) if isinstance(v, list) else str(v))
    console.print(t)


@cli.command(name="codecs")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_codecs(as_json: bool) -> None:
    """List the installed codecs with modality and measured rate."""
    rows = []
    for name, folder in sorted(codecs.available().items()):
        try:
            cfg = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            cfg = {}
        measured = cfg.get("measured", {})
        rows.append({"name": name, "modality": cfg.get("modality", "?"), "bits": cfg.get("bits"),
                     "default": codecs.DEFAULT_CODECS.get(cfg.get("modality")) == name,
                     "rate": measured.get(unit := measured.get("unit", "kbps" if "kbps" in measured else "bpp")),
                     "unit": unit, "psnr": measured.get("psnr_db"),
                     "measured_on": measured.get("data"), "postfilter": "postfilter" in cfg,
                     "folder": str(folder)})
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    if not rows:
        console.print("no codecs installed")
        return
    t = Table("codec", "modality", "bits", "rate", "quality", "measured on")
    for r in rows:
        t.add_row(r["name"] + (" (default)" if r["default"] else ""), r["modality"], str(r["bits"]),
                  f"{r['rate']:.3f} {r['unit']}" if r["rate"] else "-", f"{r['psnr']:.2f} dB" if r["psnr"] else "-",
                  r["measured_on"] or "-")
    console.print(t)


@cli.command()
@click.argument("data", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run folder (checkpoints, log).")
@click.option("--modality", default="image", show_default=True)
@click.option("--width", default=128, show_default=True)
@click.option("--depth", default=5, show_default=True, help="Number of sine layers (plus one linear output).")
@click.option("--latent", "latent_dim", default=64, show_default=True)
@click.option("--w0", default=30.0, show_default=True)
@click.option("--patch", type=int, help="Patch size per axis (default: image 32, audio 200 samples, MRI 8); "
              "with --cell, the size of the training crops.")
@click.option("--cell", default=0, show_default=True,
              help="Images: a latent grid, one latent per CELL x CELL pixels interpolated between cell centres, "
                   "instead of one latent per patch (0).")
@click.option("--frequencies", default=4, show_default=True, help="With --cell: harmonics of the in-cell position.")
@click.option("--batch", default=16, show_default=True)
@click.option("--inner-steps", default=3, show_default=True)
@click.option("--half-inner", default=0, show_default=True,
              help="The first N inner steps take their gradient on alternate checkerboard halves of each patch.")
@click.option("--encode-steps", default=10, show_default=True, help="Steps at validation and in the codec.")
@click.option("--lr", "outer_lr", default=2e-4, show_default=True)
@click.option("--steps", default=100_000, show_default=True, help="Outer steps (upper bound).")
@click.option("--minutes", default=0.0, show_default=True, help="Wall-time budget; 0 for none.")
@click.option("--val-every", default=250, show_default=True)
@click.option("--val-patches", default=256, show_default=True,
              help="Validation crops (fixed, from the held-out files).")
@click.option("--seed", default=0, show_default=True)
@click.option("--val-files", default=3, show_default=True, help="Files held out for validation.")
@click.option("--no-meta-sgd", is_flag=True, help="Fixed inner rate 1e-2 instead of learned per-dimension rates.")
@click.option("--export", "export_name", help="After training, write codecs NAME-b<bits> to --codecs-dir.")
@click.option("--bits", default="4,5", show_default=True, help="Bit depths to export (one codec each).")
@click.option("--clip-std", default="3", show_default=True,
              help="Quantizer range, mean +- K std: one K, or one per bit depth (e.g. 3,4,5,6).")
@click.option("--allocate", is_flag=True,
              help="Images: quantizer steps for equal output distortion per latent dimension (same mean rate).")
@click.option("--decorrelate", is_flag=True,
              help="Quantize the principal components of the latents (learned from the training latents) "
                   "instead of the latent dimensions.")
@click.option("--context", "context_buckets", default=0, show_default=True,
              help="Images: code latents with the neighbour context, this many buckets per dimension (0: static "
                   "tables).")
@click.option("--refine-steps", default=0, show_default=True,
              help="Exported codecs add this many Adam steps through the quantizer when encoding.")
@click.option("--refine-lr", default=0.25, show_default=True, help="Their rate, in quantizer steps.")
@click.option("--refine-latent-lr", type=float, default=None,
              help="Instead: Adam on the unquantized latents at this one rate for every dimension (the same "
                   "refinement for every bit depth; the shipped image codecs' kind).")
@click.option("--refine-rate-lambda", type=float, default=0.0, show_default=True,
              help="With --refine-latent-lr: add this rate term (per-patch MSE per bit, a Laplace stand-in "
                   "for the code length) to the refinement's loss.")
@click.option("--codecs-dir", default="codecs", show_default=True, type=click.Path(file_okay=False))
@click.option("--fresh", is_flag=True, help="Start over instead of resuming from OUT/last.")
@click.option("--coord-scale", type=float, help="Multiply coordinates by this (default per modality; "
              "a regional climate grid needs more than the globe).")
@click.option("--var", help="Climate: the NetCDF variable to train on (default: the only one).")
@click.option("--val-fraction", default=0.2, show_default=True,
              help="Climate: the latest fields of each file held out for validation.")
@DEVICE
def train(data: str, out: str, modality: str, width: int, depth: int, latent_dim: int, w0: float, patch: int | None,
          cell: int, frequencies: int, batch: int, inner_steps: int, half_inner: int, encode_steps: int,
          outer_lr: float, steps: int,
          minutes: float, val_every: int, val_patches: int, seed: int, val_files: int, no_meta_sgd: bool,
          export_name: str | None, bits: str, clip_std: str, allocate: bool, decorrelate: bool, context_buckets: int,
          refine_steps: int, refine_lr: float, refine_latent_lr: float | None, refine_rate_lambda: float,
          codecs_dir: str, fresh: bool, coord_scale: float | None, var: str | None,
          val_fraction: float, device: str) -> None:
    """Meta-learn a base network on the files in DATA (resumes from OUT when it has a checkpoint).

    Runs under `torchrun --nproc-per-node N coin train ...` too (DistributedDataParallel).
    """
    import os

    import torch

    from .model import SirenConfig
    from .train import TrainConfig, export_codecs, load_fields, load_folder
    from .train import train as run_training

    torch.manual_seed(seed)
    bit_list = _parse_list(bits, "--bits", int, 1, 8)
    clips = _parse_list(clip_std, "--clip-std", float, 0.5, 20)
    clips = clips if len(clips) > 1 else clips[0]
    mod = modalities.get(modality)
    if coord_scale is not None and not 0 < coord_scale <= 1000:
        raise InputError("--coord-scale must be in (0, 1000]")
    if not 0 < val_fraction < 1:
        raise InputError("--val-fraction must be in (0, 1)")
    if not 0 <= context_buckets <= 64 or not 0 <= refine_steps <= 1000 or not 0 < refine_lr <= 10:
        raise InputError("--context must be in 0..64, --refine-steps in 0..1000, --refine-lr in (0, 10]")
    if (context_buckets or allocate) and (mod.spatial_dims != 2 or mod.absolute_coordinates):
        raise InputError("--context and --allocate apply to images")
    if allocate and decorrelate:
        raise InputError("choose --allocate or --decorrelate, not both")
    if cell and (mod.spatial_dims != 2 or mod.absolute_coordinates or not 2 <= cell <= 256
                 or not 1 <= frequencies <= 64):
        raise InputError("--cell (2..256, with --frequencies 1..64) applies to images")
    if cell and refine_steps:
        raise InputError("--refine-steps is not available for latent grids (--cell)")
    if (refine_latent_lr is not None and not 0 < refine_latent_lr <= 10) or not 0 <= refine_rate_lambda <= 1 \
            or (refine_rate_lambda and refine_latent_lr is None):
        raise InputError("--refine-latent-lr must be in (0, 10], and --refine-rate-lambda (in [0, 1]) needs it")
    refine = None
    if refine_steps:
        refine = ({"steps": refine_steps, "lr": refine_lr, "quantized": True} if refine_latent_lr is None else
                  {"steps": refine_steps, "latent_lr": refine_latent_lr, "quantized": False})
        if refine_rate_lambda:
            refine["rate_lambda"] = refine_rate_lambda
    if not 1 <= val_patches <= 100_000:
        raise InputError("--val-patches must be in 1..100000")
    coords = None
    if mod.absolute_coordinates:
        if patch is not None:
            raise InputError(f"{mod.name} codecs fit whole fields; --patch does not apply")
        train_s, val_s, coords, grid, split_note = load_fields(data, modality, val_fraction, var)
        patch_shape = (1, *grid)
    else:
        if var is not None:
            raise InputError("--var applies to climate data")
        patch_shape = (patch or (4 * cell if cell else DEFAULT_PATCH[mod.name]),) * mod.spatial_dims
    cfg = TrainConfig(data=data, out=out, modality=modality, patch=patch_shape,
                      model=SirenConfig(in_dim=mod.network_in_dim, out_dim=mod.network_channels, width=width,
                                        depth=depth, latent_dim=latent_dim, w0=w0, meta_sgd=not no_meta_sgd,
                                        coord_scale=mod.coord_scale if coord_scale is None else coord_scale,
                                        cell=cell, frequencies=frequencies if cell else 0),
                      batch=batch, inner_steps=inner_steps, half_inner=half_inner, test_steps=encode_steps,
                      outer_lr=outer_lr,
                      steps=steps, time_limit_min=minutes, val_every=val_every, val_patches=val_patches,
                      val_files=val_files, seed=seed, device=device)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    if coords is None:
        train_s, val_s, val_names = load_folder(data, modality, cfg.val_files, seed)
        split_note = f"training on {len(train_s)} files, validating on {', '.join(val_names)}"
    if rank0:
        console.print(split_note)
    best = run_training(cfg, train_s, val_s, resume=not fresh, progress=rank0 and sys.stderr.isatty(),
                        coords=coords)
    if rank0:
        state = json.loads(best.with_suffix(".json").read_text())
        console.print(f"best validation PSNR {state['best_val_psnr']:.2f} dB at step {state['best_step']}; "
                      f"checkpoint {best}.safetensors")
        if export_name:
            for folder in export_codecs(best, train_s, Path(codecs_dir), export_name, bit_list, encode_steps,
                                        device=device, clip_std=clips, coords=coords,
                                        context=context_buckets or None, val_signals=val_s,
                                        allocate=allocate, decorrelate=decorrelate,
                                        refine=refine):
                console.print(f"wrote codec {folder}")


DEFAULT_PATCH = {"image": 32, "audio": 200, "mri": 8}


@cli.command()
@click.argument("codec_list")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False),
              help="Training images (never the test set); the same files are held out as in `coin train`.")
@click.option("--crops", default=8, show_default=True, help="Random crops per training image.")
@click.option("--size", default=128, show_default=True, help="Crop side in pixels (a multiple of the patch).")
@click.option("--channels", default=32, show_default=True)
@click.option("--layers", default=5, show_default=True, help="3x3 convolutions.")
@click.option("--steps", default=3000, show_default=True, help="Adam steps (batch 16 windows of 64x64).")
@click.option("--lr", default=1e-3, show_default=True, help="Adam's learning rate (cosine schedule).")
@click.option("--init", "init_codec", default=None, metavar="CODEC",
              help="Start from this codec's post-filter (same patch; a smaller one grows into --channels and "
                   "--layers, computing the same at first) instead of from scratch; 'own': each codec from its "
                   "own filter.")
@click.option("--seed", default=0, show_default=True)
@click.option("--val-files", default=3, show_default=True, help="Files held out for validation.")
@click.option("--val-crops", default=None, type=int, help="Random crops per held-out file [default: half of --crops].")
@click.option("--shared", is_flag=True, help="One filter for all the codecs instead of one per codec.")
@click.option("--augment", is_flag=True, help="Train on flipped and transposed views of the crops too.")
@click.option("--views", default=1, show_default=True,
              help="Decoding averages the filter over this many flipped/transposed views (1-8; 1-4 for "
                   "patches that are not square): a little more quality for that many times the filter's time.")
@click.option("--crops-cache", "crops_cache", default=None, type=click.Path(dir_okay=False),
              help="Keep the decoded crops in this file and reuse them when the codecs, data and crop options "
                   "are the same (decoding them costs more than training).")
@click.option("--aware", is_flag=True,
              help="Encode the crops with each codec's steps through its present post-filter (refine "
                   "filter_steps), as `coin encode` does, and train on those decodes; without it the "
                   "crops are encoded as if the codec had no filter.")
@DEVICE
@FORCE
def postfilter(codec_list: str, data: str, crops: int, size: int, channels: int, layers: int, steps: int, lr: float,
               init_codec: str | None, seed: int, val_files: int, val_crops: int | None, shared: bool,
               augment: bool, views: int, crops_cache: str | None, aware: bool, device: str,
               force: bool) -> None:
    """Train a decoder-side post-filter for each image codec in CODEC_LIST (comma-separated, same
    patch) on its own decodes of DATA, and install it into the codec's folder.

    Files already written decode with it too: the post-filter changes no symbol and no hash.
    """
    import torch

    from . import postfilter as pf
    from .device import hardware_description, pick_device
    from .train import load_folder

    names = [n for n in codec_list.split(",") if n]
    loaded = [codecs.load(n) for n in names]
    if not loaded or any(c.modality != "image" or c.net.cfg.cell or len(c.patch) != 2 for c in loaded):
        raise InputError("post-filters are for image codecs with one latent per patch")
    patch = loaded[0].patch
    if any(c.patch != patch for c in loaded):
        raise InputError("the codecs must share their patch (where the seams repeat)")
    if not (1 <= crops <= 1000 and 64 <= size <= 1024 and size % max(patch) == 0 and 1 <= channels <= 256
            and 2 <= layers <= 32 and 1 <= steps <= 10_000_000 and 1 <= val_files and 0 < lr <= 1
            and (val_crops is None or 1 <= val_crops <= 1000)
            and 1 <= views <= len(pf.usable_views((int(patch[0]), int(patch[1]))))):
        raise InputError("--crops 1..1000, --size 64..1024 (a multiple of the patch), --channels 1..256, "
                         "--layers 2..32, --steps >= 1, --lr in (0, 1], --val-files >= 1, --val-crops 1..1000, "
                         "--views 1..8 (1..4 for patches that are not square)")
    cfg = pf.PostFilterConfig(channels, layers, (int(patch[0]), int(patch[1])))
    own = init_codec == "own"
    if own and shared:
        raise InputError("--init own starts each codec's filter from its own; a --shared filter has none")
    starts = {}  # codec name -> the filter it starts from
    for source in (loaded if own else [codecs.load(init_codec)] if init_codec is not None else []):
        if source.postfilter is None:
            raise InputError(f"codec {source.name!r} has no post-filter to start from")
        small = source.postfilter.cfg
        if small.period != cfg.period or small.channels > channels or small.layers > layers:
            raise InputError(f"codec {source.name!r}'s post-filter is {small.channels} channels, "
                             f"{small.layers} layers, patch {small.period}: pass at least as many --channels "
                             "and --layers (it grows into the new size) and codecs of its patch")
        for c in (loaded if not own else [source]):
            starts[c.name] = (source.name, source.postfilter)
    for c in loaded:
        if "postfilter" in c.config and not force:
            raise InputError(f"codec {c.name!r} already has a post-filter; pass --force to replace it")
    torch.manual_seed(seed)
    train_s, val_s, val_names = load_folder(data, "image", val_files, seed)
    console.print(f"{len(train_s)} training images; validating on {', '.join(val_names)}")
    n_val = val_crops or max(1, crops // 2)
    # What the crops depend on: the decoder (hash), the fit (weights, patch, steps) and any refinement.
    key = {"codecs": {c.name: [c.hash.hex(), codecs.fit_key(c), c.config.get("refine")] for c in loaded},
           "data": str(Path(data).resolve()), "crops": crops, "size": size, "seed": seed,
           "val_files": val_files, "val_crops": n_val}
    if aware:  # the encoder then depends on each codec's present filter too
        if any(c.postfilter is None or not (c.refine or {}).get("filter_steps") for c in loaded):
            raise InputError("--aware needs codecs with a post-filter and refine filter_steps")
        key["aware"] = True  # and each codec's crops depend on its filter (a file for more codecs serves any)
        for c in loaded:
            key["codecs"][c.name].append(c.config["postfilter"]["sha256"])
    cached = None
    if crops_cache:
        try:
            cached = pf.load_pairs(Path(crops_cache), {**key, "part": "train"}), \
                pf.load_pairs(Path(crops_cache).with_suffix(".val.npz"), {**key, "part": "val"})
        except ValueError as e:
            raise InputError(f"--crops-cache: {e}") from None
    if cached and cached[0] is not None and cached[1] is not None:
        pairs, val = cached
        console.print(f"decoded crops from {crops_cache}")
    else:
        with console.status("decoding crops") as status:
            tick = lambda i, n: status.update(f"decoding crops {i}/{n}")  # noqa: E731
            pairs = pf.decoded_crops(names, train_s, crops, size, seed, device, tick, aware=aware)
            val = pf.decoded_crops(names, val_s, n_val, size, seed + 1, device, tick, aware=aware)
        if crops_cache:
            pf.save_pairs(Path(crops_cache), pairs, {**key, "part": "train"})
            pf.save_pairs(Path(crops_cache).with_suffix(".val.npz"), val, {**key, "part": "val"})
    if not pairs[names[0]] or not val[names[0]]:
        raise InputError(f"{data}: no image is {size} pixels on each side")
    command = (f"coin postfilter {codec_list} --data {data} --crops {crops} --size {size} --channels {channels} "
               f"--layers {layers} --steps {steps} --lr {lr:g} --seed {seed}"
               + (f" --init {init_codec}" if init_codec else "")
               + (f" --val-crops {val_crops}" if val_crops else "") + (" --shared" if shared else "")
               + (" --augment" if augment else "") + (f" --views {views}" if views > 1 else "")
               + (" --aware" if aware else "")
               + (" --force" if force else ""))  # replacing a filter needs it: the command must run as recorded
    jobs = [names] if shared else [[n] for n in names]
    for group in jobs:
        init_name, init = starts.get(group[0], (None, None))
        train_pairs = [p for n in group for p in pairs[n]]
        val_pairs = [p for n in group for p in val[n]]
        with console.status(f"training ({', '.join(group)})") as status:
            net, summary = pf.train(train_pairs, val_pairs, cfg, steps, lr=lr, seed=seed, device=pick_device(device),
                                    log=lambda r: status.update(f"training: step {r['step']}, validation "
                                                                f"{r['val_psnr_gain_db']:+.3f} dB"), init=init,
                                    augment=augment)
        net.views = views
        if views > 1:  # the gain decoding will see (training chose its weights on one view)
            before, after = pf.mse_before_after(net, val_pairs, pick_device(device))
            summary["val_psnr_gain_views_db"] = round(10 * math.log10(before / after), 3)
        if init is not None:
            summary["init"] = init_name
        # Step 0 is a fresh filter (near the identity) or the --init filter, which may be kept as it is.
        if (summary["best_step"] == 0 and init is None) or summary["val_psnr_gain_db"] <= 0:
            console.print(f"{', '.join(group)}: no step improved the held-out crops "
                          f"({summary['val_psnr_gain_db']:+.3f} dB); not installed")
            continue
        summary |= {"codecs": group, "data": data, "crops": len(train_pairs), "crop_size": size,
                    "hardware": hardware_description(pick_device(device)), "command": command}
        for n in group:
            pf.install(codecs.load(n).folder, net, summary)
        console.print(f"{', '.join(group)}: validation PSNR {summary['val_psnr_gain_db']:+.3f} dB on "
                      f"{len(val_pairs)} held-out crops" + (f" ({summary['val_psnr_gain_views_db']:+.3f} dB "
                      f"averaged over {views} views)" if views > 1 else "") + "; installed")
    codecs._load_cached.cache_clear()


def _parse_list(text: str, option: str, kind: type, low: float, high: float) -> list:
    """'4,5' -> [4, 5], each value checked to lie in [low, high]."""
    try:
        values = [kind(v) for v in text.split(",") if v]
    except ValueError:
        raise InputError(f"{option} {text!r}: expected comma-separated numbers, e.g. 4,5") from None
    if not values or any(not low <= v <= high for v in values):
        raise InputError(f"{option}: each value must be in {low:g}..{high:g}")
    return values


@cli.command()
@click.option("-o", "--out", "out", default="coin-demo", show_default=True, type=click.Path(file_okay=False))
@DEVICE
def demo(out: str, device: str) -> None:
    """Encode and decode the bundled sample image with the default codec; print rate and quality."""
    from importlib.resources import files

    from .pipeline import decode_bytes, encode_signal

    sample = Path(str(files("coinpp") / "samples" / "chelsea.png"))
    modality = modalities.get("image")
    signal = modality.read(sample)
    codec = codecs.load(codecs.default_for("image"))
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    enc = encode_signal(signal, modality, codec, device=device)
    t_enc = time.perf_counter() - t0
    atomic_write_bytes(outdir / "chelsea.coin", enc.data, force=True)
    t0 = time.perf_counter()
    decoded, _ = decode_bytes(enc.data, device=device)
    t_dec = time.perf_counter() - t0
    atomic_write(outdir / "chelsea.decoded.png", lambda p: modality.write(decoded, p), force=True)
    big, _ = decode_bytes(enc.data, scale=2, device=device)
    atomic_write(outdir / "chelsea.decoded-2x.png", lambda p: modality.write(big, p), force=True)
    rate = modality.rate(len(enc.data), signal.spatial)["bpp"]
    psnr = modality.quality(signal, decoded)["psnr"]
    w, h = signal.spatial[1], signal.spatial[0]
    console.print(f"sample {sample.name} ({w}x{h}) with codec {codec.name}: {len(enc.data):,} bytes = "
                  f"{rate:.3f} bpp, PSNR {psnr:.2f} dB; encode {t_enc:.1f} s, decode {t_dec:.1f} s")
    console.print(f"wrote {outdir}/chelsea.coin, chelsea.decoded.png and chelsea.decoded-2x.png")


@cli.command()
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
@DEVICE
def bench(suite: str, codec_list: str, out: str, anchor: str, data_root: str, reference: str, limit: int | None,
          record_in_codecs: bool, no_postfilter: bool, device: str) -> None:
    """Rate-distortion of coin codecs and baselines on SUITE (a named suite or a folder):
    real file sizes, PSNR, times; JSON, CSV, a plot and a BD-rate table."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from . import bench as benchmod
    from .baselines import BY_NAME as BASELINES

    if no_postfilter and record_in_codecs:  # the cards give the output `coin decode` writes by default
        raise InputError("--no-postfilter and --record-in-codecs do not go together: the codecs' cards "
                         "give the post-filtered output")
    t_start = time.perf_counter()
    spec, files = benchmod.suite_files(suite, Path(data_root))
    files = files[:limit]
    anchor = anchor or spec.anchor
    out_dir = Path(out)
    names = [n.strip() for n in (codec_list or spec.codecs).split(",") if n.strip()]
    baselines = [BASELINES[n] for n in names if n in BASELINES]
    wrong = [b.name for b in baselines if b.modality != spec.modality]
    if wrong:
        raise InputError(f"baselines {', '.join(wrong)} are not for {spec.modality}")
    coin_names = [codecs.default_for(spec.modality) if n == "default" else n for n in names if n not in BASELINES]
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
    previous = benchmod.read_rows(out_dir)
    done = {(r["codec"], r["setting"], r["file"]) for r in previous}
    total = len(files) * (len(coin_names) + sum(len(b.settings) for b in runnable))
    rows = list(previous)
    n_new = 0  # rows measured by this run (the others were in --out already)
    with Progress(TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("bench", total=total)

        def tick(what: str) -> None:
            progress.update(task, advance=1, description=what)

        for i, path in enumerate(files, 1):  # file by file, so an interrupted run keeps whole files
            new = (benchmod.coin_rows([path], coin_names, device, tick, done, spec, postfilter=not no_postfilter)
                   if coin_names else [])
            for b in runnable:
                new += benchmod.baseline_rows([path], b, done, tick, spec)
            benchmod.append_rows(out_dir, new)
            rows += new
            n_new += len(new)
            if new and not console.is_terminal:  # a log file sees no progress bar: a line per file instead
                console.print(f"{path.name}: {len(new)} rows ({i}/{len(files)} files, "
                              f"{time.perf_counter() - t_start:.0f} s)")
    wanted = set(coin_names) | {b.name for b in runnable}
    rows = [r for r in rows if r["codec"] in wanted and r["file"] in {p.name for p in files}]
    decode = "; normative decode, post-filter skipped" if no_postfilter else ""
    desc = {n: f"coin codec {n} (real file sizes, headers included{decode})" for n in coin_names}
    desc.update({b.name: b.description for b in runnable})
    summary = benchmod.write_results(out_dir, rows, desc, spec)
    measured = benchmod.curves(summary)
    published = benchmod.load_published(Path(reference), spec)
    coin_curves = {re.sub(r"-b\d+$", "", n) for n in coin_names}
    what = "images" if spec.modality == "image" else "files"
    benchmod.plot(measured, published, out_dir / "rd.png", f"{spec.name}: {len(files)} {what}",
                  max_bpp=spec.max_rate if published else None, suite=spec, coin_curves=coin_curves)

    extra = {"audio": ["snr"], "climate": ["rmse", "max_error"]}.get(spec.modality, [])
    t = Table("codec", "setting", spec.unit, "PSNR dB", *extra, "encode s", "decode s")
    for codec, pts in summary.items():
        for p in pts:
            t.add_row(codec, p["setting"], f"{p['bpp']:.4f}", f"{p['psnr']:.2f}",
                      *[f"{p.get(k, float('nan')):.4g}" for k in extra], f"{p['encode_s']:.2f}", f"{p['decode_s']:.2f}")
    console.print(t)
    if spec.target_rmse is not None:
        meta = benchmod.read_signal(modalities.get(spec.modality), files[0], spec).meta
        _ratio_at_rmse(summary, spec, meta, out_dir)
        units = str(meta["attrs"].get("units", ""))
        benchmod.plot_rmse(summary, out_dir / "rmse.png", f"{spec.name}: {', '.join(p.name for p in files)}",
                           coin_curves, units, spec.target_rmse)
    bd = {}
    all_curves = {**measured, **published} if spec.published_comparable else dict(measured)
    if anchor in all_curves:
        bt = Table("codec", f"BD-rate vs {anchor}")
        for name, pts in all_curves.items():
            if name != anchor:
                bd[name] = benchmod.bd_rate(all_curves[anchor], pts)
                bt.add_row(name, "no overlap" if bd[name] is None else f"{bd[name]:+.1f} %")
        console.print(bt)
    matrix = {c: {k: benchmod.bd_rate(v, measured[c]) for k, v in all_curves.items() if k != c}
              for c in sorted(coin_curves) if c in measured}
    (out_dir / "bd-rate.json").write_text(json.dumps(
        {"method": "piecewise-linear log-rate over PSNR, overlapping PSNR range", "anchor": anchor,
         "vs_anchor": bd, "coin_vs_each": matrix}, indent=1) + "\n")
    wall = time.perf_counter() - t_start
    console.print(f"{len(files)} files, {len(rows)} rows ({n_new} new) in {wall:.0f} s; "
                  f"results, rd.png and bd-rate.json in {out}")
    if record_in_codecs:
        command = "coin bench " + " ".join(sys.argv[2:]).replace(" --record-in-codecs", "")
        for name in benchmod.record_in_codecs(summary, spec.name, command, spec.unit, spec.modality):
            console.print(f"recorded in codec {name}")


def _ratio_at_rmse(summary: dict, spec, meta: dict, out_dir: Path) -> None:
    """Each curve's rate and compression ratio at the suite's target RMSE (interpolated)."""
    from . import bench as benchmod

    joined: dict[str, list[dict]] = {}
    for codec, pts in summary.items():
        joined.setdefault(re.sub(r"-b\d+$", "", codec), []).extend(pts)
    bits_raw = 8 * np.dtype(meta.get("dtype", "<f4")).itemsize
    rec = {}
    t = Table("curve", f"{spec.unit} at RMSE {spec.target_rmse:g}", "compression ratio")
    for name, pts in joined.items():
        rate = benchmod.rate_at_rmse(pts, spec.target_rmse)
        rec[name] = None if rate is None else {"rate": rate, "ratio": bits_raw / rate}
        t.add_row(name, "outside the measured range" if rate is None else f"{rate:.4f}",
                  "" if rate is None else f"{bits_raw / rate:.0f}x")
    console.print(t)
    # Each coin point against every other curve at the same RMSE: how many times smaller coin's file is.
    coin = {n for n in summary if codecs.available().get(n)}
    others = {n: pts for n, pts in joined.items() if not any(re.sub(r"-b\d+$", "", c) == n for c in coin)}
    matched = []
    for name in sorted(coin):
        for p in summary[name]:
            row = {"codec": name, "rate": p["bpp"], "rmse": p.get("rmse")}
            for other, pts in others.items():
                r = benchmod.rate_at_rmse(pts, p["rmse"]) if p.get("rmse") else None
                row[f"{other}_rate"] = r
                row[f"{other}_over_coin"] = None if r is None else r / p["bpp"]
            matched.append(row)
    if matched:
        mt = Table("coin point", "RMSE", spec.unit, *[f"{o} / coin" for o in others])
        for row in matched:
            mt.add_row(row["codec"], f"{row['rmse']:.4g}", f"{row['rate']:.4f}",
                       *["-" if row[f"{o}_over_coin"] is None else f"{row[f'{o}_over_coin']:.2f}x" for o in others])
        console.print(mt)
    (out_dir / f"at-rmse-{spec.target_rmse:g}.json").write_text(json.dumps(
        {"rmse": spec.target_rmse, "unit": spec.unit, "raw_bits_per_value": bits_raw,
         "method": "log rate interpolated linearly in log RMSE between measured points", "curves": rec,
         "coin_points_matched": matched}, indent=1) + "\n")


def main() -> None:
    from .malloc import tune

    # Not for `coin postfilter`: under the tuned heap its training grew by about 100 MB a second on
    # plain glibc (23 GB in minutes, then the OOM killer), and at glibc's defaults it stays flat.
    if sys.argv[1:2] != ["postfilter"]:
        tune()
    cli(prog_name="coin")


if __name__ == "__main__":
    main()
