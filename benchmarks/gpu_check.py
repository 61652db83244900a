"""The CUDA encoder, measured: one command to run first on a lent GPU.

    python benchmarks/gpu_check.py --data ../shared/data/kodak          # on the GPU machine
    python benchmarks/gpu_check.py --device cpu --codec NAME --data DIR --skip-tests   # its plumbing, anywhere

1. the test suite (`python -m pytest -q -x`), whose CLI tests pick CUDA by default when it is present;
2. every image of --data encoded with each preset on --device (seconds per image and per megapixel);
3. the same folder through the batch path (`coin encode DIR`: images per second);
4. each file written on --device decoded on the CPU: the symbols must be the ones the encoder chose, and
   its PSNR within 0.05 dB of the same image encoded on the CPU (the CPU encodes only --compare images);
5. everything recorded in --out/gpu-check.json (and printed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from coinpp import codec as codecs
from coinpp import malloc, modalities
from coinpp.batch import encode_tree
from coinpp.bitstream import decode_symbols, parse
from coinpp.decoder import Decoder
from coinpp.device import hardware_description, pick_device
from coinpp.encoder import Encoder

PRESETS = ("fast", "default", "max")


def run_tests() -> dict:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"], capture_output=True,
                       text=True)
    tail = r.stdout.strip().splitlines()[-1:] or [""]
    return {"returncode": r.returncode, "summary": tail[0], "seconds": round(time.perf_counter() - t0, 1)}


def check(data: Path, out: Path, codec_name: str, device: str, compare: int, tests: bool) -> dict:
    malloc.tune()
    image = modalities.get("image")
    files = sorted(p for p in data.iterdir() if image.extension_of(p))
    if not files:
        raise SystemExit(f"{data}: no images")
    codec = codecs.load(codec_name)
    dev = pick_device(device)
    rec: dict = {"device": hardware_description(dev), "codec": codec.name, "images": len(files)}
    if tests:
        rec["tests"] = run_tests()
    signals = [image.read(p) for p in files]
    pixels = [s.spatial[0] * s.spatial[1] for s in signals]
    written: dict[str, list] = {}
    rec["presets"] = {}
    for preset in PRESETS:
        e = Encoder(codec, image, preset, device=device)
        e.encode(signals[0])  # warm up (CUDA context, kernels)
        times, encoded = [], []
        for s in signals:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            encoded.append(e.encode(s))
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        written[preset] = encoded
        rec["presets"][preset] = {"seconds_per_image": round(float(np.mean(times)), 3),
                                  "seconds_per_megapixel": round(sum(times) / (sum(pixels) / 1e6), 3),
                                  "bpp": round(float(np.mean([8 * len(x.data) / n for x, n in zip(encoded, pixels,
                                                                                             strict=True)])), 4)}
    folder = out / "batch"
    t0 = time.perf_counter()
    report = encode_tree(data, folder, codec.name, force=True, check=False, device=device)
    seconds = time.perf_counter() - t0
    rec["batch"] = {"done": report.count("done"), "failed": len(report.failed), "seconds": round(seconds, 1),
                    "images_per_second": round(report.count("done") / seconds, 3)}
    cpu = Decoder("cpu")
    cpu_encoder = Encoder(codec, image, "default", device="cpu")
    rows = []
    for s, f, enc in list(zip(signals, files, written["default"], strict=True))[:compare]:
        parsed = parse(enc.data)
        same_symbols = bool(np.array_equal(decode_symbols(parsed), enc.symbols))
        here = image.quality(s, cpu.decode(parsed))["psnr"]
        on_cpu = image.quality(s, cpu.decode(parse(cpu_encoder.encode(s).data)))["psnr"]
        rows.append({"file": f.name, "symbols_match": same_symbols, "psnr": round(here, 3),
                     "psnr_cpu_encoded": round(on_cpu, 3),
                     "within_0.05_db": bool(abs(here - on_cpu) <= 0.05)})
    rec["decoded_on_cpu"] = rows
    rec["ok"] = (all(r["symbols_match"] and r["within_0.05_db"] for r in rows) and rec["batch"]["failed"] == 0
                 and rec.get("tests", {}).get("returncode", 0) == 0)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu-check.json").write_text(json.dumps(rec, indent=1) + "\n")
    return rec


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/kodak"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu"))
    ap.add_argument("--codec", default=codecs.default_for("image"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--compare", type=int, default=4, help="Images also encoded on the CPU to compare quality")
    ap.add_argument("--skip-tests", action="store_true")
    args = ap.parse_args(argv)
    rec = check(args.data, args.out, args.codec, args.device, args.compare, not args.skip_tests)
    print(json.dumps(rec, indent=1))
    return rec


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
