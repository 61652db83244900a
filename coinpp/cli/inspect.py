"""`coin info` and `coin codecs`: what a file holds and which codecs are installed. No torch here:
both answer from headers, codec specifications and tables alone."""

from __future__ import annotations

import json

import click
from rich.table import Table

from .. import ladders
from .. import spec as specs
from ..bitstream import file_filter, parse, residual_layer
from ..errors import CodecError, FormatError
from .common import HUGE, about, console, read_coin


@click.command()
@click.argument("input", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@HUGE
def info(input: str, as_json: bool, allow_huge: bool) -> None:
    """Show what a .coin file holds: codec, shape, bits, size and rate."""
    data = read_coin(input)
    try:
        p = parse(data, allow_huge)
    except (FormatError, CodecError) as e:
        raise about(input, e) from None
    f = p.file
    rate = p.modality.rate(len(data), f.shape, p.meta)
    size = list(p.modality.size_order(tuple(f.shape)))  # the order --size takes (images: width x height)
    if p.spec is None:  # COIN: the file holds its own network
        a = f.arch
        rec = {"file": input, "method": "coin", "modality": p.modality.name, "size": size,
               "channels": f.channels, "network": f"{a.tag} (sine layers x width)", "w0": a.w0,
               "weights": a.params, "weight_bits": f.weight_bits}
    else:
        rec = {"file": input, "method": "coin++", "codec": f.codec_name, "codec_hash": f.codec_hash.hex(),
               "modality": p.modality.name, "size": size, "channels": f.channels,
               "patch": list(f.patch), "patches": f.num_patches, "latent_dim": f.latent_dim, "bits": f.bits,
               "latents": "a grid, interpolated between cell centres (patch = cell)" if p.spec.model.cell
               else "one per patch",
               "coded_as": "principal components (codec's basis)" if p.spec.quantizer.basis is not None
               else "latent dimensions",
               "postfilter": postfilter_note(p.spec.postfilter)}
    try:
        layer = residual_layer(p)
    except FormatError as e:
        raise about(input, e) from None
    if layer is not None:
        rec |= {"residual_layer": f"{layer.describe()} on the file's own grid", "residual_bytes": len(layer.field)}
    taps = file_filter(p)  # checked by parse
    if taps is not None:
        rec["postfilter"] = (f"yes ({len(taps)}-tap linear filter fitted to this file, instead of the codec's; "
                             "--no-postfilter skips it)")
    rec |= {"bytes": len(data), "payload_bytes": len(f.payload), "modality_fields_bytes": len(f.modality_meta),
            **p.modality.summary(p.meta), **{k: round(v, 6) for k, v in rate.items()}}
    if as_json:
        click.echo(json.dumps(rec))
        return
    t = Table(show_header=False, box=None)
    for k, v in rec.items():
        t.add_row(k, "x".join(map(str, v)) if isinstance(v, list) else str(v))
    console.print(t)


@click.command(name="codecs")
@click.option("--all", "show_all", is_flag=True, help="Also the codecs off the ladders (older families, legacy).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_codecs(show_all: bool, as_json: bool) -> None:
    """List each modality's quality ladder (-q 1 = smallest files) with its measured points."""
    lad = ladders.ladders()
    folders = specs.available()
    rung_of = {n: (m, i + 1) for m, ladder in lad.by_modality.items() for i, n in enumerate(ladder.rungs)}
    names = sorted(n for n in folders if show_all or listed(n, folders[n]))
    rows = [codec_row(n, folders[n], rung_of.get(n), lad.also.get(n)) for n in names]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    if not rows:
        click.echo("no codecs installed")
        return
    for modality, ladder in lad.by_modality.items():
        on = [r for r in rows if r["modality"] == modality and r["rung"] is not None]
        if not on:
            continue
        on.sort(key=lambda r: r["rung"])
        measured = {r["measured_on"] for r in on if r["measured_on"]}
        click.echo(f"{modality} (-q 1..{len(ladder.rungs)}; rate target --{RATE_FLAG[ladder.unit]}; "
                   f"measured on {', '.join(sorted(measured)) or '-'}):")
        width = max(len(r["name"]) for r in on)
        for r in on:
            click.echo(f"  {r['rung']:>2}  {r['name']:<{width}}  {describe_point(r)}"
                       + ("  (default)" if r["default"] else ""))
    off = [r for r in rows if r["rung"] is None]
    if off:
        click.echo("also installed:" if not show_all else "off the ladders:")
        width = max(len(r["name"]) for r in off)
        for r in off:
            note = r["note"] or (f"{r['modality']}, legacy" if r["legacy"] else r["modality"])
            click.echo(f"      {r['name']:<{width}}  {describe_point(r)}  {note}")


def listed(name: str, folder) -> bool:
    """Listed by default: a codec on its root's ladders (or named there as also installed), and every
    codec of a root without ladders (your own); not the legacy ones."""
    root = folder.parent
    if root.name == "codecs-legacy":
        return False
    return not (root / ladders.LADDERS_FILE).is_file() or name in ladders.read_ladders(root).names()


RATE_FLAG = {"bpp": "bpp", "kbps": "kbps", "bits/value": "bits-per-value"}


def codec_row(name: str, folder, rung: tuple[str, int] | None, note: str | None) -> dict:
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        cfg = {}
    measured = cfg.get("measured", {})
    unit = measured.get("unit", "bpp")
    return {"name": name, "modality": cfg.get("modality", "?"), "rung": rung[1] if rung else None,
            "default": ladders.DEFAULT_CODECS.get(cfg.get("modality")) == name, "rate": measured.get(unit),
            "unit": unit, "psnr": measured.get("psnr_db"), "rmse": measured.get("rmse"),
            "encode_s": measured.get("encode_s"), "measured_on": measured.get("data"),
            "postfilter": "postfilter" in cfg, "note": note, "legacy": folder.parent.name == "codecs-legacy",
            "folder": str(folder)}


def describe_point(r: dict) -> str:
    if r["rate"] is None:
        return "not measured"
    text = f"{r['rate']:.4g} {r['unit']}, PSNR {r['psnr']:.2f} dB"
    if r["rmse"] is not None:
        text += f", RMSE {r['rmse']:.3g}"
    if r["encode_s"] is not None:
        text += f", encode {r['encode_s']:.1f} s"
    return text


def postfilter_note(pf: specs.PostFilterSpec | None) -> str:
    if pf is None:
        return "no"
    if pf.kind == "volume":
        return (f"yes ({pf.taps}x{pf.taps}x{pf.taps} linear filter on the volume's own grid, which a finer grid "
                "interpolates; --no-postfilter skips it)")
    if pf.kind == "fir":
        return f"yes ({pf.taps}-tap linear filter on the waveform at the file's own rate; --no-postfilter skips it)"
    return (f"yes ({pf.layers}-layer CNN, averaged over {pf.views} view{'s' if pf.views > 1 else ''}; "
            "on its own grid, its correction resampled onto others; --no-postfilter skips it)")
