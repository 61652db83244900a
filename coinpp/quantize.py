"""Quantize stage: per-dimension uniform quantization of latents to b-bit symbols.

Each latent dimension d has its own range [low_d, low_d + step_d * (2^b - 1)], measured on the
latents of the training set (mean +- `clip_std` standard deviations). Values outside are
clipped. Symbols are integers in [0, 2^b); dequantization is `low + step * symbol`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Quantizer:
    low: np.ndarray  # (D,) float32
    step: np.ndarray  # (D,) float32, > 0
    bits: int

    @property
    def levels(self) -> int:
        return 1 << self.bits

    @classmethod
    def fit(cls, latents: np.ndarray, bits: int, clip_std: float = 3.0,
            sensitivity: np.ndarray | None = None) -> Quantizer:
        """Ranges from training latents (N, D): mean +- clip_std * std per dimension, 2^bits levels.

        With `sensitivity` (D,), the output's mean squared change per unit squared change of each
        latent dimension, the steps are instead set for equal distortion per dimension (step_d
        proportional to 1 / sqrt(sensitivity_d), the optimal allocation at high rate), with the same
        geometric mean as the uniform steps, so about the same rate; the alphabet then grows (up
        to 8 bits) until every dimension still spans mean +- clip_std std.
        """
        if not 1 <= bits <= 8:
            raise ValueError("bits must be in 1..8")
        mean = latents.mean(axis=0).astype(np.float64)
        std = np.maximum(latents.std(axis=0), 1e-6).astype(np.float64)
        step = 2 * clip_std * std / ((1 << bits) - 1)
        if sensitivity is None:
            return cls((mean - clip_std * std).astype(np.float32), step.astype(np.float32), bits)
        w = np.maximum(np.asarray(sensitivity, dtype=np.float64), 1e-12)
        equal = 1.0 / np.sqrt(w)
        step = equal * np.exp(np.log(step).mean() - np.log(equal).mean())
        need = int(np.ceil(np.log2((2 * clip_std * std / step).max() + 1)))
        bits = min(8, max(bits, need))
        half = step * ((1 << bits) - 1) / 2  # centred on the mean
        return cls((mean - half).astype(np.float32), step.astype(np.float32), bits)

    def quantize(self, latents: np.ndarray | torch.Tensor) -> np.ndarray:
        """(P, D) floats -> (P, D) int32 symbols in [0, 2^b)."""
        z = latents.detach().cpu().numpy() if isinstance(latents, torch.Tensor) else np.asarray(latents)
        q = np.rint((z.astype(np.float64) - self.low) / self.step)
        return np.clip(q, 0, self.levels - 1).astype(np.int32)

    def dequantize(self, symbols: np.ndarray) -> np.ndarray:
        """(P, D) int symbols -> (P, D) float32 latents."""
        return (self.low + self.step * symbols.astype(np.float32)).astype(np.float32)

    def quantize_ste(self, latents: torch.Tensor) -> torch.Tensor:
        """Quantize-dequantize with a straight-through gradient (for refinement)."""
        low = torch.as_tensor(self.low, device=latents.device)
        step = torch.as_tensor(self.step, device=latents.device)
        q = torch.clamp(torch.round((latents - low) / step), 0, self.levels - 1) * step + low
        return latents + (q - latents).detach()
