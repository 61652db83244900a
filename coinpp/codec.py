"""A loaded codec: its specification (spec.py) with the base network and the post-filter in torch.

Codecs are found by a stable name and verified by a hash (spec.py); this module adds what needs
torch: the network's weights and the decoder-side post-filter's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file as load_torch

from . import ladders
from . import spec as specs
from .entropy import EntropyModel
from .errors import CodecError
from .model import LatentModulatedSiren, build_network
from .postfilter import PostFilter, WaveformFilter
from .postfilter import load as load_postfilter
from .presets import EncoderPreset
from .quantize import Quantizer
from .spec import CodecSpec

DEFAULT_CODECS = ladders.DEFAULT_CODECS
available = specs.available
default_for = ladders.default_for


@dataclass(frozen=True, eq=False)
class Codec:
    spec: CodecSpec
    net: LatentModulatedSiren
    # Decoder-side restoration of images or audio waveforms (postfilter.py); not part of the hash:
    # it changes no symbol, latent or network output, so files written before it stay valid.
    postfilter: PostFilter | WaveformFilter | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def folder(self) -> Path:
        return self.spec.folder

    @property
    def modality(self) -> str:
        return self.spec.modality

    @property
    def patch(self) -> tuple[int, ...]:
        return self.spec.patch

    @property
    def quantizer(self) -> Quantizer:
        return self.spec.quantizer

    @property
    def entropy(self) -> EntropyModel:
        return self.spec.entropy

    @property
    def hash(self) -> bytes:
        return self.spec.hash

    @property
    def bits(self) -> int:
        return self.spec.bits

    def preset(self, name: str = "default") -> EncoderPreset:
        """The codec's encoder preset `name`: one the codec declares, or else
        - "fast": the default without its steps through the post-filter (where it has them);
        - "max": the default with twice the Adam and filter steps (twice the SGD steps for a codec
          without an Adam phase)."""
        if name in self.spec.presets:
            return self.spec.presets[name]
        default = self.spec.presets["default"]
        if name == "fast":
            return replace(default.without("filter"), name="fast")
        if name == "max":
            p = default
            if p.adam is not None:
                p = p.with_setting("adam.steps", 2 * p.adam.steps)
            else:
                p = p.with_setting("sgd.steps", 2 * p.sgd_steps)
            if p.filter is not None:
                p = p.with_setting("filter.steps", 2 * p.filter.steps)
            return replace(p, name="max")
        raise CodecError(f"codec {self.name!r} has no preset {name!r} "
                         f"(has: {', '.join(sorted({*self.spec.presets, 'fast', 'max'}))})")

    def weights_sha256(self) -> str:
        return specs.file_sha256(self.spec.weights)


def from_spec(spec: CodecSpec) -> Codec:
    """Load a checked specification's network and post-filter."""
    try:
        net = build_network(spec.model)
        net.load_state_dict(load_torch(str(spec.weights)))
        net.eval().requires_grad_(False)
        postfilter = load_postfilter(spec.folder, spec.postfilter) if spec.postfilter is not None else None
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, SafetensorError) as e:
        raise CodecError(f"codec folder {spec.folder} is incomplete or unreadable "
                         f"({e.__class__.__name__}: {e})") from None
    return Codec(spec, net, postfilter)


@lru_cache(maxsize=16)
def _load_cached(folder: str) -> Codec:
    return from_spec(specs.load_folder(Path(folder)))


def load_folder(folder: Path) -> Codec:
    """Load and verify one codec folder (read afresh: not cached)."""
    return from_spec(specs.load_folder(Path(folder)))


def for_spec(spec: CodecSpec) -> Codec:
    """The loaded codec of a specification (cached)."""
    return _load_cached(str(spec.folder))


def load(name: str, allow_path: bool = True) -> Codec:
    """A codec by its stable name, or (when allow_path) by a path to a codec folder."""
    return _load_cached(str(specs.find(name, allow_path)))


def clear_cache() -> None:
    """Forget loaded codecs (after a codec folder was written)."""
    _load_cached.cache_clear()
    specs.clear_cache()
