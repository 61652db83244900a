"""`coin decode`: a .coin file (or a folder of them, or stdin) at its own or any other resolution."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import click

from ..batch import decode_tree
from ..bitstream import parse, residual_layer
from ..decoder import Decoder, own_grid
from ..errors import CodecError, FormatError, InputError
from ..files import atomic_write, check_writable
from ..modalities import Resolution
from .common import (
    DEVICE,
    FORCE,
    HUGE,
    about,
    batch_options,
    console,
    err_console,
    parse_axis,
    parse_size,
    read_coin,
)
from .folders import run_batch, shard_and_jobs


@click.command()
@click.argument("input", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Output file (format by extension), a folder when INPUT is one, or - for stdout.")
@click.option("--scale", type=float, help="Decode at SCALE times the original resolution (e.g. 2).")
@click.option("--size", help="Decode at this size, WIDTHxHEIGHT (volumes: XxYxZ).")
@click.option("--sample-rate", type=int, help="Audio: decode at this sample rate, same duration (e.g. 48000).")
@click.option("--voxel-size", help="MRI: decode at this voxel size in mm, X,Y,Z (same field of view).")
@click.option("--grid", type=float, help="Climate: decode onto a regular grid of this spacing in degrees.")
@click.option("--lat", "lat_spec", help="Climate: latitudes FIRST:LAST:N (e.g. 50:58:161).")
@click.option("--lon", "lon_spec", help="Climate: longitudes FIRST:LAST:N (e.g. -10:2:241).")
@click.option("--ext", help="Output format for folders and stdout, e.g. png (default: the original's).")
@click.option("--no-postfilter", "no_postfilter", is_flag=True,
              help="Write the network's own output (the normative decode): images, audio and volumes without "
                   "the codec's post-filter; audio at another --sample-rate, and volumes on a finer grid, "
                   "evaluated there instead of resampled from the own grid.")
@click.option("--postfilter-views", "postfilter_views", type=click.IntRange(1, 8), default=None,
              help="Images: average the post-filter over this many flipped/transposed views (1-8) instead of "
                   "the codec's choice: fewer decode faster, more gain a little.")
@click.option("--quiet", is_flag=True, help="Print nothing but errors.")
@batch_options
@DEVICE
@FORCE
@HUGE
def decode(input: str, output: str, scale: float | None, size: str | None, sample_rate: int | None,
           voxel_size: str | None, grid: float | None, lat_spec: str | None, lon_spec: str | None,
           ext: str | None, no_postfilter: bool, postfilter_views: int | None, quiet: bool, shard: str | None,
           jobs: int, as_json: bool, device: str, force: bool, allow_huge: bool) -> None:
    """Decompress a .coin file (or a folder of them, or - for stdin), at its own or any other resolution."""
    resolution = Resolution(scale, parse_size(size), sample_rate, parse_voxel_size(voxel_size), grid,
                            parse_axis(lat_spec, "--lat"), parse_axis(lon_spec, "--lon"))
    if no_postfilter and postfilter_views is not None:
        raise InputError("give --no-postfilter or --postfilter-views, not both")
    if Path(input).is_dir():
        if resolution.given():
            raise InputError("--scale, --size, --sample-rate, --voxel-size, --grid, --lat and --lon apply to "
                             "single files")
        shard_t = shard_and_jobs(shard, jobs)
        run_batch(lambda ev: decode_tree(Path(input), Path(output), ext, force, device, shard_t, jobs, on_event=ev,
                                         postfilter=not no_postfilter, postfilter_views=postfilter_views), as_json,
                  quiet)
        return
    to_stdout = output == "-"
    if not to_stdout:
        check_writable(Path(output), force)
    data = sys.stdin.buffer.read() if input == "-" else read_coin(input)
    name = "stdin" if input == "-" else input
    try:
        parsed = parse(data, allow_huge)  # header only: refuse a wrong extension before decoding
    except (FormatError, CodecError) as e:
        raise about(name, e) from None
    modality = parsed.modality
    suffix = ("." + ext.lstrip(".")) if ext else (modality.extensions[0] if to_stdout else
                                                 modality.extension_of(output) or Path(output).suffix)
    if suffix.lower() not in modality.extensions:
        raise InputError(f"{output}: {modality.name} cannot be written as {suffix or 'a file without extension'}; "
                         f"use one of {', '.join(modality.extensions)}")
    target = modality.target(parsed.meta, parsed.file.shape, resolution, allow_huge)
    t0 = time.perf_counter()
    try:
        signal = Decoder(device, allow_huge, not no_postfilter, postfilter_views).decode(parsed, target)
    except FormatError as e:  # a payload found corrupt only while its symbols are decoded
        raise about(name, e) from None
    t_dec = time.perf_counter() - t0
    if to_stdout:
        with tempfile.TemporaryDirectory(prefix="coin-") as tmp:
            path = Path(tmp) / ("out" + suffix)
            modality.write(signal, path)
            sys.stdout.buffer.write(path.read_bytes())
            sys.stdout.buffer.flush()
    else:
        atomic_write(Path(output), lambda tmp: modality.write(signal, tmp), force)
    if quiet:
        return
    out = err_console if to_stdout else console
    layer = residual_layer(parsed)
    bounded = "" if layer is None or not own_grid(parsed, target) else f", {layer.describe()}"
    out.print(f"{input} -> {output}: {modality.describe_shape(signal)}{bounded} (decode {t_dec:.1f} s)")
    if layer is not None and not own_grid(parsed, target):
        out.print(f"note: the file's {layer.describe()} holds on its own grid only; on this grid the decode is "
                  "the network's alone")


def parse_voxel_size(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--voxel-size {text!r}: expected X,Y,Z in mm, e.g. 1,1,1") from None

