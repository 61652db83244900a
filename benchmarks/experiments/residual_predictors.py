"""What should the residual layer predict from? The size of the residual field of the held-out ERA5 hours
and the MRI test volumes at several bounds, for each prediction:

- network: the residual of the network's decode (the default rung), each plane (along the first axis) by
  the median edge detector (one of the predictions the format codes);
- none: the values themselves, quantized at the same step, by the median edge detector;
- network, time/slice difference: the residual minus the previous plane's residual, then as above.

    python benchmarks/experiments/residual_predictors.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from coinpp import codec as codecs
from coinpp import modalities
from coinpp.bitstream import parse
from coinpp.decoder import Decoder
from coinpp.encoder import Encoder
from coinpp.evaluation.bench import SUITES, read_signal
from coinpp.residual import DISAGREEMENT, MARGIN, encode_field, grid_bound, planes


def sizes(x: np.ndarray, p: np.ndarray, bound: float, quantum: float, span: float) -> dict[str, int]:
    half = grid_bound(bound, quantum) + quantum / 2 if quantum else bound  # as residual.make_layer
    step = 2 * (half * (1 - MARGIN) - span * DISAGREEMENT)
    q_net = planes(np.rint((x - p) / step).astype(np.int64))
    q_none = planes(np.rint(x / step).astype(np.int64))
    diff = np.diff(q_net, axis=0, prepend=np.zeros_like(q_net[:1]))
    return {"network": len(encode_field(q_net)), "none": len(encode_field(q_none)),
            "network, plane difference": len(encode_field(diff))}


def main() -> None:
    root = Path("../shared/data")
    for suite, bounds in (("climate", (0.1, 0.5, 1.0)), ("mri", (0, 13))):
        spec = SUITES[suite]
        m = modalities.get(spec.modality)
        codec = codecs.load(codecs.default_for(spec.modality))
        for name in spec.files:
            s = read_signal(m, root / spec.folder / name, spec)
            p = m.units(Decoder("cpu", postfilter=False).decode(parse(Encoder(codec, m, device="cpu").encode(s).data)))
            grid = m.value_grid(s.meta)
            quantum = grid[0] if grid else 0.0
            for b in bounds:
                if b == 0 and not quantum:
                    continue
                r = sizes(s.exact, p, b, quantum, m.span(s.meta))
                print(f"| {name} | {b:g} | " + " | ".join(f"{k}: {v:,}" for k, v in r.items()) + " |", flush=True)


if __name__ == "__main__":
    main()
