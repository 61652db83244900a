"""`coin demo`: the bundled sample through the default image codec, both ways."""

from __future__ import annotations

import time
from importlib.resources import files
from pathlib import Path

import click

from .. import codec as codecs
from .. import modalities
from ..decoder import decode_bytes
from ..encoder import Encoder
from ..files import atomic_write, atomic_write_bytes
from ..modalities import Resolution
from .common import DEVICE, console


@click.command()
@click.option("-o", "--out", "out", default="coin-demo", show_default=True, type=click.Path(file_okay=False))
@DEVICE
def demo(out: str, device: str) -> None:
    """Encode and decode the bundled sample image with the default codec; print rate and quality."""
    sample = Path(str(files("coinpp") / "samples" / "chelsea.png"))
    modality = modalities.get("image")
    signal = modality.read(sample)
    codec = codecs.load(codecs.default_for("image"))
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    enc = Encoder(codec, modality, device=device).encode(signal)
    t_enc = time.perf_counter() - t0
    atomic_write_bytes(outdir / "chelsea.coin", enc.data, force=True)
    t0 = time.perf_counter()
    decoded, _ = decode_bytes(enc.data, device=device)
    t_dec = time.perf_counter() - t0
    atomic_write(outdir / "chelsea.decoded.png", lambda p: modality.write(decoded, p), force=True)
    big, _ = decode_bytes(enc.data, Resolution(scale=2), device=device)
    atomic_write(outdir / "chelsea.decoded-2x.png", lambda p: modality.write(big, p), force=True)
    rate = modality.rate(len(enc.data), signal.spatial)["bpp"]
    psnr = modality.quality(signal, decoded)["psnr"]
    w, h = signal.spatial[1], signal.spatial[0]
    console.print(f"sample {sample.name} ({w}x{h}) with codec {codec.name}: {len(enc.data):,} bytes = "
                  f"{rate:.3f} bpp, PSNR {psnr:.2f} dB; encode {t_enc:.1f} s, decode {t_dec:.1f} s")
    console.print(f"wrote {outdir}/chelsea.coin, chelsea.decoded.png and chelsea.decoded-2x.png")
