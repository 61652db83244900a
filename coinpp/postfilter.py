"""Decoder-side post-filters: a small convolutional network that restores a decoded image, and linear
filters for audio waveforms (`WaveformFilter`) and MRI volumes (`VolumeFilter`).

The base network's output on the native grid has two kinds of error a few convolutions can undo:
seams at patch borders (on three Kodak images decoded with `image-klt-6x128-l64-b5`, the two pixels
next to a border had 1.0 dB lower PSNR than the patch interior) and a detail-poor, slightly blurred
texture. The filter sees the decoded RGB image and where each pixel sits inside its patch (sin and
cos of its phase along each axis), and adds a correction.

It is not part of the bitstream: the symbols, the latents and the network's output are unchanged,
so the codec's hash and every file written before it stay valid, and `coin decode --no-postfilter`
gives the normative output. The filter is trained on the file's own grid; an image decoded onto
another grid spanning it gets the filter's correction from the own grid, resampled (`carried`).
Weights or taps live beside the codec (`postfilter.safetensors`) and are checked against the SHA-256 in
its config.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file as load_numpy
from safetensors.torch import load_file
from torch import nn

from .spec import PostFilterSpec

FILE = "postfilter.safetensors"
TILE = 256  # pixels per tile side when filtering: bounds memory on large images
POSITION_FEATURES = 4  # sin, cos of the phase inside the patch, per axis


class PostFilter(nn.Module):
    """RGB (B, 3, H, W) in [0, 1] plus position features -> corrected RGB (not clipped)."""

    def __init__(self, cfg: PostFilterSpec) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        convs = [nn.Conv2d(3 + POSITION_FEATURES, c, 3, padding=1)]
        convs += [nn.Conv2d(c, c, 3, padding=1) for _ in range(cfg.layers - 2)]
        convs.append(nn.Conv2d(c, 3, 3, padding=1))
        # Starts close to the identity (the decoded image nearly unchanged), but not at it: a zero or
        # a 0.01-scaled last layer passes almost no gradient to the others and training stalls (measured).
        with torch.no_grad():
            convs[-1].weight.mul_(0.1)
            convs[-1].bias.zero_()
        self.convs = nn.ModuleList(convs)
        self.views = 1  # how many flipped/transposed views `apply` averages by default (the codec's choice)

    @property
    def halo(self) -> int:
        return self.cfg.layers

    def positions(self, y0: int, x0: int, h: int, w: int, device: torch.device) -> torch.Tensor:
        """(1, 4, h, w) phase features of the pixels [y0, y0 + h) x [x0, x0 + w) of the image."""
        return view_positions(self.cfg.period, VIEWS[0], (0, 0), y0, x0, h, w, device)

    def forward(self, rgb: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = torch.cat([rgb, positions.expand(len(rgb), -1, -1, -1)], dim=1)
        for conv in self.convs[:-1]:
            x = torch.relu(conv(x))
        return rgb + self.convs[-1](x)


# The views of the dihedral group that `apply` can average over: (transpose, flip rows, flip columns).
VIEWS = ((False, False, False), (False, False, True), (False, True, False), (False, True, True),
         (True, False, False), (True, False, True), (True, True, False), (True, True, True))


def usable_views(period: tuple[int, int]) -> tuple[tuple[bool, bool, bool], ...]:
    """The views a filter of this patch period can average: a transposed view of a non-square patch
    grid would put the seams where the filter does not expect them, so only the flips remain."""
    return VIEWS if period[0] == period[1] else VIEWS[:4]


def view_positions(period: tuple[int, int], view: tuple[bool, bool, bool], source_shape: tuple[int, int],
                    y0: int, x0: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """Phase features of the pixels [y0, y0 + h) x [x0, x0 + w) of a transposed and/or flipped view of
    the image: each axis of the view takes its source axis's phase, negated where the view runs
    backwards, so a seam lies where the filter learned to expect one (between phase 31.5/32 and 0.5/32
    of a turn) in every view."""
    transpose, flip_rows, flip_cols = view
    axes = (1, 0) if transpose else (0, 1)  # the source axis behind each axis of the view
    feats = []
    for start, n, axis, flipped in ((y0, h, axes[0], flip_rows), (x0, w, axes[1], flip_cols)):
        i = torch.arange(start, start + n, device=device, dtype=torch.float32)
        c = source_shape[axis] - 1 - i if flipped else i
        a = 2 * math.pi * (c + 0.5) / period[axis]
        feats.append(((-a.sin()) if flipped else a.sin(), a.cos()))
    (sy, cy), (sx, cx) = feats
    fy = torch.stack([sy, cy])[:, :, None].expand(2, h, w)
    fx = torch.stack([sx, cx])[:, None, :].expand(2, h, w)
    return torch.cat([fy, fx])[None]


@torch.no_grad()
def apply(net: PostFilter, image: np.ndarray, device: torch.device | str = "cpu", tile: int = TILE,
          views: int | None = None) -> np.ndarray:
    """(H, W, 3) decoded values on the file's own grid -> filtered (H, W, 3) float32, not clipped.

    Tiles with a halo as wide as the receptive field, so the result is the same as filtering the
    whole image at once (up to float rounding) with bounded memory. `views` > 1 averages the filter's
    output over that many flipped (and, for square patches, transposed) views of the image, each
    mapped back: the filter is not exactly symmetric, and its errors in different views partly cancel
    (default: the filter's own `views`, from its codec's config).
    """
    views = net.views if views is None else views
    period = net.cfg.period
    usable = usable_views(period)
    if not 1 <= views <= len(usable):
        raise ValueError(f"views must be in 1..{len(usable)} for a {period[0]}x{period[1]} patch")
    h, w, _ = image.shape
    net = net.to(device)
    source = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1).to(device)
    total = np.zeros((h, w, 3), dtype=np.float32)
    r = net.halo
    for view in usable[:views]:
        vh, vw = (w, h) if view[0] else (h, w)
        # Tile by tile in the view's coordinates, each tile cut from the source and turned into the view
        # (no whole view is copied), its output turned back and added where it belongs.
        for (ya, yb, xa, xb), (y0, x0, ty, tx) in tiles(vh, vw, tile, r):
            (ra, rb), (ca, cb) = source_box(view, (h, w), (ya, yb), (xa, xb))
            region = to_view(source[:, ra:rb, ca:cb], view)[None]
            pos = view_positions(period, view, (h, w), ya, xa, yb - ya, xb - xa, region.device)
            y = net(region, pos)[0, :, y0 - ya : y0 - ya + ty, x0 - xa : x0 - xa + tx]
            (sa, sb), (ta, tb) = source_box(view, (h, w), (y0, y0 + ty), (x0, x0 + tx))
            total[sa:sb, ta:tb] += from_view(y, view).permute(1, 2, 0).cpu().numpy()
    return total / views if views > 1 else total


def carried(correction: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The filter's correction (H, W, 3) on the file's own grid, resampled onto `shape` (a grid spanning
    the same image, pixel centres as every image tool places them) by Lanczos-3 interpolation.

    What the filter restores (blur, seams, ringing of the network's own-grid output) is there in the
    network's output on a finer grid too, at the same places: on six halved Kodak photos decoded at 2x
    by `image-klt-6x128-l64-b5` it takes the finer decode from 0.30 dB under a Lanczos upscale of the
    filtered decode to 0.02 dB under it (benchmarks/experiments/RECORD.md, section 19)."""
    from PIL import Image

    size = (shape[1], shape[0])
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(correction[..., c], dtype=np.float32),
                                                mode="F").resize(size, Image.LANCZOS))
                     for c in range(correction.shape[-1])], axis=-1)


def source_box(view: tuple[bool, bool, bool], shape: tuple[int, int], rows: tuple[int, int],
               cols: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """The source region (rows, cols) a view's region (rows x cols, in the view's coordinates) shows."""
    transpose, flip_rows, flip_cols = view
    axes = (1, 0) if transpose else (0, 1)  # the source axis behind the view's rows and columns
    box: list[tuple[int, int]] = [(0, 0), (0, 0)]
    for (a, b), axis, flipped in ((rows, axes[0], flip_rows), (cols, axes[1], flip_cols)):
        box[axis] = (shape[axis] - b, shape[axis] - a) if flipped else (a, b)
    return box[0], box[1]


def tiles(vh: int, vw: int, tile: int, r: int
           ) -> Iterator[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]:
    """((ya, yb, xa, xb), (y0, x0, ty, tx)) for each tile of a (vh, vw) view: the region with its
    halo of r, and the tile's own origin and size."""
    for y0 in range(0, vh, tile):
        for x0 in range(0, vw, tile):
            yield ((max(0, y0 - r), min(vh, y0 + tile + r), max(0, x0 - r), min(vw, x0 + tile + r)),
                   (y0, x0, min(tile, vh - y0), min(tile, vw - x0)))


def to_view(x: torch.Tensor, view: tuple[bool, bool, bool]) -> torch.Tensor:
    """(C, H, W) -> the view: transposed first, then flipped."""
    transpose, flip_rows, flip_cols = view
    x = x.transpose(1, 2) if transpose else x
    dims = [d for d, f in ((1, flip_rows), (2, flip_cols)) if f]
    return x.flip(dims) if dims else x


def from_view(x: torch.Tensor, view: tuple[bool, bool, bool]) -> torch.Tensor:
    """The inverse of to_view: unflipped first, then transposed back."""
    transpose, flip_rows, flip_cols = view
    dims = [d for d, f in ((1, flip_rows), (2, flip_cols)) if f]
    x = x.flip(dims) if dims else x
    return x.transpose(1, 2) if transpose else x


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class WaveformFilter:
    """Audio codecs' post-filter: a linear filter (odd length, centred) on the decoded waveform at the
    file's own rate, fitted by least squares to the codec's decodes of training speech. The speech
    network adds noise above 2 kHz and loses level; on the 15 test clips a 33-tap filter fitted to 12
    training clips' decodes took `speech-ctx-6x128-l64-b6` from 42.51 to 42.99 dB."""

    def __init__(self, cfg: PostFilterSpec, taps: np.ndarray) -> None:
        if taps.shape != (cfg.taps,) or not np.isfinite(taps).all():
            raise ValueError(f"{FILE} does not hold {cfg.taps} finite taps")
        self.cfg, self.taps = cfg, taps.astype(np.float64)


def apply_waveform(f: WaveformFilter | np.ndarray, values: np.ndarray) -> np.ndarray:
    """(N, C) decoded samples in [0, 1] -> filtered (N, C) float32, not clipped: each channel's
    waveform (2 v - 1) filtered, its ends mirrored. `f`: a codec's filter, or taps (a file's own)."""
    taps = f.taps if isinstance(f, WaveformFilter) else np.asarray(f, dtype=np.float64)
    h = len(taps) // 2
    out = np.empty(values.shape, dtype=np.float32)
    for c in range(values.shape[1]):
        x = values[:, c].astype(np.float64) * 2 - 1
        xp = np.pad(x, h, mode="reflect") if len(x) > h else np.pad(x, h, mode="edge")
        out[:, c] = (np.correlate(xp, taps, mode="valid") + 1) / 2
    return out


def _lags(x: np.ndarray, taps: int) -> np.ndarray:
    """(N,) -> (N, taps): each sample's neighbourhood, the ends mirrored (as apply_waveform does)."""
    h = taps // 2
    xp = np.pad(x, h, mode="reflect") if len(x) > h else np.pad(x, h, mode="edge")
    return np.lib.stride_tricks.sliding_window_view(xp, taps)


def fit_waveform(pairs: list[tuple[np.ndarray, np.ndarray]], taps: int, ridge: float = 1e-6) -> np.ndarray:
    """Least-squares filter taps mapping decoded waveforms to the originals: pairs of (decoded, original)
    (N,) arrays in [-1, 1]; a small ridge keeps the solve well posed on near-silent data."""
    gram = np.zeros((taps, taps))
    cross = np.zeros(taps)
    for dec, ref in pairs:
        a = _lags(dec.astype(np.float64), taps)
        gram += a.T @ a
        cross += a.T @ ref.astype(np.float64)
    return np.linalg.solve(gram + ridge * np.trace(gram) / taps * np.eye(taps), cross)


class VolumeFilter:
    """MRI codecs' post-filter: a linear filter over each voxel's taps^3 neighbourhood of the decoded
    volume on the file's own grid, fitted by least squares to the codec's decodes of training volumes.
    The network's error inside each 8^3 patch is partly noise a small smoothing kernel removes, and
    partly a level offset the filter's constant term takes out; a few hundred bytes, one pass over the
    volume."""

    def __init__(self, cfg: PostFilterSpec, taps: np.ndarray, offset: float) -> None:
        if taps.shape != (cfg.taps,) * 3 or not np.isfinite(taps).all() or not math.isfinite(offset):
            raise ValueError(f"{FILE} does not hold {cfg.taps}^3 finite taps and a finite offset")
        self.cfg, self.taps, self.offset = cfg, taps.astype(np.float64), float(offset)


VOLUME_SLAB = 8  # rows along the first axis filtered at once: bounds the neighbourhood matrix


def _neighbourhoods(v: np.ndarray, side: int, a: int, b: int) -> np.ndarray:
    """(X, Y, Z) -> (n, side^3): the neighbourhoods of the voxels in rows [a, b), the volume's faces
    extended by their edge voxels."""
    h = side // 2
    rows = np.clip(np.arange(a - h, b + h), 0, v.shape[0] - 1)
    block = np.pad(v[rows], ((0, 0), (h, h), (h, h)), mode="edge")
    return np.lib.stride_tricks.sliding_window_view(block, (side,) * 3).reshape(-1, side**3)


def apply_volume(f: VolumeFilter, values: np.ndarray) -> np.ndarray:
    """(X, Y, Z, C) decoded values in [0, 1] -> filtered float32 (not clipped), each channel alone."""
    out = np.empty(values.shape, dtype=np.float32)
    w = f.taps.ravel()
    for c in range(values.shape[-1]):
        v = values[..., c].astype(np.float64)
        for a in range(0, v.shape[0], VOLUME_SLAB):
            b = min(a + VOLUME_SLAB, v.shape[0])
            out[a:b, ..., c] = (_neighbourhoods(v, f.cfg.taps, a, b) @ w + f.offset).reshape(b - a, *v.shape[1:])
    return out


def fit_volume(pairs: list[tuple[np.ndarray, np.ndarray]], side: int, ridge: float = 1e-7) -> tuple[np.ndarray, float]:
    """Least-squares side^3 taps and a constant mapping decoded volumes (X, Y, Z) to the originals,
    both in the network's [0, 1]; a small ridge keeps the solve well posed on mostly empty volumes."""
    n = side**3 + 1
    gram, cross = np.zeros((n, n)), np.zeros(n)
    for dec, ref in pairs:
        dec, ref = dec.astype(np.float64), ref.astype(np.float64)
        for a in range(0, dec.shape[0], VOLUME_SLAB):
            b = min(a + VOLUME_SLAB, dec.shape[0])
            x = _neighbourhoods(dec, side, a, b)
            x = np.concatenate([x, np.ones((len(x), 1))], axis=1)
            gram += x.T @ x
            cross += x.T @ ref[a:b].ravel()
    w = np.linalg.solve(gram + ridge * np.trace(gram) / n * np.eye(n), cross)
    return w[:-1].reshape((side,) * 3), float(w[-1])


def load(folder: Path, entry: PostFilterSpec) -> PostFilter | WaveformFilter | VolumeFilter:
    """The post-filter a codec's spec names; ValueError when it is missing or does not match."""
    path = Path(folder) / FILE
    if file_sha256(path) != entry.sha256:
        raise ValueError(f"{FILE} fails its SHA-256 check")
    if entry.kind == "fir":
        return WaveformFilter(entry, load_numpy(str(path))["taps"])
    if entry.kind == "volume":
        arrays = load_numpy(str(path))
        if "offset" not in arrays or arrays["offset"].shape != ():
            raise ValueError(f"{FILE} holds no offset")
        return VolumeFilter(entry, arrays["taps"], float(arrays["offset"]))
    net = PostFilter(entry)
    net.load_state_dict(load_file(str(path)))
    net.views = entry.views
    return net.eval().requires_grad_(False)


