"""The encoder: Signal -> .coin bytes. The only place the encode sequence runs.

    patch -> fit (meta-learned SGD steps, the first on pixel halves) -> Adam with a rate term
          -> Adam through the post-filter -> rate-distortion rounding -> entropy code -> container

Each phase and its parameters come from an encoder preset of the codec (spec.EncoderPreset). The
CLI, folders, `coin bench`, the post-filter trainer and the benchmark scripts all encode through
`Encoder`; `encode_each` shares the work codecs have in common (one network at several bit depths
fits once, and refines once where the refinement does not depend on the bit depth).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from . import container
from .bitstream import layout, parse
from .codec import Codec
from .decoder import Decoder
from .device import product_dtype
from .errors import CodecError, InputError
from .file_filter import file_filter_bytes, file_filter_taps
from .fit import RatePenalty, fit_grid, fit_latents, refine_latents, refine_through_filter
from .modalities import Modality, Signal
from .patching import checkerboard, patch_coordinates, split
from .postfilter import WaveformFilter, apply_waveform, fit_waveform
from .presets import EncoderPreset
from .residual import make_layer


@dataclass
class Encoded:
    data: bytes
    symbols: np.ndarray
    codec: Codec


class Encoder:
    """Encodes signals of one modality with one codec and one preset.

    `preset` is a preset name of the codec ("default", "fast", ...) or an EncoderPreset; `steps`
    overrides its number of SGD steps (the first still on halves, as many as the preset has).
    """

    def __init__(self, codec: Codec, modality: Modality, preset: str | EncoderPreset = "default",
                 steps: int | None = None, device: str = "auto", on_phase: Callable[[str], None] | None = None,
                 max_error: float | None = None, file_filter: bool = True) -> None:
        if codec.modality != modality.name:
            raise CodecError(f"codec {codec.name!r} is for {codec.modality}, not {modality.name}")
        if steps is not None and not 0 <= steps <= 10_000:
            raise InputError("--steps must be between 0 and 10000")
        self.codec, self.modality, self.device = codec, modality, device
        self.on_phase = on_phase or (lambda phase: None)  # told each phase as it starts (progress)
        self.preset = codec.preset(preset) if isinstance(preset, str) else preset
        if steps is not None:
            self.preset = self.preset.with_sgd_steps(steps)
        # With a bound, a residual layer brings every value of the file's own grid within it (0: lossless)
        self.max_error = max_error
        # Audio whose codec has a waveform filter: also fit one to the file itself (with_file_filter)
        self.file_filter = file_filter

    # --- the phases ----------------------------------------------------------------------------

    def fit(self, signals: list[Signal]) -> list[torch.Tensor]:
        """Patch the signals and fit one latent per patch, all patches in one batch (small files
        fill the batch together): a (P, D) float tensor per signal. Each patch's latent depends only
        on that patch, so the result is the same as one by one. A signal with more channels than
        the network outputs is coded as groups of channels, a latent per patch and group (group-major)."""
        steps = self.preset.sgd_steps
        self.on_phase(f"fitting ({steps} steps)")
        if self.modality.absolute_coordinates:
            return [self._fit_fields(s, steps) for s in signals]
        if self.codec.net.cfg.cell:
            return [self._fit_latent_grid(s, steps) for s in signals]
        parts = [self.patch_targets(s) for s in signals]
        subsets = [checkerboard(self.codec.patch, k) for k in range(self.preset.half_steps)]
        with self._products(self.preset.sgd_matmul):
            latents = self._fit_unique(np.concatenate(parts), steps, subsets)
        return list(latents.split([len(p) for p in parts]))

    def refine(self, latents: torch.Tensor, signal: Signal) -> torch.Tensor:
        """The Adam phase: each patch's latents refined on its own pixels (through the quantizer,
        or with the rate term); unchanged for presets without one, latent grids and fields."""
        phase = self.preset.adam
        if phase is None or not phase.steps or self.modality.absolute_coordinates or self.codec.net.cfg.cell:
            return latents
        self.on_phase(f"refining ({phase.steps} Adam steps)")
        q = self.codec.quantizer
        if phase.lr_unit == "latent":
            lr = np.full(self.codec.net.cfg.latent_dim, phase.lr, dtype=np.float32)
        else:
            lr = phase.lr * q.latent_step
        with self._products(phase.matmul):
            return refine_latents(self.codec.net, patch_coordinates(self.codec.patch), self.patch_targets(signal),
                                  latents, phase.steps, lr, q if phase.quantized else None, self.device,
                                  penalty=self.rate_penalty(phase.rate_lambda), settle=phase.settle,
                                  subsets=[checkerboard(self.codec.patch, k) for k in range(phase.half)])

    def through_filter(self, latents: torch.Tensor, signal: Signal) -> torch.Tensor:
        """The filter phase: Adam on all of an image's latents against the post-filtered image's
        error (fit.refine_through_filter), for an image of one channel group; unchanged otherwise."""
        phase, c = self.preset.filter, self.codec
        if phase is None or not phase.steps or c.postfilter is None or self.modality.name != "image" or c.net.cfg.cell:
            return latents
        values = self.modality.to_network(signal, c.net.cfg.out_dim)
        if values.shape[-1] != c.net.cfg.out_dim:
            return latents
        self.on_phase(f"refining through the post-filter ({phase.steps} steps)")
        with self._products(phase.matmul):
            return refine_through_filter(c.net, c.postfilter, c.patch, values, latents, phase.steps, phase.lr,
                                         self.rate_penalty(phase.rate_lambda), phase.views, self.device)

    def pack(self, latents: torch.Tensor, signal: Signal) -> Encoded:
        """The round phase and the entropy coder: fitted latents -> .coin bytes."""
        c, m = self.codec, self.modality
        self.on_phase("entropy coding")
        groups = m.coded_channels(signal.channels, c.net.cfg.out_dim) // c.net.cfg.out_dim
        patch = m.file_patch(c.patch, signal.spatial)
        positions = c.quantizer.positions(latents)
        try:
            payload, symbols = c.entropy.encode_rd(positions, layout(signal.spatial, patch, groups),
                                                   self.preset.rd_lambda)
        except ValueError as e:  # e.g. the neighbour context given data that is not 1-D or 2-D
            raise CodecError(f"codec {c.name!r}: {e}") from None
        f = container.CoinFile(
            codec_name=c.name, codec_hash=c.hash, modality=m.code, shape=signal.spatial, channels=signal.channels,
            patch=patch, bits=c.bits, latent_dim=c.net.cfg.latent_dim, payload=payload,
            modality_meta=m.encode_meta(self.coded(signal).meta), groups=groups)
        return Encoded(container.write_bytes(f), symbols, c)

    def encode(self, signal: Signal) -> Encoded:
        """Every phase of the preset in order: one signal -> its .coin bytes."""
        return self.encode_many([signal])[0]

    def encode_many(self, signals: list[Signal]) -> list[Encoded]:
        """Several signals, their patches fitted in one batch, then each refined and packed."""
        return [self.finish(z, s) for z, s in zip(self.fit(signals), signals, strict=True)]

    def finish(self, latents: torch.Tensor, signal: Signal) -> Encoded:
        """The phases after the fit."""
        return self.after_refine(self.refine(latents, signal), signal)

    def after_refine(self, latents: torch.Tensor, signal: Signal) -> Encoded:
        """The phases after the Adam phase: the steps through the post-filter, the entropy coder, the
        file's own waveform filter and the residual layer."""
        packed = self.pack(self.through_filter(latents, signal), signal)
        return self.bound(self.with_file_filter(packed, signal), signal)

    def with_file_filter(self, encoded: Encoded, signal: Signal) -> Encoded:
        """Audio whose codec has a waveform post-filter: a filter of as many taps fitted to this file,
        by least squares from the network's decode to the signal, stored (FILT; the decoder applies
        it instead of the codec's) when its squared error on the file is smaller than the codec's
        filter's. Each clip has a speaker, a room and a level of its own: on the 15 test clips
        `speech-ctx-6x128-l64-b6`'s filter gained 0.50 dB, a filter per clip 0.68 dB (67 bytes a file;
        benchmarks/experiments/RECORD.md, section 22)."""
        c, m = self.codec, self.modality
        if not self.file_filter or m.name != "audio" or not isinstance(c.postfilter, WaveformFilter):
            return encoded
        self.on_phase("fitting the file's waveform filter")
        decoded = Decoder(self.device, postfilter=False).decode(parse(encoded.data)).values
        original = m.to_network(signal, c.net.cfg.out_dim)
        pairs = [(decoded[:, k] * 2.0 - 1.0, original[:, k] * 2.0 - 1.0) for k in range(decoded.shape[1])]
        body = file_filter_bytes(fit_waveform(pairs, c.postfilter.cfg.taps))
        if body is None:
            return encoded

        def error(waveform: WaveformFilter | np.ndarray) -> float:
            out = np.clip(apply_waveform(waveform, decoded), 0.0, 1.0)
            return float(np.sum((out.astype(np.float64) - original) ** 2))

        if error(file_filter_taps(body)) >= error(c.postfilter):
            return encoded
        f = container.read_bytes(encoded.data)
        f.extra = {**f.extra, container.FILE_FILTER_TAG: body}
        return Encoded(container.write_bytes(f), encoded.symbols, encoded.codec)

    def bound(self, encoded: Encoded, signal: Signal) -> Encoded:
        """The residual layer, when the encoder has a bound: the file's network decoded here as any
        decoder will, and what it missed coded within the bound (residual.py)."""
        if self.max_error is None:
            return encoded
        if signal.exact is None:
            raise InputError(f"{self.modality.name} data has no error-bounded mode (--max-error, --lossless)")
        self.on_phase("coding the residual within the bound")
        return self.with_layer(encoded, signal, self.prediction(encoded))

    def prediction(self, encoded: Encoded) -> np.ndarray:
        """What a decoder's network gives on the file's own grid, in the data's units."""
        return self.modality.units(Decoder(self.device, postfilter=False).decode(parse(encoded.data)))

    def with_layer(self, encoded: Encoded, signal: Signal, predicted: np.ndarray) -> Encoded:
        """The file with a residual layer for this encoder's bound on top of its network's `predicted`
        decode."""
        m = self.modality
        grid = m.value_grid(signal.meta)
        if self.max_error == 0 and grid is None:
            raise InputError(f"--lossless needs integer data; this {m.name} file holds real values "
                             "(give --max-error)")
        quantum, offset = grid or (0.0, 0.0)
        layer = make_layer(signal.exact, predicted, float(self.max_error or 0.0), quantum, offset,
                           m.stored_dtype(signal.meta), m.missing(signal.meta, signal.spatial), m.span(signal.meta),
                           m.plane_axis(signal.meta))
        f = container.read_bytes(encoded.data)
        f.flags |= container.FLAG_RESIDUAL
        f.extra = {**f.extra, container.RESIDUAL_TAG: layer.to_bytes()}
        return Encoded(container.write_bytes(f), encoded.symbols, encoded.codec)

    # --- what codecs share ---------------------------------------------------------------------

    def fit_key(self) -> str:
        """Encoders with the same fit_key fit identical latents."""
        sgd = json.dumps([asdict(p) for p in self.preset.sgd])
        return f"{self.codec.weights_sha256()}:{self.codec.patch}:{self.codec.spec.normalisation}:{sgd}"

    def refine_key(self) -> str:
        """Encoders with the same fit_key and refine_key refine identically: their Adam phase does
        not depend on the bit depth (one rate for every dimension, unquantized) and any rate term
        is the same."""
        phase = self.preset.adam
        if phase is None or not phase.steps:
            return "none"
        if phase.quantized or phase.lr_unit != "latent":
            return f"codec:{self.codec.name}"
        key = json.dumps(asdict(phase))
        if phase.rate_lambda:
            q, r = self.codec.quantizer, self.codec.spec.rate_model
            parts = [r.centres, r.scales] + ([q.basis, q.centre] if q.basis is not None else [])
            key += hashlib.sha256(b"".join(np.ascontiguousarray(a, np.float64).tobytes() for a in parts)).hexdigest()
        return key

    # --- helpers -------------------------------------------------------------------------------

    def coded(self, signal: Signal) -> Signal:
        """The signal as this codec's network codes it (the codec's normalisation; per field: the
        ranges go into the header)."""
        return self.modality.normalise(signal, self.codec.spec.normalisation)

    def _products(self, matmul: str) -> contextlib.AbstractContextManager[None]:
        """The network's hidden-layer products in a phase's number type (presets.Matmul)."""
        return self.codec.net.hidden_products(product_dtype(matmul, self.device))

    def patch_targets(self, signal: Signal) -> np.ndarray:
        """The patches this codec fits, (G*P, N, C): each channel group's patches, group-major."""
        c = self.codec
        if len(signal.spatial) != len(c.patch):
            raise InputError(f"codec {c.name!r} expects {len(c.patch)}-D data")
        out_dim = c.net.cfg.out_dim
        values = self.modality.to_network(signal, out_dim)
        return np.concatenate([split(values[..., g : g + out_dim], c.patch)[0]
                               for g in range(0, values.shape[-1], out_dim)])

    def rate_penalty(self, rate_lambda: float) -> RatePenalty | None:
        """The codec's rate model weighted by `rate_lambda` (per-patch MSE per bit); None at 0."""
        if not rate_lambda:
            return None
        r, q = self.codec.spec.rate_model, self.codec.quantizer
        return RatePenalty(float(rate_lambda), r.centres, r.scales, q.basis, q.centre)

    def _fit_unique(self, targets: np.ndarray, steps: int, subsets: list[torch.Tensor]) -> torch.Tensor:
        """Fit each distinct patch once: identical patches (the empty background of an MRI volume,
        flat sky) get identical latents anyway, and a brain volume is often half background."""
        net, coords = self.codec.net, patch_coordinates(self.codec.patch)
        flat = targets.reshape(len(targets), -1)
        unique, inverse = np.unique(flat, axis=0, return_inverse=True)
        if len(unique) > 0.9 * len(flat):
            return fit_latents(net, coords, targets, steps, self.device, subsets=subsets)
        fitted = fit_latents(net, coords, unique.reshape(-1, *targets.shape[1:]), steps, self.device, subsets=subsets)
        return fitted[torch.from_numpy(inverse.reshape(-1))]

    def _fit_latent_grid(self, signal: Signal, steps: int) -> torch.Tensor:
        """A latent grid per channel group over the whole image (latents shared across cells)."""
        if len(signal.spatial) != 2:
            raise InputError(f"codec {self.codec.name!r} expects 2-D data")
        out_dim = self.codec.net.cfg.out_dim
        values = self.modality.to_network(signal, out_dim)
        return torch.cat([fit_grid(self.codec.net, values[..., g : g + out_dim], steps, self.device)
                          for g in range(0, values.shape[-1], out_dim)])

    def _fit_fields(self, signal: Signal, steps: int) -> torch.Tensor:
        """One latent per whole field, the network seeing where each sample lies (climate)."""
        m = self.modality
        if len(signal.spatial) != m.spatial_dims:
            raise InputError(f"{m.name} data must be {m.spatial_dims}-D")
        coords = torch.from_numpy(m.coordinates(signal.meta))
        values = m.to_network(self.coded(signal), self.codec.net.cfg.out_dim)
        targets = values.reshape(values.shape[0], -1, values.shape[-1])  # (fields, points, C)
        return fit_latents(self.codec.net, coords, targets, steps, self.device)


def encode_signal(signal: Signal, modality: Modality, codec: Codec, steps: int | None = None, device: str = "auto",
                  preset: str | EncoderPreset = "default", max_error: float | None = None) -> Encoded:
    """One signal with one codec: Encoder(...).encode(signal)."""
    return Encoder(codec, modality, preset, steps, device, max_error=max_error).encode(signal)


@dataclass
class Timed:
    encoder: Encoder
    encoded: Encoded
    seconds: float  # this codec's encode time: the shared fit and refinement counted in full


@dataclass
class SharedWork:
    """The fits and Adam phases already run on one signal, by fit_key and refine_key."""

    fitted: dict[str, tuple[torch.Tensor, float]] = field(default_factory=dict)
    refined: dict[tuple[str, str], tuple[torch.Tensor, float]] = field(default_factory=dict)


def encode_each(signal: Signal, encoders: list[Encoder], shared: SharedWork | None = None) -> Iterator[Timed]:
    """One signal with each encoder, the fit shared by encoders with one fit_key and the Adam phase
    by those that also share a refine_key (also with earlier calls given the same `shared`); yields in
    the encoders' order."""
    shared = shared or SharedWork()
    fitted, refined = shared.fitted, shared.refined
    for e in encoders:
        fk, rk = e.fit_key(), e.refine_key()
        if fk not in fitted:
            t0 = time.perf_counter()
            fitted[fk] = (e.fit([signal])[0], time.perf_counter() - t0)
        if (fk, rk) not in refined:
            t0 = time.perf_counter()
            refined[fk, rk] = (e.refine(fitted[fk][0], signal), time.perf_counter() - t0)
        t0 = time.perf_counter()
        enc = e.after_refine(refined[fk, rk][0], signal)
        yield Timed(e, enc, fitted[fk][1] + refined[fk, rk][1] + time.perf_counter() - t0)


@dataclass
class RateSearch:
    """What encode_to_rate tried: (codec, the file's real rate) in the order tried."""

    tried: list[tuple[str, float]] = field(default_factory=list)


def encode_to_rate(signal: Signal, encoders: list[Encoder], limit: float, unit: str,
                   search: RateSearch | None = None) -> Encoded:
    """The best file whose real rate (in the modality's `unit`) is at or under `limit`: `encoders` are
    a ladder's rungs, smallest first. The search starts at the highest rung whose measured rate is
    within the limit and moves up while the file stays under it, down while it is over; rungs of one
    network share the fit (and the Adam phase where it does not depend on the bit depth). CodecError
    when even the smallest rung is over."""
    search = search if search is not None else RateSearch()
    shared = SharedWork()
    results: dict[int, Encoded] = {}

    def rate(i: int) -> float:
        if i not in results:
            results[i] = next(encode_each(signal, [encoders[i]], shared)).encoded
            r = encoders[i].modality.rate(len(results[i].data), signal.spatial, signal.meta)[unit]
            search.tried.append((encoders[i].codec.name, r))
        return next(r for n, r in search.tried if n == encoders[i].codec.name)

    measured = [e.codec.spec.measured.get(unit) for e in encoders]
    under = [i for i, m in enumerate(measured) if m is not None and m <= limit]
    i = under[-1] if under else 0
    if rate(i) <= limit:
        while i + 1 < len(encoders) and rate(i + 1) <= limit:
            i += 1
        return results[i]
    while i > 0:
        i -= 1
        if rate(i) <= limit:
            return results[i]
    name, smallest = search.tried[-1]
    raise CodecError(f"even the smallest {encoders[0].modality.name} codec ({name}) needs {smallest:.4g} {unit} "
                     f"for this file, over the {limit:g} asked")
