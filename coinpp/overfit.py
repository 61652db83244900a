"""COIN mode: overfit one small SIREN to one file and store its weights (no shipped codec needed).

    coordinates of every sample -> fit a SIREN with Adam (keep the best iterate as stored)
    -> weights as 16-bit floats (or b-bit per-tensor uniform) -> container kind 1

The coordinates are the whole signal's sample centres in [-1, 1] per axis (the convention of
patching.py with one patch covering everything), so decoding at any resolution evaluates the
same network on a denser or sparser grid.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from . import container
from .container import NetworkFile, SirenArch
from .device import pick_device
from .errors import FormatError, InputError
from .modalities import Modality, Placement, Signal
from .model import Siren
from .patching import patch_coordinates, pixel_centres

# Published COIN architectures on Kodak (DESIGN.md §1): bits per pixel -> (sine layers, width).
PUBLISHED_KODAK = ((0.07, 5, 20), (0.15, 5, 30), (0.3, 10, 28), (0.6, 10, 40), (1.2, 13, 49))
EVAL_CHUNK = 1 << 16
DEFAULT_LR = 2e-4  # the published rate; 1e-3 measured no better (kodim01, 60 s budgets)
# Random coordinates per Adam step. A Kodak image has 393k; on this CPU a step over all of them
# takes ~1 s, and in a 60 s budget 2^16 random points per step reached 21.1 dB against 19.0 dB
# for full batches (2^14: 20.7 dB). 0 means every point, every step (the published setting).
DEFAULT_BATCH_POINTS = 1 << 16


def parse_arch(text: str, in_dim: int, out_dim: int) -> SirenArch:
    """'LxW' (sine layers x width), e.g. '10x28'."""
    try:
        depth, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--arch {text!r}: expected LAYERSxWIDTH, e.g. 10x28") from None
    if not (1 <= depth <= container.MAX_DEPTH and 1 <= width <= container.MAX_WIDTH):
        raise InputError(f"--arch {text!r}: layers must be 1..{container.MAX_DEPTH}, width 1..{container.MAX_WIDTH}")
    return SirenArch(in_dim, out_dim, width, depth)


def arch_for_rate(bits_per_sample: float, samples: int, in_dim: int, out_dim: int,
                  weight_bits: int = 16) -> SirenArch:
    """The architecture whose file size comes nearest to `bits_per_sample` × `samples` bits.

    Depth follows the published Kodak choice nearest in rate (log scale); the width is the one
    whose stored weights, header and per-tensor ranges come nearest to the budget (so 0.3 bpp on
    a Kodak image gives the published 10x28, 0.305 bpp with its header).
    """
    if not (0 < bits_per_sample <= 64) or math.isnan(bits_per_sample):
        raise InputError("--bpp must be in (0, 64]")
    depth = min(PUBLISHED_KODAK, key=lambda r: abs(math.log(r[0] / bits_per_sample)))[1]
    header_bits = 8 * 64  # container header, sections and checksum
    budget = bits_per_sample * samples

    def size(width: int) -> float:
        arch = SirenArch(in_dim, out_dim, width, depth)
        return arch.params * weight_bits + (0 if weight_bits == 16 else 64 * len(arch.shapes)) + header_bits

    if size(1) > budget * 1.5:
        raise InputError(f"--bpp {bits_per_sample}: too few bits for even a width-1 network on "
                         f"{samples} samples; raise --bpp")
    width = 1
    while width < container.MAX_WIDTH and size(width + 1) <= budget:
        width += 1
    if width < container.MAX_WIDTH and abs(size(width + 1) - budget) < abs(size(width) - budget):
        width += 1
    return SirenArch(in_dim, out_dim, width, depth)


# ----------------------------------------------------------------------------------------------
# Weights <-> payload. Parsing is integer-only: the payload length follows from the header, the
# half floats are read bit-exactly, and b-bit codes are unpacked with integer ops.


def store_round(tensors: list[torch.Tensor], weight_bits: int) -> list[torch.Tensor]:
    """The weights exactly as a decoder will see them after storage."""
    return decode_weights(encode_weights(tensors, weight_bits), [tuple(t.shape) for t in tensors], weight_bits)


def encode_weights(tensors: list[torch.Tensor], weight_bits: int) -> bytes:
    flat = [t.detach().cpu().double().reshape(-1).numpy() for t in tensors]
    if weight_bits == 16:
        return np.concatenate(flat).astype("<f2").tobytes()
    levels = (1 << weight_bits) - 1
    ranges, codes = [], []
    for v in flat:
        lo, hi = np.float32(v.min()), np.float32(v.max())
        ranges.append((lo, hi))
        span = float(hi) - float(lo)
        q = np.zeros(v.shape, np.int64) if span == 0 else np.rint((v - float(lo)) / span * levels).astype(np.int64)
        codes.append(np.clip(q, 0, levels))
    head = np.array(ranges, dtype="<f4").tobytes()
    return head + _pack_bits(np.concatenate(codes), weight_bits)


def decode_weights(payload: bytes, shapes: list[tuple[int, ...]], weight_bits: int) -> list[torch.Tensor]:
    sizes = [math.prod(s) for s in shapes]
    n = sum(sizes)
    if weight_bits == 16:
        values = np.frombuffer(payload, dtype="<f2", count=n).astype(np.float32)
    else:
        k = len(shapes)
        ranges = np.frombuffer(payload[: 8 * k], dtype="<f4").reshape(k, 2).astype(np.float64)
        if not np.all(np.isfinite(ranges)):
            raise FormatError("corrupted weights (range is not a finite number)")
        codes = _unpack_bits(payload[8 * k :], n, weight_bits).astype(np.float64)
        levels = (1 << weight_bits) - 1
        lo = np.repeat(ranges[:, 0], sizes)
        hi = np.repeat(ranges[:, 1], sizes)
        values = (lo + codes / levels * (hi - lo)).astype(np.float32)
    if not np.all(np.isfinite(values)):
        raise FormatError("corrupted weights (not finite numbers)")
    out, start = [], 0
    for shape, size in zip(shapes, sizes, strict=True):
        out.append(torch.from_numpy(values[start : start + size].copy()).reshape(shape))
        start += size
    return out


def _pack_bits(codes: np.ndarray, bits: int) -> bytes:
    """Little-endian bit packing: code i occupies bits [i*b, (i+1)*b) of the stream."""
    bit_matrix = (codes[:, None] >> np.arange(bits)) & 1
    return np.packbits(bit_matrix.reshape(-1).astype(np.uint8), bitorder="little").tobytes()


def _unpack_bits(data: bytes, n: int, bits: int) -> np.ndarray:
    stream = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")[: n * bits]
    return (stream.reshape(n, bits).astype(np.int64) << np.arange(bits)).sum(axis=1)


def network_from_file(f: NetworkFile) -> Siren:
    a = f.arch
    net = Siren(a.in_dim, a.out_dim, a.width, a.depth, float(a.w0))
    with torch.no_grad():
        for p, v in zip(net.tensors(), decode_weights(f.payload, a.shapes, f.weight_bits), strict=True):
            p.copy_(v)
    return net


# ----------------------------------------------------------------------------------------------
# Fitting


@dataclass
class FitReport:
    net: Siren  # best iterate, weights already rounded as stored
    psnr: float  # float PSNR of the stored weights on the training grid (modality-neutral)
    iterations: int
    seconds: float
    best_iteration: int


@torch.no_grad()
def _mse(net: Siren, coords: torch.Tensor, targets: torch.Tensor) -> float:
    total = 0.0
    for c, t in zip(coords.split(EVAL_CHUNK), targets.split(EVAL_CHUNK), strict=True):
        total += float((net(c) - t).pow(2).sum())
    return total / targets.numel()


def _psnr(mse: float) -> float:
    return float("inf") if mse == 0 else -10 * math.log10(mse)


def fit_network(values: np.ndarray, arch: SirenArch, iterations: int, lr: float = DEFAULT_LR,
                time_limit: float | None = None, batch_points: int = DEFAULT_BATCH_POINTS, weight_bits: int = 16,
                seed: int = 0, device: str = "auto",
                on_progress: Callable[[int, float], None] | None = None) -> FitReport:
    """Fit a SIREN to values (*spatial, C) in [0, 1] with Adam; keep the best iterate as stored.

    batch_points: coordinates per step (a fresh random subset each step); 0 = all of them.
    The best iterate is judged on every sample, with the weights rounded as they will be stored,
    every `eval_every` steps and at the end.
    """
    if iterations < 1:
        raise InputError("--iters must be at least 1")
    dev = pick_device(device)
    torch.manual_seed(seed)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    spatial = values.shape[:-1]
    coords = patch_coordinates(tuple(spatial)).to(dev)
    targets = torch.as_tensor(values, dtype=torch.float32).reshape(-1, values.shape[-1]).to(dev)
    n = coords.shape[0]
    net = Siren(arch.in_dim, arch.out_dim, arch.width, arch.depth, float(arch.w0)).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    stored = Siren(arch.in_dim, arch.out_dim, arch.width, arch.depth, float(arch.w0)).to(dev)
    full = batch_points <= 0 or batch_points >= n
    # A full evaluation costs about a third of a full training step: every 10 full steps, or
    # after as many subsampled steps as make up ~10 passes over the points.
    eval_every = 10 if full else max(1, round(10 * n / batch_points))
    best = (-math.inf, 0, None)
    t0 = time.perf_counter()
    it = 0

    def evaluate() -> None:
        nonlocal best
        with torch.no_grad():
            for p, v in zip(stored.tensors(), store_round(net.tensors(), weight_bits), strict=True):
                p.copy_(v)
        score = _psnr(_mse(stored, coords, targets))
        if score > best[0]:
            best = (score, it, [t.detach().clone() for t in stored.tensors()])
        if on_progress is not None:
            on_progress(it, best[0])

    for it in range(1, iterations + 1):
        if full:
            c, t = coords, targets
        else:
            idx = torch.randint(0, n, (batch_points,), generator=gen).to(dev)
            c, t = coords[idx], targets[idx]
        loss = (net(c) - t).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        out_of_time = time_limit is not None and time.perf_counter() - t0 >= time_limit
        if it % eval_every == 0 or it == iterations or out_of_time:
            evaluate()
        if out_of_time:
            break
    with torch.no_grad():
        for p, v in zip(stored.tensors(), best[2], strict=True):
            p.copy_(v)
    return FitReport(stored.cpu(), best[0], it, time.perf_counter() - t0, best[1])


@torch.no_grad()
def evaluate_network(net: Siren, out_shape: tuple[int, ...], device: str = "auto",
                     shape: tuple[int, ...] | None = None, placement: Placement | None = None) -> np.ndarray:
    """The network sampled on a regular grid of `out_shape` sample centres spanning [-1, 1] (or at
    `placement`, in samples of the coded `shape`): (*out_shape, C)."""
    dev = pick_device(device)
    net = net.to(dev)
    if placement is None:
        axes = [pixel_centres(s) for s in out_shape]
    else:  # input sample k is centred at k + 0.5 of n: coordinate 2 (k + 0.5) / n - 1
        axes = [torch.from_numpy(2 * (first + np.arange(m) * step) / n - 1)
                for m, n, (first, step) in zip(out_shape, shape, placement, strict=True)]
    n = math.prod(out_shape)
    out = np.empty((n, net.out_bias.shape[0]), dtype=np.float32)
    # Coordinates are built chunk by chunk so a large decode never holds them all.
    strides = np.cumprod((1,) + tuple(reversed(out_shape[1:])))[::-1]
    for start in range(0, n, EVAL_CHUNK):
        idx = np.arange(start, min(start + EVAL_CHUNK, n))
        c = torch.stack([axes[d][(idx // strides[d]) % out_shape[d]] for d in range(len(out_shape))], dim=-1)
        out[start : start + len(idx)] = net(c.float().to(dev)).cpu().numpy()
    return out.reshape(*out_shape, -1)


# ----------------------------------------------------------------------------------------------
# Whole files


@dataclass
class Overfitted:
    data: bytes
    report: FitReport
    arch: SirenArch


def encode_signal(signal: Signal, modality: Modality, arch: SirenArch | None = None, bpp: float | None = None,
                  iterations: int = 2000, lr: float = DEFAULT_LR, time_limit: float | None = None,
                  batch_points: int = DEFAULT_BATCH_POINTS, weight_bits: int = 16, seed: int = 0,
                  device: str = "auto",
                  on_progress: Callable[[int, float], None] | None = None) -> Overfitted:
    """Overfit a SIREN to the signal and write the .coin bytes (container kind 1)."""
    if weight_bits not in container.WEIGHT_BITS:
        raise InputError(f"--weight-bits must be one of {', '.join(map(str, container.WEIGHT_BITS))}")
    values = modality.to_network(signal, signal.channels)
    in_dim, out_dim = len(signal.spatial), signal.channels
    if arch is None:
        arch = arch_for_rate(0.3 if bpp is None else bpp, math.prod(signal.spatial), in_dim, out_dim, weight_bits)
    elif (arch.in_dim, arch.out_dim) != (in_dim, out_dim):
        arch = SirenArch(in_dim, out_dim, arch.width, arch.depth, arch.w0)
    report = fit_network(values, arch, iterations, lr, time_limit, batch_points, weight_bits, seed, device,
                         on_progress)
    f = NetworkFile(modality.code, signal.spatial, signal.channels, arch, weight_bits,
                    encode_weights(report.net.tensors(), weight_bits), modality.encode_meta(signal.meta))
    return Overfitted(container.write_bytes(f), report, arch)


def decode_file(f: NetworkFile, modality: Modality, meta: dict, out_shape: tuple[int, ...],
                device: str = "auto", placement: Placement | None = None) -> Signal:
    values = evaluate_network(network_from_file(f), out_shape, device, tuple(f.shape), placement)
    values = modality.from_network(np.clip(values, 0.0, 1.0), meta)
    return Signal(values.astype(np.float32), modality.resampled(meta, f.shape, out_shape, placement))
