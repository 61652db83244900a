"""benchmarks/gpu_check.py's plumbing, on the CPU with a tiny codec: it records every section, and a
file's symbols and quality are compared across devices."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import smooth_image
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import gpu_check  # noqa: E402


def test_gpu_check_records_each_section_on_the_cpu(tiny_codec, tmp_path):
    data = tmp_path / "images"
    data.mkdir()
    for i, (h, w) in enumerate(((24, 40), (33, 17))):
        Image.fromarray(smooth_image(h, w, seed=i)).save(data / f"p{i}.png")
    rec = gpu_check.main(["--data", str(data), "--out", str(tmp_path / "out"), "--codec", tiny_codec.name,
                          "--device", "cpu", "--compare", "2", "--skip-tests"])
    assert rec["ok"] and rec["images"] == 2 and set(rec["presets"]) == {"fast", "default", "max"}
    assert all(p["seconds_per_image"] > 0 for p in rec["presets"].values())
    assert rec["batch"]["done"] == 2 and rec["batch"]["failed"] == 0
    assert [r["symbols_match"] for r in rec["decoded_on_cpu"]] == [True, True]
    assert json.loads((tmp_path / "out" / "gpu-check.json").read_text()) == rec
