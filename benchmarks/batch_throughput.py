"""Throughput of folder encoding: one file at a time vs batched (coinpp.batch), on this CPU.

    python benchmarks/batch_throughput.py small    # 192 crops of 64x64 from the training photos
    python benchmarks/batch_throughput.py photos   # the first 6 training photos

Prints one JSON line; the recorded run is in benchmarks/results/batch/throughput.jsonl.
"""

import json
import shutil
import sys
import time
from pathlib import Path

from PIL import Image

from coinpp import codec as codecs
from coinpp import modalities
from coinpp.batch import encode_tree, walk
from coinpp.encoder import encode_signal
from coinpp.files import atomic_write_bytes
from coinpp.malloc import tune

tune()
which = sys.argv[1]
root = Path("/tmp/tp")
photos = sorted(Path("../shared/data/train-images").glob("*.png"))
folder = root / which
if not folder.exists():
    folder.mkdir(parents=True)
    if which == "photos":
        for p in photos[:6]:
            shutil.copy(p, folder / p.name)
    else:  # small files: 64x64 crops (4 patches each)
        k = 0
        for p in photos:
            im = Image.open(p).convert("RGB")
            for y in range(0, im.height - 64, 300):
                for x in range(0, im.width - 64, 300):
                    if k < 192:
                        im.crop((x, y, x + 64, y + 64)).save(folder / f"{k:03d}.png")
                        k += 1
files = walk(folder)
mb = sum(f.stat().st_size for f in files) / 1e6
image = modalities.get("image")
codec = codecs.load(codecs.default_for("image"))
res = {"set": which, "files": len(files), "mb_in": round(mb, 3)}
out = root / f"out-{which}-single"
shutil.rmtree(out, ignore_errors=True)
out.mkdir(parents=True)
t0 = time.perf_counter()
for f in files:
    atomic_write_bytes(out / (f.name + ".coin"), encode_signal(image.read(f), image, codec, device="cpu").data)
t = time.perf_counter() - t0
res["one_by_one"] = {"s": round(t, 2), "files_per_s": round(len(files) / t, 3), "mb_per_s": round(mb / t, 4)}
for jobs in (1, 2):
    out = root / f"out-{which}-batch{jobs}"
    shutil.rmtree(out, ignore_errors=True)
    rep = encode_tree(folder, out, check=False, device="cpu", jobs=jobs).to_dict()
    assert rep["done"] == len(files)
    res[f"batched_jobs{jobs}"] = {"s": round(rep["seconds"], 2), "files_per_s": round(rep["files_per_s"], 3),
                                  "mb_per_s": round(rep["mb_per_s"], 4)}
res["identical_bytes_single_vs_batched"] = all(
    (root / f"out-{which}-single" / (f.name + ".coin")).read_bytes()
    == (root / f"out-{which}-batch1" / (f.name + ".coin")).read_bytes() for f in files)
print(json.dumps(res), flush=True)
