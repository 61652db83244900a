"""The `coin` command line. Every user mistake ends as one line on stderr and exit status 1."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from . import codec as codecs
from . import modalities
from .errors import CoinError, InputError
from .files import atomic_write, atomic_write_bytes, check_writable

console = Console(highlight=False)

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


@cli.command()
@click.argument("input", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output .coin file.")
@click.option("--codec", "codec_name", help="Codec name (see `coin codecs`) or folder; default per modality.")
@click.option("--steps", type=int, help="Gradient steps per patch (default: the codec's).")
@click.option("--no-check", is_flag=True, help="Skip decoding the result to report its quality.")
@DEVICE
@FORCE
def encode(input: str, output: str, codec_name: str | None, steps: int | None, no_check: bool, device: str,
           force: bool) -> None:
    """Compress INPUT into a .coin file."""
    from .pipeline import decode_bytes, encode_signal

    check_writable(Path(output), force)
    modality = modalities.for_path(Path(input))
    signal = modality.read(Path(input))
    codec = codecs.load(codec_name or codecs.default_for(modality.name))
    t0 = time.perf_counter()
    enc = encode_signal(signal, modality, codec, steps, device)
    t_enc = time.perf_counter() - t0
    atomic_write_bytes(Path(output), enc.data, force)
    rate = modality.rate(len(enc.data), signal.spatial)
    line = f"{input} -> {output}: {len(enc.data):,} bytes, " + ", ".join(f"{v:.4f} {k}" for k, v in rate.items())
    if not no_check:
        decoded, _ = decode_bytes(enc.data, device=device)
        q = modality.quality(signal, decoded)
        line += ", " + ", ".join(f"{k.upper()} {v:.2f} dB" for k, v in q.items())
    console.print(f"{line} (codec {codec.name}, encode {t_enc:.1f} s)")


@cli.command()
@click.argument("input", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output file (format by extension).")
@click.option("--scale", type=float, help="Decode at SCALE times the original resolution (e.g. 2).")
@click.option("--size", help="Decode at this size, WIDTHxHEIGHT.")
@DEVICE
@FORCE
@HUGE
def decode(input: str, output: str, scale: float | None, size: str | None, device: str, force: bool,
           allow_huge: bool) -> None:
    """Decompress a .coin file, at its own or any other resolution."""
    from .pipeline import decode_parsed, parse

    if scale is not None and size is not None:
        raise InputError("give --scale or --size, not both")
    check_writable(Path(output), force)
    data = _read_coin(input)
    parsed = parse(data, allow_huge)  # header only: refuse a wrong extension before decoding
    modality = parsed.modality
    if modalities.for_path(Path(output)) is not modality:
        raise InputError(f"{output}: a {modality.name} cannot be written as {Path(output).suffix}")
    t0 = time.perf_counter()
    signal = decode_parsed(parsed, scale, _parse_size(size), device, allow_huge)
    t_dec = time.perf_counter() - t0
    atomic_write(Path(output), lambda tmp: modality.write(signal, tmp), force)
    shape = "x".join(map(str, reversed(signal.spatial)))
    console.print(f"{input} -> {output}: {shape} (decode {t_dec:.1f} s)")


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
    rate = p.modality.rate(len(data), f.shape)
    rec = {"file": input, "codec": f.codec_name, "codec_hash": f.codec_hash.hex(), "modality": p.modality.name,
           "shape": list(f.shape), "channels": f.channels, "patch": list(f.patch),
           "patches": f.num_patches, "latent_dim": f.latent_dim, "bits": f.bits, "bytes": len(data),
           "payload_bytes": len(f.payload), **{k: round(v, 6) for k, v in rate.items()}}
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
                     "rate": measured.get("bpp"), "psnr": measured.get("psnr_db"),
                     "measured_on": measured.get("data"), "folder": str(folder)})
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    if not rows:
        console.print("no codecs installed")
        return
    t = Table("codec", "modality", "bits", "rate", "quality", "measured on")
    for r in rows:
        t.add_row(r["name"] + (" (default)" if r["default"] else ""), r["modality"], str(r["bits"]),
                  f"{r['rate']:.3f} bpp" if r["rate"] else "-", f"{r['psnr']:.2f} dB" if r["psnr"] else "-",
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
@click.option("--patch", default=32, show_default=True)
@click.option("--batch", default=16, show_default=True)
@click.option("--inner-steps", default=3, show_default=True)
@click.option("--encode-steps", default=10, show_default=True, help="Steps at validation and in the codec.")
@click.option("--lr", "outer_lr", default=2e-4, show_default=True)
@click.option("--steps", default=100_000, show_default=True, help="Outer steps (upper bound).")
@click.option("--minutes", default=0.0, show_default=True, help="Wall-time budget; 0 for none.")
@click.option("--val-every", default=250, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--val-files", default=3, show_default=True, help="Files held out for validation.")
@click.option("--no-meta-sgd", is_flag=True, help="Fixed inner rate 1e-2 instead of learned per-dimension rates.")
@click.option("--export", "export_name", help="After training, write codecs NAME-b<bits> to --codecs-dir.")
@click.option("--bits", default="4,5", show_default=True, help="Bit depths to export (one codec each).")
@click.option("--codecs-dir", default="codecs", show_default=True, type=click.Path(file_okay=False))
@click.option("--fresh", is_flag=True, help="Start over instead of resuming from OUT/last.")
@DEVICE
def train(data: str, out: str, modality: str, width: int, depth: int, latent_dim: int, w0: float, patch: int,
          batch: int, inner_steps: int, encode_steps: int, outer_lr: float, steps: int, minutes: float,
          val_every: int, seed: int, val_files: int, no_meta_sgd: bool, export_name: str | None, bits: str,
          codecs_dir: str, fresh: bool, device: str) -> None:
    """Meta-learn a base network on the files in DATA (resumes from OUT when it has a checkpoint).

    Runs under `torchrun --nproc-per-node N coin train ...` too (DistributedDataParallel).
    """
    import os

    import torch

    from .model import SirenConfig
    from .train import TrainConfig, export_codecs, load_folder
    from .train import train as run_training

    torch.manual_seed(seed)
    bit_list = _parse_bits(bits)
    mod = modalities.get(modality)
    cfg = TrainConfig(data=data, out=out, modality=modality, patch=(patch,) * mod.spatial_dims,
                      model=SirenConfig(in_dim=mod.spatial_dims, out_dim=3, width=width, depth=depth,
                                        latent_dim=latent_dim, w0=w0, meta_sgd=not no_meta_sgd),
                      batch=batch, inner_steps=inner_steps, test_steps=encode_steps, outer_lr=outer_lr,
                      steps=steps, time_limit_min=minutes, val_every=val_every, val_files=val_files, seed=seed,
                      device=device)
    train_s, val_s, val_names = load_folder(data, modality, cfg.val_files, seed)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    if rank0:
        console.print(f"training on {len(train_s)} files, validating on {', '.join(val_names)}")
    best = run_training(cfg, train_s, val_s, resume=not fresh, progress=rank0 and sys.stderr.isatty())
    if rank0:
        state = json.loads(best.with_suffix(".json").read_text())
        console.print(f"best validation PSNR {state['best_val_psnr']:.2f} dB at step {state['best_step']}; "
                      f"checkpoint {best}.safetensors")
        if export_name:
            for folder in export_codecs(best, train_s, Path(codecs_dir), export_name, bit_list, encode_steps,
                                        device=device):
                console.print(f"wrote codec {folder}")


def _parse_bits(text: str) -> list[int]:
    try:
        bits = [int(b) for b in text.split(",") if b]
    except ValueError:
        raise InputError(f"--bits {text!r}: expected numbers like 4,5") from None
    if not bits or any(not 1 <= b <= 8 for b in bits):
        raise InputError("--bits: each bit depth must be in 1..8")
    return bits


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
@click.option("--codecs", "codec_list", default="default,jpeg,jpeg2000,webp,avif,hevc-444,jpegxl",
              show_default=True,
              help="Comma-separated: coin codec names ('default': the default image codec) and baselines.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Results folder; rows already in it are not measured again (resume).")
@click.option("--anchor", default="jpeg", show_default=True, help="Anchor of the BD-rate table.")
@click.option("--data-root", default="../shared/data", show_default=True, type=click.Path(file_okay=False),
              help="Where named suites (kodak) live.")
@click.option("--reference", default="../shared/reference", show_default=True, type=click.Path(file_okay=False),
              help="Published curves to overlay (dashed) and to compare against.")
@click.option("--limit", type=int, help="Only the first N files.")
@click.option("--record-in-codecs", is_flag=True, help="Write the measured points into the codecs' cards.")
@DEVICE
def bench(suite: str, codec_list: str, out: str, anchor: str, data_root: str, reference: str, limit: int | None,
          record_in_codecs: bool, device: str) -> None:
    """Rate-distortion of coin codecs and baselines on SUITE (a named suite or a folder):
    real file sizes, PSNR, times; JSON, CSV, a plot and a BD-rate table."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from . import bench as benchmod
    from .baselines import BY_NAME as BASELINES

    t_start = time.perf_counter()
    files = benchmod.suite_files(suite, Path(data_root))[:limit]
    out_dir = Path(out)
    names = [n.strip() for n in codec_list.split(",") if n.strip()]
    baselines = [BASELINES[n] for n in names if n in BASELINES]
    coin_names = [codecs.default_for("image") if n == "default" else n for n in names if n not in BASELINES]
    for n in coin_names:
        codecs.load(n)  # unknown names fail here, before any work
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
    with Progress(TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("bench", total=total)

        def tick(what: str) -> None:
            progress.update(task, advance=1, description=what)

        for path in files:  # file by file, so an interrupted run keeps whole files
            new = benchmod.coin_rows([path], coin_names, device, tick, done) if coin_names else []
            for b in runnable:
                new += benchmod.baseline_rows([path], b, done, tick)
            benchmod.append_rows(out_dir, new)
            rows += new
    wanted = set(coin_names) | {b.name for b in runnable}
    rows = [r for r in rows if r["codec"] in wanted and r["file"] in {p.name for p in files}]
    desc = {n: f"coin codec {n} (real file sizes, headers included)" for n in coin_names}
    desc.update({b.name: b.description for b in runnable})
    summary = benchmod.write_results(out_dir, rows, desc)
    measured = benchmod.curves(summary)
    published = benchmod.load_published(Path(reference)) if Path(suite).name == "kodak" else {}
    benchmod.plot(measured, published, out_dir / "rd.png", f"{Path(suite).name}: {len(files)} images",
                  max_bpp=1.0 if published else None)

    t = Table("codec", "setting", "bpp", "PSNR dB", "encode s", "decode s")
    for codec, pts in summary.items():
        for p in pts:
            t.add_row(codec, p["setting"], f"{p['bpp']:.4f}", f"{p['psnr']:.2f}", f"{p['encode_s']:.2f}",
                      f"{p['decode_s']:.2f}")
    console.print(t)
    bd = {}
    all_curves = {**measured, **published}
    if anchor in all_curves:
        bt = Table("codec", f"BD-rate vs {anchor}")
        for name, pts in all_curves.items():
            if name != anchor:
                bd[name] = benchmod.bd_rate(all_curves[anchor], pts)
                bt.add_row(name, "no overlap" if bd[name] is None else f"{bd[name]:+.1f} %")
        console.print(bt)
    coin_curves = [k for k in measured if k.startswith("image-")]
    matrix = {c: {k: benchmod.bd_rate(v, measured[c]) for k, v in all_curves.items() if k != c}
              for c in coin_curves}
    (out_dir / "bd-rate.json").write_text(json.dumps(
        {"method": "piecewise-linear log-rate over PSNR, overlapping PSNR range", "anchor": anchor,
         "vs_anchor": bd, "coin_vs_each": matrix}, indent=1) + "\n")
    wall = time.perf_counter() - t_start
    console.print(f"{len(files)} files, {len(rows)} rows ({len(rows) - len(previous)} new) in {wall:.0f} s; "
                  f"results, rd.png and bd-rate.json in {out}")
    if record_in_codecs:
        command = "coin bench " + " ".join(sys.argv[2:]).replace(" --record-in-codecs", "")
        for name in benchmod.record_in_codecs(summary, Path(suite).name, command):
            console.print(f"recorded in codec {name}")


def main() -> None:
    from .malloc import tune

    tune()
    cli(prog_name="coin")


if __name__ == "__main__":
    main()
