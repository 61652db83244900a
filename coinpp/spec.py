"""Codec specifications: what a codec folder declares, parsed and validated in one place.

    codecs/<name>/config.json          CodecSpec: network, patch, bits, entropy model, post-filter,
                                       the encoder presets, measured results
    codecs/<name>/tables.safetensors   quantizer ranges (and transform), integer entropy tables
    codecs/<name>/weights.safetensors  the base network (loaded by codec.py, which needs torch), or
    codecs/networks/<sha256>.safetensors  the same file shared by every codec of one network, named in
                                       config.json ("network": "<sha256>")

This module needs no torch: `coin info` and the path from bytes to symbols run without it.
The hash covers the weights, the tables and the config fields that change decoding, so a file
never decodes silently with the wrong network.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file as load_np

from .container import HASH_BYTES
from .entropy import EntropyModel, NeighbourContext, SeriesDeltas, StaticTables
from .errors import CodecError
from .presets import EncoderPreset, whole
from .quantize import Quantizer

# Fields of config.json that change how a file decodes; they are part of the hash.
DECODE_FIELDS = ("name", "modality", "model", "patch", "bits")
# Hashed only where present (older codecs lack them).
OPTIONAL_DECODE_FIELDS = ("context", "transform", "normalisation", "supersample")
NORMALISATIONS = ("file", "field")  # Modality.normalise: the file's value range, or each field's (climate)


MODULATIONS = ("shift", "scale-shift")
MAX_SUPERSAMPLE = 4  # points per axis averaged into one decoded sample (4^3 = 64 evaluations per voxel)


@dataclass(frozen=True)
class SirenConfig:
    """Architecture of a LatentModulatedSiren. `depth` counts the sine layers."""

    in_dim: int = 2
    out_dim: int = 3
    width: int = 128
    depth: int = 5
    latent_dim: int = 64
    w0: float = 30.0
    meta_sgd: bool = True
    coord_scale: float = 1.0  # coordinates are multiplied by this first (audio: time in [-5, 5])
    # Latent grid (GridModulatedSiren): one latent per `cell`-sample cell, interpolated between cell
    # centres; the network sees `frequencies` harmonics of the position within the cell. 0: patches.
    cell: int = 0
    frequencies: int = 0
    # "shift": the latent shifts each sine layer's pre-activation; "scale-shift": it also scales the
    # layer's affine output, sin(w0 ((1 + g) (W h + b) + s)) (FiLM; patch networks only).
    modulation: str = "shift"

    def to_dict(self) -> dict:
        d = asdict(self)
        for k, default in (("coord_scale", 1.0), ("cell", 0), ("frequencies", 0), ("modulation", "shift")):
            if d[k] == default:  # codecs written before the field existed keep their hash
                del d[k]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SirenConfig:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    @property
    def tag(self) -> str:
        """Short name of the architecture, e.g. '6x128-l64' (depth counts the linear layer), 'g16-5x64-l16'."""
        grid = f"g{self.cell}-" if self.cell else ""
        film = "-ss" if self.modulation == "scale-shift" else ""
        return f"{grid}{self.depth + 1}x{self.width}-l{self.latent_dim}{film}"

    @property
    def input_features(self) -> int:
        """Width of the first layer's input: the coordinates, or the cell harmonics (sin and cos)."""
        return 2 * self.in_dim * self.frequencies if self.cell else self.in_dim


@dataclass(frozen=True)
class PostFilterSpec:
    """The decoder-side post-filter a codec names (postfilter.py); not part of the hash."""

    channels: int = 32
    layers: int = 5  # convolutions (3x3); the receptive field is 2 * layers + 1 pixels
    period: tuple[int, int] = (32, 32)  # the codec's patch: where the seams repeat
    views: int = 1  # flipped/transposed views decoding averages
    sha256: str = ""
    # "cnn": images (the fields above); "fir": audio, a linear filter of `taps` taps; "volume": MRI, a
    # linear filter of taps x taps x taps voxels
    kind: str = "cnn"
    taps: int = 0

    def to_dict(self) -> dict:
        if self.kind in ("fir", "volume"):
            return {"kind": self.kind, "taps": self.taps}
        return {"channels": self.channels, "layers": self.layers, "period": list(self.period)}

    @classmethod
    def from_dict(cls, d: dict) -> PostFilterSpec:
        if d.get("kind", "cnn") == "fir":
            taps = d.get("taps")
            if not isinstance(taps, int) or not 1 <= taps <= 1023 or taps % 2 == 0:
                raise ValueError("a waveform post-filter needs an odd number of taps in 1..1023")
            return cls(sha256=str(d.get("sha256", "")), kind="fir", taps=taps)
        if d.get("kind") == "volume":
            taps = d.get("taps")
            if not isinstance(taps, int) or not 1 <= taps <= 9 or taps % 2 == 0:
                raise ValueError("a volume post-filter needs an odd side of 1..9 voxels")
            return cls(sha256=str(d.get("sha256", "")), kind="volume", taps=taps)
        if d.get("kind", "cnn") != "cnn":
            raise ValueError(f"unknown post-filter kind {d.get('kind')!r}")
        channels, layers, period = int(d["channels"]), int(d["layers"]), tuple(int(p) for p in d["period"])
        if not (1 <= channels <= 256 and 2 <= layers <= 32 and len(period) == 2 and min(period) >= 1):
            raise ValueError("post-filter size out of range")
        views = d.get("views", 1)
        if not isinstance(views, int) or not 1 <= views <= (8 if period[0] == period[1] else 4):
            raise ValueError(f"post-filter views {views!r} out of range")
        return cls(channels, layers, period, views, str(d.get("sha256", "")))  # type: ignore[arg-type]


@dataclass(frozen=True)
class RateModel:
    """The encoder's differentiable stand-in for a latent's code length: each coded value Laplace
    about `centres` with mean absolute deviations `scales`, measured on training latents (the same
    for every bit depth of one network)."""

    centres: np.ndarray  # (D,)
    scales: np.ndarray  # (D,) > 0

    def to_dict(self) -> dict:
        """Five significant digits: JSON, not bit-exact."""
        return {"centres": [float(f"{x:.5g}") for x in self.centres],
                "scales": [float(f"{x:.5g}") for x in self.scales]}


@dataclass(frozen=True)
class ContextSpec:
    buckets: int
    adapt: int
    model: str = "neighbour-mean"


@dataclass(frozen=True)
class CodecSpec:
    """Everything a codec folder declares, checked; the network weights are loaded by codec.py."""

    name: str
    folder: Path
    modality: str
    model: SirenConfig
    patch: tuple[int, ...]
    quantizer: Quantizer
    entropy: EntropyModel
    hash: bytes
    presets: dict[str, EncoderPreset]
    rate_model: RateModel | None = None
    postfilter: PostFilterSpec | None = None
    transform: str | None = None
    measured: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    weights: Path | None = None  # the network's file (weights_path)
    normalisation: str = "file"  # the values the network codes: over the file's range, or each field's
    # Each decoded sample is the mean of the network at supersample^d points spread over the sample's
    # cell (1: the network at the sample's centre); see synthesis.evaluate_grid.
    supersample: int = 1

    @property
    def bits(self) -> int:
        return self.quantizer.bits

    @property
    def config(self) -> dict:
        """config.json as it is on disk (for tools that record into it)."""
        return json.loads((self.folder / "config.json").read_text())


NETWORKS = "networks"  # beside the codec folders: base networks shared by several codecs


def weights_path(folder: Path, config: dict) -> Path:
    """The codec's network: its own weights.safetensors, or the shared file its config names (checked
    against that SHA-256, so a shared file cannot be swapped under a codec)."""
    own = Path(folder) / "weights.safetensors"
    if own.exists() or "network" not in config:
        return own
    digest = str(config["network"])
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError("network must be the SHA-256 of a shared weights file")
    # Beside the codec first, then in every codec root (a folder of older codecs on COIN_CODECS_PATH
    # shares the networks the installed codecs already have).
    for root in (Path(folder).parent, *search_path()):
        shared = root / NETWORKS / f"{digest}.safetensors"
        if shared.exists():
            if file_sha256(shared) != digest:
                raise ValueError(f"{shared} fails its SHA-256 check")
            return shared
    raise ValueError(f"the network {digest[:12]} is not installed (no {NETWORKS}/{digest}.safetensors)")


@lru_cache(maxsize=64)
def file_sha256(path: Path) -> str:
    """SHA-256 of a network file, read once per process (networks are shared by several codecs)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def codec_hash(folder: Path, config: dict) -> bytes:
    """The hash a file carries: the decode fields of the config, the network's and the tables' bytes
    (where the network file lies does not matter)."""
    h = hashlib.sha256()
    fields = {k: config.get(k) for k in DECODE_FIELDS}
    for key in OPTIONAL_DECODE_FIELDS:
        if key in config:
            fields[key] = config[key]
    h.update(json.dumps(fields, sort_keys=True).encode())
    for path in (weights_path(folder, config), Path(folder) / "tables.safetensors"):
        h.update(path.read_bytes())
    return h.digest()[:HASH_BYTES]


def default_phases(config: dict) -> list[dict]:
    """The default preset of a config written before presets existed (encode_steps,
    encode_half_steps, refine, rdo), as a phase list."""
    steps, half = int(config.get("encode_steps", 0)), config.get("encode_half_steps", 0)
    if not whole(half, 0, 1000):
        raise ValueError("encode_half_steps needs a whole number of steps in 0..1000")
    half = min(half, steps)
    phases: list[dict] = [d for d in ({"phase": "sgd", "steps": half, "half": True},
                                      {"phase": "sgd", "steps": steps - half}) if d["steps"]] or \
        [{"phase": "sgd", "steps": 0}]
    refine = config.get("refine") or {}
    if refine.get("steps"):
        latent = "latent_lr" in refine
        if latent and refine.get("quantized", True):
            raise ValueError("refine latent_lr needs quantized false")
        phases.append({"phase": "adam", "steps": int(refine["steps"]),
                       "lr": float(refine["latent_lr" if latent else "lr"]),
                       "lr_unit": "latent" if latent else "quantizer-step",
                       "quantized": bool(refine.get("quantized", True)),
                       "rate_lambda": float(refine.get("rate_lambda", 0.0))})
        if refine.get("filter_steps"):
            phases.append({"phase": "filter", "steps": refine["filter_steps"], "lr": float(refine.get("filter_lr", 0)),
                           "views": refine.get("filter_views"), "rate_lambda": float(refine.get("rate_lambda", 0.0))})
    if "rdo" in config:
        phases.append({"phase": "round", "rd_lambda": float(config["rdo"]["lambda"])})
    return phases


def _rate_model(config: dict, d: int) -> RateModel | None:
    entry = config.get("rate_model")
    if entry is None and (config.get("refine") or {}).get("rate_lambda"):
        entry = {"centres": config["refine"].get("rate_centres"), "scales": config["refine"].get("rate_scales")}
    if entry is None:
        return None
    centres, scales = (np.asarray(entry.get(k, []), dtype=np.float64) for k in ("centres", "scales"))
    if centres.shape != (d,) or scales.shape != (d,) or not (np.isfinite(centres).all() and np.isfinite(scales).all()) \
            or (scales <= 0).any():
        raise ValueError("rate_model needs centres and positive scales, one per latent dimension")
    return RateModel(centres, scales)


def _entropy_model(config: dict, tables: dict[str, np.ndarray]) -> EntropyModel:
    table = tables["table"].astype(np.int32)
    if "context" in config:
        spec, prior = config["context"], tables["context_prior"].astype(np.int32)
        if spec.get("model") != "neighbour-mean" or prior.shape != (table.shape[0], spec["buckets"], table.shape[1]):
            raise ValueError("context_prior does not match the context model or the table")
        if not 1 <= int(spec["adapt"]) <= 1 << 16:
            raise ValueError("context adapt out of range")
        return NeighbourContext(prior, int(spec["adapt"]))
    if "delta_table" in tables:
        delta = tables["delta_table"].astype(np.int32)
        if delta.shape != (table.shape[0], 2 * table.shape[1] - 1):
            raise ValueError("delta_table does not match table")
        return SeriesDeltas(table, delta)
    return StaticTables(table)


def parse_config(folder: Path, config: dict) -> CodecSpec:
    """Check a codec folder's config and tables; ValueError (or KeyError, OSError) when they are not
    a valid codec, CodecError when the hash does not match."""
    name = config["name"]
    expected = bytes.fromhex(config["hash"])
    actual = codec_hash(folder, config)
    if actual != expected:
        raise CodecError(f"codec {name!r} in {folder} fails its hash check (modified or damaged); reinstall it")
    model = SirenConfig.from_dict(config["model"])
    if model.modulation not in MODULATIONS or (model.cell and model.modulation != "shift"):
        raise ValueError(f"unknown modulation {model.modulation!r} (or not for a latent grid)")
    patch = tuple(int(p) for p in config["patch"])
    if model.cell and patch != (model.cell, model.cell):
        raise ValueError("a latent-grid codec's patch is its cell")
    t = load_np(str(folder / "tables.safetensors"))
    quantizer = Quantizer(t["low"], t["step"], int(config["bits"]), t.get("basis"), t.get("centre"))
    d = len(quantizer.low)
    if d != model.latent_dim or quantizer.step.shape != (d,):
        raise ValueError("quantizer tables do not match the latent size")
    if quantizer.basis is not None and (quantizer.basis.shape != (d, d) or quantizer.centre is None
                                        or quantizer.centre.shape != (d,) or not np.isfinite(quantizer.basis).all()):
        raise ValueError("basis or centre does not match the latent size")
    # Declared in the config (and so in the hash): software that predates the transform refuses
    # such a codec on its hash instead of decoding it without the transform.
    transform = config.get("transform")
    if transform not in (None, "principal-components") or (transform is None) != (quantizer.basis is None):
        raise ValueError("the config's transform and the tables disagree")
    normalisation = config.get("normalisation", "file")
    if normalisation not in NORMALISATIONS or (normalisation != "file" and config["modality"] != "climate"):
        raise ValueError(f"normalisation {normalisation!r} is not one this modality has")
    supersample = config.get("supersample", 1)
    if type(supersample) is not int or not 1 <= supersample <= MAX_SUPERSAMPLE or \
            (supersample > 1 and (model.cell or model.in_dim != len(patch) or config["modality"] == "climate")):
        raise ValueError(f"supersample must be a whole number in 1..{MAX_SUPERSAMPLE}, for patch codecs")
    entropy = _entropy_model(config, t)
    if entropy.dims != d or entropy.levels != quantizer.levels:
        raise ValueError("entropy tables do not match the quantizer")
    presets = {n: EncoderPreset.from_list(n, items)
               for n, items in (config.get("presets") or {"default": default_phases(config)}).items()}
    if "default" not in presets:
        raise ValueError("a codec needs a default preset")
    postfilter = PostFilterSpec.from_dict(config["postfilter"]) if "postfilter" in config else None
    if postfilter is not None and postfilter.kind == "cnn" and (config["modality"] != "image" or model.out_dim != 3):
        raise ValueError("a convolutional post-filter is for RGB image codecs")
    if postfilter is not None and postfilter.kind == "fir" and config["modality"] != "audio":
        raise ValueError("a waveform post-filter is for audio codecs")
    if postfilter is not None and postfilter.kind == "volume" and config["modality"] != "mri":
        raise ValueError("a volume post-filter is for MRI codecs")
    rate_model = _rate_model(config, d)
    for p in presets.values():
        if (p.adam and p.adam.rate_lambda or p.filter and p.filter.rate_lambda) and rate_model is None:
            raise ValueError(f"preset {p.name!r} has a rate term but the codec has no rate_model")
        if p.filter and postfilter is None:
            raise ValueError(f"preset {p.name!r} steps through a post-filter the codec does not have")
        if p.rd_lambda and not isinstance(entropy, NeighbourContext):
            raise ValueError(f"preset {p.name!r}: rate-distortion rounding needs the neighbour context")
    return CodecSpec(name, folder, config["modality"], model, patch, quantizer, entropy, actual, presets, rate_model,
                     postfilter, transform, config.get("measured", {}), config.get("training", {}),
                     weights_path(folder, config), normalisation, supersample)


def search_path() -> list[Path]:
    """Where codecs are looked for: $COIN_CODECS_PATH (os.pathsep-separated), the copy
    installed inside the package, then the source tree's codecs/ and codecs-legacy/ folders."""
    paths = [Path(p) for p in os.environ.get("COIN_CODECS_PATH", "").split(os.pathsep) if p]
    here = Path(__file__).resolve().parent
    # A source checkout also keeps the codecs off the ladders that the wheel leaves out (codecs-legacy/),
    # so files they wrote decode there; elsewhere COIN_CODECS_PATH brings them back.
    paths += [here / "codecs", here.parent / "codecs", here.parent / "codecs-legacy"]
    return [p for p in paths if p.is_dir()]


def available() -> dict[str, Path]:
    """name -> folder of every codec on the search path (first one found wins)."""
    found: dict[str, Path] = {}
    for root in search_path():
        for cfg in sorted(root.glob("*/config.json")):
            found.setdefault(cfg.parent.name, cfg.parent)
    return found


def find(name: str, allow_path: bool = True) -> Path:
    """The folder of a codec by its stable name, or (when allow_path) a path to a codec folder.
    Names read from a file are looked up with allow_path=False: a file never points at a folder."""
    if os.sep in name or name.startswith("."):
        if not allow_path:
            raise CodecError(f"invalid codec name {name!r}")
        return Path(name).resolve()
    codecs = available()
    if name not in codecs:
        close = difflib.get_close_matches(name, codecs, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise CodecError(f"unknown codec {name!r}; {hint}`coin codecs --all` lists the installed ones")
    return codecs[name].resolve()


@lru_cache(maxsize=32)
def _load_cached(folder: str) -> CodecSpec:
    return load_folder(Path(folder))


def load_folder(folder: Path) -> CodecSpec:
    """Load and verify one codec folder's specification and tables."""
    folder = Path(folder)
    try:
        return parse_config(folder, json.loads((folder / "config.json").read_text()))
    except CodecError:
        raise
    except (OSError, KeyError, ValueError, TypeError, SafetensorError) as e:
        raise CodecError(f"codec folder {folder} is incomplete or unreadable ({e.__class__.__name__}: {e})") from None


def load(name: str, allow_path: bool = True) -> CodecSpec:
    return _load_cached(str(find(name, allow_path)))


def clear_cache() -> None:
    """Forget loaded codecs (after a codec folder was written)."""
    _load_cached.cache_clear()
