"""Decoder-side post-filter: a small convolutional network that restores the decoded image.

The base network's output on the native grid has two kinds of error a few convolutions can undo:
seams at patch borders (on three Kodak images decoded with `image-klt-6x128-l64-b5`, the two pixels
next to a border had 1.0 dB lower PSNR than the patch interior) and a detail-poor, slightly blurred
texture. The filter sees the decoded RGB image and where each pixel sits inside its patch (sin and
cos of its phase along each axis), and adds a correction.

It is not part of the bitstream: the symbols, the latents and the network's output are unchanged,
so the codec's hash and every file written before it stay valid, and `coin decode --no-postfilter`
gives the normative output. It runs only when decoding onto the file's own grid (the filter is
trained on that grid). Weights live beside the codec (`postfilter.safetensors`) and are checked
against the SHA-256 in its config.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

FILE = "postfilter.safetensors"
TILE = 256  # pixels per tile side when filtering: bounds memory on large images
POSITION_FEATURES = 4  # sin, cos of the phase inside the patch, per axis
KEEP_GRAPH_BYTES = 2 << 30  # at most this much autograd graph kept by loss_and_input_grad between its passes


@dataclass(frozen=True)
class PostFilterConfig:
    channels: int = 32
    layers: int = 5  # convolutions (3x3); the receptive field is 2 * layers + 1 pixels
    period: tuple[int, int] = (32, 32)  # the codec's patch: where the seams repeat

    def to_dict(self) -> dict:
        return {"channels": self.channels, "layers": self.layers, "period": list(self.period)}

    @classmethod
    def from_dict(cls, d: dict) -> PostFilterConfig:
        channels, layers, period = int(d["channels"]), int(d["layers"]), tuple(int(p) for p in d["period"])
        if not (1 <= channels <= 256 and 2 <= layers <= 32 and len(period) == 2 and min(period) >= 1):
            raise ValueError("post-filter size out of range")
        return cls(channels, layers, period)  # type: ignore[arg-type]


class PostFilter(nn.Module):
    """RGB (B, 3, H, W) in [0, 1] plus position features -> corrected RGB (not clipped)."""

    def __init__(self, cfg: PostFilterConfig) -> None:
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
        return _view_positions(self.cfg.period, VIEWS[0], (0, 0), y0, x0, h, w, device)

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


def _view_positions(period: tuple[int, int], view: tuple[bool, bool, bool], source_shape: tuple[int, int],
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
    source = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None].to(device)
    total = np.zeros((h, w, 3), dtype=np.float32)
    r = net.halo
    for view in usable[:views]:
        transpose, flip_rows, flip_cols = view
        x = _to_view(source[0], view)[None]
        vh, vw = x.shape[2], x.shape[3]
        out = np.empty((vh, vw, 3), dtype=np.float32)
        for (ya, yb, xa, xb), (y0, x0, ty, tx) in _tiles(vh, vw, tile, r):
            pos = _view_positions(period, view, (h, w), ya, xa, yb - ya, xb - xa, x.device)
            y = net(x[:, :, ya:yb, xa:xb], pos)
            out[y0 : y0 + ty, x0 : x0 + tx] = y[0, :, y0 - ya : y0 - ya + ty, x0 - xa : x0 - xa + tx] \
                .permute(1, 2, 0).cpu().numpy()
        out = out[::-1] if flip_rows else out
        out = out[:, ::-1] if flip_cols else out
        total += out.transpose(1, 0, 2) if transpose else out
    return total / views if views > 1 else total


def loss_and_input_grad(net: PostFilter, image: torch.Tensor, target: torch.Tensor, views: int | None = None,
                        tile: int = TILE, keep_bytes: int | None = None) -> tuple[float, torch.Tensor]:
    """For an encoder that sees the filter: the squared error of `apply`'s output (the average over
    `views`, not clipped) against `target`, summed over all values, and its gradient with respect to
    `image`. image and target (3, H, W) on the filter's device, image in [0, 1].

    Tiled as `apply` is: each tile's outputs are differentiated against the tile plus a halo as wide
    as the receptive field and the halos' gradients summed, so the gradient is the whole image's (up
    to float rounding) with memory bounded by the tile. The error needs every view's output before
    any backward pass can start; where the graphs of all views and tiles fit in `keep_bytes` (default
    KEEP_GRAPH_BYTES; a Kodak image at 4 views needs about 1 GB) they are kept from that one forward
    pass, else each tile is evaluated a second time for its backward pass (a third more time).
    """
    views = net.views if views is None else views
    period = net.cfg.period
    _, h, w = image.shape
    chosen = usable_views(period)[:views]
    kept = graph_bytes(net, h, w, views) <= (KEEP_GRAPH_BYTES if keep_bytes is None else keep_bytes)
    graphs = []
    if kept:
        total = torch.zeros_like(image)
        for view in chosen:
            x = _to_view(image, view)
            out = torch.empty_like(x)
            graphs.append(list(_tile_graphs(net, x, view, (h, w), tile)))
            for _, y, _, (y0, x0) in graphs[-1]:
                out[:, y0 : y0 + y.shape[1], x0 : x0 + y.shape[2]] = y.detach()
            total += _from_view(out, view)
        err = total / views - target
    else:
        with torch.no_grad():
            mean = apply(net, image.permute(1, 2, 0).cpu().numpy(), image.device, tile, views)
        err = torch.from_numpy(mean).permute(2, 0, 1).to(image.device) - target
    scaled = err * (2.0 / views)  # d(sum of err^2)/d(each view's output)
    grad = torch.zeros_like(image)
    for i, view in enumerate(chosen):
        x = _to_view(image, view)
        e = _to_view(scaled, view)
        g = torch.zeros_like(x)
        # kept: the graphs of the forward pass above; else each tile is evaluated again, one at a time
        for region, y, (ya, xa), (y0, x0) in (graphs[i] if kept else _tile_graphs(net, x, view, (h, w), tile)):
            ty, tx = y.shape[1], y.shape[2]
            (g_region,) = torch.autograd.grad(y, region, grad_outputs=e[:, y0 : y0 + ty, x0 : x0 + tx])
            g[:, ya : ya + region.shape[2], xa : xa + region.shape[3]] += g_region[0]
        if kept:
            graphs[i] = []  # spent: free them as we go
        grad += _from_view(g, view)
    return float(err.double().pow(2).sum()), grad


def graph_bytes(net: PostFilter, h: int, w: int, views: int, tile: int = TILE) -> int:
    """About what the autograd graphs of `views` views of an (h, w) image take (bytes): each
    convolution saves its input (the first the RGB and position features, the others the previous
    ReLU's output), over every tile with its halo."""
    r = net.halo
    rows, cols = math.ceil(h / tile), math.ceil(w / tile)
    pixels = (h + 2 * r * rows) * (w + 2 * r * cols)  # each tile's halo counted once per tile (upper bound)
    channels = 3 + POSITION_FEATURES + net.cfg.channels * (net.cfg.layers - 1) + 3
    return pixels * channels * 4 * views


def _tile_graphs(net: PostFilter, x: torch.Tensor, view: tuple[bool, bool, bool], source_shape: tuple[int, int],
                 tile: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, tuple[int, int], tuple[int, int]]]:
    """The filter on each tile of the view x (3, vh, vw), with its graph: (region, the tile's output,
    (ya, xa) where the region starts, (y0, x0) where the tile starts); region requires grad."""
    for (ya, yb, xa, xb), (y0, x0, ty, tx) in _tiles(x.shape[1], x.shape[2], tile, net.halo):
        pos = _view_positions(net.cfg.period, view, source_shape, ya, xa, yb - ya, xb - xa, x.device)
        with torch.enable_grad():  # (left before the yield: the caller runs in its own grad mode)
            region = x[None, :, ya:yb, xa:xb].detach().requires_grad_(True)
            y = net(region, pos)[0, :, y0 - ya : y0 - ya + ty, x0 - xa : x0 - xa + tx]
        yield region, y, (ya, xa), (y0, x0)


def _tiles(vh: int, vw: int, tile: int, r: int
           ) -> Iterator[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]:
    """((ya, yb, xa, xb), (y0, x0, ty, tx)) for each tile of a (vh, vw) view: the region with its
    halo of r, and the tile's own origin and size."""
    for y0 in range(0, vh, tile):
        for x0 in range(0, vw, tile):
            yield ((max(0, y0 - r), min(vh, y0 + tile + r), max(0, x0 - r), min(vw, x0 + tile + r)),
                   (y0, x0, min(tile, vh - y0), min(tile, vw - x0)))


def _to_view(x: torch.Tensor, view: tuple[bool, bool, bool]) -> torch.Tensor:
    """(C, H, W) -> the view: transposed first, then flipped."""
    transpose, flip_rows, flip_cols = view
    x = x.transpose(1, 2) if transpose else x
    dims = [d for d, f in ((1, flip_rows), (2, flip_cols)) if f]
    return x.flip(dims) if dims else x


def _from_view(x: torch.Tensor, view: tuple[bool, bool, bool]) -> torch.Tensor:
    """The inverse of _to_view: unflipped first, then transposed back."""
    transpose, flip_rows, flip_cols = view
    dims = [d for d, f in ((1, flip_rows), (2, flip_cols)) if f]
    x = x.flip(dims) if dims else x
    return x.transpose(1, 2) if transpose else x


@torch.no_grad()
def grow(small: PostFilter, cfg: PostFilterConfig) -> PostFilter:
    """A filter of `cfg`'s size (at least as wide and deep, same period) that computes exactly what
    `small` computes, to train further from there instead of from scratch (a deep filter from scratch
    barely moves in its first hundreds of steps; measured). The extra channels get fresh incoming
    weights and zero outgoing ones; the extra layers are identities (3x3 kernels with a centre of 1),
    placed before the last layer, which pass the ReLU outputs unchanged."""
    old = small.cfg
    if old.period != cfg.period or cfg.channels < old.channels or cfg.layers < old.layers:
        raise ValueError("a filter can only grow: same period, at least as many channels and layers")
    net = PostFilter(cfg)
    c = old.channels
    hidden_old = list(small.convs[:-1])
    hidden_new = list(net.convs[:-1])
    for k, conv in enumerate(hidden_new):
        w, b = conv.weight, conv.bias
        w[c:].mul_(0.1)  # the new channels start small: they join, they do not take over
        b[c:].zero_()
        if k < len(hidden_old):
            src = hidden_old[k]
            n_in = src.weight.shape[1]
            w[:c].zero_()
            w[:c, :n_in] = src.weight
            b[:c] = src.bias
        else:  # an identity on the old channels
            w[:c].zero_()
            b[:c].zero_()
            w[torch.arange(c), torch.arange(c), 1, 1] = 1.0
    last = net.convs[-1]
    last.weight.zero_()
    last.weight[:, :c] = small.convs[-1].weight
    last.bias.copy_(small.convs[-1].bias)
    net.views = small.views
    return net


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save(net: PostFilter, folder: Path) -> dict:
    """Write the weights into a codec folder; returns the config entry that names them (and the
    number of views decoding averages, when more than one)."""
    path = Path(folder) / FILE
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(tmp))
    tmp.chmod(0o644)  # safetensors writes 0600; a shipped codec file is readable by all
    tmp.replace(path)
    return {**net.cfg.to_dict(), **({"views": net.views} if net.views > 1 else {}), "sha256": file_sha256(path)}


def load(folder: Path, entry: dict) -> PostFilter:
    """The post-filter a codec's config names; ValueError when it is missing or does not match."""
    path = Path(folder) / FILE
    if file_sha256(path) != entry.get("sha256"):
        raise ValueError(f"{FILE} fails its SHA-256 check")
    net = PostFilter(PostFilterConfig.from_dict(entry))
    net.load_state_dict(load_file(str(path)))
    views = entry.get("views", 1)
    if not isinstance(views, int) or not 1 <= views <= len(usable_views(net.cfg.period)):
        raise ValueError(f"post-filter views {views!r} out of range")
    net.views = views
    return net.eval().requires_grad_(False)


def train(pairs: list[tuple[np.ndarray, np.ndarray]], val_pairs: list[tuple[np.ndarray, np.ndarray]],
          cfg: PostFilterConfig, steps: int, batch: int = 16, window: int = 64, lr: float = 1e-3, seed: int = 0,
          device: str | torch.device = "cpu", log: Callable[[dict], None] = lambda r: None,
          val_every: int = 250, init: PostFilter | None = None, augment: bool = False) -> tuple[PostFilter, dict]:
    """Fit a post-filter to (decoded float (H, W, 3), original uint8 (H, W, 3)) crop pairs, each crop
    starting on a patch border. Adam with a cosine schedule on the MSE of random windows; the
    weights with the best validation MSE are kept (step 0: the starting weights). `init` starts from
    another filter of the same size, e.g. a neighbouring bit depth's. `augment` draws each window from
    a random flipped or transposed view of its crop (phase features as `apply` gives its views): eight
    times the distinct windows from the same decodes. Returns (filter, summary)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = PostFilter(cfg)
    if init is not None:
        try:
            net = grow(init, cfg)  # the same filter when it has the same size
        except ValueError:
            raise ValueError("the starting filter has another period, or is larger") from None
    net = net.to(device).train().requires_grad_(True)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))

    def to_tensor(a: np.ndarray, scale: float = 1.0) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32) * scale).permute(2, 0, 1)

    dec = [to_tensor(d) for d, _ in pairs]
    ref = [to_tensor(o, 1 / 255) for _, o in pairs]

    def val_mse(model: PostFilter) -> tuple[float, float]:
        return mse_before_after(model, val_pairs, device, views=1)

    views = usable_views(cfg.period)
    base_mse, best_mse = val_mse(net)
    best = {k: v.clone() for k, v in net.state_dict().items()}
    best_step = 0
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        xs, ts, ps = [], [], []
        for i in rng.integers(0, len(dec), batch):
            d, t = dec[i], ref[i]
            view = views[int(rng.integers(0, len(views)))] if augment else VIEWS[0]
            if view[0]:
                d, t = d.transpose(1, 2), t.transpose(1, 2)
            dims = [a for a, f in ((1, view[1]), (2, view[2])) if f]
            if dims:
                d, t = d.flip(dims), t.flip(dims)
            _, h, w = d.shape
            y0, x0 = int(rng.integers(0, h - window + 1)), int(rng.integers(0, w - window + 1))
            xs.append(d[:, y0 : y0 + window, x0 : x0 + window])
            ts.append(t[:, y0 : y0 + window, x0 : x0 + window])
            ps.append(_view_positions(cfg.period, view, tuple(dec[i].shape[1:]), y0, x0, window, window,
                                      torch.device("cpu"))[0])
        x, t, p = torch.stack(xs).to(device), torch.stack(ts).to(device), torch.stack(ps).to(device)
        loss = ((net(x, p) - t) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % val_every == 0 or step == steps:
            net.eval()
            _, v = val_mse(net)
            net.train()
            if v < best_mse:
                best_mse, best_step = v, step
                best = {k: v_.clone() for k, v_ in net.state_dict().items()}
            log({"step": step, "train_mse": loss.item(), "val_psnr_gain_db": 10 * math.log10(base_mse / v),
                 "wall_s": time.perf_counter() - t0})
    net.load_state_dict(best)
    summary = {"steps": steps, "best_step": best_step, "batch": batch, "window": window, "lr": lr, "seed": seed,
               **({"augment": "flips and transposes"} if augment else {}),
               "wall_time_s": round(time.perf_counter() - t0, 1),
               "val_psnr_gain_db": round(10 * math.log10(base_mse / best_mse), 3)}
    return net.cpu().eval().requires_grad_(False), summary


def mse_before_after(net: PostFilter, pairs: list[tuple[np.ndarray, np.ndarray]], device: str | torch.device = "cpu",
                     views: int | None = None) -> tuple[float, float]:
    """Mean squared error of (decoded, original uint8) pairs without and with the filter, pooled over
    all their pixels (values clipped to [0, 1] as a decoder writes them)."""
    before = after = 0.0
    n = 0
    for d, o in pairs:
        t = o.astype(np.float64) / 255
        y = np.clip(apply(net, d.astype(np.float32), device, views=views), 0, 1)
        before += ((np.clip(d, 0, 1) - t) ** 2).sum()
        after += ((y - t) ** 2).sum()
        n += t.size
    return before / n, after / n


def decoded_crops(codec_names: list[str], images: list[np.ndarray], crops_per_image: int, size: int, seed: int,
                  device: str = "auto", tick: Callable[[int, int], None] = lambda i, n: None,
                  aware: bool = False) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Per codec, (decoded, original uint8) pairs: random size x size crops of `images` (H, W, 3) in
    [0, 1], each encoded and decoded (without a post-filter) by every codec. Codecs sharing a network
    fit each crop once, and refine it once when they share the refinement too. With `aware` the
    encoder also takes each codec's steps through its present filter (refine "filter_steps"), as
    `coin encode` does: a filter retrained on those decodes learns what that encoder leaves."""
    from . import codec as codecs
    from . import modalities
    from .modalities import Signal
    from .pipeline import decode_bytes, fit_signal, pack, refine_signal, refine_through_postfilter

    rng = np.random.default_rng(seed)
    image = modalities.get("image")
    loaded = [codecs.load(n) for n in codec_names]
    crops = []
    for a in images:
        h, w, _ = a.shape
        if min(h, w) < size:
            continue
        for _ in range(crops_per_image):
            y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
            crops.append(np.ascontiguousarray(a[y : y + size, x : x + size, :3], dtype=np.float32))
    pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {c.name: [] for c in loaded}
    keys = {c.name: codecs.fit_key(c) for c in loaded}
    for i, crop in enumerate(crops):
        signal = Signal(crop, {"channels": 3})
        original = np.round(crop * 255).astype(np.uint8)
        fitted: dict[str, object] = {}
        refined: dict[tuple[str, str], object] = {}
        for c in loaded:
            key = keys[c.name]
            if key not in fitted:
                fitted[key] = fit_signal(signal, image, c, device=device)
            if (key, c.refine_key) not in refined:  # the per-patch refinement `coin encode` runs
                refined[key, c.refine_key] = refine_signal(fitted[key], signal, image, c, device,
                                                           through_postfilter=False)
            latents = refined[key, c.refine_key]
            if aware:  # (each codec's own filter: not shared)
                latents = refine_through_postfilter(latents, signal, image, c, device)
            decoded, _ = decode_bytes(pack(latents, signal, image, c).data, device=device, postfilter=False)
            pairs[c.name].append((decoded.values, original))
        tick(i + 1, len(crops))
    return pairs


def save_pairs(path: Path, pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]], key: dict) -> None:
    """Keep decoded crops (what `decoded_crops` returns) for another training run: decoding them
    costs more CPU than training a filter. `key` says what they were made from; written atomically."""
    import json

    arrays: dict[str, np.ndarray] = {"key": np.frombuffer(json.dumps(key, sort_keys=True).encode(), np.uint8)}
    for j, (name, items) in enumerate(pairs.items()):
        arrays[f"name_{j}"] = np.frombuffer(name.encode(), np.uint8)
        for i, (dec, ref) in enumerate(items):
            arrays[f"dec_{j}_{i}"], arrays[f"ref_{j}_{i}"] = dec.astype(np.float32), ref
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def load_pairs(path: Path, key: dict) -> dict[str, list[tuple[np.ndarray, np.ndarray]]] | None:
    """The crops `save_pairs` kept under the same key; None when the file is missing or was made
    from anything else (data, crop counts, seed, or codecs that are not among its own); ValueError
    when it is not such a file at all (it is then not overwritten). A file made for more codecs
    serves any of them: the crops are the same, only fewer decodes are read."""
    import json
    import zipfile

    path = Path(path)
    if not path.is_file():
        return None
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile) or "key" not in z:
            raise ValueError
    except (OSError, ValueError, zipfile.BadZipFile):
        raise ValueError(f"{path} is not a file of decoded crops") from None
    with z:
        stored = json.loads(bytes(z["key"]).decode())
        def by_name(codecs: object) -> dict:  # {name: what it was made from}; a plain list names them only
            return codecs if isinstance(codecs, dict) else {n: None for n in codecs or []}  # type: ignore[union-attr]

        wanted, have = by_name(key.get("codecs")), by_name(stored.get("codecs"))
        if ({k: v for k, v in stored.items() if k != "codecs"} != {k: v for k, v in key.items() if k != "codecs"}
                or any(n not in have or json.dumps(have[n], sort_keys=True) != json.dumps(v, sort_keys=True)
                       for n, v in wanted.items())):  # (saved sorted: a codec's refine entry is a dict)
            return None
        out: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        j = 0
        while f"name_{j}" in z:
            name = bytes(z[f"name_{j}"]).decode()
            if name in wanted or "codecs" not in key:
                items, i = [], 0
                while f"dec_{j}_{i}" in z:
                    items.append((z[f"dec_{j}_{i}"], z[f"ref_{j}_{i}"]))
                    i += 1
                out[name] = items
            j += 1
    return out


def install(folder: Path, net: PostFilter, training: dict) -> None:
    """Put a post-filter into a codec folder: its weights, an entry in config.json and a section in
    the model card (each written atomically). The codec's hash does not cover it, so files already
    written stay valid."""
    import json

    folder = Path(folder)
    cfg_path, card_path = folder / "config.json", folder / "MODEL_CARD.md"
    config = json.loads(cfg_path.read_text())
    config["postfilter"] = {**save(net, folder), "training": training}
    card = card_path.read_text() if card_path.exists() else f"# {config.get('name', folder.name)}\n"
    if "\n## Post-filter\n" in card:  # replace the section an earlier filter wrote
        head, _, rest = card.partition("\n## Post-filter\n")
        nxt = rest.find("\n## ")
        card = head + (rest[nxt:] if nxt >= 0 else "\n")
    n_params = sum(p.numel() for p in net.parameters())
    card = card.rstrip("\n") + "\n\n## Post-filter\n\n" + (
        f"Decoded images on their own grid pass through a {net.cfg.layers}-layer 3x3 CNN ({net.cfg.channels} "
        f"channels, {n_params:,} weights; `postfilter.safetensors`) that corrects the network's output"
        + (f", averaged over {net.views} flipped and transposed views of the image" if net.views > 1 else "")
        + "; "
        "`coin decode --no-postfilter` skips it. It is not part of the bitstream or the codec hash.\n\n"
        f"- trained: {training.get('steps')} Adam steps (best at {training.get('best_step')}), "
        f"{training.get('wall_time_s')} s on {training.get('hardware', 'unknown hardware')}"
        + (f", starting from `{training['init']}`'s filter" if training.get("init") else "") + "\n"
        f"- on: {training.get('crops')} decoded crops of {training.get('data')} by "
        f"{', '.join(training.get('codecs', []))}\n"
        f"- validation (held-out photos): {training.get('val_psnr_gain_db', 0):+.3f} dB PSNR"
        + (f" ({training['val_psnr_gain_views_db']:+.3f} dB averaged over {net.views} views)"
           if "val_psnr_gain_views_db" in training else "") + "\n"
        + ("- trained on flipped and transposed views of the crops too\n" if training.get("augment") else "")
        + (f"- gain by number of views averaged, on {training['views_measured']['on']}: "
           + ", ".join(f"{v} {'view' if v == '1' else 'views'} {g:+.3f} dB"
                       for v, g in training["views_measured"]["gain_db"].items()) + "\n"
           if "views_measured" in training else "")
        + (f"- command: `{training['command']}`\n" if training.get("command") else ""))
    for path, text in ((cfg_path, json.dumps(config, indent=2) + "\n"), (card_path, card)):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
