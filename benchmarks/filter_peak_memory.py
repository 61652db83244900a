"""Peak resident memory of the encoder's steps through the post-filter on a large photo, in the tuned
heap and with its large arrays mapped on their own (malloc.bounded_heap), each in a fresh process.

The filter steps are the encoder's only whole-image phase (the SGD and Adam phases work on chunks
of patches of a fixed size), so they set how the encoder's memory grows with the photo. A training
photo is resized (Lanczos) to the size asked; the latents are random (the cost does not depend on
them). The heap is tuned as the CLI tunes it.

    python benchmarks/filter_peak_memory.py [--size 3000x2000] [--steps 4] [--heap both|tuned|mapped]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from PIL import Image
from coinpp import codec as codecs, fit, malloc

malloc.tune()
torch.set_num_threads(2)
name, path, release = sys.argv[1], sys.argv[2], sys.argv[6] == "1"
w, h, steps = map(int, sys.argv[3:6])
fit.BOUNDED_HEAP_VALUES = 0 if release else 1 << 62  # whatever the size: the policy under test decides
c = codecs.load(name)
img = np.asarray(Image.open(path).convert("RGB").resize((w, h), Image.LANCZOS), dtype=np.float32) / 255
patches = -(-h // c.patch[0]) * -(-w // c.patch[1])
torch.manual_seed(0)
z = torch.randn(patches, c.net.cfg.latent_dim) * 0.1
p = c.preset().filter
t = time.perf_counter()
fit.refine_through_filter(c.net, c.postfilter, c.patch, img, z, steps, p.lr, None, p.views, "cpu")
print(json.dumps({"seconds": time.perf_counter() - t, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="3000x2000")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--codec", default="image-klt-6x128-l64-b5")
    ap.add_argument("--heap", choices=["both", "tuned", "mapped"], default="both")
    ap.add_argument("--photo", default="../shared/data/train-images/unsplash_andrew-ridley-jR4Zf-riEjI.png")
    args = ap.parse_args()
    w, h = map(int, args.size.split("x"))
    print(f"{args.codec}, {args.steps} filter steps on a {w}x{h} photo ({w * h / 1e6:.1f} MP)\n")
    print("| heap | peak RSS | seconds |\n|---|---|---|")
    for release in {"both": (False, True), "tuned": (False,), "mapped": (True,)}[args.heap]:
        out = subprocess.run([sys.executable, "-c", CHILD, args.codec, args.photo, str(w), str(h), str(args.steps),
                              "1" if release else "0"], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        label = "large arrays mapped (above 16 MiB)" if release else "tuned (mmap above 1 GiB, no trim)"
        print(f"| {label} | {r['peak_kb'] / 1e6:.2f} GB | {r['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
