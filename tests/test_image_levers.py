"""The image rate-distortion levers: refinement through the quantizer, the neighbour context."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_codec

from coinpp import codec as codecs
from coinpp import modalities
from coinpp import spec as specs
from coinpp.bitstream import decode_symbols, parse
from coinpp.decoder import decode_bytes
from coinpp.encoder import Encoder, encode_each, encode_signal
from coinpp.entropy import NeighbourContext
from coinpp.errors import CodecError
from coinpp.fit import fit_latents, refine_latents
from coinpp.modalities import Signal
from coinpp.patching import patch_coordinates, split
from coinpp.presets import AdamPhase, EncoderPreset, SGDPhase


def _image(h=40, w=56, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / 20.0
    v = np.stack([np.sin(x + y), np.cos(2 * x), np.sin(3 * y)], -1) * 0.3 + 0.5 + rng.normal(0, 0.02, (h, w, 3))
    return Signal(np.clip(v, 0, 1).astype(np.float32), {"channels": 3})


def test_refinement_never_ends_worse_than_it_starts(tiny_codec):
    signal = _image()
    targets = split(signal.values, tiny_codec.patch)[0]
    coords = patch_coordinates(tiny_codec.patch)
    z = fit_latents(tiny_codec.net, coords, targets, 2, "cpu")
    q = tiny_codec.quantizer
    refined = refine_latents(tiny_codec.net, coords, targets, z, 6, 0.5 * q.step, q, "cpu")
    t = torch.from_numpy(targets)

    def loss(lat):
        return tiny_codec.net.loss_and_latent_grad(coords, torch.from_numpy(q.dequantize(q.quantize(lat))), t)[0]

    before, after = loss(z), loss(refined)
    assert (after <= before + 1e-7).all() and after.mean() < before.mean()


def test_context_codec_round_trips_through_the_pipeline(tiny_context_codec):
    signal = _image()
    enc = encode_signal(signal, modalities.get("image"), tiny_context_codec, device="cpu")
    p = parse(enc.data)
    assert isinstance(p.spec.entropy, NeighbourContext) and np.array_equal(decode_symbols(p), enc.symbols)
    decoded, _ = decode_bytes(enc.data, device="cpu")
    assert decoded.values.shape == signal.values.shape


def test_refinement_is_what_encode_does(tiny_context_codec):
    """encode_signal = fit, refine through the codec's quantizer, pack; bench and batch do the same."""
    image = modalities.get("image")
    signal = _image(seed=1)
    e = Encoder(tiny_context_codec, image, device="cpu")
    fitted = e.fit([signal])[0]
    refined = e.refine(fitted, signal)
    assert not torch.equal(refined, fitted)
    assert encode_signal(signal, image, tiny_context_codec, device="cpu").data == e.pack(refined, signal).data
    assert next(encode_each(signal, [e])).encoded.data == e.pack(refined, signal).data


def test_context_config_is_covered_by_the_hash(tiny_context_codec):
    folder = tiny_context_codec.folder
    cfg = json.loads((folder / "config.json").read_text())
    cfg["context"]["adapt"] = 32
    (folder / "config.json").write_text(json.dumps(cfg))
    codecs.clear_cache()
    with pytest.raises(CodecError, match="hash"):
        codecs.load(tiny_context_codec.name)


def test_codecs_without_context_keep_their_hash(tiny_codec):
    cfg = json.loads((tiny_codec.folder / "config.json").read_text())
    assert "context" not in cfg and specs.codec_hash(tiny_codec.folder, cfg).hex() == cfg["hash"]


def test_rate_distortion_rounding_is_encoder_only(tiny_context_codec):
    """The preset's round phase changes the symbols an encoder picks, not the hash: such files decode
    with any copy of the codec, and lambda 0 is plain rounding."""
    image = modalities.get("image")
    signal = _image(seed=2)
    e = Encoder(tiny_context_codec, image, device="cpu")
    fitted = e.refine(e.fit([signal])[0], signal)
    plain = e.pack(fitted, signal)
    assert np.array_equal(plain.symbols, tiny_context_codec.quantizer.quantize(fitted))
    folder = tiny_context_codec.folder
    cfg = json.loads((folder / "config.json").read_text())
    cfg["presets"]["default"].append({"phase": "round", "rd_lambda": 0.5})
    (folder / "config.json").write_text(json.dumps(cfg))
    codecs.clear_cache()
    rd_codec = codecs.load(tiny_context_codec.name)
    assert rd_codec.hash == tiny_context_codec.hash and rd_codec.preset().rd_lambda == 0.5
    rd = Encoder(rd_codec, image, device="cpu").pack(fitted, signal)
    assert len(rd.data) < len(plain.data) and not np.array_equal(rd.symbols, plain.symbols)
    assert np.array_equal(decode_symbols(parse(rd.data)), rd.symbols)
    assert Encoder(rd_codec, image, rd_codec.preset().without("round")).pack(fitted, signal).data == plain.data
    cfg["presets"]["default"][-1]["rd_lambda"] = -1
    (folder / "config.json").write_text(json.dumps(cfg))
    codecs.clear_cache()
    with pytest.raises(CodecError, match="rd_lambda"):
        codecs.load(tiny_context_codec.name)


def test_bit_independent_refinement_is_shared_by_the_bit_depths(tiny_codec):
    """An Adam phase with one rate for every latent dimension (unquantized) is the same whatever the bit
    depth, so two bit depths of one network get the same refined latents and bench refines once."""
    root = Path(os.environ["COIN_CODECS_PATH"])
    image = modalities.get("image")
    made = []
    for bits in (3, 5):
        c = make_tiny_codec(root, f"tiny-ctx-b{bits}", bits=bits, context=True)
        cfg = json.loads((c.folder / "config.json").read_text())
        cfg["presets"]["default"][1] = {"phase": "adam", "steps": 4, "lr": 0.01}
        (c.folder / "config.json").write_text(json.dumps(cfg))
        codecs.clear_cache()
        made.append(Encoder(codecs.load(c.name), image, device="cpu"))
    a, b = made
    assert a.fit_key() == b.fit_key() and a.refine_key() == b.refine_key() != "none"
    signal = _image(seed=3)
    fitted = a.fit([signal])[0]
    ra, rb = (e.refine(fitted, signal) for e in made)
    assert torch.equal(ra, rb) and not torch.equal(ra, fitted)
    quantized = Encoder(make_tiny_codec(root, "tiny-ctx-b4", context=True), image)  # through its own quantizer
    assert quantized.refine_key() not in (a.refine_key(), "none")
    cfg = json.loads((a.codec.folder / "config.json").read_text())
    cfg["presets"]["default"][1]["lr"] = 0
    (a.codec.folder / "config.json").write_text(json.dumps(cfg))
    codecs.clear_cache()
    with pytest.raises(CodecError, match="adam needs an lr"):
        codecs.load(a.codec.name)


def test_rate_penalty_gradient_and_what_it_buys(tiny_codec):
    """fit.RatePenalty: its gradient is that of its value, and refinement with it ends with latents
    nearer the centres (fewer bits by the stand-in) than refinement without."""
    from coinpp.fit import RatePenalty

    q = tiny_codec.quantizer
    signal = _image(seed=4)
    targets = split(signal.values, tiny_codec.patch)[0]
    coords = patch_coordinates(tiny_codec.patch)
    fitted = fit_latents(tiny_codec.net, coords, targets, 2, "cpu")
    penalty = RatePenalty.from_latents(q, fitted, 1e-3)
    assert penalty.scale.shape == (len(q.low),) and (penalty.scale > 0).all()
    z = torch.randn(5, len(q.low), dtype=torch.float64).requires_grad_(True)
    value, grad = penalty(z)
    value.sum().backward()
    assert torch.allclose(grad, z.grad)
    lr = np.full(len(q.low), 0.05, dtype=np.float32)
    free = refine_latents(tiny_codec.net, coords, targets, fitted, 8, lr, None, "cpu")
    paid = refine_latents(tiny_codec.net, coords, targets, fitted, 8, lr, None, "cpu", penalty=penalty)
    assert penalty(paid)[0].mean() < penalty(free)[0].mean()


def test_half_steps_are_an_encoder_setting(tiny_codec):
    """SGD steps on pixel halves change the fitted latents and the fit key, not the hash, and the file
    decodes as any other."""
    image = modalities.get("image")
    cfg = json.loads((tiny_codec.folder / "config.json").read_text())
    cfg["presets"]["default"] = [{"phase": "sgd", "steps": 3}]
    (tiny_codec.folder / "config.json").write_text(json.dumps(cfg))
    codecs.clear_cache()
    plain = Encoder(codecs.load(tiny_codec.name), image, device="cpu")
    cfg["presets"]["default"] = [{"phase": "sgd", "steps": 2, "half": True}, {"phase": "sgd", "steps": 1}]
    (tiny_codec.folder / "config.json").write_text(json.dumps(cfg))
    codecs.clear_cache()
    half = Encoder(codecs.load(tiny_codec.name), image, device="cpu")
    assert half.preset.half_steps == 2 and plain.preset.half_steps == 0
    assert half.preset.sgd_steps == plain.preset.sgd_steps == 3
    assert half.codec.hash == plain.codec.hash and half.fit_key() != plain.fit_key()
    assert Encoder(half.codec, image, steps=1).preset.half_steps == 1  # --steps keeps the halves first
    signal = _image(seed=5)
    za, zb = plain.fit([signal])[0], half.fit([signal])[0]
    assert not torch.allclose(za, zb, atol=1e-5)
    enc = half.encode(signal)
    decoded, _ = decode_bytes(enc.data, device="cpu")
    assert decoded.values.shape == signal.values.shape


@pytest.mark.parametrize("value", [-1, 2.5, "4", True, 1001])
def test_half_steps_out_of_range_refuse_a_codec_written_before_presets(tiny_codec, value):
    """A config without presets (coin 0.1) is read from its encode_steps and encode_half_steps."""
    cfg = json.loads((tiny_codec.folder / "config.json").read_text())
    del cfg["presets"]
    cfg["encode_steps"], cfg["encode_half_steps"] = 3, value
    (tiny_codec.folder / "config.json").write_text(json.dumps(cfg))
    codecs.clear_cache()
    with pytest.raises(CodecError, match="encode_half_steps"):
        codecs.load(tiny_codec.name)


def test_a_codec_written_before_presets_loads_its_encoder_settings(tiny_codec):
    cfg = json.loads((tiny_codec.folder / "config.json").read_text())
    del cfg["presets"]
    cfg |= {"encode_steps": 5, "encode_half_steps": 2, "refine": {"steps": 3, "latent_lr": 0.01, "quantized": False}}
    (tiny_codec.folder / "config.json").write_text(json.dumps(cfg))
    codecs.clear_cache()
    preset = codecs.load(tiny_codec.name).preset()
    assert preset == EncoderPreset("default", (SGDPhase(2, True), SGDPhase(3), AdamPhase(3, 0.01)))


@pytest.mark.parametrize("phases, message", [
    ([{"phase": "adam", "steps": 2, "lr": 0.1}, {"phase": "sgd", "steps": 2}], "must run"),
    ([{"phase": "sgd", "steps": 2}, {"phase": "sgd", "steps": 2, "half": True}], "half steps first"),
    ([{"phase": "sgd", "steps": -1}], "whole number"),
    ([{"phase": "sgd", "steps": 2}, {"phase": "filter", "steps": 2, "lr": 0.1}], "post-filter"),
    ([{"phase": "sgd", "steps": 2}, {"phase": "adam", "steps": 2, "lr": 0.1, "rate_lambda": 0.1}], "rate_model"),
    ([{"phase": "sgd", "steps": 2}, {"phase": "warp", "steps": 2}], "unknown phase"),
    ([{"phase": "sgd", "steps": 2, "speed": 3}], "speed"),
])
def test_bad_presets_refuse_the_codec(tiny_codec, phases, message):
    cfg = json.loads((tiny_codec.folder / "config.json").read_text())
    cfg["presets"]["default"] = phases
    (tiny_codec.folder / "config.json").write_text(json.dumps(cfg))
    codecs.clear_cache()
    with pytest.raises(CodecError, match=message):
        codecs.load(tiny_codec.name)


def test_fast_preset_drops_the_filter_phase_only():
    preset = EncoderPreset.from_list("default", [{"phase": "sgd", "steps": 4, "half": True},
                                                 {"phase": "adam", "steps": 7, "lr": 0.0017},
                                                 {"phase": "filter", "steps": 4, "lr": 0.00017},
                                                 {"phase": "round", "rd_lambda": 0.1}])
    fast = preset.without("filter")
    assert [p.kind for p in fast.phases] == ["sgd", "adam", "round"] and fast.rd_lambda == 0.1
    assert EncoderPreset.from_list("default", preset.to_list()) == preset


def test_matmul_setting_reaches_every_phase_and_round_trips():
    preset = EncoderPreset.from_list("default", [{"phase": "sgd", "steps": 4, "half": True},
                                                 {"phase": "sgd", "steps": 2},
                                                 {"phase": "adam", "steps": 7, "lr": 0.0017},
                                                 {"phase": "filter", "steps": 4, "lr": 0.00017},
                                                 {"phase": "round", "rd_lambda": 0.1}])
    bf16 = preset.with_setting("all.matmul", "bfloat16")
    assert [getattr(p, "matmul", None) for p in bf16.phases] == ["bfloat16"] * 4 + [None]
    assert bf16.sgd_steps == 6 and bf16.half_steps == 4  # the steps themselves untouched
    assert EncoderPreset.from_list("default", bf16.to_list()) == bf16
    assert bf16.with_setting("sgd.steps", 3).sgd_matmul == "bfloat16"  # rebuilt sgd phases keep it
    assert preset.to_list() == EncoderPreset.from_list("default", preset.to_list()).to_list()
    assert "matmul" not in json.dumps(preset.to_list())  # float32, the default, is not written
    with pytest.raises(ValueError, match="matmul must be one of"):
        preset.with_setting("adam.matmul", "float16")
    with pytest.raises(ValueError, match="same matmul"):
        EncoderPreset.from_list("x", [{"phase": "sgd", "steps": 1, "half": True, "matmul": "bfloat16"},
                                      {"phase": "sgd", "steps": 1}])


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="no native bfloat16 on this CPU")
def test_bfloat16_products_change_the_latents_a_little_and_the_file_decodes(tiny_codec):
    image, signal = modalities.get("image"), _image(seed=3)
    f32 = Encoder(tiny_codec, image, "default", device="cpu")
    bf16 = Encoder(tiny_codec, image, tiny_codec.preset().with_setting("all.matmul", "bfloat16"), device="cpu")
    za, zb = f32.fit([signal])[0], bf16.fit([signal])[0]
    assert not torch.equal(za, zb)  # the products did run in bfloat16
    assert torch.allclose(za, zb, atol=0.05 * float(za.abs().max()))
    assert tiny_codec.net.hidden_dtype == torch.float32  # restored after the phase
    mse = []
    for enc in (f32, bf16):
        decoded, _ = decode_bytes(enc.encode(signal).data, device="cpu")
        mse.append(float(np.mean((decoded.values.astype(np.float64) - signal.values) ** 2)))
    assert mse[1] < 1.2 * mse[0] + 1e-5


def _record_gradient_calls(net, monkeypatch):
    """Every (coordinates, latents) the network's loss-and-gradient is called with, and the real method."""
    calls, real = [], type(net).loss_and_latent_grad

    def recording(self, c, lat, t):
        calls.append((c, lat))
        return real(self, c, lat, t)

    monkeypatch.setattr(type(net), "loss_and_latent_grad", recording)
    return calls, real


def test_settled_patches_stop_early_and_never_end_worse(tiny_codec, monkeypatch):
    """A flat patch stops improving at once; with `settle` it leaves the batch, the others go on."""
    signal = _image()
    values = signal.values.copy()
    values[:, :24] = 0.5  # the left patches flat
    targets = split(values, tiny_codec.patch)[0]
    coords, net = patch_coordinates(tiny_codec.patch), tiny_codec.net
    z = fit_latents(net, coords, targets, 2, "cpu")
    calls, real = _record_gradient_calls(net, monkeypatch)
    lr = np.full(net.cfg.latent_dim, 0.01, dtype=np.float32)
    full = refine_latents(net, coords, targets, z, 8, lr, None, "cpu")
    full_rows, calls[:] = sum(len(lat) for _, lat in calls), []
    settled = refine_latents(net, coords, targets, z, 8, lr, None, "cpu", settle=0.05)
    assert sum(len(lat) for _, lat in calls) < full_rows
    t = torch.from_numpy(targets)
    start, a, b = (real(net, coords, lat, t)[0] for lat in (z, full, settled))
    assert (b <= start + 1e-7).all() and b.mean() < start.mean()
    assert float(b.mean()) < 1.5 * float(a.mean())


def test_adam_half_steps_see_half_the_pixels_and_never_end_worse(tiny_codec, monkeypatch):
    from coinpp.patching import checkerboard

    signal = _image(seed=4)
    targets = split(signal.values, tiny_codec.patch)[0]
    coords, net = patch_coordinates(tiny_codec.patch), tiny_codec.net
    z = fit_latents(net, coords, targets, 1, "cpu")
    calls, real = _record_gradient_calls(net, monkeypatch)
    lr = np.full(net.cfg.latent_dim, 0.02, dtype=np.float32)
    halves = [checkerboard(tiny_codec.patch, k) for k in range(3)]
    out = refine_latents(net, coords, targets, z, 6, lr, None, "cpu", subsets=halves)
    n = len(coords)
    pixels = [len(c) for c, _ in calls]
    assert pixels[:3] == [n // 2] * 3 and set(pixels[3:]) == {n}  # per chunk: three halves, then whole
    t = torch.from_numpy(targets)
    start, after = real(net, coords, z, t)[0], real(net, coords, out, t)[0]
    assert (after <= start + 1e-7).all() and after.mean() < start.mean()
