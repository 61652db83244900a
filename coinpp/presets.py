"""Encoder presets: an encoder effort is a list of phases in order, each with its parameters.

    sgd     meta-learned SGD steps from zero latents (the first, optionally, on pixel halves)
    adam    Adam on each patch's latents, optionally with the rate term
    filter  Adam on all of an image's latents against the post-filtered image's error
    round   rate-distortion rounding

A codec declares its presets in config.json ("presets": {"default": [{"phase": "sgd", ...}, ...]});
files decode the same whatever the preset. No torch here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

# The number type of the network's hidden-layer products in a phase's steps (the coordinates' layer,
# the sines' arguments, the sums and the output layer stay float32; model.LatentModulatedSiren).
# "bfloat16" runs at about twice the float32 rate where the device has bfloat16 arithmetic and falls
# back to float32 where it has not. Encoder-only: the decoder always evaluates in float32.
Matmul = Literal["float32", "bfloat16"]
MATMULS = ("float32", "bfloat16")


@dataclass(frozen=True)
class SGDPhase:
    """Meta-learned SGD steps from zero latents; `half`: each step's gradient on alternate
    checkerboard halves of every patch (half the arithmetic; fit.fit_latents)."""

    steps: int
    half: bool = False
    matmul: Matmul = "float32"
    kind: Literal["sgd"] = "sgd"


@dataclass(frozen=True)
class AdamPhase:
    """Adam on each patch's latents after the SGD steps. `lr` is one rate for every latent
    dimension (`lr_unit` "latent") or a fraction of each dimension's quantizer step ("quantizer-step");
    `quantized`: gradients taken at the quantized latents (straight through); `rate_lambda` (per-patch
    MSE per bit) adds the codec's rate model to the loss; `settle` > 0 stops a patch whose loss fell
    by less than that fraction in a step; the first `half` steps take their gradients on alternate
    checkerboard halves of each patch (fit.refine_latents)."""

    steps: int
    lr: float
    lr_unit: Literal["latent", "quantizer-step"] = "latent"
    quantized: bool = False
    rate_lambda: float = 0.0
    settle: float = 0.0
    half: int = 0
    matmul: Matmul = "float32"
    kind: Literal["adam"] = "adam"


@dataclass(frozen=True)
class FilterPhase:
    """Adam on all of an image's latents at once, the loss the post-filtered image's error (`views`
    of the filter averaged; None: the filter's own) plus the rate term."""

    steps: int
    lr: float
    views: int | None = None
    rate_lambda: float = 0.0
    matmul: Matmul = "float32"
    kind: Literal["filter"] = "filter"


@dataclass(frozen=True)
class RoundPhase:
    """Rate-distortion rounding: each value takes the nearer of its two levels by squared error plus
    `rd_lambda` (squared quantizer steps per bit) times its code length; 0 rounds to the nearest."""

    rd_lambda: float = 0.0
    kind: Literal["round"] = "round"


Phase = SGDPhase | AdamPhase | FilterPhase | RoundPhase
PHASES = {"sgd": SGDPhase, "adam": AdamPhase, "filter": FilterPhase, "round": RoundPhase}


@dataclass(frozen=True)
class EncoderPreset:
    """An encoder effort: its phases in order. Files decode the same whatever the preset."""

    name: str
    phases: tuple[Phase, ...]

    @property
    def sgd(self) -> tuple[SGDPhase, ...]:
        return tuple(p for p in self.phases if isinstance(p, SGDPhase))

    @property
    def sgd_steps(self) -> int:
        return sum(p.steps for p in self.sgd)

    @property
    def half_steps(self) -> int:
        return sum(p.steps for p in self.sgd if p.half)

    @property
    def sgd_matmul(self) -> Matmul:
        return self.sgd[0].matmul if self.sgd else "float32"

    @property
    def adam(self) -> AdamPhase | None:
        return next((p for p in self.phases if isinstance(p, AdamPhase)), None)

    @property
    def filter(self) -> FilterPhase | None:
        return next((p for p in self.phases if isinstance(p, FilterPhase)), None)

    @property
    def rd_lambda(self) -> float:
        return next((p.rd_lambda for p in self.phases if isinstance(p, RoundPhase)), 0.0)

    def with_sgd_steps(self, steps: int) -> EncoderPreset:
        """The same preset with `steps` SGD steps in all, the first of them on halves as before."""
        return self.with_setting("sgd.steps", steps)

    def without(self, kind: str) -> EncoderPreset:
        return replace(self, phases=tuple(p for p in self.phases if p.kind != kind))

    def with_phase(self, phase: Phase) -> EncoderPreset:
        """The same preset with `phase` in place of the one of its kind (added in order if none)."""
        order = list(PHASES)
        phases = [p for p in self.phases if p.kind != phase.kind] + [phase]
        preset = replace(self, phases=tuple(sorted(phases, key=lambda p: order.index(p.kind))))
        _check_preset(preset)
        return preset

    def with_setting(self, key: str, value: object) -> EncoderPreset:
        """One setting changed, by "KIND.FIELD" (e.g. "adam.steps", "filter.views", "round.rd_lambda");
        "sgd.steps" is the number of SGD steps in all and "sgd.half" how many of the first are on halves;
        "all.matmul" sets the products' number type in every phase that has steps.
        ValueError for a phase the preset lacks (other than round) or a field its kind has not."""
        kind, _, name = key.partition(".")
        if kind == "all" and name == "matmul":
            phases = tuple(replace(p, matmul=value) if hasattr(p, "matmul") else p for p in self.phases)
            preset = replace(self, phases=phases)
            _check_preset(preset)
            return preset
        if kind == "sgd" and name in ("steps", "half", "matmul"):
            steps = int(value) if name == "steps" else self.sgd_steps  # type: ignore[call-overload]
            half = min(int(value) if name == "half" else self.half_steps, steps)  # type: ignore[call-overload]
            matmul = value if name == "matmul" else self.sgd[0].matmul if self.sgd else "float32"
            sgd = tuple(p for p in (SGDPhase(half, True, matmul), SGDPhase(steps - half, False, matmul))  # type: ignore[arg-type]
                        if p.steps) or (SGDPhase(0, False, matmul),)  # type: ignore[arg-type]
            preset = replace(self, phases=sgd + tuple(p for p in self.phases if p.kind != "sgd"))
            _check_preset(preset)
            return preset
        current = next((p for p in self.phases if p.kind == kind), RoundPhase() if kind == "round" else None)
        if current is None or name not in type(current).__dataclass_fields__ or name == "kind":
            raise ValueError(f"preset {self.name!r} has no setting {key!r}")
        return self.with_phase(replace(current, **{name: value}))

    def to_list(self) -> list[dict]:
        out = []
        for p in self.phases:
            d = asdict(p)
            kind = d.pop("kind")
            defaults = {k: f.default for k, f in type(p).__dataclass_fields__.items()}
            out.append({"phase": kind, **{k: v for k, v in d.items() if k == "steps" or v != defaults[k]}})
        return out

    @classmethod
    def from_list(cls, name: str, items: list) -> EncoderPreset:
        if not isinstance(items, list):
            raise ValueError(f"preset {name!r} must be a list of phases")
        phases = []
        for item in items:
            item = dict(item)
            kind = item.pop("phase", None)
            if kind not in PHASES:
                raise ValueError(f"preset {name!r}: unknown phase {kind!r} (use {', '.join(PHASES)})")
            try:
                phases.append(PHASES[kind](**item))
            except TypeError as e:
                raise ValueError(f"preset {name!r}: phase {kind!r}: {e}") from None
        preset = cls(name, tuple(phases))
        _check_preset(preset)
        return preset


def whole(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_preset(p: EncoderPreset) -> None:
    order = [ph.kind for ph in p.phases]
    if order != sorted(order, key=list(PHASES).index) or any(order.count(k) > 1 for k in ("adam", "filter", "round")):
        raise ValueError(f"preset {p.name!r}: phases must run sgd, adam, filter, round, each once (sgd twice: half "
                         "steps first)")
    sgd = p.sgd
    if len(sgd) > 2 or (len(sgd) == 2 and not (sgd[0].half and not sgd[1].half)):
        raise ValueError(f"preset {p.name!r}: at most two sgd phases, the half steps first")
    if len({ph.matmul for ph in sgd}) > 1:
        raise ValueError(f"preset {p.name!r}: the sgd phases must have the same matmul")
    for ph in p.phases:
        if hasattr(ph, "matmul") and ph.matmul not in MATMULS:
            raise ValueError(f"preset {p.name!r}: {ph.kind} matmul must be one of {', '.join(MATMULS)}")
    for ph in p.phases:
        if isinstance(ph, (SGDPhase, AdamPhase, FilterPhase)) and not whole(ph.steps, 0, 10_000):
            raise ValueError(f"preset {p.name!r}: {ph.kind} steps must be a whole number in 0..10000")
        if isinstance(ph, SGDPhase) and not isinstance(ph.half, bool):
            raise ValueError(f"preset {p.name!r}: sgd half must be true or false")
        if isinstance(ph, AdamPhase):
            if ph.lr_unit not in ("latent", "quantizer-step") or not 0 < float(ph.lr) <= 10:
                raise ValueError(f"preset {p.name!r}: adam needs an lr in (0, 10] and lr_unit latent or quantizer-step")
            if not 0 <= float(ph.settle) < 1:
                raise ValueError(f"preset {p.name!r}: adam settle must be in [0, 1)")
            if not whole(ph.half, 0, 10_000):
                raise ValueError(f"preset {p.name!r}: adam half must be a whole number of steps")
        if isinstance(ph, FilterPhase):
            if not 0 < float(ph.lr) <= 10 or not (ph.views is None or whole(ph.views, 1, 8)):
                raise ValueError(f"preset {p.name!r}: filter needs an lr in (0, 10] and views in 1..8")
        if isinstance(ph, (AdamPhase, FilterPhase)) and not 0 <= float(ph.rate_lambda) <= 1:
            raise ValueError(f"preset {p.name!r}: rate_lambda must be in [0, 1] (MSE per bit)")
        if isinstance(ph, RoundPhase) and not 0 <= float(ph.rd_lambda) <= 10:
            raise ValueError(f"preset {p.name!r}: rd_lambda must be in [0, 10]")
