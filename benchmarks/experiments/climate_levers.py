"""What each climate-codec choice buys, on the ERA5 hours the codec never trained on (the last 115 of
576), with the shipped network: entropy coding with and without the previous-field context, the
header with and without the preset dictionary, and encode steps. Writes
benchmarks/results/climate/levers.json.

    python benchmarks/experiments/climate_levers.py [codec-prefix]      (default era5-t2m-5x128-l16)
"""

import json
import sys
import time
import zlib
from pathlib import Path

from coinpp import codec as codecs
from coinpp import entropy, modalities
from coinpp.decoder import decode_bytes
from coinpp.encoder import Encoder
from coinpp.evaluation.bench import SUITES, read_signal
from coinpp.modalities.climate import ClimateModality

PREFIX = sys.argv[1] if len(sys.argv) > 1 else "era5-t2m-5x128-l16"
DATA = Path("../shared/data")
OUT = Path("benchmarks/results/climate/levers.json")

climate: ClimateModality = modalities.get("climate")  # type: ignore[assignment]
suite = SUITES["climate"]
signal = read_signal(climate, DATA / suite.folder / suite.files[0], suite)
raw_bytes = signal.values.size * 4
rec: dict = {"data": f"{suite.files[0]}, fields {signal.spatial[0]} held out (never trained on)",
             "values": int(signal.values.size)}

# Header: the JSON of attributes and coordinates, zlib alone vs raw DEFLATE with the preset dictionary.
doc = {k: signal.meta[k] for k in ("var", "dtype", "attrs", "global", "format", "dims", "low", "high")}
text = json.dumps(doc, separators=(",", ":")).encode()
rec["header"] = {"json_bytes": len(text), "zlib_bytes": len(zlib.compress(text, 9)),
                 "deflate_with_dictionary_bytes": len(climate.encode_meta(signal.meta)) - 8}

names = sorted(n for n in codecs.available() if n.startswith(PREFIX + "-b"))
rows = []
for steps in (3, 10, 30, 100):
    base = codecs.load(names[0])
    t0 = time.perf_counter()
    latents = Encoder(base, climate, steps=steps, device="cpu").fit([signal])[0]
    t_fit = time.perf_counter() - t0
    for name in names:
        c = codecs.load(name)
        enc = Encoder(c, climate, device="cpu").pack(latents, signal)
        marginal = len(entropy.encode(enc.symbols, c.entropy.table))
        context = len(entropy.encode(enc.symbols, c.entropy.table, c.entropy.delta_table))
        decoded, _ = decode_bytes(enc.data, device="cpu")
        q = climate.quality(signal, decoded)
        rows.append({"codec": name, "encode_steps": steps, "file_bytes": len(enc.data),
                     "payload_marginal_bytes": marginal, "payload_context_bytes": context,
                     "bits_per_value": len(enc.data) * 8 / signal.values.size, "ratio": raw_bytes / len(enc.data),
                     "rmse_K": q["rmse"], "max_error_K": q["max_error"], "psnr_db": q["psnr"],
                     "fit_s": round(t_fit, 2)})
        print(json.dumps(rows[-1]), flush=True)
rec["rows"] = rows
OUT.parent.mkdir(parents=True, exist_ok=True)
OUT.write_text(json.dumps(rec, indent=1) + "\n")
print(json.dumps(rec["header"]))
