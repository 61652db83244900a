"""Exporting a trained base network as codec folders (`coin train --export`): one per bit depth.

Latents fitted to training crops give the quantizer ranges (and the transform), their symbols the
integer entropy tables (training/tables.py), and the folder is written with its hash and loaded
back to verify it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file as save_np
from safetensors.torch import save_file as save_torch

from ..codec import Codec, clear_cache, load, load_folder
from ..entropy import NeighbourContext, encode_context, residuals
from ..errors import InputError
from ..files import replace_with
from ..fit import RatePenalty, fit_grid, fit_latents
from ..model import LatentModulatedSiren
from ..patching import CellLayout, patch_coordinates, split
from ..presets import EncoderPreset
from ..quantize import Quantizer
from ..spec import RateModel, codec_hash, default_phases
from .cards import write_card
from .data import CropSampler
from .meta import load_checkpoint
from .tables import context_prior, frequency_table

ADAPT_CHOICES = (4, 8, 16, 32, 64, 128, 256)  # weights of the context prior, in symbols, tried on validation


def write_folder(folder: Path, config: dict, net: LatentModulatedSiren, quantizer: Quantizer,
                 table: np.ndarray, model_card: str | None = None, delta_table: np.ndarray | None = None,
                 context_prior: np.ndarray | None = None) -> Codec:
    """Write a codec folder (config gets its hash; the model card, unless given, from the config) and load
    it back to verify."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    replace_with(folder / "weights.safetensors", lambda p: save_torch(state, str(p)))
    tables = {"low": quantizer.low.astype(np.float32), "step": quantizer.step.astype(np.float32),
              "table": table.astype(np.int32)}
    if quantizer.basis is not None:  # a decorrelating transform before quantization
        tables["basis"] = quantizer.basis.astype(np.float32)
        tables["centre"] = quantizer.centre.astype(np.float32)
    if delta_table is not None:
        tables["delta_table"] = delta_table.astype(np.int32)
    if context_prior is not None:
        tables["context_prior"] = context_prior.astype(np.int32)
    replace_with(folder / "tables.safetensors", lambda p: save_np(tables, str(p)))
    config = dict(config, bits=quantizer.bits)
    if quantizer.basis is not None:
        config["transform"] = "principal-components"
    config["hash"] = codec_hash(folder, config).hex()
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if model_card is None:
        write_card(folder)
    else:
        (folder / "MODEL_CARD.md").write_text(model_card)
    clear_cache()
    return load_folder(folder)


def fit_region(net: LatentModulatedSiren, patch: tuple[int, int], values: np.ndarray, steps: int, device: str
               ) -> tuple[np.ndarray, tuple[int, int]]:
    """The latents a codec fits to a whole region (its patches, or its latent grid) and their
    (rows, cols); a 1-D region is one row."""
    values = np.ascontiguousarray(values)
    if net.cfg.cell:
        z = fit_grid(net, values, steps, device)
    else:
        z = fit_latents(net, patch_coordinates(patch), split(values, patch)[0], steps, device)
    grid = tuple(math.ceil(a / p) for a, p in zip(values.shape[: len(patch)], patch, strict=True))
    return z.numpy(), (1, *grid) if len(grid) == 1 else grid


@torch.no_grad()
def latent_sensitivity(net: LatentModulatedSiren, patch: tuple[int, int], regions: list[np.ndarray], steps: int,
                       device: str = "cpu") -> np.ndarray:
    """(D,): the output's mean squared change per unit squared change of each latent dimension,
    on the latents fitted to `regions` (2-D image windows), by finite differences (every latent of
    a region moved together; only the ratios between dimensions are used)."""
    total = np.zeros(net.cfg.latent_dim)
    for values in regions:
        z, counts = fit_region(net, patch, values, steps, device)
        z = torch.from_numpy(z)
        if net.cfg.cell:
            where = CellLayout.for_region(values.shape[:2], net.cfg.cell, net.cfg.frequencies)
            z = z.unsqueeze(0)
        else:
            where = patch_coordinates(patch)
        base = net(where, z)
        eps = 1e-2 * float(z.std()) + 1e-6
        for j in range(net.cfg.latent_dim):
            moved = z.clone()
            moved[..., j] += eps
            total[j] += float((net(where, moved) - base).pow(2).mean()) / eps**2
    return total / max(1, len(regions))


@dataclass
class TableLatents:
    """Latents fitted to training data, from which a codec's quantizer and tables are learned."""

    latents: np.ndarray  # (N, D)
    grids: list[tuple[int, ...]]  # (rows, cols) of each window, in order (neighbour context, latent grids)
    val_fits: list[tuple[np.ndarray, tuple[int, int]]]  # validation images' latents and grids (context)
    count: int  # patches, windows' patches or fields the tables come from


def table_latents(net: LatentModulatedSiren, patch: tuple[int, ...], signals: list[np.ndarray] | np.ndarray,
                  encode_steps: int, table_patches: int, seed: int, device: str, coords: np.ndarray | None,
                  context: int | None, val_signals: list[np.ndarray] | None) -> TableLatents:
    """Fit latents to `table_patches` training crops; with the neighbour context or a latent grid, to
    windows of 8 x 8 patches (cells; audio: runs of 64 patches) at random places in every training
    file, so that all files are represented (whole images from a few files gave narrower quantizer
    ranges that coded the validation images 13 % longer) and each window keeps its patches'
    neighbours. Fields (coords): each once."""
    if context is not None or net.cfg.cell:
        if coords is not None or len(patch) not in (1, 2) or (net.cfg.cell and len(patch) != 2):
            raise InputError("the neighbour context is for patch grids (images and audio)")
        rng = np.random.default_rng(seed + 99)
        usable = [s for s in signals if all(a >= p for a, p in zip(s.shape, patch, strict=False))]
        if not usable:
            raise InputError(f"no training file is at least {'x'.join(map(str, patch))} samples")
        span = 8 if len(patch) == 2 else 64  # patches per axis of a window
        parts, grids = [], []
        while sum(len(x) for x in parts) < table_patches:
            for s in usable:
                win = [min(span, a // p) * p for a, p in zip(s.shape, patch, strict=False)]  # smaller files: less
                start = [int(rng.integers(0, a - w + 1)) for a, w in zip(s.shape, win, strict=False)]
                region = s[tuple(slice(o, o + w) for o, w in zip(start, win, strict=True))]
                z, counts = fit_region(net, patch, region, encode_steps, device)
                parts.append(z)
                grids.append(counts)
        val_fits = []
        if context is not None:
            if not val_signals:
                raise InputError("the neighbour context needs validation files to choose its adaptation")
            val_fits = [fit_region(net, patch, v, encode_steps, device) for v in val_signals]
        latents = np.concatenate(parts)
        return TableLatents(latents, grids, val_fits, len(latents))
    if coords is None:
        crops = CropSampler(signals, patch, seed=seed + 99).sample(table_patches)
        latents = fit_latents(net, patch_coordinates(patch), crops, encode_steps, device).numpy()
        return TableLatents(latents, [], [], table_patches)
    fields = torch.from_numpy(signals).float()  # every training field once, in order (no need to draw)
    latents = fit_latents(net, torch.as_tensor(coords, dtype=torch.float32), fields, encode_steps, device).numpy()
    return TableLatents(latents, [], [], len(fields))


def _context_tables(fitted: TableLatents, q: Quantizer, symbols: np.ndarray, buckets: int) -> tuple[np.ndarray, int]:
    """The neighbour context's prior, and its weight: the one of ADAPT_CHOICES that codes the
    validation images shortest."""
    sizes = [int(np.prod(g)) for g in fitted.grids]
    pieces = np.split(symbols, np.cumsum(sizes)[:-1])
    prior = context_prior([s.reshape(*g, -1) for s, g in zip(pieces, fitted.grids, strict=True)], q.levels, buckets)
    val_bytes = {a: sum(len(encode_context(q.quantize(z), (1, *g), NeighbourContext(prior, a)))
                        for z, g in fitted.val_fits) for a in ADAPT_CHOICES}
    return prior, min(val_bytes, key=val_bytes.get)


def network_training(state: dict) -> dict:
    """How the checkpoint's network was trained, for the codec's config and card. A run of no steps
    from --init is that codec's network exported anew (other tables, another entropy model): its
    record is the codec's own."""
    cfg = state["config"]
    if cfg.get("init") and not state["step"] and not cfg.get("finer"):
        keep = ("steps", "wall_time_s", "best_step", "val_psnr_db", "batch", "inner_steps", "outer_lr", "data",
                "seed", "hardware", "finer", "finer_weight", "finer_filter", "init", "half_inner", "val_metric")
        return {k: v for k, v in load(cfg["init"]).spec.training.items() if k in keep}
    return {"steps": state["step"], "wall_time_s": round(state["elapsed_s"], 1),
            "best_step": state["best_step"], "val_psnr_db": round(state["best_val_psnr"], 3),
            "batch": cfg["batch"], "inner_steps": cfg["inner_steps"], "outer_lr": cfg["outer_lr"],
            "data": cfg["data"], "seed": cfg["seed"], "hardware": state.get("hardware", "unknown"),
            **({"val_metric": state["val_metric"]} if state.get("val_metric") else {})}


def export_codecs(checkpoint: Path, signals: list[np.ndarray] | np.ndarray, root: Path, name_prefix: str,
                  bits_list: list[int], encode_steps: int, table_patches: int = 4096,
                  seed: int = 0, device: str = "auto",
                  clip_std: float | list[float] = 3.0, coords: np.ndarray | None = None,
                  context: int | None = None, refine: dict | None = None,
                  val_signals: list[np.ndarray] | None = None, allocate: bool = False,
                  decorrelate: bool = False, rd_lambda: float | list[float] = 0.0) -> list[Path]:
    """Turn a checkpoint into codec folders, one per bit depth (one rate point each).

    `context` (a bucket count) gives image codecs the neighbour context of entropy.py, its prior
    trained on windows of the training images (table_latents). `refine` ({"steps", "lr", "quantized":
    true} in quantizer steps, or {"steps", "latent_lr", "quantized": false, "rate_lambda"}) adds an
    Adam phase to the codecs' default preset. `allocate` (images) sets the quantizer steps for equal
    distortion per dimension (Quantizer.fit), from the sensitivity of the output to each dimension on
    eight training windows. `decorrelate` codes the principal components of the training latents
    instead of the latent dimensions (Quantizer.fit). `rd_lambda` (one, or one per bit depth; with
    `context`) adds a rate-distortion rounding phase to each codec's default preset.
    """
    net, state, _ = load_checkpoint(Path(checkpoint))
    net.eval().requires_grad_(False)
    cfg = state["config"]
    cell = net.cfg.cell
    patch = (cell, cell) if cell else tuple(cfg["patch"])  # a latent grid's codec tiles by its cell
    fitted = table_latents(net, patch, signals, encode_steps, table_patches, seed, device, coords, context,
                           val_signals)
    sensitivity = None
    if allocate:
        if coords is not None or len(patch) != 2:
            raise InputError("per-dimension allocation is for images")
        windows = [s[: 8 * patch[0], : 8 * patch[1]] for s in signals[:: max(1, len(signals) // 8)][:8]]
        sensitivity = latent_sensitivity(net, patch, windows, encode_steps, device)
    clips = clip_std if isinstance(clip_std, list) else [clip_std] * len(bits_list)
    if len(clips) != len(bits_list):
        raise InputError("give one quantizer range (--clip-std) per bit depth, or one for all")
    lambdas = list(rd_lambda) if isinstance(rd_lambda, list) else [rd_lambda]
    lambdas = lambdas * len(bits_list) if len(lambdas) == 1 else lambdas
    if len(lambdas) != len(bits_list):
        raise InputError("give one --rd-lambda per bit depth, or one for all")
    if any(lambdas) and context is None:
        raise InputError("rate-distortion rounding needs the neighbour context")
    written = []
    for bits, clip, lam in zip(bits_list, clips, lambdas, strict=True):
        preset = EncoderPreset.from_list("default", default_phases(
            {"encode_steps": encode_steps, "refine": refine, **({"rdo": {"lambda": lam}} if lam else {})}))
        q = Quantizer.fit(fitted.latents, bits, clip_std=clip, sensitivity=sensitivity, decorrelate=decorrelate)
        symbols = q.quantize(fitted.latents)
        table = frequency_table(symbols, q.levels)
        delta = None
        if coords is not None:
            # Fields of a series (consecutive hours) have close latents: code each field's symbols as
            # differences from the field before. On ERA5 validation hours this took the payload to about
            # a third; a small prior (0.1) fitted the held-out hours better than Laplace's 1.
            delta = frequency_table(residuals(symbols, q.levels), 2 * q.levels - 1, prior=0.1)
        prior, adapt = _context_tables(fitted, q, symbols, context) if context is not None else (None, 0)
        name = f"{name_prefix}-b{bits}"
        config = {
            "name": name, "modality": cfg["modality"], "model": cfg["model"], "patch": list(patch),
            "presets": {"default": preset.to_list()},
            "training": dict(network_training(state), table_patches=fitted.count, quantizer_clip_std=clip),
        }
        if cfg.get("normalisation", "file") != "file":
            config["normalisation"] = cfg["normalisation"]
        if context is not None:
            config["context"] = {"model": "neighbour-mean", "buckets": context, "adapt": adapt}
        if preset.adam is not None and preset.adam.rate_lambda:  # the rate model's Laplace fit, from the table latents
            penalty = RatePenalty.from_latents(q, fitted.latents, preset.adam.rate_lambda)
            config["rate_model"] = RateModel(penalty.centre, penalty.scale).to_dict()
        if sensitivity is not None:
            config["training"]["quantizer_allocation"] = "equal-distortion"
        if decorrelate:
            config["training"]["quantizer_transform"] = "principal-components"
        for key in ("finer", "finer_weight", "finer_filter", "init"):  # sub-sample supervision, the start
            if cfg.get(key) and (key == "finer" or key == "init" or cfg.get("finer")) and state["step"]:
                config["training"][key] = cfg[key]
        if cfg.get("half_inner"):
            config["training"]["half_inner"] = cfg["half_inner"]
        if cfg.get("quant_step"):  # rate-aware meta-learning
            config["training"].update(quant_step=cfg["quant_step"], rate_weight=cfg.get("rate_weight", 0.0))
        write_folder(root / name, config, net, q, table, None, delta, prior)
        written.append(root / name)
    return written
