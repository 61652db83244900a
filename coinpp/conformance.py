"""Conformance streams: small .coin files whose decoded symbols and output are pinned.

    python -m coinpp.conformance write   # (re)write bitstream/conformance/ -- only on purpose

Each stream `NAME.coin` has `NAME.json` (codec, SHA-256 of the decoded symbols, SHA-256 of the
decoded 8-bit output on the reference machine) and `NAME.png` (that output). A decoder must
reproduce the symbols exactly; the output may differ from the reference PNG only by float
rounding (checked as a tiny tolerance), and the exact hash tells when it did.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from . import codec as codecs
from . import modalities
from .modalities import Signal
from .modalities.image import to_uint8
from .pipeline import decode_bytes, decode_symbols, encode_signal, parse

ROOT = Path(__file__).resolve().parent.parent / "bitstream" / "conformance"
TINY_CODEC = "conformance-tiny-b5"  # a small codec kept with the streams: pins the format itself


def codecs_folder(root: Path = ROOT) -> Path:
    return root / "codecs"


def _write_tiny_codec(folder: Path) -> None:
    """A small random network with tables, written once and then kept in the repository."""
    import torch

    from .entropy import frequency_table
    from .model import LatentModulatedSiren, SirenConfig
    from .quantize import Quantizer

    torch.manual_seed(0)
    cfg = SirenConfig(width=16, depth=2, latent_dim=8)
    net = LatentModulatedSiren(cfg)
    lat = np.random.default_rng(0).normal(0, 0.05, size=(4000, cfg.latent_dim)).astype(np.float32)
    q = Quantizer.fit(lat, 5)
    config = {"name": TINY_CODEC, "modality": "image", "model": cfg.to_dict(), "patch": [16, 16],
              "encode_steps": 3}
    codecs.write_folder(folder / TINY_CODEC, config, net, q, frequency_table(q.quantize(lat), q.levels),
                        f"# {TINY_CODEC}\n\nUntrained network for conformance streams only.\n")


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def sample_signals() -> dict[str, Signal]:
    """Crops of the bundled sample: odd sizes (padding), RGB and grayscale."""
    from importlib.resources import files

    img = modalities.get("image").read(Path(str(files("coinpp") / "samples" / "chelsea.png")))
    rgb = img.values[100:147, 200:261]  # 47 x 61
    gray = rgb.mean(axis=-1, keepdims=True)
    gray = np.rint(gray * 255) / 255
    return {"rgb-47x61": Signal(rgb.copy(), {"channels": 3}), "gray-47x61": Signal(gray.astype(np.float32),
                                                                                   {"channels": 1})}


def write(root: Path = ROOT, codec_names: list[str] | None = None) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    if not (codecs_folder(root) / TINY_CODEC).exists():
        _write_tiny_codec(codecs_folder(root))
    image = modalities.get("image")
    names = codec_names or sorted(n for n, f in codecs.available().items()
                                  if json.loads((f / "config.json").read_text())["modality"] == "image")
    written = []
    for cname in names:
        codec = codecs.load(cname)
        for sname, sig in sample_signals().items():
            stem = f"{cname}.{sname}"
            enc = encode_signal(sig, image, codec, device="cpu")
            (root / f"{stem}.coin").write_bytes(enc.data)
            decoded, _ = decode_bytes(enc.data, device="cpu")
            out = to_uint8(decoded.values)
            image.write(decoded, root / f"{stem}.png")
            meta = {"codec": cname, "codec_hash": codec.hash.hex(), "symbols_sha256": _sha(enc.symbols),
                    "output_sha256": _sha(out), "shape": list(out.shape), "bytes": len(enc.data)}
            (root / f"{stem}.json").write_text(json.dumps(meta, indent=1) + "\n")
            written.append(root / f"{stem}.coin")
    return written


def check(stream: Path) -> dict:
    """Decode a conformance stream; returns what matched. Raises AssertionError on a mismatch."""
    meta = json.loads(stream.with_suffix(".json").read_text())
    data = stream.read_bytes()
    p = parse(data)
    symbols = decode_symbols(p)
    assert _sha(symbols) == meta["symbols_sha256"], f"{stream.name}: decoded symbols changed"
    decoded, _ = decode_bytes(data, device="cpu")
    out = to_uint8(decoded.values)
    assert list(out.shape) == meta["shape"], f"{stream.name}: output shape changed"
    ref = np.asarray(Image.open(stream.with_suffix(".png")))
    ref = ref.reshape(out.shape)
    diff = np.abs(out.astype(int) - ref.astype(int))
    # Float rounding may move a sample by one 8-bit level on another machine, never more.
    assert diff.max() <= 1 and diff.mean() < 0.01, f"{stream.name}: decoded output changed"
    return {"symbols": True, "output_exact": _sha(out) == meta["output_sha256"]}


if __name__ == "__main__":
    if sys.argv[1:] != ["write"]:
        sys.exit("usage: python -m coinpp.conformance write")
    import os

    os.environ["COIN_CODECS_PATH"] = str(codecs_folder())
    for path in write():
        print(path)
