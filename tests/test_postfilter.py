"""Decoder-side post-filter: learns what it is trained on, tiles exactly, stays outside the hash and
the normative decode, and runs on the file's own grid (another grid gets its correction resampled)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import make_tiny_codec

from coinpp import codec as codecs
from coinpp import fit, modalities
from coinpp import postfilter as pf
from coinpp.bitstream import parse
from coinpp.cli import cli
from coinpp.cli import train as cli_train
from coinpp.decoder import decode_bytes
from coinpp.encoder import Encoder, encode_signal
from coinpp.errors import CodecError
from coinpp.modalities import Resolution, Signal
from coinpp.spec import PostFilterSpec, default_phases
from coinpp.training import postfilter as pft


def _seamed_pairs(n: int, size: int = 32, period: int = 8, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Smooth images with a constant offset on the first row and column of every period x period
    block: the kind of seam a patch codec leaves, which a filter knowing the phase can remove."""
    rng = np.random.default_rng(seed)
    pairs = []
    yy, xx = np.mgrid[0:size, 0:size] / size
    for _ in range(n):
        a = rng.uniform(0.3, 0.7, 3)
        clean = np.clip(a + 0.2 * np.sin(2 * np.pi * (yy[..., None] * rng.uniform(0.5, 1.5)
                                                       + xx[..., None] * rng.uniform(0.5, 1.5))), 0, 1)
        seam = (np.arange(size) % period == 0)
        decoded = clean + 0.08 * (seam[:, None] | seam[None, :])[..., None]
        pairs.append((decoded.astype(np.float32), np.round(clean * 255).astype(np.uint8)))
    return pairs


def test_training_removes_a_seam_it_can_see():
    cfg = PostFilterSpec(channels=8, layers=3, period=(8, 8))
    net, summary = pft.train(_seamed_pairs(12), _seamed_pairs(3, seed=1), cfg, steps=300, batch=8, window=16,
                            lr=3e-3, val_every=100)
    assert summary["val_psnr_gain_db"] > 3.0
    d, o = _seamed_pairs(1, seed=2)[0]
    err_before = np.abs(d - o / 255).mean()
    err_after = np.abs(np.clip(pf.apply(net, d), 0, 1) - o / 255).mean()
    assert err_after < 0.5 * err_before


def test_a_fresh_filter_nearly_keeps_the_image_and_tiles_exactly():
    torch.manual_seed(0)
    net = pf.PostFilter(PostFilterSpec(channels=8, layers=4, period=(8, 8))).eval()
    img = np.random.default_rng(0).uniform(0, 1, (37, 53, 3)).astype(np.float32)
    whole = pf.apply(net, img, tile=1024)
    assert np.abs(whole - img).max() < 0.05  # close to the identity before training
    tiled = pf.apply(net, img, tile=16)
    assert np.allclose(tiled, whole, atol=1e-5)


def test_views_see_seams_where_the_unflipped_image_has_them():
    # On a grid of whole patches, a flipped or transposed view has its seams at the same phases.
    base = pf.view_positions((8, 8), pf.VIEWS[0], (16, 24), 0, 0, 16, 24, torch.device("cpu"))
    for view in pf.VIEWS[1:4]:
        assert torch.allclose(pf.view_positions((8, 8), view, (16, 24), 0, 0, 16, 24, torch.device("cpu")), base,
                              atol=1e-5)
    turned = pf.view_positions((8, 8), pf.VIEWS[4], (16, 24), 0, 0, 24, 16, torch.device("cpu"))
    assert torch.allclose(turned, pf.view_positions((8, 8), pf.VIEWS[0], (24, 16), 0, 0, 24, 16,
                                                     torch.device("cpu")), atol=1e-5)


def test_averaged_views_make_the_filter_symmetric_and_tile_exactly():
    torch.manual_seed(0)
    net = pf.PostFilter(PostFilterSpec(channels=8, layers=3, period=(8, 8))).eval()
    img = np.random.default_rng(1).uniform(0, 1, (24, 32, 3)).astype(np.float32)
    one = pf.apply(net, img)
    two = pf.apply(net, img, views=2)
    assert not np.allclose(one, two, atol=1e-4)  # the filter alone is not symmetric
    mirrored = pf.apply(net, np.ascontiguousarray(img[:, ::-1]), views=2)[:, ::-1]
    assert np.allclose(two, mirrored, atol=1e-5)  # the average over {itself, its mirror} is
    eight = pf.apply(net, img, views=8)
    turned = pf.apply(net, np.ascontiguousarray(img.transpose(1, 0, 2)), views=8).transpose(1, 0, 2)
    assert np.allclose(eight, turned, atol=1e-5)
    assert np.allclose(pf.apply(net, img, views=8, tile=8), eight, atol=1e-5)
    odd = np.random.default_rng(2).uniform(0, 1, (21, 30, 3)).astype(np.float32)  # partial patches too
    assert np.allclose(pf.apply(net, odd, views=4, tile=8), pf.apply(net, odd, views=4), atol=1e-5)
    with pytest.raises(ValueError):
        pf.apply(pf.PostFilter(PostFilterSpec(channels=4, layers=2, period=(8, 4))), img, views=5)


def test_config_is_checked():
    with pytest.raises(ValueError):
        PostFilterSpec.from_dict({"channels": 0, "layers": 5, "period": [32, 32]})
    with pytest.raises(ValueError):
        PostFilterSpec.from_dict({"channels": 8, "layers": 5, "period": [32]})


def _install(codec: codecs.Codec, seed: int = 0) -> pf.PostFilter:
    torch.manual_seed(seed)
    net = pf.PostFilter(PostFilterSpec(channels=4, layers=2, period=tuple(codec.patch)))
    with torch.no_grad():
        net.convs[-1].weight.normal_(0, 0.05)  # a filter that visibly changes the image
    pft.install(codec.folder, net.eval(), {"steps": 0})
    codecs.clear_cache()
    return net


def _image(h: int = 24, w: int = 40) -> Signal:
    rng = np.random.default_rng(3)
    return Signal(rng.uniform(0, 1, (h, w, 3)).astype(np.float32), {"channels": 3})


def test_installed_filter_keeps_hash_and_old_files_and_carries_its_correction_to_other_grids(tiny_codec):
    image = modalities.get("image")
    old = encode_signal(_image(), image, tiny_codec, device="cpu").data  # written before the filter
    plain, _ = decode_bytes(old, device="cpu")
    _install(tiny_codec)
    c = codecs.load(tiny_codec.name)
    assert c.postfilter is not None and c.hash == tiny_codec.hash  # the hash does not cover it
    filtered, _ = decode_bytes(old, device="cpu")  # the old file still decodes, now filtered
    normative, _ = decode_bytes(old, device="cpu", postfilter=False)
    assert np.array_equal(normative.values, plain.values)
    assert not np.allclose(filtered.values, plain.values, atol=1e-3)
    big_with, _ = decode_bytes(old, Resolution(scale=2), device="cpu")
    big_without, _ = decode_bytes(old, Resolution(scale=2), device="cpu", postfilter=False)
    # Another grid: the filter's own-grid correction, resampled onto it.
    correction = pf.carried(pf.apply(c.postfilter, plain.values) - plain.values, big_with.values.shape[:2])
    assert not np.allclose(big_with.values, big_without.values, atol=1e-3)
    np.testing.assert_allclose(big_with.values, np.clip(big_without.values + correction, 0, 1), atol=1e-5)


def test_carried_correction_is_the_identity_on_the_own_grid_and_smooth_between():
    rng = np.random.default_rng(0)
    c = rng.normal(0, 0.1, (16, 20, 3)).astype(np.float32)
    np.testing.assert_allclose(pf.carried(c, (16, 20)), c, atol=1e-6)
    flat = np.full((16, 20, 3), 0.25, np.float32)
    np.testing.assert_allclose(pf.carried(flat, (32, 40)), 0.25, atol=1e-5)  # a constant stays constant
    up = pf.carried(c, (32, 40))
    assert up.shape == (32, 40, 3) and abs(up.mean() - c.mean()) < 0.01


def test_tampered_filter_is_refused(tiny_codec):
    _install(tiny_codec)
    path = tiny_codec.folder / pf.FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    codecs.clear_cache()
    with pytest.raises(CodecError, match="SHA-256"):
        codecs.load(tiny_codec.name)


def _encoded_sample(tmp_path) -> CliRunner:
    """tmp_path/a.coin: a small image encoded by `coin encode` with the tiny codec."""
    modalities.get("image").write(_image(), tmp_path / "a.png")
    r = CliRunner()
    assert r.invoke(cli, ["encode", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.coin")]).exit_code == 0
    return r


def test_cli_decode_no_postfilter_and_info(tiny_codec, tmp_path):
    image = modalities.get("image")
    r = _encoded_sample(tmp_path)
    _install(tiny_codec)
    info = json.loads(r.invoke(cli, ["info", str(tmp_path / "a.coin"), "--json"]).output)
    assert info["postfilter"].startswith("yes")
    for args, name in (([], "f.png"), (["--no-postfilter"], "n.png")):
        res = r.invoke(cli, ["decode", str(tmp_path / "a.coin"), "-o", str(tmp_path / name), *args])
        assert res.exit_code == 0, res.output
    f, n = (image.read(tmp_path / x).values for x in ("f.png", "n.png"))
    assert not np.array_equal(f, n)
    listed = {c["name"]: c for c in json.loads(r.invoke(cli, ["codecs", "--json"]).output)}
    assert listed[tiny_codec.name]["postfilter"] is True


def test_cli_decode_postfilter_views_overrides_the_codecs_choice(tiny_codec, tmp_path):
    image = modalities.get("image")
    r = _encoded_sample(tmp_path)
    net = _install(tiny_codec)
    net.views = 2
    pft.install(tiny_codec.folder, net, {"steps": 0, "views_measured": {"on": "test crops",
                                                                        "gain_db": {"1": 0.1, "2": 0.15}}})
    codecs.clear_cache()
    assert "2 views +0.150 dB" in (tiny_codec.folder / "MODEL_CARD.md").read_text()
    outs = {}
    for args, name in (([], "own.png"), (["--postfilter-views", "2"], "two.png"),
                       (["--postfilter-views", "1"], "one.png")):
        res = r.invoke(cli, ["decode", str(tmp_path / "a.coin"), "-o", str(tmp_path / name), *args])
        assert res.exit_code == 0, res.output
        outs[name] = image.read(tmp_path / name).values
    assert np.array_equal(outs["own.png"], outs["two.png"])  # the codec's choice is 2 views
    assert not np.array_equal(outs["one.png"], outs["two.png"])
    for args in (["--postfilter-views", "9"], ["--postfilter-views", "2", "--no-postfilter"]):
        res = r.invoke(cli, ["decode", str(tmp_path / "a.coin"), "-o", str(tmp_path / "x.png"), *args])
        assert res.exit_code != 0 and "Traceback" not in res.output and not (tmp_path / "x.png").exists()
    folder = tmp_path / "coins"
    folder.mkdir()
    (folder / "a.png.coin").write_bytes((tmp_path / "a.coin").read_bytes())
    res = r.invoke(cli, ["decode", str(folder), "-o", str(tmp_path / "restored"), "--postfilter-views", "1"])
    assert res.exit_code == 0, res.output
    assert np.array_equal(image.read(tmp_path / "restored" / "a.png").values, outs["one.png"])

def _photos(tmp_path):
    """Four 64x64 noise images in a folder: one patch size of training data for the tiny codec."""
    data = tmp_path / "photos"
    data.mkdir()
    image = modalities.get("image")
    for i in range(4):
        image.write(Signal(np.random.default_rng(i).uniform(0, 1, (64, 64, 3)).astype(np.float32),
                           {"channels": 3}), data / f"p{i}.png")
    return data


def _with_gain(monkeypatch, gain_db: float) -> None:
    """Train for real, but report `gain_db` on the held-out crops: three steps on noise decide
    nothing, and the CLI installs a filter only when it helped there."""
    real = pft.train

    def train(*args, **kwargs):
        net, summary = real(*args, **kwargs)
        return net, {**summary, "best_step": summary["steps"], "val_psnr_gain_db": gain_db}

    monkeypatch.setattr(cli_train, "train_filter", train)


def test_cli_postfilter_trains_and_installs(tiny_codec, tmp_path, monkeypatch):
    _with_gain(monkeypatch, 0.05)
    data = _photos(tmp_path)
    args = ["postfilter", tiny_codec.name, "--data", str(data), "--crops", "2", "--size", "64", "--channels", "4",
            "--layers", "2", "--steps", "3", "--device", "cpu"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    cfg = json.loads((tiny_codec.folder / "config.json").read_text())
    assert cfg["postfilter"]["training"]["steps"] == 3 and cfg["postfilter"]["period"] == [8, 8]
    assert codecs.load(tiny_codec.name).postfilter is not None
    again = CliRunner().invoke(cli, args)  # already installed: refused without --force
    assert again.exit_code != 0 and "--force" in again.output
    assert "Traceback" not in again.output
    assert CliRunner().invoke(cli, [*args, "--force"]).exit_code == 0
    card = (tiny_codec.folder / "MODEL_CARD.md").read_text()
    assert card.count("- post-filter:") == 1 and "coin postfilter" in card


def test_cli_postfilter_views_are_kept_and_decoding_averages_them(tiny_codec, tmp_path, monkeypatch):
    _with_gain(monkeypatch, 0.05)
    data = _photos(tmp_path)
    args = ["postfilter", tiny_codec.name, "--data", str(data), "--crops", "2", "--size", "64", "--channels", "4",
            "--layers", "2", "--steps", "3", "--device", "cpu", "--augment", "--views", "4"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    entry = json.loads((tiny_codec.folder / "config.json").read_text())["postfilter"]
    assert entry["views"] == 4 and entry["training"]["augment"]
    assert entry["training"]["command"].endswith("--augment --views 4")
    assert "val_psnr_gain_views_db" in entry["training"]
    net = codecs.load(tiny_codec.name).postfilter
    assert net.views == 4
    img = np.random.default_rng(5).uniform(0, 1, (16, 24, 3)).astype(np.float32)
    assert np.array_equal(pf.apply(net, img), pf.apply(net, img, views=4))
    assert not np.allclose(pf.apply(net, img), pf.apply(net, img, views=1), atol=1e-5)
    bad = CliRunner().invoke(cli, [*args, "--force", "--views", "9"])
    assert bad.exit_code != 0 and "--views" in bad.output and "Traceback" not in bad.output


def test_a_grown_filter_computes_what_the_small_one_did():
    torch.manual_seed(0)
    small = pf.PostFilter(PostFilterSpec(channels=4, layers=3, period=(8, 8))).eval()
    for conv in small.convs:  # a trained-looking filter: corrections of a visible size
        conv.weight.data.normal_(0, 0.3)
    img = np.random.default_rng(3).uniform(0, 1, (16, 24, 3)).astype(np.float32)
    big = pft.grow(small, PostFilterSpec(channels=7, layers=5, period=(8, 8))).eval()
    assert len(big.convs) == 5 and big.convs[0].weight.shape[0] == 7
    assert np.abs(pf.apply(small, img) - img).max() > 0.05
    assert np.allclose(pf.apply(big, img), pf.apply(small, img), atol=1e-5)
    for bad in (PostFilterSpec(3, 5, (8, 8)), PostFilterSpec(7, 2, (8, 8)),
                PostFilterSpec(7, 5, (4, 4))):
        with pytest.raises(ValueError):
            pft.grow(small, bad)


def test_augmented_training_learns_a_seam_in_every_view():
    cfg = PostFilterSpec(channels=8, layers=3, period=(8, 8))
    net, summary = pft.train(_seamed_pairs(12), _seamed_pairs(3, seed=1), cfg, steps=300, batch=8, window=16,
                            lr=3e-3, val_every=100, augment=True)
    assert summary["augment"] and summary["val_psnr_gain_db"] > 1.0


def test_training_from_a_trained_filter_keeps_it_when_nothing_beats_it():
    cfg = PostFilterSpec(channels=8, layers=3, period=(8, 8))
    trained, first = pft.train(_seamed_pairs(12), _seamed_pairs(3, seed=1), cfg, steps=300, batch=8, window=16,
                              lr=3e-3, val_every=100)
    # A learning rate this large wrecks every later step, so the starting weights must win.
    net, summary = pft.train(_seamed_pairs(12), _seamed_pairs(3, seed=1), cfg, steps=20, batch=8, window=16,
                            lr=1.0, val_every=10, init=trained)
    assert summary["best_step"] == 0
    assert summary["val_psnr_gain_db"] == pytest.approx(first["val_psnr_gain_db"], abs=1e-3)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), trained.state_dict().values(),
                                                 strict=True))
    with pytest.raises(ValueError):
        pft.train(_seamed_pairs(2), _seamed_pairs(1), PostFilterSpec(4, 3, (8, 8)), steps=1, init=trained)


def test_cli_postfilter_init_starts_from_another_codecs_filter(tiny_codec, tmp_path, monkeypatch):
    data = _photos(tmp_path)
    base = ["postfilter", tiny_codec.name, "--data", str(data), "--crops", "1", "--size", "64", "--steps", "2",
            "--device", "cpu", "--force"]
    r = CliRunner().invoke(cli, [*base, "--channels", "4", "--layers", "2", "--init", tiny_codec.name])
    assert r.exit_code != 0 and "no post-filter" in r.output and "Traceback" not in r.output
    pft.install(tiny_codec.folder, pf.PostFilter(PostFilterSpec(4, 2, (8, 8))), {"steps": 1})
    codecs.clear_cache()
    r = CliRunner().invoke(cli, [*base, "--channels", "2", "--layers", "2", "--init", tiny_codec.name])
    assert r.exit_code != 0 and "--channels" in r.output and "Traceback" not in r.output  # it cannot shrink
    seen = {}
    real = pft.train

    def train(*args, **kwargs):
        seen["init"] = kwargs.get("init")
        net, summary = real(*args, **kwargs)
        return net, {**summary, "best_step": 0, "val_psnr_gain_db": 0.05}

    monkeypatch.setattr(cli_train, "train_filter", train)
    r = CliRunner().invoke(cli, [*base, "--channels", "4", "--layers", "2", "--init", tiny_codec.name,
                                 "--val-crops", "2", "--lr", "5e-4"])
    assert r.exit_code == 0 and "installed" in r.output, r.output
    assert seen["init"] is not None and seen["init"].cfg.to_dict() == PostFilterSpec(4, 2, (8, 8)).to_dict()
    training = json.loads((tiny_codec.folder / "config.json").read_text())["postfilter"]["training"]
    assert training["init"] == tiny_codec.name and training["lr"] == 5e-4
    assert "--init" in training["command"] and "--val-crops 2" in training["command"]
    assert training["command"].endswith(" --force")
    assert "starting from" in (tiny_codec.folder / "MODEL_CARD.md").read_text()


def test_cli_postfilter_init_own_starts_each_codec_from_its_own_filter(tiny_codec, tmp_path, monkeypatch):
    import os
    from pathlib import Path

    other = make_tiny_codec(Path(os.environ["COIN_CODECS_PATH"]), "tiny-b5", bits=5)
    data = _photos(tmp_path)
    base = ["postfilter", f"{tiny_codec.name},{other.name}", "--data", str(data), "--crops", "1", "--size", "64",
            "--steps", "2", "--channels", "4", "--layers", "3", "--device", "cpu", "--force", "--init", "own"]
    pft.install(tiny_codec.folder, pf.PostFilter(PostFilterSpec(4, 2, (8, 8))), {"steps": 1})
    codecs.clear_cache()
    r = CliRunner().invoke(cli, base)
    assert r.exit_code != 0 and f"{other.name!r} has no post-filter" in r.output and "Traceback" not in r.output
    pft.install(other.folder, pf.PostFilter(PostFilterSpec(3, 3, (8, 8))), {"steps": 1})
    codecs.clear_cache()
    assert CliRunner().invoke(cli, [*base, "--shared"]).exit_code != 0
    seen = []
    real = pft.train

    def train(*args, **kwargs):
        seen.append(kwargs.get("init").cfg.to_dict())
        net, summary = real(*args, **kwargs)
        return net, {**summary, "best_step": 0, "val_psnr_gain_db": 0.05}

    monkeypatch.setattr(cli_train, "train_filter", train)
    r = CliRunner().invoke(cli, base)
    assert r.exit_code == 0, r.output
    assert seen == [PostFilterSpec(4, 2, (8, 8)).to_dict(), PostFilterSpec(3, 3, (8, 8)).to_dict()]
    for c in (tiny_codec, other):
        assert json.loads((c.folder / "config.json").read_text())["postfilter"]["training"]["init"] == c.name


def test_crops_cache_round_trips_and_is_keyed(tmp_path):
    pairs = {"a": _seamed_pairs(2), "b": _seamed_pairs(1, seed=3)}
    path = tmp_path / "crops.npz"
    pft.save_pairs(path, pairs, {"codecs": ["a", "b"], "seed": 0})
    back = pft.load_pairs(path, {"seed": 0, "codecs": ["a", "b"]})
    assert list(back) == ["a", "b"] and len(back["a"]) == 2 and len(back["b"]) == 1
    for (d, o), (d2, o2) in zip(pairs["a"], back["a"], strict=True):
        assert np.array_equal(d, d2) and np.array_equal(o, o2)
    assert pft.load_pairs(path, {"codecs": ["a", "b"], "seed": 1}) is None  # made from something else
    assert pft.load_pairs(tmp_path / "missing.npz", {"seed": 0}) is None
    made = {"codecs": {"a": ["hash-a"], "b": ["hash-b"]}, "seed": 0}
    pft.save_pairs(path, pairs, made)
    assert list(pft.load_pairs(path, {"codecs": {"b": ["hash-b"]}, "seed": 0})) == ["b"]  # a subset is served
    assert pft.load_pairs(path, {"codecs": {"b": ["other"]}, "seed": 0}) is None  # b changed since
    assert pft.load_pairs(path, {"codecs": {"c": ["hash-c"]}, "seed": 0}) is None  # not made for c
    refine = {"steps": 7, "latent_lr": 0.0017, "quantized": False}  # a codec's refine entry, not in sorted order
    pft.save_pairs(path, pairs, {"codecs": {"a": ["hash-a", refine]}, "seed": 0})
    assert list(pft.load_pairs(path, {"codecs": {"a": ["hash-a", dict(refine)]}, "seed": 0})) == ["a"]
    (tmp_path / "notes.txt").write_text("not crops")
    with pytest.raises(ValueError, match="not a file of decoded crops"):
        pft.load_pairs(tmp_path / "notes.txt", {"seed": 0})


def test_cli_postfilter_reuses_cached_crops(tiny_codec, tmp_path, monkeypatch):
    _with_gain(monkeypatch, 0.05)
    data = _photos(tmp_path)
    cache = tmp_path / "crops.npz"
    args = ["postfilter", tiny_codec.name, "--data", str(data), "--crops", "1", "--size", "64", "--channels", "4",
            "--layers", "2", "--steps", "2", "--device", "cpu", "--force", "--crops-cache", str(cache)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    assert cache.exists() and cache.with_suffix(".val.npz").exists()
    def decoded_crops(*args, **kwargs):
        raise RuntimeError("decoded again")

    monkeypatch.setattr(cli_train, "decoded_crops", decoded_crops)
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0 and "decoded crops from" in r.output, r.output
    (tmp_path / "notes.txt").write_text("not crops")
    bad = CliRunner().invoke(cli, [*args[:-1], str(tmp_path / "notes.txt")])
    assert bad.exit_code != 0 and "not a file of decoded crops" in bad.output and "Traceback" not in bad.output
    assert (tmp_path / "notes.txt").read_text() == "not crops"
    other = CliRunner().invoke(cli, [*args[:5], "2", *args[6:]])  # --crops 2: not what the cache holds
    assert isinstance(other.exception, RuntimeError) and "decoded again" in str(other.exception)


def test_cli_postfilter_without_gain_installs_nothing(tiny_codec, tmp_path, monkeypatch):
    _with_gain(monkeypatch, -0.01)
    data = _photos(tmp_path)
    r = CliRunner().invoke(cli, ["postfilter", tiny_codec.name, "--data", str(data), "--crops", "1", "--size", "64",
                                 "--channels", "4", "--layers", "2", "--steps", "2", "--device", "cpu"])
    assert r.exit_code == 0 and "not installed" in r.output
    assert "postfilter" not in json.loads((tiny_codec.folder / "config.json").read_text())
    assert not (tiny_codec.folder / pf.FILE).exists()


def test_recording_a_bench_keeps_the_post_filter_section(tiny_codec):
    from coinpp.evaluation import bench

    pft.install(tiny_codec.folder, pf.PostFilter(PostFilterSpec(4, 2, (8, 8))), {"steps": 1})
    point = {"setting": "b4", "files": 2, "bpp": 0.5, "psnr": 20.0, "encode_s": 1.0, "decode_s": 0.1}
    for psnr in (20.0, 21.0):  # twice: the second run replaces the first's section
        bench.record_in_codecs({tiny_codec.name: [{**point, "psnr": psnr}]}, "kodak", "coin bench kodak")
    card = (tiny_codec.folder / "MODEL_CARD.md").read_text()
    assert card.count("## Metrics and results") == 1 and card.count("- post-filter:") == 1
    assert "PSNR 21.00 dB" in card and "20.00 dB" not in card and "through the post-filter" in card
    assert json.loads((tiny_codec.folder / "config.json").read_text())["measured"]["psnr_db"] == 21.0


def test_bench_can_measure_the_normative_decode(tiny_codec, tmp_path):
    from coinpp.evaluation import bench

    net = pf.PostFilter(PostFilterSpec(4, 2, (8, 8)))
    with torch.no_grad():
        net.convs[-1].bias.fill_(0.2)  # a filter that visibly changes the decoded image
    pft.install(tiny_codec.folder, net, {"steps": 1})
    codecs.clear_cache()
    path = sorted(_photos(tmp_path).glob("*.png"))[:1]
    filtered = bench.coin_rows(path, [tiny_codec.name], "cpu")[0]
    normative = bench.coin_rows(path, [tiny_codec.name], "cpu", postfilter=False)[0]
    cfg = json.loads((tiny_codec.folder / "config.json").read_text())
    del cfg["postfilter"]
    (tiny_codec.folder / "config.json").write_text(json.dumps(cfg))
    codecs.clear_cache()
    unfiltered = bench.coin_rows(path, [tiny_codec.name], "cpu")[0]
    assert filtered["bytes"] == normative["bytes"] == unfiltered["bytes"]
    assert normative["psnr"] == unfiltered["psnr"] and abs(filtered["psnr"] - normative["psnr"]) > 0.5


def test_bench_refuses_to_record_a_normative_run(tiny_codec, tmp_path):
    r = CliRunner().invoke(cli, ["bench", "kodak", "--out", str(tmp_path / "out"), "--codecs", tiny_codec.name,
                                 "--no-postfilter", "--record-in-codecs"])
    assert r.exit_code != 0 and "--record-in-codecs records the default preset" in r.output
    assert not (tmp_path / "out").exists()


def _views_mean(net: pf.PostFilter, x: torch.Tensor, views: int) -> torch.Tensor:
    """The filter averaged over views, differentiably (x (3, H, W)), as `apply` computes it."""
    h, w = x.shape[1:]
    total = 0
    for view in pf.usable_views(net.cfg.period)[:views]:
        dims = [d for d, f in ((1, view[1]), (2, view[2])) if f]
        v = x.transpose(1, 2) if view[0] else x
        v = v.flip(dims) if dims else v
        pos = pf.view_positions(net.cfg.period, view, (h, w), 0, 0, v.shape[1], v.shape[2], torch.device("cpu"))
        y = net(v[None], pos)[0]
        y = y.flip(dims) if dims else y
        total = total + (y.transpose(1, 2) if view[0] else y)
    return total / views


@pytest.mark.parametrize("views", [1, 4, 8])
def test_loss_and_input_grad_is_the_whole_images_gradient_whatever_the_tile(views):
    torch.manual_seed(0)
    net = pf.PostFilter(PostFilterSpec(channels=6, layers=3, period=(8, 8))).eval().requires_grad_(False)
    rng = np.random.default_rng(3)
    img = torch.from_numpy(rng.uniform(0, 1, (3, 21, 30)).astype(np.float32))
    goal = torch.from_numpy(rng.uniform(0, 1, (3, 21, 30)).astype(np.float32))
    x = img.clone().requires_grad_(True)
    ref = ((_views_mean(net, x, views) - goal) ** 2).sum()
    (g_ref,) = torch.autograd.grad(ref, x)
    for tile in (7, 256):
        for keep_bytes in (None, 0):  # the graphs kept from the one forward pass, or a second pass
            loss, g = fit.loss_and_input_grad(net, img, goal, views=views, tile=tile, keep_bytes=keep_bytes)
            assert loss == pytest.approx(ref.item(), rel=1e-5)
            assert torch.allclose(g, g_ref, atol=1e-5)
    assert fit.graph_bytes(net, 21, 30, views) <= fit.KEEP_GRAPH_BYTES  # the default kept them
    assert fit.graph_bytes(net, 5000, 5000, 8) > fit.KEEP_GRAPH_BYTES  # a large image does not


@pytest.mark.parametrize("keep", [True, False])
def test_filtered_loss_gradient_reaches_the_latents_exactly_and_refinement_lowers_it(keep, monkeypatch):
    from coinpp import fit
    from coinpp.fit import filtered_loss_and_latent_grad, refine_through_filter

    if not keep:  # an image too large to keep the activations: the network is evaluated again
        monkeypatch.setattr(fit, "KEEP_ACTIVATIONS_BYTES", 0)
    from coinpp.model import SirenConfig, build_network
    from coinpp.patching import patch_coordinates

    torch.manual_seed(0)
    net = build_network(SirenConfig(width=16, depth=2, latent_dim=6)).requires_grad_(False)
    filt = pf.PostFilter(PostFilterSpec(channels=6, layers=3, period=(8, 8))).eval().requires_grad_(False)
    rng = np.random.default_rng(0)
    # a goal the latents can reach: the filtered image of other latents (partial patches on both axes)
    z_goal = torch.from_numpy(rng.normal(0, 0.3, (6, 6)).astype(np.float32))
    out = net(patch_coordinates((8, 8)), z_goal).reshape(3, 2, 8, 8, 3).permute(4, 0, 2, 1, 3).reshape(3, 24, 16)
    goal = pf.apply(filt, out[:, :20, :13].clamp(0, 1).permute(1, 2, 0).numpy(), views=4)
    z = z_goal + torch.from_numpy(rng.normal(0, 0.3, (6, 6)).astype(np.float32))
    g_t = torch.from_numpy(goal).permute(2, 0, 1)
    loss, grad = filtered_loss_and_latent_grad(net, filt, (8, 8), g_t, z, views=4)
    zz = z.clone().requires_grad_(True)
    with torch.enable_grad():
        out = net(patch_coordinates((8, 8)), zz).reshape(3, 2, 8, 8, 3).permute(4, 0, 2, 1, 3).reshape(3, 24, 16)
        image = out[:, :20, :13].clamp(0, 1)
        ref = ((_views_mean(filt, image, 4) - g_t) ** 2).sum() / (8 * 8 * 3)
        (g_ref,) = torch.autograd.grad(ref, zz)
    assert loss == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(grad, g_ref, atol=1e-5 * float(g_ref.abs().max()))
    assert fit.filtered_loss(net, filt, (8, 8), g_t, z, views=4) == pytest.approx(loss, rel=1e-6)
    refined = refine_through_filter(net, filt, (8, 8), goal, z, steps=20, lr=0.1, views=4, device="cpu")
    assert filtered_loss_and_latent_grad(net, filt, (8, 8), g_t, refined, views=4)[0] < 0.8 * loss
    with pytest.raises(ValueError):
        refine_through_filter(net, filt, (8, 8), goal, z[:5], steps=2, lr=0.05, device="cpu")


def test_the_last_steps_loss_alone_picks_the_latents_the_full_evaluation_would(monkeypatch):
    """Both refinements judge their last update by its loss alone (no gradient): they must keep exactly
    the latents they kept when every step also took the gradient."""
    from coinpp import fit
    from coinpp.model import LatentModulatedSiren, SirenConfig, build_network
    from coinpp.patching import patch_coordinates

    torch.manual_seed(0)
    net = build_network(SirenConfig(width=16, depth=2, latent_dim=6)).requires_grad_(False)
    filt = pf.PostFilter(PostFilterSpec(channels=6, layers=3, period=(8, 8))).eval().requires_grad_(False)
    rng = np.random.default_rng(1)
    goal = rng.uniform(0, 1, (20, 13, 3)).astype(np.float32)
    z = torch.from_numpy(rng.normal(0, 0.3, (6, 6)).astype(np.float32))
    coords = patch_coordinates((8, 8))
    targets = torch.from_numpy(rng.uniform(0, 1, (6, 64, 3)).astype(np.float32))
    lr = np.full(6, 0.5, dtype=np.float32)
    with torch.no_grad():
        assert torch.equal(net.patch_mse(coords, z, targets), net.loss_and_latent_grad(coords, z, targets)[0])

    def refinements(steps: int) -> list[torch.Tensor]:
        # at this rate the last update helps four patches and not the other two; through the filter, at
        # 0.3 it helps the image and at 1.0 it does not: both outcomes of the last comparison are tested
        return [fit.refine_latents(net, coords, targets, z, steps, lr, device="cpu"),
                *(fit.refine_through_filter(net, filt, (8, 8), goal, z, steps=steps, lr=rate, views=4, device="cpu")
                  for rate in (0.3, 1.0))]

    fewer, alone = refinements(2), refinements(3)
    took_last = [not torch.equal(a, b) for a, b in zip(fewer[0], alone[0], strict=True)]
    assert any(took_last) and not all(took_last)
    assert not torch.equal(fewer[1], alone[1]) and torch.equal(fewer[2], alone[2])
    monkeypatch.setattr(LatentModulatedSiren, "patch_mse",
                        lambda self, c, zz, t: self.loss_and_latent_grad(c, zz, t)[0])
    monkeypatch.setattr(fit, "filtered_loss", lambda *a, **k: fit.filtered_loss_and_latent_grad(*a, **k)[0])
    for new, old in zip(alone, refinements(3), strict=True):  # against every step taking its gradient
        assert torch.equal(new, old)


def _set_refine(codec: codecs.Codec, refine: dict) -> codecs.Codec:
    path = codec.folder / "config.json"
    cfg = json.loads(path.read_text())
    cfg["presets"] = {"default": default_phases({"encode_steps": 2, "refine": refine})}
    path.write_text(json.dumps(cfg))
    codecs.clear_cache()
    return codecs.load(codec.name)


def test_encoder_steps_through_the_filter_lower_the_filtered_error_and_are_checked(tiny_codec):
    from coinpp.fit import filtered_loss_and_latent_grad

    image = modalities.get("image")
    signal = _image(20, 37)  # partial patches
    plain = {"steps": 2, "latent_lr": 0.01, "quantized": False}
    with pytest.raises(CodecError):  # steps through a filter the codec does not have
        _set_refine(tiny_codec, {**plain, "filter_steps": 4, "filter_lr": 0.01})
    _install(tiny_codec)
    for bad in ({"filter_steps": 0.5, "filter_lr": 0.01}, {"filter_steps": 4, "filter_lr": 0},
                {"filter_steps": 4, "filter_lr": 0.01, "filter_views": 9}):
        with pytest.raises(CodecError):
            _set_refine(tiny_codec, {**plain, **bad})
    c = _set_refine(tiny_codec, {**plain, "filter_steps": 6, "filter_lr": 0.01})
    e = Encoder(c, image, device="cpu")
    z = e.fit([signal])[0]
    before = e.refine(z, signal)
    after = e.through_filter(before, signal)
    goal = torch.from_numpy(signal.values).permute(2, 0, 1)
    loss_before = filtered_loss_and_latent_grad(c.net, c.postfilter, c.patch, goal, before)[0]
    loss_after = filtered_loss_and_latent_grad(c.net, c.postfilter, c.patch, goal, after)[0]
    assert loss_after < 0.99 * loss_before
    data = encode_signal(signal, image, c, device="cpu").data  # what coin encode writes: the steps included
    assert data == e.pack(after, signal).data
    assert parse(data).spec.hash == tiny_codec.hash  # encoder-only: the files decode as before


def test_aware_crops_are_what_coin_encode_writes_and_the_cli_needs_filter_steps(tiny_codec, tmp_path,
                                                                                  monkeypatch):
    images = [np.random.default_rng(5).uniform(0, 1, (64, 64, 3)).astype(np.float32)]
    _with_gain(monkeypatch, 0.05)
    data = _photos(tmp_path)
    args = ["postfilter", tiny_codec.name, "--data", str(data), "--crops", "1", "--size", "64", "--channels", "4",
            "--layers", "2", "--steps", "2", "--device", "cpu", "--force", "--aware"]
    r = CliRunner().invoke(cli, args)  # no filter and no filter_steps yet: refused in one line
    assert r.exit_code != 0 and "--aware needs" in r.output and "Traceback" not in r.output
    _install(tiny_codec)
    c = _set_refine(tiny_codec, {"steps": 2, "latent_lr": 0.01, "quantized": False, "filter_steps": 6,
                                 "filter_lr": 0.01})
    plain = pft.decoded_crops([c.name], images, 1, 64, seed=0, device="cpu")[c.name][0]
    aware = pft.decoded_crops([c.name], images, 1, 64, seed=0, device="cpu", aware=True)[c.name][0]
    crop = Signal(np.ascontiguousarray(images[0]), {"channels": 3})  # the one 64x64 crop is the image
    written, _ = decode_bytes(encode_signal(crop, modalities.get("image"), c, device="cpu").data, device="cpu",
                        postfilter=False)
    assert np.array_equal(aware[0], written.values) and not np.array_equal(plain[0], aware[0])
    assert np.array_equal(plain[1], aware[1])
    other = make_tiny_codec(tiny_codec.folder.parent, name="tiny-b5", bits=5)
    _install(other, seed=1)
    _set_refine(other, {"steps": 2, "latent_lr": 0.01, "quantized": False, "filter_steps": 6, "filter_lr": 0.01})
    cache = tmp_path / "crops.npz"
    both = [args[0], f"{c.name},{other.name}", *args[2:], "--crops-cache", str(cache)]
    _with_gain(monkeypatch, -1.0)  # nothing installed: the filters, and so the crops, stay as they are
    r = CliRunner().invoke(cli, both)
    assert r.exit_code == 0 and "not installed" in r.output, r.output
    def decoded_crops(*a, **k):
        raise RuntimeError("decoded again")

    real_decoded_crops = pft.decoded_crops
    monkeypatch.setattr(cli_train, "decoded_crops", decoded_crops)
    r = CliRunner().invoke(cli, [*args, "--crops-cache", str(cache)])  # one of the two: served from the file
    assert r.exit_code == 0 and "decoded crops from" in r.output, r.output
    monkeypatch.setattr(cli_train, "decoded_crops", real_decoded_crops)
    _with_gain(monkeypatch, 0.05)
    assert CliRunner().invoke(cli, [*args, "--crops-cache", str(cache)]).exit_code == 0
    cfg = json.loads((c.folder / "config.json").read_text())
    assert "--aware" in cfg["postfilter"]["training"]["command"]
    # The crops were made with the filter that has just been replaced: the cache does not serve them again.
    monkeypatch.setattr(cli_train, "decoded_crops", decoded_crops)
    again = CliRunner().invoke(cli, [*args, "--crops-cache", str(cache)])
    assert isinstance(again.exception, RuntimeError)


def test_cli_encode_fast_skips_the_steps_through_the_filter_and_decodes_the_same_way(tiny_codec, tmp_path):
    image = modalities.get("image")
    _install(tiny_codec)
    c = _set_refine(tiny_codec, {"steps": 2, "latent_lr": 0.01, "quantized": False, "filter_steps": 6,
                                 "filter_lr": 0.01})
    src = tmp_path / "in" / "a.png"
    src.parent.mkdir()
    image.write(_image(24, 40), src)
    signal = image.read(src)
    e = Encoder(c, image, device="cpu")
    refined = e.refine(e.fit([signal])[0], signal)
    quick = e.pack(refined, signal).data
    full = e.pack(e.through_filter(refined, signal), signal).data
    assert quick == Encoder(c, image, "fast", device="cpu").encode(signal).data
    assert quick != full
    for fast, want in ((True, quick), (False, full)):
        out = tmp_path / f"a-{fast}.coin"
        r = CliRunner().invoke(cli, ["encode", str(src), "-o", str(out), "--device", "cpu", "--no-check"]
                               + (["--fast"] if fast else []))
        assert r.exit_code == 0, r.output
        assert out.read_bytes() == want
    folder = tmp_path / "out"
    r = CliRunner().invoke(cli, ["encode", str(src.parent), "-o", str(folder), "--device", "cpu", "--fast"])
    assert r.exit_code == 0, r.output
    assert (folder / "a.png.coin").read_bytes() == quick
    assert decode_bytes(quick, device="cpu")[0].values.shape == (24, 40, 3)
    bad = CliRunner().invoke(cli, ["encode", str(src), "-o", str(tmp_path / "b.coin"), "--method", "coin", "--fast"])
    assert bad.exit_code != 0 and "--fast" in bad.output and "Traceback" not in bad.output


def test_filter_steps_walked_in_tiny_tiles_write_the_same_file(tiny_codec, monkeypatch):
    """The tile-by-tile path (large photos) against the whole-view path: the same bytes."""
    image = modalities.get("image")
    _install(tiny_codec)
    c = _set_refine(tiny_codec, {"steps": 2, "latent_lr": 0.01, "quantized": False, "filter_steps": 4,
                                 "filter_lr": 0.01})
    signal = _image(40, 56)
    whole = Encoder(c, image, device="cpu").encode(signal).data
    walked = []
    real = fit._loss_and_input_grad_by_tiles
    monkeypatch.setattr(fit, "_loss_and_input_grad_by_tiles", lambda *a: walked.append(a[-1]) or real(*a))
    monkeypatch.setattr(fit, "KEEP_GRAPH_BYTES", 0)
    monkeypatch.setattr(fit, "TILE", 8)
    assert Encoder(c, image, device="cpu").encode(signal).data == whole
    assert walked and set(walked) == {8}
