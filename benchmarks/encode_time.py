"""Encode and decode time per Kodak image of some codecs, measured alone (two torch threads), on
every fourth Kodak image (kodim01, 05, 09, 13, 17, 21). For when a bench ran beside other jobs.

    python benchmarks/encode_time.py CODEC [CODEC ...]   # prints one line per codec
"""
import sys
import time
from pathlib import Path

import numpy as np
import torch

from coinpp import codec as codecs
from coinpp import malloc, modalities
from coinpp.decoder import decode_bytes
from coinpp.encoder import encode_signal

malloc.tune()  # as the CLI does: freed blocks kept in the heap
torch.set_num_threads(2)
image = modalities.get("image")
files = sorted(Path("../shared/data/kodak").glob("kodim*.png"))[:: 4]  # 6 images: 1, 5, 9, 13, 17, 21
stems = ", ".join(f.stem for f in files)
for name in sys.argv[1:]:
    c = codecs.load(name)
    encode_s, decode_s = [], []
    for f in files:
        sig = image.read(f)
        t0 = time.perf_counter()
        enc = encode_signal(sig, image, c, device="cpu")
        encode_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        decode_bytes(enc.data, device="cpu")
        decode_s.append(time.perf_counter() - t0)
    print(f"{name}: encode {np.mean(encode_s):.1f} s, decode {np.mean(decode_s):.2f} s per image "
          f"({len(files)} Kodak images: {stems})", flush=True)
