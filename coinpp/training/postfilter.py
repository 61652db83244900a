"""Training a decoder-side post-filter (`coin postfilter`): decoded crops of training photos as
inputs, the originals as targets; installing it into a codec folder (not part of the codec hash).
"""

from __future__ import annotations

import json
import math
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file

from .. import codec as codecs
from .. import modalities
from ..decoder import decode_bytes
from ..encoder import Encoder, encode_each
from ..files import replace_with
from ..modalities import Signal
from ..postfilter import (
    FILE,
    VIEWS,
    PostFilter,
    VolumeFilter,
    WaveformFilter,
    apply,
    apply_volume,
    apply_waveform,
    file_sha256,
    usable_views,
    view_positions,
)
from ..spec import PostFilterSpec
from .cards import write_card


@torch.no_grad()
def grow(small: PostFilter, cfg: PostFilterSpec) -> PostFilter:
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


def save(net: PostFilter, folder: Path) -> dict:
    """Write the weights into a codec folder; returns the config entry that names them (and the
    number of views decoding averages, when more than one)."""
    path = Path(folder) / FILE
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    replace_with(path, lambda p: save_file(state, str(p)))
    return {**net.cfg.to_dict(), **({"views": net.views} if net.views > 1 else {}), "sha256": file_sha256(path)}


def save_waveform(taps: np.ndarray, folder: Path) -> dict:
    """Write an audio codec's waveform filter into its folder; returns the config entry."""
    path = Path(folder) / FILE
    replace_with(path, lambda p: save_numpy({"taps": np.ascontiguousarray(taps, dtype=np.float64)}, str(p)))
    return {"kind": "fir", "taps": len(taps), "sha256": file_sha256(path)}


def save_volume(taps: np.ndarray, offset: float, folder: Path) -> dict:
    """Write an MRI codec's volume filter into its folder; returns the config entry."""
    path = Path(folder) / FILE
    arrays = {"taps": np.ascontiguousarray(taps, dtype=np.float64), "offset": np.array(offset, dtype=np.float64)}
    replace_with(path, lambda p: save_numpy(arrays, str(p)))
    return {"kind": "volume", "taps": int(taps.shape[0]), "sha256": file_sha256(path)}


def volume_gain_db(taps: np.ndarray, offset: float, pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean over the (decoded, original) volume pairs of the PSNR change the filter makes."""
    f = VolumeFilter(PostFilterSpec(kind="volume", taps=int(taps.shape[0])), taps, offset)
    gains = []
    for dec, ref in pairs:
        out = np.clip(apply_volume(f, dec[..., None])[..., 0].astype(np.float64), 0.0, 1.0)
        gains.append(10 * math.log10(np.mean((dec - ref) ** 2) / max(np.mean((out - ref) ** 2), 1e-20)))
    return float(np.mean(gains))


def waveform_gain_db(taps: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean over the pairs of the PSNR change the filter makes (as `coin bench` averages files)."""
    f = WaveformFilter(PostFilterSpec(kind="fir", taps=len(taps)), taps)
    gains = []
    for dec, ref in pairs:
        out = apply_waveform(f, ((dec + 1) / 2)[:, None])[:, 0].astype(np.float64) * 2 - 1
        gains.append(10 * math.log10(np.mean((dec - ref) ** 2) / max(np.mean((out - ref) ** 2), 1e-20)))
    return float(np.mean(gains))


def train(pairs: list[tuple[np.ndarray, np.ndarray]], val_pairs: list[tuple[np.ndarray, np.ndarray]],
          cfg: PostFilterSpec, steps: int, batch: int = 16, window: int = 64, lr: float = 1e-3, seed: int = 0,
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
            ps.append(view_positions(cfg.period, view, tuple(dec[i].shape[1:]), y0, x0, window, window,
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
    [0, 1], each encoded and decoded (without a post-filter) by every codec, sharing the work codecs
    have in common (encoder.encode_each). The "fast" preset skips the steps through the present filter;
    with `aware` the encoder takes them (the default preset, as `coin encode` does): a filter retrained
    on those decodes learns what that encoder leaves."""
    rng = np.random.default_rng(seed)
    image = modalities.get("image")
    encoders = [Encoder(codecs.load(n), image, "default" if aware else "fast", device=device) for n in codec_names]
    crops = []
    for a in images:
        h, w, _ = a.shape
        if min(h, w) < size:
            continue
        for _ in range(crops_per_image):
            y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
            crops.append(np.ascontiguousarray(a[y : y + size, x : x + size, :3], dtype=np.float32))
    pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {e.codec.name: [] for e in encoders}
    for i, crop in enumerate(crops):
        signal = Signal(crop, {"channels": 3})
        original = np.round(crop * 255).astype(np.uint8)
        for done in encode_each(signal, encoders):
            decoded, _ = decode_bytes(done.encoded.data, device=device, postfilter=False)
            pairs[done.encoder.codec.name].append((decoded.values, original))
        tick(i + 1, len(crops))
    return pairs


def save_pairs(path: Path, pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]], key: dict) -> None:
    """Keep decoded crops (what `decoded_crops` returns) for another training run: decoding them
    costs more CPU than training a filter. `key` says what they were made from; written atomically."""
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


def install(folder: Path, net: PostFilter | np.ndarray | tuple[np.ndarray, float], training: dict) -> None:
    """Put a post-filter (an image codec's network, an audio codec's waveform taps, or an MRI codec's
    volume taps and offset) into a codec
    folder: its weights and an entry in config.json (written atomically), and the model card written
    again from the config. The codec's hash does not cover it, so files already written stay valid."""
    folder = Path(folder)
    cfg_path = folder / "config.json"
    config = json.loads(cfg_path.read_text())
    if isinstance(net, PostFilter):
        entry = save(net, folder)
    elif isinstance(net, tuple):
        entry = save_volume(*net, folder)
    else:
        entry = save_waveform(net, folder)
    config["postfilter"] = {**entry, "training": training}
    tmp = cfg_path.with_name(cfg_path.name + ".tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    tmp.replace(cfg_path)
    write_card(folder)
