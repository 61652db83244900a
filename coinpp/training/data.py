"""Training data: the files of a folder (some held out for validation) and random crops of them,
or whole fields of an absolute-coordinate modality."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import modalities
from ..errors import InputError


class CropSampler:
    """Random crops of the patch shape from a list of signals (*spatial, C) in [0, 1].

    Files are chosen in proportion to their size, so every sample is equally likely.
    """

    def __init__(self, signals: list[np.ndarray], patch: tuple[int, ...], seed: int) -> None:
        self.signals = [s for s in signals if all(a >= p for a, p in zip(s.shape, patch, strict=False))]
        if not self.signals:
            raise InputError(f"no training file is at least {patch} in size")
        self.patch = patch
        sizes = np.array([s.size for s in self.signals], dtype=np.float64)
        self.weights = sizes / sizes.sum()
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int) -> torch.Tensor:
        """(n, prod(patch), C) float32."""
        out = []
        for k in self.rng.choice(len(self.signals), size=n, p=self.weights):
            s = self.signals[k]
            start = [self.rng.integers(0, a - p + 1) for a, p in zip(s.shape, self.patch, strict=False)]
            crop = s[tuple(slice(o, o + p) for o, p in zip(start, self.patch, strict=True))]
            if self.rng.random() < 0.5:  # mirror the last spatial axis: free augmentation
                crop = np.flip(crop, axis=len(self.patch) - 1)
            out.append(np.ascontiguousarray(crop).reshape(-1, s.shape[-1]))
        return torch.from_numpy(np.stack(out)).float()


class FieldSampler:
    """Whole fields for modalities whose network sees absolute coordinates (climate): every field
    of the training files is on the same grid, so all share one set of coordinates."""

    def __init__(self, fields: np.ndarray, seed: int) -> None:
        if len(fields) == 0:
            raise InputError("no training fields")
        self.fields = fields  # (F, N, C)
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int) -> torch.Tensor:
        return torch.from_numpy(self.fields[self.rng.integers(0, len(self.fields), size=n)]).float()


def sampler_for(signals, patch: tuple[int, ...], seed: int, coords: np.ndarray | None):
    return CropSampler(signals, patch, seed) if coords is None else FieldSampler(signals, seed)


def load_folder(folder: str | Path, modality_name: str, val_files: int, seed: int
                ) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Read every file of the modality in `folder`; hold out `val_files` of them (seeded).

    Returns (train signals, validation signals, names of the held-out files).
    """
    modality = modalities.get(modality_name)
    paths = sorted(p for p in Path(folder).rglob("*") if modality.extension_of(p))
    if len(paths) < val_files + 1:
        raise InputError(f"{folder}: need at least {val_files + 1} {modality_name} files to train")
    order = np.random.default_rng(seed).permutation(len(paths))
    held = {int(i) for i in order[:val_files]}
    train_s, val_s, val_names = [], [], []
    out_dim = modality.network_channels
    for i, p in enumerate(paths):
        values = modality.to_network(modality.read(p), out_dim)
        for g in range(0, values.shape[-1], out_dim):  # e.g. each channel of stereo audio
            (val_s if i in held else train_s).append(np.ascontiguousarray(values[..., g : g + out_dim]))
        if i in held:
            val_names.append(p.name)
    return train_s, val_s, val_names


def load_fields(folder: str | Path, modality_name: str, val_fraction: float, var: str | None = None,
                normalisation: str = "file") -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...], str]:
    """Whole fields of every file of an absolute-coordinate modality (climate) in `folder`.

    The last `val_fraction` of each file's fields (the latest hours, for a time series) are held
    out for validation, so the network is judged on times it never saw. All files must share
    one grid. The values are as a codec with `normalisation` codes them (Modality.normalise).
    Returns (train fields (F, N, C), validation fields, coordinates (N, I), the grid
    shape, a note on the split).
    """
    modality = modalities.get(modality_name)
    paths = sorted(p for p in Path(folder).rglob("*") if modality.extension_of(p))
    if not paths:
        raise InputError(f"{folder}: no {modality_name} files")
    train_f, val_f, coords, notes = [], [], None, []
    for p in paths:
        signal = modality.read(p, var=var) if var else modality.read(p)
        c = modality.coordinates(signal.meta)
        if coords is not None and not np.array_equal(c, coords):
            raise InputError(f"{p}: grid differs from the other training files (one grid per training run)")
        coords = c
        values = modality.to_network(modality.normalise(signal, normalisation), modality.network_channels)
        fields = values.reshape(values.shape[0], -1, signal.channels)
        start = modality.held_out_start(signal.meta, val_fraction)
        if start < 1:
            raise InputError(f"{p}: {len(fields)} fields cannot be split {1 - val_fraction:.0%}/{val_fraction:.0%}")
        train_f.append(fields[:start])
        val_f.append(fields[start:])
        notes.append(f"{p.name}: fields 0..{start - 1} train, {start}..{len(fields) - 1} validation")
    return np.concatenate(train_f), np.concatenate(val_f), coords, signal.spatial[1:], "; ".join(notes)
