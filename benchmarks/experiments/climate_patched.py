"""A regional field coded whole or in patches: which is better? (issue 6's open question)

The shipped climate codecs give each whole field one latent and let the network see where each
sample lies on the sphere. The alternative is the image recipe: cut the 33 x 49 ERA5 field into
patches, one latent per patch, local coordinates. This script meta-learns such a patched network
on the same training hours (the first 461 of 576) for a stated CPU budget, then codes the 115
held-out hours both ways: payload bits per value (per-dimension static tables for both, no
series context, no header) against RMSE in kelvin.

    python benchmarks/experiments/climate_patched.py [--suite climate] [--minutes 15] [--patch 11,7] [--latent 4]
    python benchmarks/experiments/climate_patched.py --suite climate-global --patch 25,24 --latent 4 \
        --run runs/ncep-patched

Writes benchmarks/results/<suite>/patched.json. (Issue 6 measured both with --minutes 10.)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from coinpp import codec as codecs
from coinpp import entropy, modalities
from coinpp.encoder import Encoder
from coinpp.evaluation.bench import SUITES, read_signal
from coinpp.fit import fit_latents
from coinpp.model import SirenConfig
from coinpp.patching import patch_coordinates, split
from coinpp.quantize import Quantizer
from coinpp.synthesis import evaluate_fields, evaluate_grid
from coinpp.training.meta import TrainConfig, load_checkpoint, train
from coinpp.training.tables import frequency_table

ap = argparse.ArgumentParser()
ap.add_argument("--minutes", type=float, default=15.0)
ap.add_argument("--patch", default="11,7")
ap.add_argument("--latent", type=int, default=4)
ap.add_argument("--run", default="runs/clim-patched")
ap.add_argument("--suite", default="climate", help="climate (ERA5, regional) or climate-global (NCEP, the globe)")
args = ap.parse_args()
patch = tuple(int(v) for v in args.patch.split(","))

climate = modalities.get("climate")
suite = SUITES[args.suite]
path = Path("../shared/data") / suite.folder / suite.files[0]
whole = climate.read(path)
test = read_signal(climate, path, suite)  # the held-out hours, as the climate bench codes them
start = climate.held_out_start(whole.meta, suite.holdout)
fields = climate.to_network(whole, 1)  # (576, 33, 49, 1) in [0, 1] over the file's range
# The held-out hours as a file of their own (their own range), exactly what the climate bench codes.
train_fields, test_fields = list(fields[:start]), climate.to_network(test, 1)
span = test.meta["high"] - test.meta["low"]  # kelvin per network unit on the test hours

# The patched network, meta-learned like the image codecs; validated on the held-out hours, as the
# shipped climate codecs were.
cfg = TrainConfig(data=str(path), out=args.run, modality="climate", patch=patch,
                  model=SirenConfig(in_dim=2, out_dim=1, width=128, depth=4, latent_dim=args.latent),
                  batch=16, outer_lr=2e-4, time_limit_min=args.minutes, val_every=100, seed=0, device="cpu")
best = train(cfg, train_fields, list(test_fields), progress=False)
net, state, _ = load_checkpoint(best)
net.eval().requires_grad_(False)
coords = patch_coordinates(patch)


def patches(stack: np.ndarray) -> np.ndarray:
    return np.concatenate([split(f, patch)[0] for f in stack])


t0 = time.perf_counter()
train_latents = fit_latents(net, coords, patches(np.stack(train_fields)), 10, "cpu").numpy()
test_latents = fit_latents(net, coords, patches(test_fields), 10, "cpu")
fit_s = time.perf_counter() - t0
per_field = len(test_latents) // len(test_fields)
values = test_fields.size
rows = []
for bits, clip in ((3, 3.0), (4, 3.0), (5, 3.5), (6, 4.0)):
    q = Quantizer.fit(train_latents, bits, clip_std=clip)
    table = frequency_table(q.quantize(train_latents), q.levels)
    symbols = q.quantize(test_latents)
    payload = len(entropy.encode(symbols, table))
    z = torch.from_numpy(q.dequantize(symbols))
    decoded = np.stack([evaluate_grid(net, z[i * per_field:(i + 1) * per_field], fields.shape[1:3], patch,
                                      fields.shape[1:3], "cpu") for i in range(len(test_fields))])
    err = (np.clip(decoded, 0, 1) - test_fields) * span
    rows.append({"coding": f"patched {patch[0]}x{patch[1]}, latent {args.latent}", "bits": bits,
                 "payload_bits_per_value": payload * 8 / values, "rmse_K": float(np.sqrt((err ** 2).mean())),
                 "max_error_K": float(np.abs(err).max())})
    print(json.dumps(rows[-1]), flush=True)

PREFIXES = {"climate": ("era5-t2m-5x128-l16", "era5-t2m-5x128-l48"), "climate-global": ("ncep-air-5x128-l16",)}
for prefix in PREFIXES[args.suite]:
    names = sorted(n for n in codecs.available() if n.startswith(prefix + "-b"))
    latents = Encoder(codecs.load(names[0]), climate, device="cpu").fit([test])[0]
    for name in names:
        c = codecs.load(name)
        symbols = c.quantizer.quantize(latents)
        payload = len(entropy.encode(symbols, c.entropy.table))
        z = torch.from_numpy(c.quantizer.dequantize(symbols))
        decoded = evaluate_fields(c.net, z, torch.from_numpy(climate.coordinates(test.meta)), "cpu")
        err = (np.clip(decoded.reshape(test_fields.shape), 0, 1) - test_fields) * span
        rows.append({"coding": f"whole field ({name[:-3]}, shipped)", "bits": c.bits,
                     "payload_bits_per_value": payload * 8 / values, "rmse_K": float(np.sqrt((err ** 2).mean())),
                     "max_error_K": float(np.abs(err).max())})
        print(json.dumps(rows[-1]), flush=True)

doc = {"data": f"{path.name}: hours {start}..{len(fields) - 1} held out (never trained on), grid {fields.shape[1:3]}",
       "patched_training": {"patch": list(patch), "latent": args.latent, "steps": state["step"],
                            "wall_time_s": round(state["elapsed_s"], 1), "best_val_psnr_db": state["best_val_psnr"],
                            "hardware": state["hardware"], "patches_per_field": per_field, "fit_s": round(fit_s, 1)},
       "whole_field_training": "see the shipped codecs' model cards",
       "rows": rows, "command": f"python benchmarks/experiments/climate_patched.py --suite {args.suite} "
                                f"--minutes {args.minutes:g} --patch {args.patch} --latent {args.latent}"}
out = Path(f"benchmarks/results/{args.suite}/patched.json")
out.write_text(json.dumps(doc, indent=1) + "\n")
