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
from coinpp.errors import CodecError
from coinpp.fit import fit_latents, refine_latents
from coinpp.modalities import Signal
from coinpp.patching import patch_coordinates, split
from coinpp.pipeline import decode_bytes, decode_symbols, encode_signal, fit_signal, pack, parse, refine_signal


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
    assert p.codec.context is not None and np.array_equal(decode_symbols(p), enc.symbols)
    decoded, _ = decode_bytes(enc.data, device="cpu")
    assert decoded.values.shape == signal.values.shape


def test_refinement_is_what_encode_does(tiny_context_codec):
    """encode_signal = fit, refine through the codec's quantizer, pack; bench and batch do the same."""
    image = modalities.get("image")
    signal = _image(seed=1)
    fitted = fit_signal(signal, image, tiny_context_codec, device="cpu")
    refined = refine_signal(fitted, signal, image, tiny_context_codec, "cpu")
    assert not torch.equal(refined, fitted)
    assert encode_signal(signal, image, tiny_context_codec, device="cpu").data == \
        pack(refined, signal, image, tiny_context_codec).data


def test_context_config_is_covered_by_the_hash(tiny_context_codec):
    folder = tiny_context_codec.folder
    cfg = json.loads((folder / "config.json").read_text())
    cfg["context"]["adapt"] = 32
    (folder / "config.json").write_text(json.dumps(cfg))
    codecs._load_cached.cache_clear()
    with pytest.raises(CodecError, match="hash"):
        codecs.load(tiny_context_codec.name)


def test_codecs_without_context_keep_their_hash(tiny_codec):
    cfg = json.loads((tiny_codec.folder / "config.json").read_text())
    assert "context" not in cfg and codecs.codec_hash(tiny_codec.folder, cfg).hex() == cfg["hash"]


def test_rate_distortion_rounding_is_encoder_only(tiny_context_codec):
    """The codec's rdo lambda changes the symbols an encoder picks, not the hash: such files decode
    with any copy of the codec, and lambda 0 is plain rounding."""
    image = modalities.get("image")
    signal = _image(seed=2)
    fitted = refine_signal(fit_signal(signal, image, tiny_context_codec, device="cpu"), signal, image,
                           tiny_context_codec, "cpu")
    plain = pack(fitted, signal, image, tiny_context_codec)
    assert np.array_equal(plain.symbols, tiny_context_codec.quantizer.quantize(fitted))
    folder = tiny_context_codec.folder
    cfg = json.loads((folder / "config.json").read_text())
    cfg["rdo"] = {"lambda": 0.5}
    (folder / "config.json").write_text(json.dumps(cfg))
    codecs._load_cached.cache_clear()
    rd_codec = codecs.load(tiny_context_codec.name)
    assert rd_codec.hash == tiny_context_codec.hash and rd_codec.rd_lambda == 0.5
    rd = pack(fitted, signal, image, rd_codec)
    assert len(rd.data) < len(plain.data) and not np.array_equal(rd.symbols, plain.symbols)
    assert np.array_equal(decode_symbols(parse(rd.data)), rd.symbols)
    assert pack(fitted, signal, image, rd_codec, rd_lambda=0.0).data == plain.data
    cfg["rdo"] = {"lambda": -1}
    (folder / "config.json").write_text(json.dumps(cfg))
    codecs._load_cached.cache_clear()
    with pytest.raises(CodecError, match="rdo"):
        codecs.load(tiny_context_codec.name)


def test_bit_independent_refinement_is_shared_by_the_bit_depths(tiny_codec):
    """refine with latent_lr (unquantized) uses one rate for every dimension whatever the bit depth,
    so two bit depths of one network get the same refined latents and bench refines once."""
    root = Path(os.environ["COIN_CODECS_PATH"])
    image = modalities.get("image")
    made = []
    for bits in (3, 5):
        c = make_tiny_codec(root, f"tiny-ctx-b{bits}", bits=bits, context=True)
        cfg = json.loads((c.folder / "config.json").read_text())
        cfg["refine"] = {"steps": 4, "latent_lr": 0.01, "quantized": False}
        (c.folder / "config.json").write_text(json.dumps(cfg))
        codecs._load_cached.cache_clear()
        made.append(codecs.load(c.name))
    a, b = made
    assert codecs.fit_key(a) == codecs.fit_key(b) and a.refine_key == b.refine_key != "none"
    signal = _image(seed=3)
    fitted = fit_signal(signal, image, a, device="cpu")
    ra, rb = (refine_signal(fitted, signal, image, c, "cpu") for c in made)
    assert torch.equal(ra, rb) and not torch.equal(ra, fitted)
    quantized = make_tiny_codec(root, "tiny-ctx-b4", context=True)  # refines through its own quantizer
    assert quantized.refine_key not in (a.refine_key, "none")
    cfg = json.loads((a.folder / "config.json").read_text())
    cfg["refine"]["quantized"] = True
    (a.folder / "config.json").write_text(json.dumps(cfg))
    codecs._load_cached.cache_clear()
    with pytest.raises(CodecError, match="latent_lr"):
        codecs.load(a.name)


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
    """encode_half_steps changes the fitted latents and the fit key, not the hash, and the file
    decodes as any other."""
    image = modalities.get("image")
    cfg = json.loads((tiny_codec.folder / "config.json").read_text())
    cfg["encode_steps"] = 3
    (tiny_codec.folder / "config.json").write_text(json.dumps(cfg))
    codecs._load_cached.cache_clear()
    plain = codecs.load(tiny_codec.name)
    cfg["encode_half_steps"] = 2
    (tiny_codec.folder / "config.json").write_text(json.dumps(cfg))
    codecs._load_cached.cache_clear()
    half = codecs.load(tiny_codec.name)
    assert half.half_steps == 2 and plain.half_steps == 0
    assert half.hash == plain.hash and codecs.fit_key(half) != codecs.fit_key(plain)
    signal = _image(seed=5)
    za, zb = fit_signal(signal, image, plain, device="cpu"), fit_signal(signal, image, half, device="cpu")
    assert not torch.allclose(za, zb, atol=1e-5)
    enc = encode_signal(signal, image, half, device="cpu")
    decoded, _ = decode_bytes(enc.data, device="cpu")
    assert decoded.values.shape == signal.values.shape


@pytest.mark.parametrize("value", [-1, 2.5, "4", True, 1001])
def test_half_steps_out_of_range_refuse_the_codec(tiny_codec, value):
    cfg = json.loads((tiny_codec.folder / "config.json").read_text())
    cfg["encode_half_steps"] = value
    (tiny_codec.folder / "config.json").write_text(json.dumps(cfg))
    codecs._load_cached.cache_clear()
    with pytest.raises(CodecError, match="encode_half_steps"):
        codecs.load(tiny_codec.name)
