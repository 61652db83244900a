"""Meta-learning the base network (`coin train`).

CAVIA-style: for every batch of random crops the latents start at zero, take a few SGD steps
(meta-SGD rates, second order through the hand-written latent gradient of model.py), and one
outer Adam step updates the base network, the latent map and the rates on the loss after the
inner loop. Validation PSNR on crops of held-out files at the test-time step count; the best
checkpoint is kept. Checkpoints are safetensors plus a JSON state file, so a run resumes.

Runs under `torchrun --nproc-per-node N` with DistributedDataParallel (gloo on CPU, NCCL on
CUDA); rank 0 validates, logs and writes checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from safetensors.torch import load_file, save_file
from torch import nn

from .. import codec as codecs
from ..device import hardware_description, pick_device
from ..errors import InputError
from ..files import replace_with
from ..model import LatentModulatedSiren, SirenConfig, build_network
from ..patching import CellLayout, checkerboard, patch_coordinates
from .data import sampler_for


@dataclass
class TrainConfig:
    data: str
    out: str
    modality: str = "image"
    patch: tuple[int, ...] = (32, 32)
    model: SirenConfig = field(default_factory=SirenConfig)
    batch: int = 16
    inner_steps: int = 3
    # The first N inner steps take their gradient on alternate checkerboard halves of each patch
    # (patching.checkerboard), as a codec's encode_half_steps do when encoding; the outer loss
    # still sees every sample. Patch networks only.
    half_inner: int = 0
    test_steps: int = 10
    outer_lr: float = 2e-4
    steps: int = 100_000
    time_limit_min: float = 0.0  # 0: no limit; else the schedule also runs on wall time
    decay_fraction: float = 0.3  # cosine decay over the last part of training
    recover_db: float = 3.0  # validation this far below the best: reload best, halve the lr (0: off)
    val_every: int = 250
    val_patches: int = 256
    val_files: int = 3
    seed: int = 0
    device: str = "auto"
    normalisation: str = "file"  # climate: "field" maps each field over its own range (Modality.normalise)
    # Sub-sample supervision: crops `finer` times the patch per axis, the patch their block means; the
    # latents are fitted to the patch and the outer loss also scores the network between its samples
    # against the crop (weight `finer_weight`), so it learns what lies between them. 0: off.
    finer: int = 0
    finer_weight: float = 1.0
    # How the patch is made from the finer crop: "box" (block means, what a sensor with larger samples
    # records) or "lanczos" (the Lanczos-3 reduction image tools apply when they halve a photo).
    finer_filter: str = "box"
    init: str = ""  # start from this codec's network instead of a random one (a fresh run only)
    # Rate-aware meta-learning: the fitted latents take uniform noise of this width (a quantizer step, in
    # latent units; the principal components' basis is orthonormal, so the same step there) before the
    # outer loss, which then also pays `rate_weight` (MSE per bit per sample) times their code length
    # under a per-dimension Laplace (LatentRate). Validation then scores rounded latents. 0: off.
    quant_step: float = 0.0
    rate_weight: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d


class LatentRate(nn.Module):
    """Code length of latents quantized with step `step`, under a Laplace per latent dimension whose
    centre and scale follow the fitted latents (running means, not learned: the shipped coders adapt
    their own tables, so this is only the training objective's stand-in for them).

    bits(y) is -log2 of the Laplace's mass on [y - step/2, y + step/2], summed over dimensions: for y
    with uniform quantization noise, the expected code length of the rounded latent."""

    def __init__(self, dim: int, step: float, momentum: float = 0.99) -> None:
        super().__init__()
        self.step = step
        self.momentum = momentum
        self.register_buffer("centre", torch.zeros(dim))
        self.register_buffer("scale", torch.zeros(dim))  # zero until the first update

    @torch.no_grad()
    def observe(self, latents: torch.Tensor) -> None:
        centre = latents.mean(dim=0)
        scale = (latents - centre).abs().mean(dim=0).clamp_min(self.step / 8)
        if not bool(self.scale.any()):
            self.centre.copy_(centre)
            self.scale.copy_(scale)
        else:
            self.centre.lerp_(centre, 1 - self.momentum)
            self.scale.lerp_(scale, 1 - self.momentum)

    def noisy(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents plus uniform noise of one step (quantization's error, differentiable; the run's seed)."""
        u = torch.rand(latents.shape, device=latents.device, dtype=latents.dtype)
        return latents + (u - 0.5) * self.step

    def rounded(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents rounded to the step's grid around the centre (what validation scores)."""
        return self.centre + torch.round((latents - self.centre) / self.step) * self.step

    def bits(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B,) code length in bits."""
        x = (latents - self.centre).abs()
        b = self.scale
        # Mass of [x - s/2, x + s/2] for x >= s/2 is exp(-x/b) sinh(s/2b); the central bin holds
        # 1 - exp(-s/2b). (b >= s/8 keeps sinh finite.)
        half = self.step / 2
        tail = -x / b + torch.log(torch.sinh(half / b).expand_as(x))
        centre_bin = torch.log(-torch.expm1(-half / b)).expand_as(x)
        log_p = torch.where(x < half, centre_bin, tail)
        return -log_p.sum(dim=1) / math.log(2)


class MetaLearner(nn.Module):
    """Wraps the network so that one forward call is one meta-learning loss (for DDP)."""

    def __init__(self, net: LatentModulatedSiren, inner_steps: int, subsets: list[torch.Tensor] | None = None,
                 rate: LatentRate | None = None, rate_weight: float = 0.0) -> None:
        super().__init__()
        self.net = net
        self.inner_steps = inner_steps
        # Step k < len(subsets) takes its gradient on the samples subsets[k] alone (TrainConfig.half_inner).
        self.subsets = list(subsets or [])[:inner_steps]
        self.rate = rate
        self.rate_weight = rate_weight

    def adapt(self, coords: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The inner loop: latents (B, D) fitted to targets (B, N, C), differentiable in the network."""
        latents = None
        for idx in self.subsets:
            latents = self.net.inner_loop(coords[idx], targets[:, idx], 1, latents)
        return self.net.inner_loop(coords, targets, self.inner_steps - len(self.subsets), latents)

    def forward(self, coords: torch.Tensor, targets: torch.Tensor, fine_coords: torch.Tensor | None = None,
                fine_targets: torch.Tensor | None = None, fine_weight: float = 1.0) -> torch.Tensor:
        latents = self.adapt(coords, targets)
        if self.rate is not None:
            self.rate.observe(latents)
            latents = self.rate.noisy(latents)
        loss = (self.net(coords, latents) - targets).pow(2).mean()
        if self.rate is not None and self.rate_weight:
            loss = loss + self.rate_weight * self.rate.bits(latents).mean() / targets.shape[1]
        if fine_coords is not None:
            loss = loss + fine_weight * (self.net(fine_coords, latents) - fine_targets).pow(2).mean()
        return loss


def block_means(crops: torch.Tensor, fine: tuple[int, ...], factor: int) -> torch.Tensor:
    """(B, prod(fine), C) crops -> (B, prod(fine // factor), C): each sample the mean of the factor^d
    it covers (what a sensor with samples `factor` times larger records)."""
    b, _, c = crops.shape
    shape = [b]
    for n in fine:
        shape += [n // factor, factor]
    x = crops.reshape(*shape, c)
    return x.mean(dim=tuple(range(2, 2 * len(fine) + 1, 2))).reshape(b, -1, c)


LANCZOS_LOBES = 3


def lanczos_margin(factor: int) -> int:
    """Fine samples the Lanczos reduction reads beyond each side of the crop."""
    return LANCZOS_LOBES * factor


def _lanczos_taps(factor: int) -> torch.Tensor:
    """Weights of one reduced sample over fine samples -m .. factor + m - 1 of its block (m the margin):
    PIL's reduction, a Lanczos-3 kernel stretched by the factor, centred on the block's centre."""
    m = lanczos_margin(factor)
    offset = (torch.arange(-m, factor + m, dtype=torch.float64) + 0.5 - factor / 2) / factor
    w = torch.sinc(offset) * torch.sinc(offset / LANCZOS_LOBES) * (offset.abs() < LANCZOS_LOBES)
    return (w / w.sum()).float()


def lanczos_reduce(crops: torch.Tensor, fine: tuple[int, ...], factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, prod(fine + 2 margin), C) crops -> (the reduced patch (B, prod(fine // factor), C), the crop's
    centre (B, prod(fine), C)): the patch is what an image tool's Lanczos halving makes of the centre."""
    b, _, c = crops.shape
    m = lanczos_margin(factor)
    padded = [n + 2 * m for n in fine]
    x = crops.reshape(b, *padded, c)
    taps = _lanczos_taps(factor).to(crops)
    for axis in range(1, len(fine) + 1):
        x = x.movedim(axis, -1)
        lead = x.shape[:-1]
        x = torch.nn.functional.conv1d(x.reshape(-1, 1, x.shape[-1]), taps.view(1, 1, -1), stride=factor)
        x = x.reshape(*lead, -1).movedim(-1, axis)
    centre = crops.reshape(b, *padded, c)[(slice(None), *(slice(m, m + n) for n in fine))]
    return x.reshape(b, -1, c), centre.reshape(b, -1, c)


def reduce_crops(crops: torch.Tensor, fine: tuple[int, ...], factor: int, how: str
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-sample supervision's pair: (the patch, the finer crop) from crops drawn by `finer_crop_shape`."""
    if how == "lanczos":
        return lanczos_reduce(crops, fine, factor)
    return block_means(crops, fine, factor), crops


def finer_crop_shape(fine: tuple[int, ...], factor: int, how: str) -> tuple[int, ...]:
    """The crop drawn for sub-sample supervision: the finer crop, and the reduction's margin."""
    m = lanczos_margin(factor) if how == "lanczos" else 0
    return tuple(n + 2 * m for n in fine)


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    return -10 * torch.log10(mse.clamp_min(1e-12))


@torch.no_grad()
def validation_errors(net: LatentModulatedSiren, coords: torch.Tensor, targets: torch.Tensor, steps: int,
                      fine: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[float, float | None]:
    """Mean squared errors over all validation crops after `steps` encode steps (gradients by hand, no
    graph): on the patch, and at fine = (finer coordinates, finer crops) with the same latents (None
    without). Pooled, not a mean of per-crop PSNRs: those reward near-silent audio crops and empty MRI
    background so much that a network losing quality on speech or tissue could score higher."""
    errors, fine_errors = [], []
    for i, chunk in enumerate(targets.split(64)):
        z = net.inner_loop(coords, chunk, steps)
        errors.append((net(coords, z) - chunk).pow(2).mean(dim=(1, 2)))
        if fine is not None:
            fine_errors.append((net(fine[0], z) - fine[1][64 * i : 64 * (i + 1)]).pow(2).mean(dim=(1, 2)))
    return torch.cat(errors).mean().item(), torch.cat(fine_errors).mean().item() if fine is not None else None


@torch.no_grad()
def rate_validation(net: LatentModulatedSiren, coords: torch.Tensor, targets: torch.Tensor, steps: int,
                    rate: LatentRate) -> tuple[float, float]:
    """Rate-aware runs: the pooled MSE with the fitted latents rounded to the quantizer's step, and
    their code length in bits per sample under the rate model."""
    errors, bits = [], []
    for chunk in targets.split(64):
        z = rate.rounded(net.inner_loop(coords, chunk, steps))
        errors.append((net(coords, z) - chunk).pow(2).mean(dim=(1, 2)))
        bits.append(rate.bits(z) / chunk.shape[1])
    return torch.cat(errors).mean().item(), torch.cat(bits).mean().item()


def validation_psnr(own: float, finer: float | None, finer_weight: float) -> float:
    """The validation score: PSNR of the patch's error, or of the training objective's mix of it
    and the finer crop's (sub-sample supervision)."""
    mse = own if finer is None else (own + finer_weight * finer) / (1 + finer_weight)
    return psnr_from_mse(torch.tensor(mse)).item()


def validate(net: LatentModulatedSiren, coords: torch.Tensor, targets: torch.Tensor, steps: int,
             fine: tuple[torch.Tensor, torch.Tensor, float] | None = None) -> float:
    """Validation PSNR (`validation_errors`, `validation_psnr`); fine: (finer coordinates, finer crops,
    weight) of sub-sample supervision."""
    own, finer = validation_errors(net, coords, targets, steps, fine[:2] if fine else None)
    return validation_psnr(own, finer, fine[2] if fine else 0.0)


def lr_factor(progress: float, decay_fraction: float) -> float:
    """Constant, then a cosine to zero over the last `decay_fraction` of training."""
    start = 1.0 - decay_fraction
    if progress <= start:
        return 1.0
    t = min(1.0, (progress - start) / max(decay_fraction, 1e-9))
    return 0.5 * (1 + math.cos(math.pi * t))


def _optimizer_tensors(opt: torch.optim.Adam, params: list[nn.Parameter]) -> dict[str, torch.Tensor]:
    out = {}
    for i, p in enumerate(params):
        st = opt.state.get(p)
        if st:
            out[f"adam.{i}.exp_avg"] = st["exp_avg"]
            out[f"adam.{i}.exp_avg_sq"] = st["exp_avg_sq"]
            out[f"adam.{i}.step"] = torch.as_tensor(st["step"], dtype=torch.float64).reshape(1)
    return out


def _load_optimizer(opt: torch.optim.Adam, params: list[nn.Parameter], tensors: dict) -> None:
    for i, p in enumerate(params):
        if f"adam.{i}.exp_avg" in tensors:
            opt.state[p] = {
                "exp_avg": tensors[f"adam.{i}.exp_avg"].to(p.device),
                "exp_avg_sq": tensors[f"adam.{i}.exp_avg_sq"].to(p.device),
                "step": torch.tensor(float(tensors[f"adam.{i}.step"][0])),
            }


def save_checkpoint(path: Path, net: LatentModulatedSiren, opt: torch.optim.Adam, state: dict) -> None:
    """Weights and optimizer state as safetensors, the rest as JSON; both written atomically."""
    params = list(net.parameters())
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tensors.update({k: v.detach().cpu().contiguous() for k, v in _optimizer_tensors(opt, params).items()})
    replace_with(path.with_suffix(".safetensors"), lambda p: save_file(tensors, str(p)))
    replace_with(path.with_suffix(".json"), lambda p: p.write_text(json.dumps(state, indent=1)))


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> tuple[LatentModulatedSiren, dict, dict]:
    """-> (network, state dict from JSON, raw tensors incl. optimizer state)."""
    state = json.loads(path.with_suffix(".json").read_text())
    tensors = load_file(str(path.with_suffix(".safetensors")))
    net = build_network(SirenConfig.from_dict(state["config"]["model"]))
    net.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    return net.to(device), state, tensors


def training_points(model: SirenConfig, patch: tuple[int, ...], coords: np.ndarray | None = None
                    ) -> torch.Tensor | CellLayout:
    """Where the network is evaluated on a training crop: the patch's coordinates, the crop's latent
    grid (latent-grid networks, the crop holding crop / cell latents per axis), or the given fixed
    coordinates of whole fields."""
    if coords is not None:
        return torch.as_tensor(coords, dtype=torch.float32)
    if model.cell:
        if len(patch) != 2 or any(p % model.cell for p in patch):
            raise InputError(f"a latent grid trains on 2-D crops that are multiples of its cell ({model.cell})")
        return CellLayout.for_region(tuple(patch), model.cell, model.frequencies)
    return patch_coordinates(patch)


def _join_process_group(device: torch.device) -> tuple[torch.device, int, int]:
    """(device, rank, world size): under torchrun (WORLD_SIZE > 1) each process joins the group
    (NCCL on CUDA, one GPU per local rank; gloo on the CPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device, 0, 1
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, dist.get_rank(), dist.get_world_size()


def warm_start(net: LatentModulatedSiren, start: LatentModulatedSiren, name: str) -> None:
    """`net` takes `start`'s weights. A wider latent is allowed: the extra dimensions get fresh
    columns of the latent map and the mean inner rate of the others, so at zero latents (where every
    fit begins) the network is the one it starts from, and training teaches it what they add. So is
    scale-shift modulation from a shift network: the scales' rows of the latent map start at zero, so
    the network is the one it starts from at every latent."""
    same = replace(start.cfg, latent_dim=net.cfg.latent_dim, modulation=net.cfg.modulation) == net.cfg
    if (not same or net.cfg.latent_dim < start.cfg.latent_dim
            or (start.cfg.modulation == "scale-shift" and net.cfg.modulation == "shift")):
        raise InputError(f"--init {name}: its network is {start.cfg.tag}, not {net.cfg.tag} "
                         "(only the latent may be wider, or shifts become scale-shift)")
    d = start.cfg.latent_dim
    state = start.state_dict()
    with torch.no_grad():
        for key, value in net.state_dict().items():
            if key == "latent_map.weight":
                rows = state[key].shape[0]  # the start's modulations; the rest (scales) from zero
                fresh = value[:rows, d:]  # the fresh columns, spread like the learned ones
                if fresh.numel() > 1:
                    fresh.mul_(state[key].std() / fresh.std())
                value[:rows, :d] = state[key]
                value[rows:] = 0
            elif key == "latent_map.bias":
                value.zero_()
                value[: state[key].shape[0]] = state[key]
            elif key == "inner_lr":
                value[:d] = state[key]
                value[d:] = state[key].mean()
            else:
                value.copy_(state[key])


def _start(cfg: TrainConfig, device: torch.device, world: int, resume_from: Path | None
           ) -> tuple[LatentModulatedSiren, torch.optim.Adam, dict]:
    """A fresh network, optimizer and run state, or those of `resume_from` when it holds a checkpoint;
    under torchrun every rank then takes rank 0's weights."""
    torch.manual_seed(cfg.seed)
    net = build_network(cfg.model).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.outer_lr)
    state = {"step": 0, "elapsed_s": 0.0, "best_val_psnr": -1.0, "best_step": 0, "config": cfg.to_dict(),
             "hardware": hardware_description(device) + (f" x {world} processes" if world > 1 else "")}
    if cfg.init and not (resume_from is not None and resume_from.with_suffix(".json").exists()):
        start = codecs.load(cfg.init).net  # a fresh run warm-started from a shipped network
        warm_start(net, start, cfg.init)
    if resume_from is not None and resume_from.with_suffix(".json").exists():
        net_r, state, tensors = load_checkpoint(resume_from, device)
        if net_r.cfg != cfg.model or tuple(state["config"]["patch"]) != tuple(cfg.patch):
            raise InputError(f"{resume_from.parent} holds a run of another architecture ({net_r.cfg.tag}); "
                             "use --fresh or another --out")
        net.load_state_dict(net_r.state_dict())
        _load_optimizer(opt, list(net.parameters()), tensors)
        state["config"] = cfg.to_dict()  # a resumed run may extend the budget
        state.setdefault("hardware", hardware_description(device))
    if world > 1:  # every rank starts from rank 0's weights
        for p in net.parameters():
            dist.broadcast(p.data, 0)
    return net, opt, state


def _validate(cfg: TrainConfig, net: LatentModulatedSiren, opt: torch.optim.Adam, state: dict, coords, val,
              best: Path, rec: dict, final: bool = False, fine: tuple | None = None,
              rate: LatentRate | None = None) -> bool:
    """Rank 0: validation PSNR into `rec`, the best checkpoint kept; True when the run has diverged
    (validation far below the best), so that every rank returns to the best weights."""
    if rate is not None:  # the training objective on held-out crops, as a PSNR
        own, bits = rate_validation(net, coords, val, cfg.test_steps, rate)
        finer = None
        v = psnr_from_mse(torch.tensor(own + cfg.rate_weight * bits)).item()
        rec.update(val_psnr_quantized=psnr_from_mse(torch.tensor(own)).item(), val_bits_per_sample=bits)
    else:
        own, finer = validation_errors(net, coords, val, cfg.test_steps, fine[:2] if fine else None)
        v = validation_psnr(own, finer, fine[2] if fine else 0.0)
    rec["val_psnr"] = v
    if finer is not None:  # the two parts of the mix, for the log
        rec["val_psnr_own"] = psnr_from_mse(torch.tensor(own)).item()
        rec["val_psnr_finer"] = psnr_from_mse(torch.tensor(finer)).item()
    if v > state["best_val_psnr"]:
        state.update(best_val_psnr=v, best_step=state["step"])
        save_checkpoint(best, net, opt, state)
        return False
    if not final and cfg.recover_db > 0 and v < state["best_val_psnr"] - cfg.recover_db:
        rec["recovered"] = f"back to step {state['best_step']}, outer lr halved"
        return True
    return False


def _recover(net: LatentModulatedSiren, opt: torch.optim.Adam, state: dict, best: Path, device: torch.device,
             distributed: bool) -> None:
    """Meta-learning occasionally blows up: return to the best weights and optimizer state, and
    continue at half the learning rate (on every rank alike)."""
    scale = state.get("lr_scale", 1.0) * 0.5
    if distributed:
        dist.barrier()
    best_net, _, tensors = load_checkpoint(best, device)
    net.load_state_dict(best_net.state_dict())
    _load_optimizer(opt, list(net.parameters()), tensors)
    state["lr_scale"] = scale


def train(cfg: TrainConfig, signals: list[np.ndarray] | np.ndarray, val_signals: list[np.ndarray] | np.ndarray,
          resume: bool = True, progress: bool = True, coords: np.ndarray | None = None) -> Path:
    """Meta-learn a base network; returns the path (without suffix) of the best checkpoint.

    (About 100 lines: one loop whose step, progress line, validation, recovery and checkpoints share
    the run's state and, under torchrun, must stay in step on every rank; its parts are the helpers
    above.)

    signals: crops are drawn from these (*spatial, C) arrays; or, with `coords` (N, I) given,
    whole fields (F, N, C) all evaluated at those coordinates (absolute-coordinate modalities).
    """
    if cfg.half_inner and (coords is not None or cfg.model.cell):
        raise InputError("half inner steps are for patch networks (not latent grids or whole fields)")
    if not 0 <= cfg.half_inner <= cfg.inner_steps:
        raise InputError("the half inner steps must be in 0..inner steps")
    if cfg.finer and (coords is not None or cfg.model.cell or cfg.finer < 2):
        raise InputError("sub-sample supervision (--finer, 2 or more) is for patch networks")
    if cfg.model.modulation != "shift" and (coords is not None or cfg.model.cell):
        raise InputError("scale-shift modulation is for patch networks (not latent grids or whole fields)")
    if cfg.quant_step < 0 or cfg.rate_weight < 0 or (cfg.rate_weight and not cfg.quant_step):
        raise InputError("a rate weight needs a quantizer step (--quant-step), and neither may be negative")
    if cfg.quant_step and cfg.finer:
        raise InputError("rate-aware training and sub-sample supervision are not combined")
    if cfg.finer_filter not in ("box", "lanczos"):
        raise InputError(f"the finer crops' reduction must be box or lanczos, not {cfg.finer_filter!r}")
    device, rank, world = _join_process_group(pick_device(cfg.device))
    distributed = world > 1
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    last, best = out / "last", out / "best"
    net, opt, state = _start(cfg, device, world, last if resume else None)
    subsets = [checkerboard(cfg.patch, k).to(device) for k in range(min(cfg.half_inner, cfg.inner_steps))]
    rate = LatentRate(cfg.model.latent_dim, cfg.quant_step).to(device) if cfg.quant_step else None
    learner = MetaLearner(net, cfg.inner_steps, subsets, rate, cfg.rate_weight)
    engine = nn.parallel.DistributedDataParallel(learner) if distributed else learner

    points = training_points(cfg.model, cfg.patch, coords)
    # Each rank and each resumed segment draws different crops, reproducibly.
    fine_patch = tuple(n * cfg.finer for n in cfg.patch) if cfg.finer else cfg.patch
    fine_coords = patch_coordinates(fine_patch).to(device) if cfg.finer else None
    crop_shape = finer_crop_shape(fine_patch, cfg.finer, cfg.finer_filter) if cfg.finer else cfg.patch
    sampler = sampler_for(signals, crop_shape, cfg.seed * 1000 + rank + 7919 * state["step"], coords)
    val = sampler_for(val_signals, crop_shape, 12345, coords).sample(cfg.val_patches).to(device)
    val_fine = None
    if cfg.finer:  # validation scores the finer decode too, so the best kept is best at what was trained
        val, fine_val = reduce_crops(val, fine_patch, cfg.finer, cfg.finer_filter)
        val_fine = (fine_coords, fine_val, cfg.finer_weight)
    coords = points.to(device)
    metric = "pooled-with-finer" if cfg.finer else "quantized-with-rate" if rate is not None else "pooled"
    if state["step"] and state.get("val_metric") != metric and best.with_suffix(".json").exists():
        # A run begun when validation measured something else (a mean of per-crop PSNRs, or the patch
        # alone under sub-sample supervision): its best is scored again on today's measure, so that
        # keeping the best and the divergence guard compare like with like.
        # (A rate-aware run's best is dropped instead: its rate model has seen no latents yet.)
        state["best_val_psnr"] = (-1.0 if rate is not None else
                                  validate(load_checkpoint(best, device)[0], coords, val, cfg.test_steps, val_fine))
    state["val_metric"] = metric
    log = open(out / "log.jsonl", "a") if rank == 0 else None

    def progress_of(step: int, elapsed: float) -> float:
        p = step / cfg.steps if cfg.steps else 1.0  # 0 steps: export the --init network as it is
        if cfg.time_limit_min > 0:
            p = max(p, elapsed / (cfg.time_limit_min * 60))
        return p

    bar = None
    if rank == 0 and progress:
        bar = Progress(TextColumn("train"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                       TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn())
        task = bar.add_task("train", total=1000, info="")
        bar.start()
    t_start = time.time() - state["elapsed_s"]
    step = state["step"]
    recent: list[torch.Tensor] = []
    try:
        while True:
            prog = progress_of(step, time.time() - t_start)
            if distributed:  # ranks must agree on when to stop, or one waits forever
                flag = torch.tensor([prog], dtype=torch.float64, device=device)
                dist.broadcast(flag, 0)
                prog = float(flag[0])
            if prog >= 1.0:
                break
            for g in opt.param_groups:
                g["lr"] = cfg.outer_lr * state.get("lr_scale", 1.0) * lr_factor(prog, cfg.decay_fraction)
            targets = sampler.sample(cfg.batch).to(device)
            if cfg.finer:
                targets, fine = reduce_crops(targets, fine_patch, cfg.finer, cfg.finer_filter)
                loss = engine(coords, targets, fine_coords, fine, cfg.finer_weight)
            else:
                loss = engine(coords, targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            # Kept on the device: reading the loss every step would make a GPU wait for each step.
            recent = (recent + [loss.detach()])[-50:]
            if bar is not None:
                train_psnr = psnr_from_mse(torch.stack(recent).mean()).item()
                bar.update(task, completed=int(1000 * prog),
                           info=f"step {step} loss {torch.stack(recent).mean().item():.5f} psnr {train_psnr:.2f} "
                                f"best val {state['best_val_psnr']:.2f}")
            if step % cfg.val_every:
                continue
            diverged = torch.zeros(1, device=device)
            if rank == 0:
                state.update(step=step, elapsed_s=time.time() - t_start)
                rec = {"step": step, "elapsed_s": round(state["elapsed_s"], 1),
                       "train_loss": torch.stack(recent).mean().item(),
                       "lr": opt.param_groups[0]["lr"], "device": device.type, "world": world}
                diverged[0] = _validate(cfg, net, opt, state, coords, val, best, rec, fine=val_fine, rate=rate)
                log.write(json.dumps(rec) + "\n")
                log.flush()
            if distributed:
                dist.broadcast(diverged, 0)
            if diverged.item():
                _recover(net, opt, state, best, device, distributed)
            if rank == 0:
                save_checkpoint(last, net, opt, state)
        if rank == 0:
            state.update(step=step, elapsed_s=time.time() - t_start)
            rec = {"step": step, "final": True}
            _validate(cfg, net, opt, state, coords, val, best, rec, final=True, fine=val_fine, rate=rate)
            save_checkpoint(last, net, opt, state)
            log.write(json.dumps({**rec, "elapsed_s": round(state["elapsed_s"], 1)}) + "\n")
        if distributed:
            # The other ranks wait for rank 0's final validation and checkpoint: one that tore its
            # process group down first aborted gloo now and then ("terminate called ...", 2 runs in 15).
            dist.barrier()
    finally:
        if bar is not None:
            bar.stop()
        if log is not None:
            log.close()
        if distributed:
            dist.destroy_process_group()
    return best
