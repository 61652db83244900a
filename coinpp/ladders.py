"""Quality ladders: per modality, the installed codecs ordered from the smallest files to the best
quality, the default rung, and the unit rate targets are given in (`ladders.json` in a codec root).
No torch here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from . import spec as specs
from .errors import CodecError

LADDERS_FILE = "ladders.json"  # in a codec root


@dataclass(frozen=True)
class Ladder:
    """A modality's quality ladder: its codecs from the smallest files to the best quality (`coin
    encode -q N` takes rung N, counting from 1), the default rung, and the unit rate targets are in."""

    modality: str
    rungs: tuple[str, ...]
    default: str
    unit: str

    def rung(self, quality: int) -> str:
        if not 1 <= quality <= len(self.rungs):
            raise CodecError(f"-q {quality}: {self.modality} has quality 1 (smallest) to {len(self.rungs)} (best)")
        return self.rungs[quality - 1]


@dataclass(frozen=True)
class Ladders:
    by_modality: dict[str, Ladder]
    also: dict[str, str]  # installed codecs off the ladders, and what they are for

    def names(self) -> set[str]:
        return {n for lad in self.by_modality.values() for n in lad.rungs} | set(self.also)


def _shipped_roots() -> list[Path]:
    here = Path(__file__).resolve().parent
    return [p for p in (here / "codecs", here.parent / "codecs") if p.is_dir()]


def read_ladders(root: Path) -> Ladders:
    """A codec root's ladders.json; ValueError when it is malformed."""
    doc = json.loads((root / LADDERS_FILE).read_text())
    also = {str(k): str(v) for k, v in doc.pop("also", {}).items()}
    out = {}
    for modality, d in doc.items():
        rungs = tuple(str(n) for n in d["rungs"])
        if not rungs or d["default"] not in rungs or len(set(rungs)) != len(rungs):
            raise ValueError(f"{root / LADDERS_FILE}: {modality} needs distinct rungs including its default")
        out[modality] = Ladder(modality, rungs, str(d["default"]), str(d["unit"]))
    return Ladders(out, also)


def ladders() -> Ladders:
    """The ladders of the first codec root on the search path that has a ladders.json (a folder on
    COIN_CODECS_PATH may declare its own); none: no ladders."""
    for root in specs.search_path():
        if (root / LADDERS_FILE).is_file():
            try:
                return read_ladders(root)
            except (OSError, KeyError, TypeError, ValueError) as e:
                raise CodecError(f"{root / LADDERS_FILE} is unreadable ({e})") from None
    return Ladders({}, {})


def ladder_for(modality: str) -> Ladder:
    lad = ladders().by_modality.get(modality)
    if lad is None:
        raise CodecError(f"no quality ladder for {modality} is installed; pass --codec")
    return lad


def _shipped_defaults() -> dict[str, str]:
    for root in _shipped_roots():
        if (root / LADDERS_FILE).is_file():
            return {m: lad.default for m, lad in read_ladders(root).by_modality.items()}
    return {}



# The default codec of each modality: the default rung of the shipped ladders.
DEFAULT_CODECS = _shipped_defaults()


def default_for(modality: str) -> str:
    if modality not in DEFAULT_CODECS:
        raise CodecError(f"no default codec for {modality}; pass --codec")
    return DEFAULT_CODECS[modality]
