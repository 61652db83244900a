"""`coin train` (meta-learn a base network, export codecs) and `coin postfilter` (train a
decoder-side post-filter and install it into codec folders)."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
import torch

from .. import codec as codecs
from .. import modalities
from ..decoder import decode_bytes
from ..device import hardware_description, pick_device
from ..encoder import Encoder
from ..errors import InputError
from ..modalities import Signal
from ..postfilter import fit_volume, fit_waveform, usable_views
from ..spec import PostFilterSpec, SirenConfig
from ..training.data import load_fields
from ..training.data import load_folder as load_training_folder
from ..training.export import export_codecs
from ..training.meta import TrainConfig
from ..training.meta import train as run_training
from ..training.postfilter import (
    decoded_crops,
    install,
    load_pairs,
    mse_before_after,
    save_pairs,
    volume_gain_db,
    waveform_gain_db,
)
from ..training.postfilter import train as train_filter
from .common import DEVICE, FORCE, console, parse_list


@click.command()
@click.argument("data", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run folder (checkpoints, log).")
@click.option("--modality", default="image", show_default=True)
@click.option("--width", default=128, show_default=True)
@click.option("--depth", default=5, show_default=True, help="Number of sine layers (plus one linear output).")
@click.option("--latent", "latent_dim", default=64, show_default=True)
@click.option("--w0", default=30.0, show_default=True)
@click.option("--patch", type=int, help="Patch size per axis (default: image 32, audio 200 samples, MRI 8); "
              "with --cell, the size of the training crops.")
@click.option("--cell", default=0, show_default=True,
              help="Images: a latent grid, one latent per CELL x CELL pixels interpolated between cell centres, "
                   "instead of one latent per patch (0).")
@click.option("--frequencies", default=4, show_default=True, help="With --cell: harmonics of the in-cell position.")
@click.option("--batch", default=16, show_default=True)
@click.option("--inner-steps", default=3, show_default=True)
@click.option("--half-inner", default=0, show_default=True,
              help="The first N inner steps take their gradient on alternate checkerboard halves of each patch.")
@click.option("--encode-steps", default=10, show_default=True, help="Steps at validation and in the codec.")
@click.option("--lr", "outer_lr", default=2e-4, show_default=True)
@click.option("--steps", default=100_000, show_default=True, help="Outer steps (upper bound).")
@click.option("--minutes", default=0.0, show_default=True, help="Wall-time budget; 0 for none.")
@click.option("--val-every", default=250, show_default=True)
@click.option("--val-patches", default=256, show_default=True,
              help="Validation crops (fixed, from the held-out files).")
@click.option("--seed", default=0, show_default=True)
@click.option("--val-files", default=3, show_default=True, help="Files held out for validation.")
@click.option("--no-meta-sgd", is_flag=True, help="Fixed inner rate 1e-2 instead of learned per-dimension rates.")
@click.option("--export", "export_name", help="After training, write codecs NAME-b<bits> to --codecs-dir.")
@click.option("--bits", default="4,5", show_default=True, help="Bit depths to export (one codec each).")
@click.option("--clip-std", default="3", show_default=True,
              help="Quantizer range, mean +- K std: one K, or one per bit depth (e.g. 3,4,5,6).")
@click.option("--allocate", is_flag=True,
              help="Images: quantizer steps for equal output distortion per latent dimension (same mean rate).")
@click.option("--decorrelate", is_flag=True,
              help="Quantize the principal components of the latents (learned from the training latents) "
                   "instead of the latent dimensions.")
@click.option("--context", "context_buckets", default=0, show_default=True,
              help="Images and audio: code latents with the neighbour context, this many buckets per "
                   "dimension (0: static tables).")
@click.option("--rd-lambda", "rd_lambda", default="0", show_default=True,
              help="With --context: the exported codecs round each value to whichever of its two nearest levels "
                   "costs less in squared steps plus this times its bits (encoder only); one, or one per bit depth.")
@click.option("--refine-steps", default=0, show_default=True,
              help="Exported codecs add this many Adam steps through the quantizer when encoding.")
@click.option("--refine-lr", default=0.25, show_default=True, help="Their rate, in quantizer steps.")
@click.option("--refine-latent-lr", type=float, default=None,
              help="Instead: Adam on the unquantized latents at this one rate for every dimension (the same "
                   "refinement for every bit depth; the shipped image codecs' kind).")
@click.option("--refine-rate-lambda", type=float, default=0.0, show_default=True,
              help="With --refine-latent-lr: add this rate term (per-patch MSE per bit, a Laplace stand-in "
                   "for the code length) to the refinement's loss.")
@click.option("--codecs-dir", default="codecs", show_default=True, type=click.Path(file_okay=False))
@click.option("--fresh", is_flag=True, help="Start over instead of resuming from OUT/last.")
@click.option("--coord-scale", type=float, help="Multiply coordinates by this (default per modality; "
              "a regional climate grid needs more than the globe).")
@click.option("--var", help="Climate: the NetCDF variable to train on (default: the only one).")
@click.option("--finer", default=0, show_default=True,
              help="Sub-sample supervision: also score the network between its samples, on crops this many "
                   "times finer per axis whose block means are the patch (decoding finer than coded).")
@click.option("--finer-weight", default=1.0, show_default=True, help="Weight of that score in the outer loss.")
@click.option("--finer-filter", type=click.Choice(["box", "lanczos"]), default="box", show_default=True,
              help="How --finer makes the patch from the finer crop: block means (a sensor's larger samples) "
                   "or the Lanczos-3 reduction image tools apply when they halve a photo.")
@click.option("--init", "init_codec", default="", metavar="CODEC",
              help="Start from this codec's network instead of a random one (same architecture, "
                   "or a wider --latent: the extra dimensions start unused).")
@click.option("--modulation", type=click.Choice(["shift", "scale-shift"]), default="shift", show_default=True,
              help="What the latent does to each sine layer: shift it, or also scale it (FiLM; twice the "
                   "modulations per latent dimension). Patch networks.")
@click.option("--quant-step", default=0.0, show_default=True,
              help="Rate-aware training: the fitted latents take uniform noise of this quantizer step (latent "
                   "units: the step of the rung trained for) in the outer loss, and validation scores "
                   "them rounded. 0: off.")
@click.option("--rate-weight", default=0.0, show_default=True,
              help="With --quant-step: the outer loss also pays this (MSE per bit per sample) times the "
                   "latents' code length under a Laplace per latent dimension.")
@click.option("--normalise", "normalisation", type=click.Choice(["file", "field"]), default="file", show_default=True,
              help="Climate: map values to [0, 1] over the file's range, or over each field's (levels of "
                   "different ranges; the ranges go into each file's header).")
@click.option("--val-fraction", default=0.2, show_default=True,
              help="Climate: the latest fields of each file held out for validation.")
@DEVICE
def train(data: str, out: str, modality: str, width: int, depth: int, latent_dim: int, w0: float, patch: int | None,
          cell: int, frequencies: int, batch: int, inner_steps: int, half_inner: int, encode_steps: int,
          outer_lr: float, steps: int,
          minutes: float, val_every: int, val_patches: int, seed: int, val_files: int, no_meta_sgd: bool,
          export_name: str | None, bits: str, clip_std: str, allocate: bool, decorrelate: bool, context_buckets: int,
          rd_lambda: str,
          refine_steps: int, refine_lr: float, refine_latent_lr: float | None, refine_rate_lambda: float,
          codecs_dir: str, fresh: bool, coord_scale: float | None, var: str | None,
          val_fraction: float, finer: int, finer_weight: float, finer_filter: str, init_codec: str, normalisation: str,
          modulation: str, quant_step: float, rate_weight: float, device: str) -> None:
    """Meta-learn a base network on the files in DATA (resumes from OUT when it has a checkpoint).

    Runs under `torchrun --nproc-per-node N coin train ...` too (DistributedDataParallel).
    """
    torch.manual_seed(seed)
    bit_list = parse_list(bits, "--bits", int, 1, 8)
    clips = parse_list(clip_std, "--clip-std", float, 0.5, 20)
    rd_lambdas = parse_list(rd_lambda, "--rd-lambda", float, 0, 100)
    if any(rd_lambdas) and not context_buckets:
        raise InputError("--rd-lambda needs --context (rounding by code length needs the adaptive tables)")
    clips = clips if len(clips) > 1 else clips[0]
    mod = modalities.get(modality)
    if coord_scale is not None and not 0 < coord_scale <= 1000:
        raise InputError("--coord-scale must be in (0, 1000]")
    if not 0 < val_fraction < 1:
        raise InputError("--val-fraction must be in (0, 1)")
    if not 0 <= context_buckets <= 64 or not 0 <= refine_steps <= 1000 or not 0 < refine_lr <= 10:
        raise InputError("--context must be in 0..64, --refine-steps in 0..1000, --refine-lr in (0, 10]")
    if allocate and (mod.spatial_dims != 2 or mod.absolute_coordinates):
        raise InputError("--allocate applies to images")
    if context_buckets and (mod.spatial_dims > 2 or mod.absolute_coordinates):
        raise InputError("--context applies to images and audio")
    if allocate and decorrelate:
        raise InputError("choose --allocate or --decorrelate, not both")
    if cell and (mod.spatial_dims != 2 or mod.absolute_coordinates or not 2 <= cell <= 256
                 or not 1 <= frequencies <= 64):
        raise InputError("--cell (2..256, with --frequencies 1..64) applies to images")
    if cell and refine_steps:
        raise InputError("--refine-steps is not available for latent grids (--cell)")
    if (refine_latent_lr is not None and not 0 < refine_latent_lr <= 10) or not 0 <= refine_rate_lambda <= 1 \
            or (refine_rate_lambda and refine_latent_lr is None):
        raise InputError("--refine-latent-lr must be in (0, 10], and --refine-rate-lambda (in [0, 1]) needs it")
    refine = None
    if refine_steps:
        refine = ({"steps": refine_steps, "lr": refine_lr, "quantized": True} if refine_latent_lr is None else
                  {"steps": refine_steps, "latent_lr": refine_latent_lr, "quantized": False})
        if refine_rate_lambda:
            refine["rate_lambda"] = refine_rate_lambda
    if not 1 <= val_patches <= 100_000:
        raise InputError("--val-patches must be in 1..100000")
    coords = None
    if mod.absolute_coordinates:
        if patch is not None:
            raise InputError(f"{mod.name} codecs fit whole fields; --patch does not apply")
        train_s, val_s, coords, grid, split_note = load_fields(data, modality, val_fraction, var, normalisation)
        patch_shape = (1, *grid)
    else:
        if var is not None or normalisation != "file":
            raise InputError("--var and --normalise apply to climate data")
        patch_shape = (patch or (4 * cell if cell else DEFAULT_PATCH[mod.name]),) * mod.spatial_dims
    cfg = TrainConfig(data=data, out=out, modality=modality, patch=patch_shape,
                      model=SirenConfig(in_dim=mod.network_in_dim, out_dim=mod.network_channels, width=width,
                                        depth=depth, latent_dim=latent_dim, w0=w0, meta_sgd=not no_meta_sgd,
                                        coord_scale=mod.coord_scale if coord_scale is None else coord_scale,
                                        cell=cell, frequencies=frequencies if cell else 0,
                                        modulation=modulation),
                      batch=batch, inner_steps=inner_steps, half_inner=half_inner, test_steps=encode_steps,
                      outer_lr=outer_lr,
                      steps=steps, time_limit_min=minutes, val_every=val_every, val_patches=val_patches,
                      val_files=val_files, seed=seed, device=device, normalisation=normalisation,
                      finer=finer, finer_weight=finer_weight, finer_filter=finer_filter, init=init_codec,
                      quant_step=quant_step, rate_weight=rate_weight)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    if coords is None:
        train_s, val_s, val_names = load_training_folder(data, modality, cfg.val_files, seed)
        split_note = f"training on {len(train_s)} files, validating on {', '.join(val_names)}"
    if rank0:
        console.print(split_note)
    best = run_training(cfg, train_s, val_s, resume=not fresh, progress=rank0 and sys.stderr.isatty(),
                        coords=coords)
    if rank0:
        state = json.loads(best.with_suffix(".json").read_text())
        console.print(f"best validation PSNR {state['best_val_psnr']:.2f} dB at step {state['best_step']}; "
                      f"checkpoint {best}.safetensors")
        if export_name:
            for folder in export_codecs(best, train_s, Path(codecs_dir), export_name, bit_list, encode_steps,
                                        device=device, clip_std=clips, coords=coords,
                                        context=context_buckets or None, val_signals=val_s,
                                        allocate=allocate, decorrelate=decorrelate,
                                        refine=refine, rd_lambda=rd_lambdas):
                console.print(f"wrote codec {folder}")


DEFAULT_PATCH = {"image": 32, "audio": 200, "mri": 8}


@click.command()
@click.argument("codec_list")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False),
              help="Training files of the codecs' modality (never the test set); the same files are held out as in "
                   "`coin train`.")
@click.option("--crops", default=8, show_default=True, help="Random crops per training image.")
@click.option("--size", default=128, show_default=True, help="Crop side in pixels (a multiple of the patch).")
@click.option("--channels", default=32, show_default=True)
@click.option("--layers", default=5, show_default=True, help="3x3 convolutions.")
@click.option("--steps", default=3000, show_default=True, help="Adam steps (batch 16 windows of 64x64).")
@click.option("--lr", default=1e-3, show_default=True, help="Adam's learning rate (cosine schedule).")
@click.option("--init", "init_codec", default=None, metavar="CODEC",
              help="Start from this codec's post-filter (same patch; a smaller one grows into --channels and "
                   "--layers, computing the same at first) instead of from scratch; 'own': each codec from its "
                   "own filter.")
@click.option("--seed", default=0, show_default=True)
@click.option("--val-files", default=3, show_default=True, help="Files held out for validation.")
@click.option("--val-crops", default=None, type=int, help="Random crops per held-out file [default: half of --crops].")
@click.option("--shared", is_flag=True, help="One filter for all the codecs instead of one per codec.")
@click.option("--augment", is_flag=True, help="Train on flipped and transposed views of the crops too.")
@click.option("--views", default=1, show_default=True,
              help="Decoding averages the filter over this many flipped/transposed views (1-8; 1-4 for "
                   "patches that are not square): a little more quality for that many times the filter's time.")
@click.option("--crops-cache", "crops_cache", default=None, type=click.Path(dir_okay=False),
              help="Keep the decoded crops in this file and reuse them when the codecs, data and crop options "
                   "are the same (decoding them costs more than training).")
@click.option("--aware", is_flag=True,
              help="Encode the crops with each codec's steps through its present post-filter (refine "
                   "filter_steps), as `coin encode` does, and train on those decodes; without it the "
                   "crops are encoded as if the codec had no filter.")
@click.option("--taps", default=33, show_default=True,
              help="Audio codecs: the waveform filter's length (odd), fitted by least squares.")
@click.option("--clips", default=12, show_default=True,
              help="Audio codecs: training clips encoded and decoded to fit the filter on.")
@click.option("--side", default=3, show_default=True,
              help="MRI codecs: the volume filter's side in voxels (odd), fitted by least squares.")
@DEVICE
@FORCE
def postfilter(codec_list: str, data: str, crops: int, size: int, channels: int, layers: int, steps: int, lr: float,
               init_codec: str | None, seed: int, val_files: int, val_crops: int | None, shared: bool,
               augment: bool, views: int, crops_cache: str | None, aware: bool, taps: int, clips: int, side: int,
               device: str, force: bool) -> None:
    """Train a decoder-side post-filter for each codec in CODEC_LIST (comma-separated) on its own
    decodes of DATA, and install it into the codec's folder: for image codecs (same patch) a small
    CNN, for audio codecs a linear filter on the waveform, for MRI codecs a linear filter on the volume.

    Files already written decode with it too: the post-filter changes no symbol and no hash.
    """
    names = [n for n in codec_list.split(",") if n]
    loaded = [codecs.load(n) for n in names]
    if loaded and all(c.modality == "audio" for c in loaded):
        waveform_filters(loaded, data, taps, clips, val_files, seed, device, force)
        return
    if loaded and all(c.modality == "mri" for c in loaded):
        volume_filters(loaded, data, side, val_files, seed, device, force)
        return
    if not loaded or any(c.modality != "image" or c.net.cfg.cell or len(c.patch) != 2 for c in loaded):
        raise InputError("post-filters are for image codecs with one latent per patch")
    patch = loaded[0].patch
    if any(c.patch != patch for c in loaded):
        raise InputError("the codecs must share their patch (where the seams repeat)")
    if not (1 <= crops <= 1000 and 64 <= size <= 1024 and size % max(patch) == 0 and 1 <= channels <= 256
            and 2 <= layers <= 32 and 1 <= steps <= 10_000_000 and 1 <= val_files and 0 < lr <= 1
            and (val_crops is None or 1 <= val_crops <= 1000)
            and 1 <= views <= len(usable_views((int(patch[0]), int(patch[1]))))):
        raise InputError("--crops 1..1000, --size 64..1024 (a multiple of the patch), --channels 1..256, "
                         "--layers 2..32, --steps >= 1, --lr in (0, 1], --val-files >= 1, --val-crops 1..1000, "
                         "--views 1..8 (1..4 for patches that are not square)")
    cfg = PostFilterSpec(channels, layers, (int(patch[0]), int(patch[1])))
    starts = filter_starts(loaded, init_codec, shared, cfg)
    for c in loaded:
        if c.postfilter is not None and not force:
            raise InputError(f"codec {c.name!r} already has a post-filter; pass --force to replace it")
    torch.manual_seed(seed)
    train_s, val_s, val_names = load_training_folder(data, "image", val_files, seed)
    console.print(f"{len(train_s)} training images; validating on {', '.join(val_names)}")
    n_val = val_crops or max(1, crops // 2)
    # What the crops depend on: the decoder (hash), the fit (weights, patch, steps) and any refinement.
    encoders = [Encoder(c, modalities.get("image"), "default" if aware else "fast") for c in loaded]
    key = {"codecs": {e.codec.name: [e.codec.hash.hex(), e.fit_key(), e.preset.to_list()] for e in encoders},
           "data": str(Path(data).resolve()), "crops": crops, "size": size, "seed": seed,
           "val_files": val_files, "val_crops": n_val}
    if aware:  # the encoder then depends on each codec's present filter too
        if any(e.codec.postfilter is None or e.preset.filter is None for e in encoders):
            raise InputError("--aware needs codecs with a post-filter whose default preset steps through it")
        key["aware"] = True  # and each codec's crops depend on its filter (a file for more codecs serves any)
        for c in loaded:
            key["codecs"][c.name].append(c.spec.postfilter.sha256)
    pairs, val = crops_for(names, train_s, val_s, crops, n_val, size, seed, device, aware, crops_cache, key)
    if not pairs[names[0]] or not val[names[0]]:
        raise InputError(f"{data}: no image is {size} pixels on each side")
    command = (f"coin postfilter {codec_list} --data {data} --crops {crops} --size {size} --channels {channels} "
               f"--layers {layers} --steps {steps} --lr {lr:g} --seed {seed}"
               + (f" --init {init_codec}" if init_codec else "")
               + (f" --val-crops {val_crops}" if val_crops else "") + (" --shared" if shared else "")
               + (" --augment" if augment else "") + (f" --views {views}" if views > 1 else "")
               + (" --aware" if aware else "")
               + (" --force" if force else ""))  # replacing a filter needs it: the command must run as recorded
    jobs = [names] if shared else [[n] for n in names]
    for group in jobs:
        init_name, init = starts.get(group[0], (None, None))
        train_pairs = [p for n in group for p in pairs[n]]
        val_pairs = [p for n in group for p in val[n]]
        with console.status(f"training ({', '.join(group)})") as status:
            net, summary = train_filter(train_pairs, val_pairs, cfg, steps, lr=lr, seed=seed,
                                        device=pick_device(device), init=init, augment=augment,
                                        log=lambda r: status.update(f"training: step {r['step']}, validation "
                                                                    f"{r['val_psnr_gain_db']:+.3f} dB"))
        net.views = views
        if views > 1:  # the gain decoding will see (training chose its weights on one view)
            before, after = mse_before_after(net, val_pairs, pick_device(device))
            summary["val_psnr_gain_views_db"] = round(10 * math.log10(before / after), 3)
        if init is not None:
            summary["init"] = init_name
        # Step 0 is a fresh filter (near the identity) or the --init filter, which may be kept as it is.
        if (summary["best_step"] == 0 and init is None) or summary["val_psnr_gain_db"] <= 0:
            console.print(f"{', '.join(group)}: no step improved the held-out crops "
                          f"({summary['val_psnr_gain_db']:+.3f} dB); not installed")
            continue
        summary |= {"codecs": group, "data": data, "crops": len(train_pairs), "crop_size": size,
                    "hardware": hardware_description(pick_device(device)), "command": command}
        for n in group:
            install(codecs.load(n).folder, net, summary)
        console.print(f"{', '.join(group)}: validation PSNR {summary['val_psnr_gain_db']:+.3f} dB on "
                      f"{len(val_pairs)} held-out crops" + (f" ({summary['val_psnr_gain_views_db']:+.3f} dB "
                      f"averaged over {views} views)" if views > 1 else "") + "; installed")
    codecs.clear_cache()


def waveform_filters(loaded: list[codecs.Codec], data: str, taps: int, clips: int, val_files: int, seed: int,
                     device: str, force: bool) -> None:
    """`coin postfilter` for audio codecs: per codec, a least-squares filter from its decodes of
    `clips` training clips to the originals, checked on the held-out clips and installed when it
    gains there."""
    if not (1 <= taps <= 1023 and taps % 2 and 1 <= clips <= 10_000 and val_files >= 1):
        raise InputError("--taps must be odd in 1..1023, --clips in 1..10000, --val-files >= 1")
    for c in loaded:
        if c.postfilter is not None and not force:
            raise InputError(f"codec {c.name!r} already has a post-filter; pass --force to replace it")
    train_s, val_s, val_names = load_training_folder(data, "audio", val_files, seed)
    rng = np.random.default_rng(seed)
    picked = [train_s[i] for i in sorted(rng.permutation(len(train_s))[:clips])]
    console.print(f"fitting on {len(picked)} of {len(train_s)} training clips; validating on {', '.join(val_names)}")
    audio = modalities.get("audio")
    command = (f"coin postfilter {','.join(c.name for c in loaded)} --data {data} --taps {taps} --clips {clips} "
               f"--seed {seed}" + (" --force" if force else ""))
    fit_linear_filters(loaded, (picked, val_s), lambda c, v: waveform_pair(c, audio, v, device),
                       lambda pairs: fit_waveform(pairs, taps), waveform_gain_db, "clips",
                       {"data": data, "seed": seed, "hardware": hardware_description(pick_device(device)),
                        "command": command}, f"{taps} taps")


def fit_linear_filters(loaded: list[codecs.Codec], groups: tuple[list, list], pair: Callable, fit: Callable,
                       gain_db: Callable, unit: str, training: dict, what: str) -> None:
    """Per codec: (decoded, original) pairs of the training and held-out signals (`pair(codec, signal)`),
    a filter fitted to the first (`fit(pairs)`), installed when it gains on the second
    (`gain_db(filter, pairs)`, dB) with `training` and the counts in its config entry."""
    for c in loaded:
        t0 = time.time()
        with console.status(f"{c.name}: encoding and decoding"):
            pairs, val = ([pair(c, v) for v in group] for group in groups)
        f = fit(pairs)
        gain = gain_db(f, val)
        if gain <= 0:
            console.print(f"{c.name}: the filter loses {gain:+.3f} dB on the held-out {unit}; not installed")
            continue
        install(c.folder, f, {unit: len(pairs), f"val_{unit}": len(val), "val_psnr_gain_db": round(gain, 3),
                              "wall_time_s": round(time.time() - t0, 1)} | training)
        console.print(f"{c.name}: {what}, {gain:+.3f} dB on {len(val)} held-out {unit}; installed")
    codecs.clear_cache()


def volume_filters(loaded: list[codecs.Codec], data: str, side: int, val_files: int, seed: int, device: str,
                   force: bool) -> None:
    """`coin postfilter` for MRI codecs: per codec, a least-squares side^3 filter (and a constant) from
    its decodes of the training volumes to the volumes, checked on the held-out ones and installed when
    it gains there. The volumes are coded at half resolution (2x2x2 block means), eight times faster to
    code; fitted at their own resolution the filter gains about 0.1 dB more (benchmarks/experiments/RECORD.md,
    section 24)."""
    if not (1 <= side <= 9 and side % 2 and val_files >= 1):
        raise InputError("--side must be odd in 1..9, --val-files >= 1")
    for c in loaded:
        if c.postfilter is not None and not force:
            raise InputError(f"codec {c.name!r} already has a post-filter; pass --force to replace it")
    mri = modalities.get("mri")
    paths = sorted(p for p in Path(data).rglob("*") if mri.extension_of(p))
    if len(paths) < val_files + 1:
        raise InputError(f"{data}: need at least {val_files + 1} MRI files")
    held = {int(i) for i in np.random.default_rng(seed).permutation(len(paths))[:val_files]}  # as `coin train`
    volumes = [mri.coarser(mri.read(p), 2) for p in paths]
    train_v = [v for i, v in enumerate(volumes) if i not in held]
    val_v = [v for i, v in enumerate(volumes) if i in held]
    console.print(f"fitting on {len(train_v)} volumes; validating on {', '.join(paths[i].name for i in sorted(held))}")
    command = (f"coin postfilter {','.join(c.name for c in loaded)} --data {data} --side {side} "
               f"--val-files {val_files} --seed {seed}" + (" --force" if force else ""))
    fit_linear_filters(loaded, (train_v, val_v), lambda c, v: volume_pair(c, mri, v, device),
                       lambda pairs: fit_volume(pairs, side), lambda f, val: volume_gain_db(*f, val), "volumes",
                       {"data": data, "seed": seed, "hardware": hardware_description(pick_device(device)),
                        "command": command}, f"{side}x{side}x{side} filter")


def volume_pair(c: codecs.Codec, mri, signal: Signal, device: str) -> tuple[np.ndarray, np.ndarray]:
    """(decoded, original) first volumes (X, Y, Z) in the network's [0, 1], without a post-filter."""
    decoded, _ = decode_bytes(Encoder(c, mri, device=device).encode(signal).data, device=device, postfilter=False)
    return decoded.values[..., 0].astype(np.float64), signal.values[..., 0].astype(np.float64)


def waveform_pair(c: codecs.Codec, audio, values: np.ndarray, device: str) -> tuple[np.ndarray, np.ndarray]:
    """(decoded, original) waveforms in [-1, 1] of one mono clip through the codec, without a post-filter
    (the rate only labels the file: the codec codes samples)."""
    sig = Signal(values, {"sample_rate": 16000, "subtype": "PCM_16", "channels": 1})
    decoded, _ = decode_bytes(Encoder(c, audio, device=device).encode(sig).data, device=device, postfilter=False)
    return decoded.values[:, 0].astype(np.float64) * 2 - 1, values[:, 0].astype(np.float64) * 2 - 1


def filter_starts(loaded: list[codecs.Codec], init_codec: str | None, shared: bool, cfg: PostFilterSpec
                  ) -> dict[str, tuple[str, object]]:
    """codec name -> (the codec whose filter it starts from, that filter), for --init."""
    own = init_codec == "own"
    if own and shared:
        raise InputError("--init own starts each codec's filter from its own; a --shared filter has none")
    starts = {}
    for source in (loaded if own else [codecs.load(init_codec)] if init_codec is not None else []):
        if source.postfilter is None:
            raise InputError(f"codec {source.name!r} has no post-filter to start from")
        small = source.postfilter.cfg
        if small.period != cfg.period or small.channels > cfg.channels or small.layers > cfg.layers:
            raise InputError(f"codec {source.name!r}'s post-filter is {small.channels} channels, "
                             f"{small.layers} layers, patch {small.period}: pass at least as many --channels "
                             "and --layers (it grows into the new size) and codecs of its patch")
        for c in (loaded if not own else [source]):
            starts[c.name] = (source.name, source.postfilter)
    return starts


def crops_for(names: list[str], train_s: list, val_s: list, crops: int, n_val: int, size: int, seed: int,
              device: str, aware: bool, crops_cache: str | None, key: dict) -> tuple[dict, dict]:
    """The decoded training and validation crops: from --crops-cache when it was made from the same
    codecs, data and options, else decoded (and kept there)."""
    cached = None
    if crops_cache:
        try:
            cached = load_pairs(Path(crops_cache), {**key, "part": "train"}), \
                load_pairs(Path(crops_cache).with_suffix(".val.npz"), {**key, "part": "val"})
        except ValueError as e:
            raise InputError(f"--crops-cache: {e}") from None
    if cached and cached[0] is not None and cached[1] is not None:
        console.print(f"decoded crops from {crops_cache}")
        return cached
    with console.status("decoding crops") as status:
        tick = lambda i, n: status.update(f"decoding crops {i}/{n}")  # noqa: E731
        pairs = decoded_crops(names, train_s, crops, size, seed, device, tick, aware=aware)
        val = decoded_crops(names, val_s, n_val, size, seed + 1, device, tick, aware=aware)
    if crops_cache:
        save_pairs(Path(crops_cache), pairs, {**key, "part": "train"})
        save_pairs(Path(crops_cache).with_suffix(".val.npz"), val, {**key, "part": "val"})
    return pairs, val
