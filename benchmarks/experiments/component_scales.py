"""The component-scales entropy model, built with integer arithmetic as a decoder would run it, against
the shipped coder by real stream lengths (issue 43's first lever; RECORD.md section 19).

Every value is coded component by component (all patches' component 0, then component 1, ...) with
one of its component's K discretized Laplace rows, picked by a log-linear prediction of its scale from
integers already decoded: the summed and the last magnitude of the patch's earlier components, and the
same two over its four neighbours (Mitchell's integer log2, integer weights). The model is static:
fitted to training photos' symbols, it does not adapt to the file. `parametric_entropy.py` chose the
features by ideal code length; this script codes for real.

    python benchmarks/experiments/component_scales.py --cache runs/ctx-fits.pt [--kodak 1,5,13,20]

Prints the bytes of the 32 training photos' centre crops (four folds: fitted on 24, coded 8) and of
the named Kodak images (fitted on all 32; symbols from the shipped encoder), under both coders.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import constriction
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from context_models import symbol_grids  # noqa: E402

from coinpp import codec as codecs  # noqa: E402
from coinpp import entropy, modalities  # noqa: E402
from coinpp.encoder import Encoder  # noqa: E402
from coinpp.entropy import EntropyModel, Layout, _grid  # noqa: E402
from coinpp.errors import FormatError  # noqa: E402

TABLE_PRECISION = entropy.TABLE_PRECISION


SCALE_FEATURES = 4  # own (summed earlier magnitudes), last, and the same two over the neighbours


@dataclass(frozen=True, eq=False)
class ComponentScales(EntropyModel):
    """Patch grids (2-D; 1-D as one row), coded component by component, each value with its
    component's row of `rows` that its predicted scale class picks."""

    rows: np.ndarray  # (D, K, levels) int32, each summing to 2^TABLE_PRECISION, every entry >= 1
    weights: np.ndarray  # (D, 1 + SCALE_FEATURES) int64: bias, then per feature (Q16 log2 scale)
    base: int  # class k covers predictions [base + k * step, base + (k + 1) * step)
    step: int

    @property
    def classes(self) -> int:
        return self.rows.shape[1]

    @property
    def levels(self) -> int:  # type: ignore[override]
        return self.rows.shape[2]

    @property
    def dims(self) -> int:  # type: ignore[override]
        return self.weights.shape[0]

    def encode(self, symbols: np.ndarray, layout: Layout) -> bytes:
        grid = _grid(layout)
        if symbols.shape != (math.prod(grid), self.dims):
            raise ValueError("symbols do not match the patch grid or the entropy model")
        values = symbols.astype(np.int64)
        return _encode_scales(grid, self, lambda j, rows: values[:, j])

    def decode(self, data: bytes, layout: Layout) -> np.ndarray:
        return decode_scales(data, _grid(layout), self)

    def encode_rd(self, positions: np.ndarray, layout: Layout, lam: float) -> tuple[bytes, np.ndarray]:
        return encode_scales_rd(positions, _grid(layout), self, lam)


def mitchell_log2(x: np.ndarray) -> np.ndarray:
    """256 · log2(x + 1) for integers x >= 0, in integers: 256 times the bit length minus one, plus
    the bits below the top one as a linear fraction (Mitchell's approximation; exact at powers of 2)."""
    v = np.asarray(x, dtype=np.int64) + 1
    e = np.frexp(v.astype(np.float64))[1].astype(np.int64) - 1  # exact: v < 2^53
    return 256 * e + (((v - np.left_shift(1, e)) << 8) >> e)


def _neighbours4(values: np.ndarray) -> np.ndarray:
    """(G, R, Q) ints -> ⌊4 · sum / count⌋ over each patch's left, right, upper and lower neighbours
    inside its group's grid (0 where it has none)."""
    pad = np.pad(values, ((0, 0), (1, 1), (1, 1)))
    one = np.pad(np.ones(values.shape, dtype=np.int64), ((0, 0), (1, 1), (1, 1)))
    total = pad[:, :-2, 1:-1] + pad[:, 2:, 1:-1] + pad[:, 1:-1, :-2] + pad[:, 1:-1, 2:]
    count = one[:, :-2, 1:-1] + one[:, 2:, 1:-1] + one[:, 1:-1, :-2] + one[:, 1:-1, 2:]
    return np.where(count > 0, 4 * total // np.maximum(count, 1), 0)


def scale_features(own: np.ndarray, last: np.ndarray) -> np.ndarray:
    """(G, R, Q) summed and last magnitudes of the components before -> (P, SCALE_FEATURES) Mitchell
    logs of own, last, and the neighbours' of both."""
    f = [own, last, _neighbours4(own), _neighbours4(last)]
    return np.stack([mitchell_log2(x).reshape(-1) for x in f], axis=1)


def scale_classes(model: ComponentScales, j: int, features: np.ndarray) -> np.ndarray:
    """The row index of component j of every patch, from its (P, SCALE_FEATURES) features."""
    w = model.weights[j].astype(np.int64)
    s = w[0] + features @ w[1:]
    return np.clip((s - model.base) // model.step, 0, model.classes - 1)


def _scales_pass(grid_shape: tuple[int, int, int], model: ComponentScales, step) -> None:
    """Walk the components in order; `step(j, rows)` codes component j of every patch (raster order,
    group by group) with the (P, L) integer rows its classes give and returns the (P,) symbols."""
    own = np.zeros(grid_shape, dtype=np.int64)
    last = np.zeros(grid_shape, dtype=np.int64)
    rows = model.rows.astype(np.int64)
    middle = model.levels // 2
    for j in range(model.dims):
        k = scale_classes(model, j, scale_features(own, last))
        s = np.asarray(step(j, rows[j, k]), dtype=np.int64)
        last = np.abs(s - middle).reshape(grid_shape)
        own += last


def _encode_scales(grid_shape: tuple[int, int, int], model: ComponentScales, symbols_of) -> bytes:
    coder = constriction.stream.queue.RangeEncoder()
    cat = constriction.stream.model.Categorical(perfect=False)

    def step(j: int, rows: np.ndarray) -> np.ndarray:
        s = np.asarray(symbols_of(j, rows), dtype=np.int64)
        if len(s):
            coder.encode(s.astype(np.int32), cat, rows.astype(np.float32) / np.float32(1 << TABLE_PRECISION))
        return s

    _scales_pass(grid_shape, model, step)
    return coder.get_compressed().astype("<u4").tobytes()


def encode_scales_rd(positions: np.ndarray, grid_shape: tuple[int, int, int], model: ComponentScales,
                     lam: float) -> tuple[bytes, np.ndarray]:
    """Rate-distortion rounding (as encode_context_rd), encoder only: each value takes the one of its
    two nearest levels with the lower (position - level)^2 + lam * bits, under the row it is coded with."""
    p = math.prod(grid_shape)
    if positions.shape != (p, model.dims):
        raise ValueError("positions do not match the patch grid or the entropy model")
    if not (lam >= 0 and np.isfinite(lam)):
        raise ValueError("lam must be finite and >= 0")
    top = model.levels - 1
    u = np.asarray(positions, dtype=np.float64)
    chosen = np.zeros(u.shape, dtype=np.int64)
    at = np.arange(p)

    def choose(j: int, rows: np.ndarray) -> np.ndarray:
        x = u[:, j]
        if lam == 0:
            chosen[:, j] = np.clip(np.rint(x), 0, top)
            return chosen[:, j]
        lo = np.clip(np.floor(x), 0, top - 1).astype(np.int64)
        hi = lo + 1
        bits = np.log2(rows[at, lo] / rows[at, hi])
        worse_lo = (x - lo) ** 2 - (x - hi) ** 2 - lam * bits
        chosen[:, j] = np.where(worse_lo > 0, hi, lo)
        return chosen[:, j]

    data = _encode_scales(grid_shape, model, choose)
    return data, chosen.astype(np.int32)


def decode_scales(data: bytes, grid_shape: tuple[int, int, int], model: ComponentScales) -> np.ndarray:
    """bytes -> (P, D) int32 symbols. Corrupt data raises FormatError."""
    if len(data) % 4:
        raise FormatError("corrupted payload (length is not a whole number of words)")
    out = np.zeros((math.prod(grid_shape), model.dims), dtype=np.int64)
    try:
        coder = constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
        cat = constriction.stream.model.Categorical(perfect=False)

        def step(j: int, rows: np.ndarray) -> np.ndarray:
            if len(rows):
                out[:, j] = coder.decode(cat, rows.astype(np.float32) / np.float32(1 << TABLE_PRECISION))
            return out[:, j]

        _scales_pass(grid_shape, model, step)
    except Exception as e:  # constriction reports invalid data with its own exception types
        raise FormatError(f"corrupted payload ({e})") from None
    if out.size and (out.min() < 0 or out.max() >= model.levels):
        raise FormatError("corrupted payload (symbol out of range)")
    return out.astype(np.int32)


def integer_rows(probabilities: np.ndarray) -> np.ndarray:
    """Probability rows (K, L) -> integer rows summing to 2^entropy.TABLE_PRECISION, every entry >= 1
    (largest-remainder rounding of the share left after the floor of 1)."""
    k, levels = probabilities.shape
    spare = (1 << entropy.TABLE_PRECISION) - levels
    share = probabilities / probabilities.sum(axis=1, keepdims=True) * spare
    rows = np.floor(share).astype(np.int64)
    for i in range(k):
        rows[i, np.argsort(-(share[i] - rows[i]), kind="stable")[: spare - rows[i].sum()]] += 1
    return (rows + 1).astype(np.int32)


def laplace_rows(log2_scales: np.ndarray, levels: int, centre: float = 0.0) -> np.ndarray:
    """Discretized Laplace rows (K, levels) about the middle level + `centre`, one per scale (in
    symbols), the tails folded into the end levels."""
    edges = np.arange(levels + 1, dtype=np.float64) - levels // 2 - 0.5 - centre  # level s: [s - 0.5, s + 0.5)
    b = np.exp2(np.asarray(log2_scales, dtype=np.float64))[:, None]
    cdf = np.where(edges < 0, 0.5 * np.exp(np.minimum(edges, 0) / b), 1 - 0.5 * np.exp(-np.maximum(edges, 0) / b))
    cdf[:, 0], cdf[:, -1] = 0.0, 1.0
    return integer_rows(np.maximum(np.diff(cdf, axis=1), 0.0))


def _scale_features_of(grids: list[np.ndarray], levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per training grid (R, Q, D), every value's features as the coder forms them: (N, D, F) and
    the centred values (N, D)."""
    feats, values = [], []
    for g in grids:
        g = g.astype(np.int64).reshape(1, *g.shape) if g.ndim == 3 else g.astype(np.int64).reshape(1, 1, *g.shape)
        a = np.abs(g - levels // 2)
        own = np.zeros(g.shape[:3], dtype=np.int64)
        last = np.zeros_like(own)
        per = []
        for j in range(g.shape[3]):
            per.append(scale_features(own, last))
            last = a[..., j]
            own = own + last
        feats.append(np.stack(per, axis=1))
        values.append((g - levels // 2).reshape(-1, g.shape[3]))
    return np.concatenate(feats), np.concatenate(values)


def component_scales(grids: list[np.ndarray], levels: int, classes: int = 64, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Fit the component-scales model (entropy.ComponentScales) to training symbol grids: per
    component, log2 of the Laplace scale linear in the Mitchell-log features, by maximum likelihood of
    the discretized Laplace about a centre of its own; then the weights in integers and, per
    component, `classes` rows spanning the scales the training values predict. Returns (rows (D, K, L),
    weights, base, step)."""
    import torch

    torch.manual_seed(seed)
    feats, values = _scale_features_of(grids, levels)
    x = torch.from_numpy(values).double()
    phi = torch.from_numpy(feats).double() / 256  # log2 units
    d = x.shape[1]
    theta = torch.zeros(d, phi.shape[2] + 1, dtype=torch.float64)
    theta[:, 0] = torch.log2(x.abs().mean(0) + 0.5)
    centre = x.median(0).values.clone()
    theta.requires_grad_(True)
    centre.requires_grad_(True)
    opt = torch.optim.LBFGS([theta, centre], max_iter=300, line_search_fn="strong_wolfe")

    def bits() -> torch.Tensor:
        b = torch.exp2(theta[:, 0] + (phi * theta[:, 1:]).sum(-1))

        def cdf(v: torch.Tensor) -> torch.Tensor:
            z = (v - centre) / b
            return torch.where(z < 0, 0.5 * torch.exp(z.clamp(max=0)), 1 - 0.5 * torch.exp(-z.clamp(min=0)))

        p = cdf(x + 0.5) - cdf(x - 0.5)
        return -torch.log2(p.clamp_min(0) + 2.0**-16).mean()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = bits()
        loss.backward()
        return loss

    opt.step(closure)
    t = theta.detach().numpy()
    weights = np.concatenate([np.rint(t[:, :1] * 65536), np.rint(t[:, 1:] * 256)], axis=1).astype(np.int64)
    s = weights[None, :, 0] + np.einsum("ndf,df->nd", feats, weights[:, 1:])
    lo, hi = np.percentile(s, 0.1), np.percentile(s, 99.9)
    step = max(1, int(np.ceil((hi - lo) / classes)))
    base = int(np.floor(lo))
    log2_scales = (base + (np.arange(classes) + 0.5) * step) / 65536
    centres = centre.detach().numpy()
    rows = np.stack([laplace_rows(log2_scales, levels, float(c)) for c in centres])
    return rows, weights, base, step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", default="image-klt-6x128-l64-b5")
    ap.add_argument("--data", default="../shared/data/train-images")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--classes", default="16,32")
    ap.add_argument("--kodak", default="1,5,13,20")
    ap.add_argument("--kodak-dir", default="../shared/data/kodak")
    args = ap.parse_args()
    codec = codecs.load(args.codec)
    levels = codec.quantizer.levels
    grids = symbol_grids(codec, args.data, args.cache)
    for k in [int(c) for c in args.classes.split(",")]:
        shipped = ours = 0
        for f in range(4):
            model = ComponentScales(*component_scales([g for i, g in enumerate(grids) if i % 4 != f], levels, k))
            for g in (g for i, g in enumerate(grids) if i % 4 == f):
                sym = g.reshape(-1, g.shape[2]).astype(np.int32)
                shipped += len(codec.entropy.encode(sym, (1, *g.shape[:2])))
                ours += len(model.encode(sym, (1, *g.shape[:2])))
        print(f"training photos, {k} classes: shipped {shipped} bytes, component scales {ours} "
              f"({100 * (ours / shipped - 1):+.2f} %)", flush=True)
    model = ComponentScales(*component_scales(grids, levels, int(args.classes.split(",")[0])))
    image = modalities.get("image")
    shipped = ours = 0
    for n in [int(x) for x in args.kodak.split(",") if x]:
        sig = image.read(Path(args.kodak_dir) / f"kodim{n:02d}.png")
        symbols = Encoder(codec, image, device="cpu").encode(sig).symbols
        layout = (1, math.ceil(sig.values.shape[0] / 32), math.ceil(sig.values.shape[1] / 32))
        a, b = len(codec.entropy.encode(symbols, layout)), len(model.encode(symbols, layout))
        shipped, ours = shipped + a, ours + b
        print(f"kodim{n:02d}: shipped {a} bytes, component scales {b} ({100 * (b / a - 1):+.2f} %)", flush=True)
    if shipped:
        print(f"Kodak: {100 * (ours / shipped - 1):+.2f} %")


if __name__ == "__main__":
    main()
