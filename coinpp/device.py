"""Device choice shared by fitting, decoding and training: CUDA whenever present."""

from __future__ import annotations

import os
import platform

import torch

from .errors import InputError


def pick_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present; 'cuda' without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise InputError(f"unknown device {name!r}: use auto, cpu or cuda")
    return torch.device(name)


def product_dtype(matmul: str, device: str | torch.device = "auto") -> torch.dtype:
    """The number type for an encoder phase's hidden-layer products ("float32" or "bfloat16"):
    bfloat16 only where the device computes it natively (CPUs with AVX-512 BF16 or AMX, CUDA GPUs
    with bfloat16), since emulated it is slower than float32."""
    if matmul != "bfloat16":
        return torch.float32
    dev = pick_device(device) if isinstance(device, str) else device
    if dev.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32


def hardware_description(device: torch.device | None = None) -> str:
    """e.g. 'AMD EPYC 7B13, 2 cores, torch 2.13.0+cpu' -- for model cards and benchmark records."""
    if device is not None and device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores, torch {torch.__version__}"
