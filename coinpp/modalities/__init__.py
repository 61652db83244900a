"""Registry of modalities by stable name and by the code stored in the bitstream."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .audio import AudioModality
from .base import Modality, Placement, Resolution, Signal, Target
from .climate import ClimateModality
from .image import ImageModality
from .mri import MRIModality

_ALL: list[Modality] = [ImageModality(), AudioModality(), ClimateModality(), MRIModality()]
BY_NAME = {m.name: m for m in _ALL}
BY_CODE = {m.code: m for m in _ALL}


def get(name: str) -> Modality:
    if name not in BY_NAME:
        raise InputError(f"unknown modality {name!r}; known: {', '.join(BY_NAME)}")
    return BY_NAME[name]


def for_path(path: Path) -> Modality:
    name = Path(path).name.lower()
    for m in _ALL:
        if name.endswith(m.extensions):  # by the full name: .nii.gz has two suffixes
            return m
    ext = Path(path).suffix.lower()
    raise InputError(f"{path}: unknown file type {ext or '(no extension)'!r}")


__all__ = ["Modality", "Placement", "Resolution", "Signal", "Target", "get", "for_path", "BY_NAME", "BY_CODE"]
