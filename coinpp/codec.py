"""Shipped codecs: a folder each, found by a stable name, verified by a hash.

    codecs/<name>/config.json        architecture, modality, patch, bits, encode steps, rate
    codecs/<name>/weights.safetensors  base network (never pickle)
    codecs/<name>/tables.safetensors   quantizer ranges (and transform) and integer entropy tables
    codecs/<name>/MODEL_CARD.md

The hash covers the weights, the tables and the config fields that change decoding, so a
file never decodes silently with the wrong network.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file as load_np
from safetensors.numpy import save_file as save_np
from safetensors.torch import load_file as load_torch
from safetensors.torch import save_file as save_torch

from .container import HASH_BYTES
from .entropy import ContextModel
from .errors import CodecError
from .model import LatentModulatedSiren, SirenConfig, build_network
from .postfilter import PostFilter
from .postfilter import load as load_postfilter
from .quantize import Quantizer

DEFAULT_CODECS = {"image": "image-klt-6x128-l64-b5", "audio": "speech-klt-6x128-l64-b5",
                  "climate": "era5-t2m-5x128-l48-b5", "mri": "mri-5x128-l16-b4"}

# Fields of config.json that change how a file decodes; they are part of the hash.
_DECODE_FIELDS = ("name", "modality", "model", "patch", "bits")


def search_path() -> list[Path]:
    """Where codecs are looked for: $COIN_CODECS_PATH (os.pathsep-separated), the copy
    installed inside the package, then the source tree's codecs/ folder."""
    paths = [Path(p) for p in os.environ.get("COIN_CODECS_PATH", "").split(os.pathsep) if p]
    here = Path(__file__).resolve().parent
    paths += [here / "codecs", here.parent / "codecs"]
    return [p for p in paths if p.is_dir()]


def codec_hash(folder: Path, config: dict) -> bytes:
    h = hashlib.sha256()
    fields = {k: config.get(k) for k in _DECODE_FIELDS}
    for key in ("context", "transform"):  # only where present, so codecs written before keep their hash
        if key in config:
            fields[key] = config[key]
    h.update(json.dumps(fields, sort_keys=True).encode())
    for name in ("weights.safetensors", "tables.safetensors"):
        h.update((folder / name).read_bytes())
    return h.digest()[:HASH_BYTES]


@dataclass
class Codec:
    name: str
    folder: Path
    config: dict
    net: LatentModulatedSiren
    quantizer: Quantizer
    table: np.ndarray  # (D, levels) int32
    hash: bytes
    # (D, 2 * levels - 1) int32: rows after the first coded as differences from the row before
    # (series of fields); None: every row coded with `table`.
    delta_table: np.ndarray | None = None
    # Neighbour context adapted to the file (images); None: the static tables above.
    context: ContextModel | None = None
    # Decoder-side restoration of images on their own grid (postfilter.py); not part of the hash:
    # it changes no symbol, latent or network output, so files written before it stay valid.
    postfilter: PostFilter | None = None

    @property
    def modality(self) -> str:
        return self.config["modality"]

    @property
    def patch(self) -> tuple[int, ...]:
        return tuple(self.config["patch"])

    @property
    def steps(self) -> int:
        return int(self.config["encode_steps"])

    @property
    def half_steps(self) -> int:
        """Encoder-only: how many of the first SGD steps take their gradient on half of each patch's
        samples (a checkerboard, the other half at the next step; fit.fit_latents). Files decode
        the same either way, so it is not part of the hash."""
        return int(self.config.get("encode_half_steps", 0))

    @property
    def bits(self) -> int:
        return self.quantizer.bits

    @property
    def refine(self) -> dict | None:
        """Encoder-only: Adam steps after the SGD steps, e.g. {"steps": 10, "lr": 0.5, "quantized": true}
        (lr as a fraction of each dimension's quantizer step), or {"steps": 10, "latent_lr": 0.03,
        "quantized": false} (one rate for every latent dimension, whatever the bit depth, so codecs
        of one network at several bit depths refine alike). "rate_lambda" (per-patch MSE per bit)
        adds a rate term to the loss (fit.RatePenalty: each coded value Laplace about "rate_centres"
        with mean absolute deviations "rate_scales", measured on training latents, so they are the
        same for every bit depth). "filter_steps" more Adam evaluations at "filter_lr" then fit the
        post-filtered image ("filter_views" of the filter's views averaged, default its own) over
        all patches at once (pipeline.refine_through_postfilter). Files decode the same either way."""
        return self.config.get("refine")

    @property
    def refine_key(self) -> str:
        """Codecs with the same fit_key and refine_key refine fitted latents identically (coin bench
        refines once for all of them): the refinement does not depend on the bit depth."""
        spec = self.refine or {}
        if not spec.get("steps"):
            return "none"
        if "latent_lr" in spec and not spec.get("quantized", True):
            key = f"adam:{int(spec['steps'])}:{float(spec['latent_lr'])!r}"
            if spec.get("rate_lambda"):  # the same rate term: the same lambda, centres and scales
                terms = json.dumps([spec["rate_lambda"], spec["rate_centres"], spec["rate_scales"]])
                key += ":" + hashlib.sha256(terms.encode()).hexdigest()[:16]
            return key
        return f"codec:{self.name}"

    @property
    def rd_lambda(self) -> float:
        """Encoder-only: the Lagrange multiplier of rate-distortion optimised quantization, in squared
        quantizer steps per bit (entropy.encode_context_rd); 0 rounds to the nearest level. Files decode
        the same either way, so it is not part of the hash."""
        return float((self.config.get("rdo") or {}).get("lambda", 0.0))


def load_folder(folder: Path) -> Codec:
    """Load and verify one codec folder."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
        name = config["name"]
        expected = bytes.fromhex(config["hash"])
        actual = codec_hash(folder, config)
        if actual != expected:
            raise CodecError(f"codec {name!r} in {folder} fails its hash check (modified or damaged); "
                             "reinstall it")
        net = build_network(SirenConfig.from_dict(config["model"]))
        if net.cfg.cell and tuple(config["patch"]) != (net.cfg.cell, net.cfg.cell):
            raise ValueError("a latent-grid codec's patch is its cell")
        net.load_state_dict(load_torch(str(folder / "weights.safetensors")))
        net.eval().requires_grad_(False)
        t = load_np(str(folder / "tables.safetensors"))
        quantizer = Quantizer(t["low"], t["step"], int(config["bits"]), t.get("basis"), t.get("centre"))
        d = len(quantizer.low)
        if quantizer.basis is not None and (quantizer.basis.shape != (d, d) or quantizer.centre is None
                                            or quantizer.centre.shape != (d,)
                                            or not np.isfinite(quantizer.basis).all()):
            raise ValueError("basis or centre does not match the latent size")
        # Declared in the config (and so in the hash): software that predates the transform refuses
        # such a codec on its hash instead of decoding it without the transform.
        transform = config.get("transform")
        if transform not in (None, "principal-components") or (transform is None) != (quantizer.basis is None):
            raise ValueError("the config's transform and the tables disagree")
        table = t["table"].astype(np.int32)
        delta = t["delta_table"].astype(np.int32) if "delta_table" in t else None
        if delta is not None and delta.shape != (table.shape[0], 2 * table.shape[1] - 1):
            raise ValueError("delta_table does not match table")
        context = None
        if "context" in config:
            spec, prior = config["context"], t["context_prior"].astype(np.int32)
            expected = (table.shape[0], spec["buckets"], table.shape[1])
            if spec.get("model") != "neighbour-mean" or prior.shape != expected:
                raise ValueError("context_prior does not match the context model or the table")
            if not 1 <= int(spec["adapt"]) <= 1 << 16:
                raise ValueError("context adapt out of range")
            context = ContextModel(prior, int(spec["adapt"]))
        refine = config.get("refine") or {}
        if "latent_lr" in refine and (refine.get("quantized", True) or not 0 < float(refine["latent_lr"]) <= 10):
            raise ValueError("refine latent_lr needs quantized false and a rate in (0, 10]")
        if refine.get("rate_lambda"):
            terms = [np.asarray(refine.get(k, []), dtype=np.float64) for k in ("rate_centres", "rate_scales")]
            if (not 0 < float(refine["rate_lambda"]) <= 1 or any(t.shape != (d,) or not np.isfinite(t).all()
                                                                  for t in terms) or (terms[1] <= 0).any()):
                raise ValueError("refine rate_lambda needs a value in (0, 1] (MSE per bit) and rate_centres and "
                                 "positive rate_scales, one per latent dimension")
        if refine.get("filter_steps"):
            steps, views = refine["filter_steps"], refine.get("filter_views", 1)
            if (not isinstance(steps, int) or not 1 <= steps <= 1000 or not 0 < float(refine.get("filter_lr", 0)) <= 10
                    or not isinstance(views, int) or not 1 <= views <= 8 or "postfilter" not in config):
                raise ValueError("refine filter_steps needs a post-filter, 1..1000 steps, a filter_lr in (0, 10] "
                                 "and filter_views in 1..8")
        half = config.get("encode_half_steps", 0)
        if not isinstance(half, int) or isinstance(half, bool) or not 0 <= half <= 1000:
            raise ValueError("encode_half_steps needs a whole number of steps in 0..1000")
        if "rdo" in config and not (0 <= float(config["rdo"]["lambda"]) <= 10 and "context" in config):
            raise ValueError("rdo needs the neighbour context and a lambda in [0, 10]")
        postfilter = load_postfilter(folder, config["postfilter"]) if "postfilter" in config else None
        if postfilter is not None and (config["modality"] != "image" or net.cfg.out_dim != 3):
            raise ValueError("a post-filter is for RGB image codecs")
    except CodecError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, SafetensorError) as e:
        raise CodecError(f"codec folder {folder} is incomplete or unreadable ({e.__class__.__name__}: {e})") from None
    return Codec(name, folder, config, net, quantizer, table, actual, delta, context, postfilter)


def fit_key(codec: Codec) -> str:
    """Codecs that share weights, patch and encode steps fit identical latents: fit once for all."""
    h = hashlib.sha256((codec.folder / "weights.safetensors").read_bytes())
    return f"{h.hexdigest()}:{codec.patch}:{codec.steps}:{codec.half_steps}"


def available() -> dict[str, Path]:
    """name -> folder of every codec on the search path (first one found wins)."""
    found: dict[str, Path] = {}
    for root in search_path():
        for cfg in sorted(root.glob("*/config.json")):
            found.setdefault(cfg.parent.name, cfg.parent)
    return found


@lru_cache(maxsize=16)
def _load_cached(folder: str) -> Codec:
    return load_folder(Path(folder))


def load(name: str, allow_path: bool = True) -> Codec:
    """A codec by its stable name, or (when allow_path) by a path to a codec folder.

    Names read from a file are looked up with allow_path=False: a file never points at a folder.
    """
    if os.sep in name or name.startswith("."):
        if not allow_path:
            raise CodecError(f"invalid codec name {name!r}")
        return _load_cached(str(Path(name).resolve()))
    codecs = available()
    if name not in codecs:
        known = ", ".join(sorted(codecs)) or "none installed"
        raise CodecError(f"unknown codec {name!r} (available: {known})")
    return _load_cached(str(codecs[name].resolve()))


def default_for(modality: str) -> str:
    if modality not in DEFAULT_CODECS:
        raise CodecError(f"no default codec for {modality}; pass --codec")
    return DEFAULT_CODECS[modality]


def write_folder(folder: Path, config: dict, net: LatentModulatedSiren, quantizer: Quantizer,
                 table: np.ndarray, model_card: str, delta_table: np.ndarray | None = None,
                 context_prior: np.ndarray | None = None) -> Codec:
    """Write a codec folder (config gets its hash) and load it back to verify."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_torch(state, str(folder / "weights.safetensors"))
    tables = {"low": quantizer.low.astype(np.float32), "step": quantizer.step.astype(np.float32),
              "table": table.astype(np.int32)}
    if quantizer.basis is not None:  # a decorrelating transform before quantization
        tables["basis"] = quantizer.basis.astype(np.float32)
        tables["centre"] = quantizer.centre.astype(np.float32)
    if delta_table is not None:
        tables["delta_table"] = delta_table.astype(np.int32)
    if context_prior is not None:
        tables["context_prior"] = context_prior.astype(np.int32)
    save_np(tables, str(folder / "tables.safetensors"))
    config = dict(config, bits=quantizer.bits)
    if quantizer.basis is not None:
        config["transform"] = "principal-components"
    config["hash"] = codec_hash(folder, config).hex()
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "MODEL_CARD.md").write_text(model_card)
    _load_cached.cache_clear()
    return load_folder(folder)
