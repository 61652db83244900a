"""Conformance streams: small .coin files whose decoded symbols and output are pinned.

    python -m coinpp.evaluation.conformance write        # (re)write bitstream/conformance/ -- only on purpose
    python -m coinpp.evaluation.conformance write coin   # only the COIN-mode (kind 1) streams
    python -m coinpp.evaluation.conformance write bounded  # only the streams with a residual layer
    python -m coinpp.evaluation.conformance write NAME.. # only these codecs' streams (a new codec)

Each stream `NAME.coin` has `NAME.json` (codec, SHA-256 of the decoded symbols, SHA-256 of the
decoded 8-bit output on the reference machine, without a post-filter: the normative decode) and
`NAME.png` (that output). A decoder must
reproduce the symbols exactly; the output may differ from the reference PNG only by float
rounding (checked as a tiny tolerance), and the exact hash tells when it did.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import codec as codecs
from .. import container, modalities
from ..bitstream import Parsed, decode_symbols, parse, residual_layer
from ..container import SirenArch
from ..decoder import decode_bytes
from ..encoder import Encoded, Encoder, encode_signal
from ..errors import CoinError
from ..modalities import Signal
from ..modalities.image import to_uint8
from ..model import LatentModulatedSiren, SirenConfig, build_network
from ..overfit import encode_signal as overfit_encode
from ..overfit import network_from_file
from ..quantize import Quantizer
from ..residual import (
    BASE_NETWORK,
    BASE_ZERO,
    INTERPOLATED,
    INTERPOLATED_DIFFERENCES,
    decode_field,
    make_layer,
    planes,
)
from ..training.export import write_folder
from ..training.tables import context_prior, frequency_table

ROOT = Path(__file__).resolve().parents[2] / "bitstream" / "conformance"
TINY_CODEC = "conformance-tiny-b5"  # a small codec kept with the streams: pins the format itself
TINY_GRID_CODEC = "conformance-tiny-grid-b5"  # the same for latent grids with the neighbour context
TINY_PCA_CODEC = "conformance-tiny-pca-b4"  # the same for a decorrelating transform before quantization


def codecs_folder(root: Path = ROOT) -> Path:
    return root / "codecs"


def _write_tiny_codec(folder: Path) -> None:
    """A small random network with tables, written once and then kept in the repository."""
    torch.manual_seed(0)
    cfg = SirenConfig(width=16, depth=2, latent_dim=8)
    net = LatentModulatedSiren(cfg)
    lat = np.random.default_rng(0).normal(0, 0.05, size=(4000, cfg.latent_dim)).astype(np.float32)
    q = Quantizer.fit(lat, 5)
    config = {"name": TINY_CODEC, "modality": "image", "model": cfg.to_dict(), "patch": [16, 16],
              "encode_steps": 3}
    write_folder(folder / TINY_CODEC, config, net, q, frequency_table(q.quantize(lat), q.levels),
                        f"# {TINY_CODEC}\n\nUntrained network for conformance streams only.\n")


def _write_tiny_grid_codec(folder: Path) -> None:
    """A small random latent-grid network (4 x 4 cells) with a neighbour-context prior."""
    torch.manual_seed(0)
    cfg = SirenConfig(width=16, depth=2, latent_dim=4, cell=4, frequencies=2)
    net = build_network(cfg)
    lat = np.random.default_rng(1).normal(0, 0.05, size=(40 * 50, cfg.latent_dim)).astype(np.float32)
    q = Quantizer.fit(lat, 5)
    symbols = q.quantize(lat)
    config = {"name": TINY_GRID_CODEC, "modality": "image", "model": cfg.to_dict(), "patch": [4, 4],
              "encode_steps": 3, "context": {"model": "neighbour-mean", "buckets": 4, "adapt": 16}}
    write_folder(folder / TINY_GRID_CODEC, config, net, q, frequency_table(symbols, q.levels),
                        f"# {TINY_GRID_CODEC}\n\nUntrained latent-grid network for conformance streams only.\n",
                        context_prior=context_prior([symbols.reshape(40, 50, -1)], q.levels, 4))


def _write_tiny_pca_codec(folder: Path) -> None:
    """A small random patch network whose latents are coded as principal components (Quantizer.fit
    with decorrelate), with a neighbour-context prior."""
    torch.manual_seed(0)
    cfg = SirenConfig(width=16, depth=2, latent_dim=8)
    net = LatentModulatedSiren(cfg)
    rng = np.random.default_rng(2)
    mix = rng.normal(0, 0.05, size=(3, cfg.latent_dim))  # three factors shared by the eight dimensions
    lat = (rng.normal(size=(40 * 50, 3)) @ mix + rng.normal(0, 0.01, size=(40 * 50, cfg.latent_dim)))
    q = Quantizer.fit(lat.astype(np.float32), 4, decorrelate=True)
    symbols = q.quantize(lat)
    config = {"name": TINY_PCA_CODEC, "modality": "image", "model": cfg.to_dict(), "patch": [16, 16],
              "encode_steps": 3, "context": {"model": "neighbour-mean", "buckets": 4, "adapt": 16}}
    write_folder(folder / TINY_PCA_CODEC, config, net, q, frequency_table(symbols, q.levels),
                        f"# {TINY_PCA_CODEC}\n\nUntrained network, latents coded as principal components; "
                        "for conformance streams only.\n",
                        context_prior=context_prior([symbols.reshape(40, 50, -1)], q.levels, 4))


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def sample_signals(modality: str = "image") -> dict[str, Signal]:
    """Image: crops of the bundled sample, odd sizes (padding), RGB and grayscale. Audio: a
    generated 0.3 s clip (chirp plus seeded noise), mono and stereo, odd length."""
    if modality == "climate":
        return {"uk-6x9x13": _climate_sample()}
    if modality == "mri":
        return {"blob-13x11x9": _mri_sample()}
    if modality == "audio":
        t = np.arange(4801) / 16000
        rng = np.random.default_rng(0)
        wave = np.stack([0.3 * np.sin(2 * np.pi * 300 * t * (1 + 2 * t)) + 0.01 * rng.standard_normal(t.size),
                         0.2 * np.sin(2 * np.pi * 150 * t) + 0.01 * rng.standard_normal(t.size)], -1)
        wave = np.rint(wave * 32767) / 32767  # what a 16-bit file holds
        values = ((wave + 1) / 2).astype(np.float32)
        meta = {"sample_rate": 16000, "subtype": "PCM_16"}
        return {"mono-4801": Signal(values[:, :1].copy(), {**meta, "channels": 1}),
                "stereo-4801": Signal(values.copy(), {**meta, "channels": 2})}

    img = modalities.get("image").read(Path(str(files("coinpp") / "samples" / "chelsea.png")))
    rgb = img.values[100:147, 200:261]  # 47 x 61
    gray = rgb.mean(axis=-1, keepdims=True)
    gray = np.rint(gray * 255) / 255
    return {"rgb-47x61": Signal(rgb.copy(), {"channels": 3}), "gray-47x61": Signal(gray.astype(np.float32),
                                                                                   {"channels": 1})}


def _climate_sample() -> Signal:
    """6 hours of a smooth 2 m temperature field on 9 x 13 points of the UK grid (descending
    latitude, 0.5 degrees), with one missing point: written as NetCDF and read back."""
    import netCDF4

    lat, lon = 56.0 - 0.5 * np.arange(9), -8.0 + 0.5 * np.arange(13)
    la, lo = np.meshgrid(np.deg2rad(lat), np.deg2rad(lon), indexing="ij")
    values = np.stack([275 + 6 * np.cos(3 * la + 0.1 * h) * np.sin(2 * lo) + 0.4 * h for h in range(6)])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "uk.nc"
        with netCDF4.Dataset(str(path), "w") as ds:
            ds.Conventions = "CF-1.7"
            for name, n in (("time", None), ("latitude", 9), ("longitude", 13)):
                ds.createDimension(name, n)
            t = ds.createVariable("time", "i4", ("time",))
            t.units, t[:] = "hours since 2019-03-01", np.arange(6)
            y = ds.createVariable("latitude", "f8", ("latitude",))
            y.units, y[:] = "degrees_north", lat
            x = ds.createVariable("longitude", "f8", ("longitude",))
            x.units, x[:] = "degrees_east", lon
            v = ds.createVariable("t2m", "f4", ("time", "latitude", "longitude"), fill_value=np.float32(-9999))
            v.units, v.long_name = "K", "2 metre temperature"
            data = np.ma.masked_array(values, mask=np.zeros(values.shape, bool))
            data[2, 4, 6] = np.ma.masked
            v[...] = data
        return modalities.get("climate").read(path)


def _mri_sample() -> Signal:
    """A 13 x 11 x 9 int16 volume (a smooth blob, 1 x 1 x 2 mm, oblique affine): written as NIfTI
    and read back, so the stored header is a real one."""
    import nibabel as nib

    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in (13, 11, 9)], indexing="ij")
    values = (1000 * np.exp(-2 * (grid[0] ** 2 + 2 * grid[1] ** 2 + grid[2] ** 2))).astype(np.int16)
    affine = np.array([[0.96, -0.3, 0, -20], [0.3, 0.96, 0, 15], [0, 0, 2, -30], [0, 0, 0, 1]])
    img = nib.Nifti1Image(values, affine)
    img.set_qform(affine, 1)
    img.set_sform(affine, 4)
    img.header.set_xyzt_units("mm", "sec")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "blob.nii"
        nib.save(img, str(path))
        return modalities.get("mri").read(path)


def write(root: Path = ROOT, codec_names: list[str] | None = None) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    if not (codecs_folder(root) / TINY_CODEC).exists():
        _write_tiny_codec(codecs_folder(root))
    if not (codecs_folder(root) / TINY_GRID_CODEC).exists():
        _write_tiny_grid_codec(codecs_folder(root))
    if not (codecs_folder(root) / TINY_PCA_CODEC).exists():
        _write_tiny_pca_codec(codecs_folder(root))
    names = codec_names or sorted(codecs.available())
    written = []
    for cname in names:
        codec = codecs.load(cname)
        modality = modalities.get(codec.modality)
        for sname, sig in sample_signals(codec.modality).items():
            stem = f"{cname}.{sname}"
            enc = encode_signal(sig, modality, codec, device="cpu")
            (root / f"{stem}.coin").write_bytes(enc.data)
            decoded, _ = decode_bytes(enc.data, device="cpu", postfilter=False)
            out = _quantized(modality.name, decoded.values)
            _write_reference(root / stem, modality.name, decoded, out)
            meta = {"codec": cname, "codec_hash": codec.hash.hex(), "symbols_sha256": _sha(enc.symbols),
                    "output_sha256": _sha(out), "shape": list(out.shape), "bytes": len(enc.data)}
            (root / f"{stem}.json").write_text(json.dumps(meta, indent=1) + "\n")
            written.append(root / f"{stem}.coin")
    return written


# Streams with a residual layer (flag bit 0, RESI): (codec, sample, the bound (0: lossless), the
# prediction and base forced, where the encoder's choice on these small samples would leave one untested).
BOUNDED_STREAMS = [("mri-5x128-l16-b4", "blob-13x11x9", 0.0, None), ("mri-5x128-l16-b4", "blob-13x11x9", 3.0, None),
                   ("era5-t2m-5x128-l48-b5", "uk-6x9x13", 0.05, None),
                   ("era5-t2m-5x128-l48-b5", "uk-6x9x13", 0.5, None),
                   ("mri-5x128-l16-b4", "blob-13x11x9", 0.0, (INTERPOLATED, BASE_NETWORK)),
                   ("era5-t2m-5x128-l48-b5", "uk-6x9x13", 0.2, (INTERPOLATED_DIFFERENCES, BASE_ZERO))]


def bounded_stem(codec: str, sample: str, bound: float, forced: tuple[int, int] | None = None) -> str:
    tail = "" if forced is None else f".p{forced[0]}b{forced[1]}"
    return f"{codec}.{sample}.{'lossless' if bound == 0 else f'max-error-{bound:g}'}{tail}"


def write_bounded(root: Path = ROOT) -> list[Path]:
    """Streams with a residual layer: their latents' and residual field's symbols, the bounded output and
    the original it is bounded against (`.original.npy`, in the data's units)."""
    written = []
    for cname, sname, bound, forced in BOUNDED_STREAMS:
        codec = codecs.load(cname)
        modality = modalities.get(codec.modality)
        sig = sample_signals(codec.modality)[sname]
        stem = bounded_stem(cname, sname, bound, forced)
        enc = encode_signal(sig, modality, codec, device="cpu", max_error=None if forced else bound)
        if forced:
            enc = _forced_layer(enc, sig, modality, bound, *forced)
        (root / f"{stem}.coin").write_bytes(enc.data)
        decoded, p = decode_bytes(enc.data, device="cpu", postfilter=False)
        out = _quantized(modality.name, decoded.values)
        _write_reference(root / stem, modality.name, decoded, out)
        np.save(root / f"{stem}.original.npy", sig.exact.astype(np.float64))
        layer = residual_layer(p)
        meta = {"codec": cname, "codec_hash": codec.hash.hex(), "symbols_sha256": _sha(enc.symbols),
                "output_sha256": _sha(out), "shape": list(out.shape), "bytes": len(enc.data), "bound": bound,
                "residual_sha256": _sha(_residual_field(p)), "base": layer.base, "prediction": layer.predictor}
        (root / f"{stem}.json").write_text(json.dumps(meta, indent=1) + "\n")
        written.append(root / f"{stem}.coin")
    return written


def _forced_layer(enc: Encoded, sig: Signal, modality: modalities.Modality, bound: float, prediction: int,
                  base: int) -> Encoded:
    """The network-only file `enc` with a residual layer of one prediction and base (as Encoder.with_layer)."""
    predicted = Encoder(enc.codec, modality, device="cpu").prediction(enc)
    quantum, offset = modality.value_grid(sig.meta) or (0.0, 0.0)
    layer = make_layer(sig.exact, predicted, bound, quantum, offset, modality.stored_dtype(sig.meta),
                       modality.missing(sig.meta, sig.spatial), modality.span(sig.meta), modality.plane_axis(sig.meta),
                       (prediction,), (base,))
    f = container.read_bytes(enc.data)
    f.flags |= container.FLAG_RESIDUAL
    f.extra = {container.RESIDUAL_TAG: layer.to_bytes()}
    return Encoded(container.write_bytes(f), enc.symbols, enc.codec)


def _residual_field(p: Parsed) -> np.ndarray:
    layer = residual_layer(p)
    shape = planes(np.zeros((*p.file.shape, p.file.channels), np.int8), layer.stack).shape
    interpolated = layer.predictor in (INTERPOLATED, INTERPOLATED_DIFFERENCES)
    return decode_field(layer.field, shape, interpolated)


COIN_STREAMS = {"coin-2x16-w16": 16, "coin-2x16-w12": 12}  # COIN (kind 1): half floats and 12-bit weights


def write_coin(root: Path = ROOT) -> list[Path]:
    """Streams of COIN files (an overfitted network each); their 'symbols' are the stored weights."""
    image = modalities.get("image")
    sig = sample_signals()["rgb-47x61"]
    written = []
    for name, bits in COIN_STREAMS.items():
        stem = f"{name}.rgb-47x61"
        data = overfit_encode(sig, image, SirenArch(2, 3, 16, 2), iterations=50, lr=1e-3, weight_bits=bits,
                              seed=0, device="cpu").data
        (root / f"{stem}.coin").write_bytes(data)
        decoded, p = decode_bytes(data, device="cpu", postfilter=False)
        out = to_uint8(decoded.values)
        image.write(decoded, root / f"{stem}.png")
        meta = {"method": "coin", "weight_bits": bits, "symbols_sha256": _sha(_symbols(p)),
                "output_sha256": _sha(out), "shape": list(out.shape), "bytes": len(data)}
        (root / f"{stem}.json").write_text(json.dumps(meta, indent=1) + "\n")
        written.append(root / f"{stem}.coin")
    return written


def _quantized(modality: str, values: np.ndarray) -> np.ndarray:
    """The decoded output as its file stores it: 8-bit images; 16-bit levels of audio and of the
    normalised climate and MRI values."""
    if modality == "image":
        return to_uint8(values)
    return np.clip(np.rint(values * 65535.0), 0, 65535).astype(np.uint16)


def _write_reference(stem: Path, modality: str, decoded: Signal, out: np.ndarray) -> None:
    if modality == "image":
        modalities.get("image").write(decoded, stem.with_name(stem.name + ".png"))
    else:
        np.save(stem.with_name(stem.name + ".npy"), out)


def _read_reference(stream: Path, modality: str, shape: tuple[int, ...]) -> np.ndarray:
    if modality == "image":
        return np.asarray(Image.open(stream.with_suffix(".png"))).reshape(shape)
    return np.load(stream.with_suffix(".npy"), allow_pickle=False).reshape(shape)


class ConformanceError(CoinError):
    """A conformance stream does not decode to its pinned symbols or output."""


def _symbols(p: Parsed) -> np.ndarray:
    """What must decode bit-exactly: latent symbols (COIN++) or the stored weights (COIN)."""
    if p.spec is None:
        return np.concatenate([t.detach().numpy().reshape(-1) for t in network_from_file(p.file).tensors()])
    return decode_symbols(p)


def check(stream: Path) -> dict:
    """Decode a conformance stream; returns what matched. Raises ConformanceError when its symbols,
    its output's shape or its output (beyond float rounding) differ from the pinned ones."""
    meta = json.loads(stream.with_suffix(".json").read_text())
    data = stream.read_bytes()
    p = parse(data)
    symbols = _symbols(p)
    if _sha(symbols) != meta["symbols_sha256"]:
        raise ConformanceError(f"{stream.name}: decoded symbols changed")
    decoded, _ = decode_bytes(data, device="cpu", postfilter=False)
    out = _quantized(p.modality.name, decoded.values)
    if list(out.shape) != meta["shape"]:
        raise ConformanceError(f"{stream.name}: output shape changed")
    ref = _read_reference(stream, p.modality.name, out.shape)
    diff = np.abs(out.astype(int) - ref.astype(int))
    # Float rounding may move a sample by one 8-bit level (a few 16-bit levels) on another machine.
    limit = 1 if p.modality.name == "image" else 8
    if diff.max() > limit or diff.mean() >= 0.01 * limit:
        raise ConformanceError(f"{stream.name}: decoded output changed (largest difference {int(diff.max())} "
                               f"levels, mean {float(diff.mean()):.4f})")
    if "bound" in meta:
        if _sha(_residual_field(p)) != meta["residual_sha256"]:
            raise ConformanceError(f"{stream.name}: decoded residual field changed")
        original = np.load(stream.parent / f"{stream.stem}.original.npy", allow_pickle=False)
        mask = p.modality.missing(p.meta, p.file.shape)
        err = np.abs(p.modality.units(decoded) - original)[... if mask is None else ~mask]
        if err.max() > meta["bound"]:
            raise ConformanceError(f"{stream.name}: an error of {err.max():.4g} exceeds the bound {meta['bound']:g}")
    return {"symbols": True, "output": True, "output_exact": _sha(out) == meta["output_sha256"]}


if __name__ == "__main__":
    if sys.argv[1:2] != ["write"]:
        sys.exit("usage: python -m coinpp.evaluation.conformance write [coin | CODEC ...]")
    os.environ["COIN_CODECS_PATH"] = str(codecs_folder())
    if sys.argv[2:] == ["coin"]:
        paths = write_coin()
    elif sys.argv[2:] == ["bounded"]:
        paths = write_bounded()
    elif sys.argv[2:]:  # only these codecs' streams (new codecs), the others left as they are
        paths = write(codec_names=sys.argv[2:])
    else:
        paths = write() + write_coin() + write_bounded()
    for path in paths:
        print(path)
