"""`coin info` and `coin codecs`: what a file holds and which codecs are installed. No torch here:
both answer from headers, codec specifications and tables alone."""

from __future__ import annotations

import json

import click
from rich.table import Table

from .. import spec as specs
from ..bitstream import parse
from .common import HUGE, console, read_coin


@click.command()
@click.argument("input", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@HUGE
def info(input: str, as_json: bool, allow_huge: bool) -> None:
    """Show what a .coin file holds: codec, shape, bits, size and rate."""
    data = read_coin(input)
    p = parse(data, allow_huge)
    f = p.file
    rate = p.modality.rate(len(data), f.shape, p.meta)
    if p.spec is None:  # COIN: the file holds its own network
        a = f.arch
        rec = {"file": input, "method": "coin", "modality": p.modality.name, "shape": list(f.shape),
               "channels": f.channels, "network": f"{a.tag} (sine layers x width)", "w0": a.w0,
               "weights": a.params, "weight_bits": f.weight_bits}
    else:
        rec = {"file": input, "method": "coin++", "codec": f.codec_name, "codec_hash": f.codec_hash.hex(),
               "modality": p.modality.name, "shape": list(f.shape), "channels": f.channels,
               "patch": list(f.patch), "patches": f.num_patches, "latent_dim": f.latent_dim, "bits": f.bits,
               "latents": "a grid, interpolated between cell centres (patch = cell)" if p.spec.model.cell
               else "one per patch",
               "coded_as": "principal components (codec's basis)" if p.spec.quantizer.basis is not None
               else "latent dimensions",
               "postfilter": postfilter_note(p.spec.postfilter)}
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
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_codecs(as_json: bool) -> None:
    """List the installed codecs with modality and measured rate."""
    rows = []
    for name, folder in sorted(specs.available().items()):
        try:
            cfg = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            cfg = {}
        measured = cfg.get("measured", {})
        rows.append({"name": name, "modality": cfg.get("modality", "?"), "bits": cfg.get("bits"),
                     "default": specs.DEFAULT_CODECS.get(cfg.get("modality")) == name,
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


def postfilter_note(pf: specs.PostFilterSpec | None) -> str:
    if pf is None:
        return "no"
    return (f"yes ({pf.layers}-layer CNN, averaged over {pf.views} view{'s' if pf.views > 1 else ''}; "
            "on its own grid; --no-postfilter skips it)")
