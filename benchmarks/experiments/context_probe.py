"""Would an in-patch context pay? Ideal code lengths of the shipped neighbour-context coder against
the same coder with a second context variable: the activity of the patch's components coded just
before (the mean distance from the centre symbol of the previous W components, in M buckets).

Latent-scale mixtures say a patch with large early components has large later ones too; the
shipped coder only conditions on the left and upper neighbours' values of the same component. The
probe fits the held-out training photos (never Kodak) with each codec, then walks the symbols in
the coder's order with its integer adaptive rows: the extra context starts every activity bucket
from the trained neighbour row, so only adaptation within the file can learn it (a trained prior
per bucket would shrink the dilution cost, not the signal this measures).

    python benchmarks/experiments/context_probe.py \
        --codecs image-klt-6x128-l64-b4,image-klt-6x128-l64-b5,image-klt-6x128-l64-b6
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from coinpp import codec as codecs
from coinpp import modalities
from coinpp.bitstream import layout
from coinpp.encoder import Encoder, encode_each
from coinpp.entropy import TABLE_PRECISION, NeighbourContext, adaptive_rows, context_buckets, neighbour_mean
from coinpp.modalities import Signal
from coinpp.training.data import load_folder


def code_bits(grid: np.ndarray, model: NeighbourContext, window: int = 0, thresholds: tuple[float, ...] = ()) -> float:
    """Ideal bits of one (R, Q, D) symbol grid; window 0: the shipped coder."""
    rows_n, cols, d = grid.shape
    buckets = len(thresholds) + 1 if window else 1
    prior = np.repeat(model.prior.astype(np.int64)[:, :, None, :], buckets, axis=2)  # D, K, M, L
    increment = (1 << TABLE_PRECISION) // model.adapt
    seen = np.zeros(prior.shape, np.int64)
    centre = model.prior.sum(axis=1).argmax(axis=1)
    dims = np.arange(d)
    lo = np.maximum(0, dims - window)
    bits = 0.0
    for r in range(rows_n):
        for q in range(cols):
            k = context_buckets(neighbour_mean(grid, r, q, model.levels), model.levels, model.buckets)
            s = grid[r, q].astype(np.int64)
            m = np.zeros(d, np.int64)
            if window:
                csum = np.concatenate([[0.0], np.cumsum(np.abs(s - centre))])
                activity = (csum[dims] - csum[lo]) / np.maximum(1, dims - lo)
                m = np.searchsorted(thresholds, activity, side="right")
                m[0] = 0  # the first component has no earlier one
            rows = adaptive_rows(prior[dims, k, m] + increment * seen[dims, k, m])
            bits -= np.log2(rows[dims, s] / (1 << TABLE_PRECISION)).sum()
            seen[dims, k, m, s] += 1
    return bits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codecs", required=True, help="comma-separated image codecs with a neighbour context")
    ap.add_argument("--data", default="../shared/data/train-images")
    ap.add_argument("--windows", default="2,4,8,16,64")
    ap.add_argument("--thresholds", default="0.5,1.5;1,2,4;0.25,0.5,1,2", help="';'-separated bucket edges")
    args = ap.parse_args()
    torch.manual_seed(0)
    _, held_out, names = load_folder(args.data, "image", 3, 0)  # the photos `coin train` holds out
    image = modalities.get("image")
    loaded = [codecs.load(n) for n in args.codecs.split(",")]
    grids: dict[str, list[np.ndarray]] = {c.name: [] for c in loaded}
    for a in held_out:
        signal = Signal(np.ascontiguousarray(a[..., :3], dtype=np.float32), {"channels": 3})
        # the fit and the per-patch Adam, without the steps through the filter or the rounding by rate
        encoders = [Encoder(c, image, c.preset("fast").without("round"), device="cpu") for c in loaded]
        for done in encode_each(signal, encoders):
            c = done.encoder.codec
            shape = layout(signal.spatial, c.patch, 1)
            grids[c.name].append(done.encoded.symbols.reshape(shape[1], shape[2], -1))
    print(f"held-out photos: {', '.join(names)}")
    print("| codec | window | bucket edges | bits, shipped | bits, with activity | change |")
    print("|---|---|---|---|---|---|")
    for c in loaded:
        if not isinstance(c.entropy, NeighbourContext):
            raise SystemExit(f"{c.name} has no neighbour context")
        shipped = sum(code_bits(g, c.entropy) for g in grids[c.name])
        for w in (int(x) for x in args.windows.split(",")):
            for edges in args.thresholds.split(";"):
                th = tuple(float(x) for x in edges.split(","))
                bits = sum(code_bits(g, c.entropy, w, th) for g in grids[c.name])
                change = 100 * (bits / shipped - 1)
                print(f"| {c.name} | {w} | {edges} | {shipped:,.0f} | {bits:,.0f} | {change:+.2f} % |")


if __name__ == "__main__":
    main()
