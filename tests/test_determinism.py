"""Determinism: the same input gives the same bytes, and decoding gives the same symbols and output,
whatever the thread count. (Symbols must never differ; float outputs may differ across machines by
rounding, see bitstream/FORMAT.md.)"""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import hashlib, json, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from coinpp import codec, modalities
from coinpp.evaluation.conformance import sample_signals
from coinpp.modalities.image import to_uint8
from coinpp.bitstream import decode_symbols, parse
from coinpp.decoder import decode_bytes
from coinpp.encoder import encode_signal
image = modalities.get("image")
c = codec.load(codec.default_for("image"))
enc = encode_signal(sample_signals()["rgb-47x61"], image, c, device="cpu")
dec, p = decode_bytes(enc.data, device="cpu")
h = lambda b: hashlib.sha256(b).hexdigest()
print(json.dumps({"bytes": h(enc.data), "symbols": h(decode_symbols(parse(enc.data)).tobytes()),
                  "output": h(to_uint8(dec.values).tobytes())}))
"""


def _run(threads: int) -> dict:
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(threads)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_one_and_two_threads_give_identical_files_symbols_and_output():
    one, two = _run(1), _run(2)
    assert one == two


def test_encoding_twice_gives_identical_bytes():
    a, b = _run(2), _run(2)
    assert a["bytes"] == b["bytes"]
