"""`coin encode`: a file, a folder or stdin into .coin (COIN++ latents, or COIN's own network)."""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .. import codec as codecs
from .. import ladders, modalities, overfit
from ..batch import encode_tree
from ..decoder import decode_bytes
from ..encoder import Encoder, RateSearch, encode_each, encode_to_rate
from ..errors import CodecError, InputError
from ..files import atomic_write_bytes, check_writable
from ..modalities import Modality, Signal
from .common import DEVICE, FORCE, batch_options, console, err_console
from .folders import run_batch, shard_and_jobs

COIN_ONLY = ("--arch", "--time-limit", "--lr", "--batch-points")
RATE_OPTIONS = {"bpp": "--bpp", "kbps": "--kbps", "bits/value": "--bits-per-value"}  # ladder unit -> option


@click.command()
@click.argument("input", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Output .coin file, a folder when INPUT is one, or - for stdout.")
@click.option("--modality", "modality_name", help="Modality of data read from stdin (INPUT '-'), e.g. image.")
@click.option("--method", type=click.Choice(["coin++", "coin"]), default="coin++", show_default=True,
              help="coin++: latents for a shipped base network; coin: overfit one small network to this file.")
@click.option("-q", "--quality", type=int,
              help="Quality rung of the modality's ladder, 1 = smallest files (see `coin codecs`); default: the "
                   "default rung.")
@click.option("--bpp", type=float,
              help="Images and MRI: the best quality whose file is at most this many bits per pixel (voxel). "
                   "[coin] picks the network size for this rate (default 0.3).")
@click.option("--kbps", type=float, help="Audio: the best quality whose file is at most this many kbit/s.")
@click.option("--bits-per-value", "bits_per_value", type=float,
              help="Climate: the best quality whose file is at most this many bits per value.")
@click.option("--max-error", "max_error", type=float,
              help="MRI and climate: every value of the decoded file within this much of the original, in the "
                   "data's units (a residual layer after the network's latents); the encoder picks the rung "
                   "that gives the smallest file unless -q or --codec names one.")
@click.option("--lossless", is_flag=True,
              help="MRI and climate data stored as integers: the decoded file is the original, bit for bit "
                   "(--max-error 0).")
@click.option("--preset", type=click.Choice(["fast", "default", "max"]), default=None,
              help="[coin++] Encoder effort: fast (skip the steps through the post-filter), default, or max "
                   "(twice the refinement steps); the file decodes the same way.  [default: default]")
@click.option("--codec", "codec_name", help="[coin++] Codec name (see `coin codecs --all`) or folder, instead of "
              "-q or a rate target.")
@click.option("--steps", type=int, help="[coin++] Gradient steps per patch (default: the codec's).")
@click.option("--arch", help="[coin] Network as LAYERSxWIDTH, e.g. 10x28 (instead of --bpp).")
@click.option("--iters", type=int, default=2000, show_default=True, help="[coin] Adam iterations.")
@click.option("--time-limit", type=float, help="[coin] Stop after this many seconds with the best so far.")
@click.option("--lr", type=float, default=None, help="[coin] Adam learning rate (default 2e-4 as published).")
@click.option("--weight-bits", type=int, default=16, show_default=True,
              help="[coin] 16: half floats; 8-15: uniform per-tensor ranges.")
@click.option("--batch-points", type=int,
              help="[coin] Random coordinates per step (default 65536; 0: all, as published).")
@click.option("--seed", type=int, default=0, show_default=True, help="[coin] Seed of init and sampling.")
@click.option("--fast", is_flag=True, help="[coin++] The same as --preset fast.")
@click.option("--no-check", is_flag=True, help="Skip decoding the result to report its quality.")
@click.option("--quiet", is_flag=True, help="Print nothing but errors.")
@click.option("--var", help="NetCDF: the variable to code (default: the only latitude/longitude field).")
@batch_options
@DEVICE
@FORCE
def encode(input: str, output: str, modality_name: str | None, method: str, quality: int | None, bpp: float | None,
           kbps: float | None, bits_per_value: float | None, max_error: float | None, lossless: bool,
           preset: str | None, codec_name: str | None,
           steps: int | None, arch: str | None, iters: int, time_limit: float | None,
           lr: float | None, weight_bits: int, batch_points: int | None, seed: int, fast: bool, no_check: bool,
           quiet: bool, var: str | None, shard: str | None, jobs: int, as_json: bool, device: str,
           force: bool) -> None:
    """Compress INPUT (a file, a folder, or - for stdin) into .coin.

    Quality: -q N picks a rung of the modality's ladder (`coin codecs`); --bpp, --kbps or
    --bits-per-value make the file meet a rate target. A folder is encoded recursively into the folder
    -o, mirroring its tree (a/b.png -> a/b.png.coin).
    """
    if fast and preset not in (None, "fast"):
        raise InputError("--fast is --preset fast: give one of them")
    preset = "fast" if fast else preset or "default"
    targets = {u: v for u, v in (("bpp", bpp), ("kbps", kbps), ("bits/value", bits_per_value)) if v is not None}
    if lossless and max_error is not None:
        raise InputError("--lossless is --max-error 0: give one of them")
    if lossless:
        max_error = 0.0
    if max_error is not None and (targets or method != "coin++"):
        raise InputError("--max-error and --lossless size the file by the bound: not with --bpp, --kbps, "
                         "--bits-per-value or --method coin")
    if max_error is not None and not (max_error >= 0 and max_error < float("inf")):
        raise InputError("--max-error must be a number >= 0")
    if Path(input).is_dir():
        if var is not None:
            raise InputError("--var applies to single files")
        if method != "coin++":
            raise InputError("folders are encoded with --method coin++ (COIN fits one file at a time)")
        if targets or quality is not None or max_error is not None:
            raise InputError("folders are encoded with each modality's default rung or --codec; -q, --bpp, --kbps, "
                             "--bits-per-value, --max-error and --lossless apply to single files")
        shard_t = shard_and_jobs(shard, jobs)
        run_batch(lambda ev: encode_tree(Path(input), Path(output), codec_name, steps, force, not no_check, device,
                                         shard_t, jobs, on_event=ev, preset=preset), as_json, quiet)
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
        given = [n for n, v in zip(COIN_ONLY, (arch, time_limit, lr, batch_points), strict=True) if v is not None]
        if given:
            raise InputError(f"{', '.join(given)} only apply to --method coin")
    elif codec_name is not None or steps is not None or fast or preset != "default" or quality is not None \
            or kbps is not None or bits_per_value is not None:
        raise InputError("--codec, -q, --kbps, --bits-per-value, --steps, --preset and --fast only apply to "
                         "--method coin++")
    if var is not None and modality.name != "climate":
        raise InputError(f"--var applies to NetCDF files, not to {modality.name}")
    if method == "coin" and modality.absolute_coordinates:
        raise InputError(f"--method coin does not handle {modality.name} data yet; use coin++")
    options = {"var": var} if var is not None else {}
    signal = read_stdin(modality, options) if input == "-" else modality.read(Path(input), **options)
    t0 = time.perf_counter()
    if method == "coin":
        data, label = encode_overfit(signal, modality, bpp, arch, iters, time_limit, lr, weight_bits,
                                     batch_points, seed, device)
    else:
        with phase_status(quiet, input) as on_phase:
            data, label = encode_coinpp(signal, modality, input, codec_name, quality, targets, preset, steps, device,
                                        on_phase, max_error)
    t_enc = time.perf_counter() - t0
    if to_stdout:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        atomic_write_bytes(Path(output), data, force)
    if quiet:
        return
    rate = modality.rate(len(data), signal.spatial, signal.meta)
    line = f"{input} -> {output}: {len(data):,} bytes, " + ", ".join(f"{v:.4f} {k}" for k, v in rate.items())
    if not no_check:
        decoded, _ = decode_bytes(data, device=device)
        line += ", " + modality.describe_quality(modality.quality(signal, decoded), signal.meta)
    (err_console if to_stdout else console).print(f"{line} ({label}, encode {t_enc:.1f} s)")


def encode_coinpp(signal: Signal, modality: Modality, input: str, codec_name: str | None, quality: int | None,
                  targets: dict[str, float], preset: str, steps: int | None, device: str,
                  on_phase: Callable[[str], None], max_error: float | None = None) -> tuple[bytes, str]:
    """COIN++: the codec --codec names, the ladder's rung -q, the best rung within a rate target, the
    smallest file within an error bound, or the default; (the file's bytes, what made it)."""
    if codec_name is not None and (quality is not None or targets):
        raise InputError("give --codec, -q or a rate target (--bpp, --kbps, --bits-per-value), not more than one")
    if quality is not None and targets or len(targets) > 1:
        raise InputError("give -q or one rate target (--bpp, --kbps, --bits-per-value), not more than one")
    suffix = "" if preset == "default" else f", --preset {preset}"
    if targets:
        (unit, limit), = targets.items()
        ladder = ladders.ladder_for(modality.name)
        if unit != ladder.unit:
            raise InputError(f"{RATE_OPTIONS[unit]} does not apply to {modality.name}; "
                             f"give {RATE_OPTIONS[ladder.unit]}")
        if not 0 < limit < float("inf"):
            raise InputError(f"{RATE_OPTIONS[unit]} must be a positive number")
        encoders = [Encoder(codecs.load(n), modality, preset, steps, device, on_phase) for n in ladder.rungs]
        search = RateSearch()
        try:
            enc = encode_to_rate(signal, encoders, limit, unit, search)
        except CodecError as e:
            raise InputError(f"{input}: {e}") from None
        tried = ", ".join(f"{n} {r:.4g}" for n, r in search.tried)
        q = ladder.rungs.index(enc.codec.name) + 1
        return enc.data, f"codec {enc.codec.name}, -q {q}, the best within {limit:g} {unit} (tried {tried}){suffix}"
    if quality is not None:
        names = [ladders.ladder_for(modality.name).rung(quality)]
    elif codec_name is not None or max_error is None:
        names = [codec_name or codecs.default_for(modality.name)]
    else:  # a bound and no rung named: the rung whose network and residual together are smallest
        installed = ladders.ladders().by_modality.get(modality.name)
        names = list(installed.rungs) if installed else [codecs.default_for(modality.name)]
    encoders = [Encoder(codecs.load(n), modality, preset, steps, device, on_phase, max_error) for n in names]
    try:
        results = [t.encoded for t in encode_each(signal, encoders)]
    except InputError as e:
        raise InputError(f"{input}: {e}") from None
    best = min(results, key=lambda e: len(e.data))
    bound = "" if max_error is None else ", lossless" if max_error == 0 else f", max error {max_error:g}"
    chosen = "" if len(results) == 1 else f" (the smallest of {len(results)} rungs)"
    return best.data, f"codec {best.codec.name}{chosen}{bound}{suffix}"


@contextmanager
def phase_status(quiet: bool, what: str) -> Iterator[Callable[[str], None]]:
    """The encoder's phases on stderr, with the time spent, when stderr is a terminal."""
    if quiet or not sys.stderr.isatty():
        yield lambda phase: None
        return
    t0 = time.perf_counter()
    with err_console.status(f"{what}: starting") as status:
        yield lambda phase: status.update(f"{what}: {phase} ({time.perf_counter() - t0:.0f} s)")


def read_stdin(modality: Modality, options: dict) -> Signal:
    """Modalities read files, so stdin goes through a private temporary file."""
    data = sys.stdin.buffer.read()
    if not data:
        raise InputError("stdin is empty")
    with tempfile.TemporaryDirectory(prefix="coin-") as tmp:
        path = Path(tmp) / ("stdin" + modality.extensions[0])
        path.write_bytes(data)
        return modality.read(path, **options)


def encode_overfit(signal: Signal, modality: Modality, bpp: float | None, arch: str | None, iters: int,
                   time_limit: float | None, lr: float | None, weight_bits: int, batch_points: int | None, seed: int,
                   device: str) -> tuple[bytes, str]:
    """COIN: one small network overfitted to this file, with a progress bar on a terminal."""
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
