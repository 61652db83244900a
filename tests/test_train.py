"""Meta-learning: loss goes down, checkpoints resume, export writes a working codec, DDP runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import smooth_image
from PIL import Image

from coinpp import codec as codecs
from coinpp import modalities
from coinpp.cli import cli
from coinpp.encoder import Encoder
from coinpp.errors import InputError
from coinpp.model import SirenConfig
from coinpp.training.data import CropSampler
from coinpp.training.export import export_codecs
from coinpp.training.meta import TrainConfig, load_checkpoint, lr_factor, train

TINY = SirenConfig(width=16, depth=2, latent_dim=8)


def _signals(n=4, size=40):
    return [smooth_image(size, size + 3 * i, seed=i).astype(np.float32) / 255 for i in range(n)]


def _cfg(tmp_path, **kw):
    base = dict(data="mem", out=str(tmp_path / "run"), patch=(8, 8), model=TINY, batch=4, steps=30,
                val_every=10, val_patches=16, test_steps=3, outer_lr=1e-3, seed=0, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_crops_are_patch_sized_and_seeded():
    a = CropSampler(_signals(), (8, 8), seed=1).sample(5)
    b = CropSampler(_signals(), (8, 8), seed=1).sample(5)
    assert a.shape == (5, 64, 3) and a.min() >= 0 and a.max() <= 1
    assert np.array_equal(a.numpy(), b.numpy())


def test_schedule_is_constant_then_cosine_to_zero():
    assert lr_factor(0.0, 0.3) == 1.0 and lr_factor(0.7, 0.3) == 1.0
    assert 0 < lr_factor(0.85, 0.3) < 1 and lr_factor(1.0, 0.3) == pytest.approx(0.0)


def test_training_improves_validation_and_resumes(tmp_path):
    sig = _signals()
    best = train(_cfg(tmp_path), sig[:3], sig[3:], progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    vals = [r["val_psnr"] for r in log]
    assert max(vals[1:]) > vals[0]
    _, state, tensors = load_checkpoint(best)
    assert state["best_val_psnr"] == pytest.approx(max(vals))
    assert any(k.startswith("adam.") for k in tensors)  # optimizer state kept for resuming
    # Resume with a larger budget: continues from step 30, does not start over.
    train(_cfg(tmp_path, steps=40), sig[:3], sig[3:], progress=False)
    log2 = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log2[len(log):]] == [40, 40]
    _, last, _ = load_checkpoint(tmp_path / "run" / "last")
    assert last["step"] == 40


def test_validation_pools_the_error_and_rescores_a_run_begun_on_the_old_measure(tmp_path):
    """Validation is the PSNR of the pooled squared error (not a mean of per-crop PSNRs); a resumed run
    whose state predates it has its best checkpoint scored again before anything is compared."""
    import torch

    from coinpp.training.meta import validate

    sig = _signals()
    best = train(_cfg(tmp_path, steps=10), sig[:3], sig[3:], progress=False)
    net, state, _ = load_checkpoint(best)
    crops = CropSampler(sig[3:], (8, 8), seed=5).sample(8)
    coords = torch.rand(64, 2) * 2 - 1
    z = net.inner_loop(coords, crops, 3)
    with torch.no_grad():
        pooled = -10 * torch.log10((net(coords, z) - crops).pow(2).mean())
    assert validate(net, coords, crops, 3) == pytest.approx(float(pooled), rel=1e-5)
    assert state["val_metric"] == "pooled"
    for name in ("last", "best"):  # as a run begun before: a best on another scale
        path = tmp_path / "run" / f"{name}.json"
        old = json.loads(path.read_text())
        old.pop("val_metric")
        old["best_val_psnr"] = 99.0
        path.write_text(json.dumps(old))
    train(_cfg(tmp_path, steps=12), sig[:3], sig[3:], progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert not any("recovered" in r for r in log)  # no false alarm against the old scale
    assert load_checkpoint(tmp_path / "run" / "last")[1]["best_val_psnr"] < 99.0


def test_export_writes_verified_codecs_per_bit_depth(tmp_path):
    sig = _signals()
    best = train(_cfg(tmp_path, steps=10), sig[:3], sig[3:], progress=False)
    folders = export_codecs(best, sig[:3], tmp_path / "codecs", "img-tiny", [3, 5], encode_steps=3,
                            table_patches=64, device="cpu")
    assert [f.name for f in folders] == ["img-tiny-b3", "img-tiny-b5"]
    for f, bits in zip(folders, [3, 5], strict=True):
        c = codecs.load_folder(f)
        assert c.bits == bits and c.entropy.table.shape == (8, 1 << bits) and c.preset().sgd_steps == 3
        assert (f / "MODEL_CARD.md").read_text().startswith("# img-tiny")


def _write_folder(tmp_path: Path, n=5) -> Path:
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(n):
        Image.fromarray(smooth_image(24, 30, seed=i)).save(d / f"im{i}.png")
    return d


def test_cli_train_and_export(tmp_path):
    d = _write_folder(tmp_path)
    old = os.umask(0o022)
    try:
        r = CliRunner().invoke(cli, ["train", str(d), "--out", str(tmp_path / "run"), "--width", "16", "--depth",
                                     "2", "--latent", "4", "--patch", "8", "--steps", "6", "--val-every", "3",
                                     "--encode-steps", "2", "--export", "img-t", "--bits", "4",
                                     "--codecs-dir", str(tmp_path / "codecs"), "--device", "cpu"])
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    assert "best validation PSNR" in r.output
    folder = tmp_path / "codecs" / "img-t-b4"
    assert codecs.load_folder(folder).bits == 4
    # safetensors' writer makes 0600 files; the codec and the checkpoints honour the umask like every output
    written = [*folder.glob("*.safetensors"), *(tmp_path / "run").glob("*.safetensors")]
    assert len(written) >= 4 and {f.stat().st_mode & 0o777 for f in written} == {0o644}


def test_cli_export_with_neighbour_context_and_refinement(tmp_path, monkeypatch):
    from coinpp import modalities
    from coinpp.decoder import decode_bytes
    from coinpp.encoder import encode_signal

    d = _write_folder(tmp_path)
    r = CliRunner().invoke(cli, ["train", str(d), "--out", str(tmp_path / "run"), "--width", "16", "--depth", "2",
                                 "--latent", "4", "--patch", "8", "--steps", "4", "--val-every", "2",
                                 "--encode-steps", "2", "--export", "img-c", "--bits", "3,4", "--context", "4",
                                 "--refine-steps", "3", "--val-files", "1", "--decorrelate",
                                 "--codecs-dir", str(tmp_path / "codecs"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    c = codecs.load_folder(tmp_path / "codecs" / "img-c-b4")
    levels = c.quantizer.levels  # the decorrelated components may need a larger alphabet than 4 bits
    assert c.entropy.prior.shape == (4, 4, levels) and c.preset().adam.steps == 3
    assert c.quantizer.basis.shape == (4, 4) and c.spec.training["quantizer_transform"] == "principal-components"
    assert "principal components" in (c.folder / "MODEL_CARD.md").read_text()
    from coinpp.training.export import ADAPT_CHOICES

    assert c.entropy.adapt in ADAPT_CHOICES
    assert "left and upper neighbours" in (c.folder / "MODEL_CARD.md").read_text()
    monkeypatch.setenv("COIN_CODECS_PATH", str(tmp_path / "codecs"))
    codecs.clear_cache()
    image = modalities.get("image")
    sig = modalities.Signal(_signals(1)[0], {"channels": 3})
    enc = encode_signal(sig, image, codecs.load("img-c-b4"), device="cpu")
    assert decode_bytes(enc.data, device="cpu")[0].values.shape == sig.values.shape
    codecs.clear_cache()


def test_cli_exports_an_audio_codec_with_the_neighbour_context(tmp_path, monkeypatch):
    """Audio codecs may code each patch in the context of the one before (a one-row grid)."""
    import soundfile as sf

    from coinpp.decoder import decode_bytes
    from coinpp.encoder import encode_signal

    d = tmp_path / "clips"
    d.mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(4000) / 8000
    for i in range(3):
        wave = 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.02 * rng.standard_normal(len(t))
        sf.write(str(d / f"c{i}.wav"), wave, 8000)
    r = CliRunner().invoke(cli, ["train", str(d), "--modality", "audio", "--out", str(tmp_path / "run"),
                                 "--width", "16", "--depth", "2", "--latent", "4", "--patch", "50", "--steps", "4",
                                 "--val-every", "2", "--encode-steps", "2", "--export", "sp-c", "--bits", "4",
                                 "--context", "4", "--decorrelate", "--val-files", "1", "--rd-lambda", "0.5",
                                 "--codecs-dir", str(tmp_path / "codecs"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    c = codecs.load_folder(tmp_path / "codecs" / "sp-c-b4")
    assert c.entropy.prior.shape[:2] == (4, 4) and c.preset().rd_lambda == 0.5
    assert "the patch before" in (c.folder / "MODEL_CARD.md").read_text()
    monkeypatch.setenv("COIN_CODECS_PATH", str(tmp_path / "codecs"))
    codecs.clear_cache()
    audio = modalities.get("audio")
    sig = audio.read(d / "c0.wav")
    enc = encode_signal(sig, audio, codecs.load("sp-c-b4"), device="cpu")
    assert decode_bytes(enc.data, device="cpu")[0].values.shape == sig.values.shape
    codecs.clear_cache()
    bad = CliRunner().invoke(cli, ["train", str(d), "--modality", "audio", "--out", str(tmp_path / "run2"),
                                   "--allocate", "--export", "x", "--device", "cpu"])
    assert bad.exit_code != 0 and "--allocate applies to images" in bad.output
    bad = CliRunner().invoke(cli, ["train", str(d), "--modality", "audio", "--out", str(tmp_path / "run2"),
                                   "--rd-lambda", "0.5", "--export", "x", "--device", "cpu"])
    assert bad.exit_code != 0 and "--rd-lambda needs --context" in bad.output


def test_distributed_training_two_cpu_processes(tmp_path):
    d = _write_folder(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "coinpp", "train", str(d), "--out", str(tmp_path / "run"), "--width", "16", "--depth", "2",
           "--latent", "4", "--patch", "8", "--steps", "4", "--val-every", "2", "--encode-steps", "2",
           "--device", "cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[0]["world"] == 2  # both ranks took part; only rank 0 logged
    assert [rec["step"] for rec in log] == [2, 4, 4]


def test_divergence_returns_to_best_weights_at_half_the_rate(tmp_path, monkeypatch):
    import coinpp.training.meta as tr

    scores = iter([20.0, 10.0, 19.0, 19.5, 19.5])
    monkeypatch.setattr(tr, "validation_errors", lambda *a, **k: (10 ** (-next(scores) / 10), None))
    sig = _signals()
    train(_cfg(tmp_path, steps=40, decay_fraction=0.0), sig[:3], sig[3:], progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert "recovered" in log[1] and "recovered" not in log[2]
    assert log[2]["lr"] == pytest.approx(log[0]["lr"] / 2)
    _, last, _ = load_checkpoint(tmp_path / "run" / "last")
    assert last["lr_scale"] == 0.5 and last["best_step"] == 10


def test_cli_train_climate_on_whole_fields_with_held_out_hours(tmp_path, monkeypatch):
    from conftest import write_netcdf

    from coinpp import modalities
    from coinpp.decoder import decode_bytes
    from coinpp.encoder import encode_signal

    d = tmp_path / "nc"
    d.mkdir()
    write_netcdf(d / "a.nc", np.arange(58.0, 49.9, -1.0), np.arange(-10.0, 2.01, 1.0), times=10)
    r = CliRunner().invoke(cli, ["train", str(d), "--modality", "climate", "--out", str(tmp_path / "run"),
                                 "--width", "16", "--depth", "2", "--latent", "4", "--steps", "6",
                                 "--val-every", "3", "--encode-steps", "2", "--coord-scale", "4",
                                 "--export", "clim-t", "--bits", "5", "--codecs-dir", str(tmp_path / "codecs"),
                                 "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "fields 0..7 train, 8..9 validation" in r.output
    c = codecs.load_folder(tmp_path / "codecs" / "clim-t-b5")
    assert c.net.cfg.in_dim == 3 and c.net.cfg.coord_scale == 4 and c.entropy.delta_table.shape == (4, 63)
    assert "difference from the one before" in (c.folder / "MODEL_CARD.md").read_text()
    monkeypatch.setenv("COIN_CODECS_PATH", str(tmp_path / "codecs"))
    codecs.clear_cache()
    climate = modalities.get("climate")
    signal = climate.read(d / "a.nc")
    decoded, _ = decode_bytes(encode_signal(signal, climate, c).data)
    assert decoded.values.shape == signal.values.shape
    r = CliRunner().invoke(cli, ["train", str(d), "--modality", "climate", "--out", str(tmp_path / "r2"),
                                 "--patch", "8"])
    assert r.exit_code == 1 and "whole fields" in r.output


def test_cli_train_and_export_a_latent_grid(tmp_path, monkeypatch):
    from coinpp import modalities
    from coinpp.decoder import decode_bytes
    from coinpp.encoder import encode_signal

    d = _write_folder(tmp_path)
    r = CliRunner().invoke(cli, ["train", str(d), "--out", str(tmp_path / "run"), "--width", "16", "--depth", "2",
                                 "--latent", "4", "--cell", "4", "--frequencies", "2", "--patch", "12",
                                 "--steps", "4", "--val-every", "2", "--val-patches", "8", "--encode-steps", "2",
                                 "--export", "img-g", "--bits", "4", "--context", "4", "--val-files", "1",
                                 "--allocate",
                                 "--codecs-dir", str(tmp_path / "codecs"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    c = codecs.load_folder(tmp_path / "codecs" / "img-g-b4")
    assert c.net.cfg.cell == 4 and c.patch == (4, 4) and c.entropy.prior is not None
    assert "latent grid" in (c.folder / "MODEL_CARD.md").read_text()
    assert c.spec.training["quantizer_allocation"] == "equal-distortion" and c.bits >= 4
    monkeypatch.setenv("COIN_CODECS_PATH", str(tmp_path / "codecs"))
    codecs.clear_cache()
    sig = modalities.Signal(_signals(1)[0], {"channels": 3})
    enc = encode_signal(sig, modalities.get("image"), codecs.load("img-g-b4"), device="cpu")
    assert decode_bytes(enc.data, device="cpu")[0].values.shape == sig.values.shape
    codecs.clear_cache()
    bad = CliRunner().invoke(cli, ["train", str(d), "--out", str(tmp_path / "run2"), "--cell", "4", "--patch", "10",
                                   "--steps", "1", "--device", "cpu"])
    assert bad.exit_code != 0 and "multiples of its cell" in bad.output
    bad = CliRunner().invoke(cli, ["train", str(d), "--out", str(tmp_path / "run3"), "--cell", "4",
                                   "--refine-steps", "2", "--steps", "1", "--device", "cpu"])
    assert bad.exit_code != 0 and "not available for latent grids" in bad.output
    bad = CliRunner().invoke(cli, ["train", str(d), "--out", str(tmp_path / "run4"), "--allocate", "--decorrelate",
                                   "--steps", "1", "--device", "cpu"])
    assert bad.exit_code != 0 and "not both" in bad.output


def test_cli_export_with_rate_aware_refinement(tmp_path):
    """--refine-latent-lr / --refine-rate-lambda: the codecs of every bit depth get the same rate term
    (centres and scales from the table latents), share their refinement, and refuse a bad entry."""
    import json

    import pytest

    from coinpp.errors import CodecError

    d = _write_folder(tmp_path)
    args = ["train", str(d), "--out", str(tmp_path / "run"), "--width", "16", "--depth", "2", "--latent", "4",
            "--patch", "8", "--steps", "4", "--val-every", "2", "--encode-steps", "2", "--export", "img-r",
            "--bits", "3,4", "--context", "4", "--refine-steps", "3", "--val-files", "1", "--decorrelate",
            "--codecs-dir", str(tmp_path / "codecs"), "--device", "cpu"]
    r = CliRunner().invoke(cli, [*args, "--refine-rate-lambda", "1e-5"])
    assert r.exit_code != 0 and "needs it" in r.output
    r = CliRunner().invoke(cli, [*args, "--refine-latent-lr", "0.01", "--refine-rate-lambda", "1e-5"])
    assert r.exit_code == 0, r.output
    a, b = (codecs.load_folder(tmp_path / "codecs" / f"img-r-b{bits}") for bits in (3, 4))
    assert a.preset().adam.rate_lambda == 1e-5 and len(a.spec.rate_model.scales) == 4
    image = modalities.get("image")
    ea, eb = Encoder(a, image), Encoder(b, image)
    assert ea.fit_key() == eb.fit_key() and ea.refine_key() == eb.refine_key() != "none"
    assert "rate term" in (a.folder / "MODEL_CARD.md").read_text()
    cfg = json.loads((a.folder / "config.json").read_text())
    cfg["rate_model"]["scales"] = cfg["rate_model"]["scales"][:3]
    (a.folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CodecError, match="rate_model"):
        codecs.load_folder(a.folder)


def test_half_inner_steps_see_their_half_and_match_the_encoder():
    """A half inner step's latents do not depend on the other half's samples, and the inner loop
    with half steps is the encoder's fit with the same subsets (fit.fit_latents)."""
    import torch

    from coinpp.fit import fit_latents
    from coinpp.model import build_network
    from coinpp.patching import checkerboard, patch_coordinates
    from coinpp.training.meta import MetaLearner

    torch.manual_seed(0)
    net = build_network(TINY)
    coords = patch_coordinates((8, 8))
    targets = torch.rand(3, 64, 3)
    even, odd = checkerboard((8, 8), 0), checkerboard((8, 8), 1)
    moved = targets.clone()
    moved[:, odd] = torch.rand(3, len(odd), 3)
    with torch.no_grad():
        half = MetaLearner(net, 1, [even])
        assert torch.allclose(half.adapt(coords, targets), half.adapt(coords, moved))
        full = MetaLearner(net, 1)
        assert not torch.allclose(full.adapt(coords, targets), full.adapt(coords, moved))
        two = MetaLearner(net, 3, [even, odd]).adapt(coords, targets)
    assert torch.allclose(two, fit_latents(net, coords, targets, 3, "cpu", subsets=[even, odd]), atol=1e-6)


def test_cli_train_with_half_inner_steps_records_them(tmp_path):
    d = _write_folder(tmp_path)
    args = ["train", str(d), "--width", "16", "--depth", "2", "--latent", "4", "--patch", "8", "--steps", "4",
            "--val-every", "2", "--encode-steps", "2", "--device", "cpu"]
    r = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "run"), "--half-inner", "2"])
    assert r.exit_code == 0, r.output
    _, state, _ = load_checkpoint(tmp_path / "run" / "best")
    assert state["config"]["half_inner"] == 2
    r = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "run2"), "--half-inner", "4"])
    assert r.exit_code != 0 and "half inner steps" in r.output


def test_half_inner_steps_change_what_training_learns(tmp_path):
    from safetensors.torch import load_file

    runs = []
    for half in (0, 1):
        cfg = _cfg(tmp_path, out=str(tmp_path / f"run{half}"), steps=3, val_every=3, half_inner=half)
        best = train(cfg, _signals(), _signals(1), progress=False)
        runs.append(load_file(str(best.with_suffix(".safetensors"))))
    assert any(not np.allclose(runs[0][k].numpy(), runs[1][k].numpy()) for k in runs[0] if k.startswith("model."))


def test_block_means_are_what_larger_samples_record():
    import torch

    from coinpp.training.meta import block_means

    crops = torch.arange(2 * 16 * 4, dtype=torch.float32).reshape(2, 16 * 4, 1)  # two 16 x 4 crops
    coarse = block_means(crops, (16, 4), 2)
    grid = crops[0, :, 0].reshape(16, 4)
    assert coarse.shape == (2, 8 * 2, 1)
    assert coarse[0, 0, 0] == grid[:2, :2].mean() and coarse[0, 3, 0] == grid[2:4, 2:4].mean()
    volume = torch.rand(1, 4 * 4 * 4, 1)
    assert torch.allclose(block_means(volume, (4, 4, 4), 2)[0, 0], volume[0].reshape(4, 4, 4)[:2, :2, :2].mean())


def test_lanczos_reduction_is_what_image_tools_make_of_the_crop():
    import torch

    from coinpp.training.meta import finer_crop_shape, lanczos_margin, lanczos_reduce

    rng = np.random.default_rng(0)
    img = rng.random((40, 52)).astype(np.float32)
    half = np.asarray(Image.fromarray(img, mode="F").resize((26, 20), Image.LANCZOS))  # PIL halving the photo
    m = lanczos_margin(2)
    assert finer_crop_shape((16, 24), 2, "lanczos") == (16 + 2 * m, 24 + 2 * m)
    assert finer_crop_shape((16, 24), 2, "box") == (16, 24)
    r0, c0 = 14, 16  # a 16 x 24 crop away from the photo's borders, drawn with its margin
    crop = torch.from_numpy(img[r0 - m : r0 + 16 + m, c0 - m : c0 + 24 + m].copy()).reshape(1, -1, 1)
    reduced, centre = lanczos_reduce(crop, (16, 24), 2)
    np.testing.assert_allclose(reduced.reshape(8, 12).numpy(), half[r0 // 2 : r0 // 2 + 8, c0 // 2 : c0 // 2 + 12],
                               atol=1e-5)
    assert np.array_equal(centre.reshape(16, 24).numpy(), img[r0 : r0 + 16, c0 : c0 + 24])


def test_lanczos_supervision_validates_on_the_mix_it_trains(tmp_path):
    """With --finer the kept best is judged on the objective: the patch's and the finer crop's errors."""
    cfg = _cfg(tmp_path, steps=2, val_every=2, finer=2, finer_weight=0.5, finer_filter="lanczos")
    best = train(cfg, _signals(), _signals(1), progress=False)
    rec = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()][0]
    own, finer = (10 ** (-rec[k] / 10) for k in ("val_psnr_own", "val_psnr_finer"))
    assert rec["val_psnr"] == pytest.approx(-10 * np.log10((own + 0.5 * finer) / 1.5), abs=1e-4)
    assert load_checkpoint(best)[1]["config"]["finer_filter"] == "lanczos"
    from coinpp.training.cards import training_text

    card = training_text({"modality": "image", "training": {"finer": 2, "finer_weight": 0.5, "finer_filter": "lanczos",
                                                            "val_metric": "pooled-with-finer"}})
    assert "the patch their Lanczos-3 reduction" in card and "validation PSNR (unquantized" in card
    older = training_text({"modality": "mri", "training": {"finer": 2}})  # validated on the patch alone
    assert "block means" in older and "validation PSNR (unquantized) " in older
    with pytest.raises(Exception, match="box or lanczos"):
        train(_cfg(tmp_path, out=str(tmp_path / "bad"), finer=2, finer_filter="cubic"), _signals(), _signals(1),
              progress=False)


def test_sub_sample_supervision_trains_the_network_between_its_samples(tmp_path, monkeypatch):
    """--finer: the patch is fitted to block means of a crop twice as fine, and the outer loss also scores
    the network at the crop's samples; the run starts from a codec's network with --init."""
    import torch

    from coinpp.training import meta

    seen = []
    forward = meta.MetaLearner.forward

    def recording(self, coords, targets, fine_coords=None, fine_targets=None, fine_weight=1.0):
        seen.append((coords.shape, targets.shape, None if fine_coords is None else fine_coords.shape,
                     None if fine_targets is None else fine_targets.shape, fine_weight))
        return forward(self, coords, targets, fine_coords, fine_targets, fine_weight)

    monkeypatch.setattr(meta.MetaLearner, "forward", recording)
    cfg = _cfg(tmp_path, steps=2, val_every=2, finer=2, finer_weight=0.5)
    best = train(cfg, _signals(), _signals(1), progress=False)
    assert seen[0] == ((64, 2), (4, 64, 3), (256, 2), (4, 256, 3), 0.5)
    _, state, _ = load_checkpoint(best)
    assert state["config"]["finer"] == 2
    # the fine loss changes what is learned
    plain = train(_cfg(tmp_path, out=str(tmp_path / "plain"), steps=2, val_every=2), _signals(), _signals(1),
                  progress=False)
    a, b = (load_checkpoint(p)[0].state_dict() for p in (best, plain))
    assert any(not torch.allclose(a[k], b[k]) for k in a)
    with pytest.raises(Exception, match="patch networks"):
        train(_cfg(tmp_path, out=str(tmp_path / "bad"), finer=1), _signals(), _signals(1), progress=False)


def test_init_starts_from_a_codecs_network(tmp_path, tiny_codec):
    import torch

    cfg = _cfg(tmp_path, steps=1, val_every=1, outer_lr=1e-12, init=tiny_codec.name)
    best = train(cfg, _signals(), _signals(1), progress=False)
    net = load_checkpoint(best)[0]
    start = tiny_codec.net.state_dict()
    assert all(torch.allclose(v, start[k], atol=1e-6) for k, v in net.state_dict().items())
    with pytest.raises(Exception, match="--init"):
        train(_cfg(tmp_path, out=str(tmp_path / "other"), model=SirenConfig(width=8, depth=2, latent_dim=8),
                   init=tiny_codec.name), _signals(), _signals(1), progress=False)


def test_init_may_widen_the_latent(tiny_codec):
    """A wider latent warm-started from a codec's network: at latents whose new dimensions are zero the
    network is the codec's, the new dimensions move the output, and nothing else may differ."""
    import dataclasses

    import torch

    from coinpp.model import build_network
    from coinpp.training.meta import warm_start

    start = tiny_codec.net
    d = start.cfg.latent_dim
    wide = build_network(dataclasses.replace(start.cfg, latent_dim=2 * d))
    warm_start(wide, start, tiny_codec.name)
    coords = torch.rand(1, 16, start.cfg.in_dim)
    z = torch.randn(3, d) * 0.01
    padded = torch.cat([z, torch.zeros(3, d)], dim=1)
    assert torch.allclose(wide(coords.expand(3, -1, -1), padded), start(coords.expand(3, -1, -1), z), atol=1e-6)
    moved = torch.cat([z, torch.full((3, d), 0.01)], dim=1)
    assert not torch.allclose(wide(coords.expand(3, -1, -1), moved), start(coords.expand(3, -1, -1), z), atol=1e-6)
    assert torch.allclose(wide.inner_lr[d:], start.inner_lr.mean().expand(d))
    with pytest.raises(Exception, match="only the latent may be wider"):
        warm_start(build_network(dataclasses.replace(start.cfg, latent_dim=2 * d, width=start.cfg.width + 1)),
                   start, tiny_codec.name)
    with pytest.raises(Exception, match="only the latent may be wider"):
        warm_start(build_network(dataclasses.replace(start.cfg, latent_dim=d - 1)), start, tiny_codec.name)


def test_latent_rate_is_the_laplace_mass_of_each_quantizer_bin():
    import torch

    from coinpp.training.meta import LatentRate

    rate = LatentRate(1, step=0.5)
    rate.observe(torch.tensor([[1.0], [3.0]]))  # centre 2, scale (mean absolute deviation) 1
    assert float(rate.centre) == 2.0 and float(rate.scale) == 1.0
    bins = 2.0 + 0.5 * torch.arange(-80, 81, dtype=torch.float32)[:, None]  # every bin's centre
    assert float(torch.exp2(-rate.bits(bins)).sum()) == pytest.approx(1.0, abs=1e-4)
    assert float(rate.bits(torch.tensor([[2.0]]))) == pytest.approx(-np.log2(1 - np.exp(-0.25)), rel=1e-5)
    assert float(rate.bits(torch.tensor([[4.0]]))) > float(rate.bits(torch.tensor([[2.5]])))
    assert torch.allclose(rate.rounded(torch.tensor([[2.2], [1.7]])), torch.tensor([[2.0], [1.5]]))


def test_rate_aware_training_validates_rounded_latents_and_pays_for_them(tmp_path):
    sig = _signals()
    bits = {}
    for weight in (0.0, 0.05):
        cfg = _cfg(tmp_path, out=str(tmp_path / f"run{weight}"), steps=20, quant_step=0.05, rate_weight=weight)
        train(cfg, sig[:3], sig[3:], progress=False)
        log = [json.loads(line) for line in (tmp_path / f"run{weight}" / "log.jsonl").read_text().splitlines()]
        assert all({"val_psnr_quantized", "val_bits_per_sample"} <= set(r) for r in log)
        _, state, _ = load_checkpoint(tmp_path / f"run{weight}" / "last")
        assert state["val_metric"] == "quantized-with-rate"
        bits[weight] = log[-1]["val_bits_per_sample"]
    assert bits[0.05] < bits[0.0]  # paying for the latents' code length makes them cheaper
    with pytest.raises(InputError):
        train(_cfg(tmp_path, rate_weight=0.1), sig[:3], sig[3:], progress=False)


def test_init_to_scale_shift_keeps_the_network_at_every_latent(tiny_codec):
    """A shift network warm-started into scale-shift modulation is the same network at any latent (the
    scales start at zero); the scales then move the output, and the way back is refused."""
    import dataclasses

    import torch

    from coinpp.model import build_network
    from coinpp.training.meta import warm_start

    start = tiny_codec.net
    film = build_network(dataclasses.replace(start.cfg, modulation="scale-shift"))
    warm_start(film, start, tiny_codec.name)
    coords = torch.rand(30, 2) * 2 - 1
    z = torch.randn(3, start.cfg.latent_dim) * 0.1
    assert torch.allclose(film(coords, z), start(coords, z), atol=1e-6)
    rows = start.cfg.depth * start.cfg.width
    with torch.no_grad():
        film.latent_map.weight[rows:] = 0.1
    assert not torch.allclose(film(coords, z), start(coords, z), atol=1e-4)
    with pytest.raises(InputError, match="--init"):
        warm_start(build_network(start.cfg), film, "film")


def test_cli_trains_and_exports_a_scale_shift_codec_that_round_trips(tmp_path, monkeypatch):
    from coinpp import modalities
    from coinpp.decoder import decode_bytes
    from coinpp.encoder import encode_signal

    d = _write_folder(tmp_path)
    r = CliRunner().invoke(cli, ["train", str(d), "--out", str(tmp_path / "run"), "--width", "16", "--depth", "2",
                                 "--latent", "4", "--patch", "8", "--steps", "4", "--val-every", "2",
                                 "--encode-steps", "2", "--export", "img-ss", "--bits", "4", "--context", "4",
                                 "--val-files", "1", "--modulation", "scale-shift", "--quant-step", "0.05",
                                 "--rate-weight", "0.01",
                                 "--codecs-dir", str(tmp_path / "codecs"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    c = codecs.load_folder(tmp_path / "codecs" / "img-ss-b4")
    assert c.spec.model.modulation == "scale-shift" and c.net.latent_map.out_features == 2 * 2 * 16
    assert c.spec.training["quant_step"] == 0.05 and c.spec.training["rate_weight"] == 0.01
    card = (c.folder / "MODEL_CARD.md").read_text()
    assert "scale" in card and "rate-aware" in card
    monkeypatch.setenv("COIN_CODECS_PATH", str(tmp_path / "codecs"))
    codecs.clear_cache()
    image = modalities.get("image")
    sig = modalities.Signal(_signals(1)[0], {"channels": 3})
    enc = encode_signal(sig, image, codecs.load("img-ss-b4"), device="cpu")
    decoded = decode_bytes(enc.data, device="cpu")[0]
    assert decoded.values.shape == sig.values.shape
    assert image.quality(sig, decoded)["psnr"] > 10
    codecs.clear_cache()
    r = CliRunner().invoke(cli, ["train", str(d), "--out", str(tmp_path / "grid"), "--cell", "8", "--steps", "1",
                                 "--modulation", "scale-shift", "--device", "cpu"])
    assert r.exit_code != 0 and "patch networks" in r.output
