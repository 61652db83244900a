"""Batch mode: whole folders, resumable, sharded, safe on bad files, full disks and Ctrl-C."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import smooth_image
from PIL import Image

from coinpp import batch, modalities
from coinpp.cli import cli
from coinpp.encoder import Encoder, encode_signal
from coinpp.modalities import Signal


def run(*args, input: bytes | None = None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


@pytest.fixture()
def mixed(tmp_path) -> Path:
    """Good images (one nested), a corrupt image, an unknown extension."""
    root = tmp_path / "in"
    (root / "nested" / "deeper").mkdir(parents=True)
    Image.fromarray(smooth_image(20, 17, seed=1)).save(root / "a.png")
    Image.fromarray(smooth_image(9, 30, seed=2)).save(root / "b.jpg", quality=95)
    Image.fromarray(smooth_image(16, 16, seed=3)).save(root / "nested" / "deeper" / "c.png")
    Image.fromarray(smooth_image(12, 12, 1, seed=4)[:, :, 0]).save(root / "nested" / "gray.png")
    (root / "nested" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    (root / "readme.txt").write_text("not an image")
    return root


GOOD = {"a.png", "b.jpg", "nested/deeper/c.png", "nested/gray.png"}


def _report(result) -> dict:
    return json.loads(result.stdout)


def test_mixed_folder_encodes_good_files_and_lists_bad_ones(tiny_codec, mixed, tmp_path):
    out = tmp_path / "out"
    r = run("encode", mixed, "-o", out, "--json")
    assert r.exit_code == 1  # one file failed
    rep = _report(r)
    assert rep["done"] == 4 and rep["unknown_skipped"] == ["readme.txt"]
    assert [f["file"] for f in rep["failed"]] == ["nested/broken.png"]
    assert "not an image coin can read" in rep["failed"][0]["error"]
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert written == {f + ".coin" for f in GOOD}
    # and back: the tree mirrors, extensions come back, grayscale stays grayscale
    dec = tmp_path / "dec"
    r = run("decode", out, "-o", dec, "--json")
    assert r.exit_code == 0, r.output
    assert {p.relative_to(dec).as_posix() for p in dec.rglob("*") if p.is_file()} == GOOD
    assert Image.open(dec / "nested" / "gray.png").mode == "L"
    assert Image.open(dec / "b.jpg").size == (30, 9)
    r = run("decode", out, "-o", tmp_path / "dec2", "--ext", "png")
    assert r.exit_code == 0 and (tmp_path / "dec2" / "b.png").is_file()


def test_rerun_resumes_and_force_redoes(tiny_codec, mixed, tmp_path):
    out = tmp_path / "out"
    run("encode", mixed, "-o", out, "--no-check")
    (out / "a.png.coin").unlink()
    before = (out / "b.jpg.coin").stat().st_mtime_ns
    rep = _report(run("encode", mixed, "-o", out, "--json", "--no-check"))
    assert rep["done"] == 1 and rep["items"][0]["file"] == "a.png" and rep["existing_skipped"] == 3
    assert (out / "b.jpg.coin").stat().st_mtime_ns == before  # untouched
    rep = _report(run("encode", mixed, "-o", out, "--json", "--no-check", "--force"))
    assert rep["done"] == 4 and rep["existing_skipped"] == 0


def test_json_report_schema(tiny_codec, mixed, tmp_path):
    rep = _report(run("encode", mixed, "-o", tmp_path / "out", "--json"))
    for key, kind in {"command": str, "input": str, "output": str, "files": int, "done": int,
                      "existing_skipped": int, "unknown_skipped": list, "failed": list, "not_run": int,
                      "bytes_in": int, "bytes_out": int, "ratio": float, "mean_quality": dict, "seconds": float,
                      "files_per_s": float, "mb_per_s": float, "items": list}.items():
        assert isinstance(rep[key], kind), key
    assert rep["stopped"] is None and rep["files"] == 6
    assert 5 < rep["mean_quality"]["psnr"] < 60
    done = [i for i in rep["items"] if i["status"] == "done"]
    assert {i["file"] for i in done} == GOOD
    for i in done:
        assert i["bytes_out"] == (tmp_path / "out" / i["output"]).stat().st_size
        assert set(i) >= {"file", "output", "status", "error", "bytes_in", "bytes_out", "quality", "rate", "seconds"}
        assert i["rate"]["bpp"] > 0
    assert rep["bytes_out"] == sum(i["bytes_out"] for i in done)


def test_full_disk_stops_cleanly_with_finished_files_intact(tiny_codec, mixed, tmp_path, monkeypatch):
    from coinpp import files

    real = Path.write_bytes
    calls = {"n": 0}

    def flaky(self, data):
        calls["n"] += 1
        if calls["n"] == 3:  # the third output: half written, then the disk is full
            real(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(files.Path, "write_bytes", flaky)
    out = tmp_path / "out"
    r = run("encode", mixed, "-o", out, "--json", "--no-check")
    assert r.exit_code == 1
    rep = _report(r)
    assert rep["stopped"] == "disk full" and rep["done"] == 2 and rep["not_run"] >= 1
    monkeypatch.setattr(files.Path, "write_bytes", real)
    leftovers = [p for p in out.rglob("*") if p.is_file() and not p.name.endswith(".png.coin")
                 and not p.name.endswith(".jpg.coin")]
    assert leftovers == []
    for p in out.rglob("*.coin"):  # what was finished decodes
        assert run("decode", p, "-o", tmp_path / (p.name + ".png")).exit_code == 0


def test_ctrl_c_leaves_no_partial_files(tiny_codec, mixed, tmp_path, monkeypatch):
    real = Encoder.pack
    calls = {"n": 0}

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(Encoder, "pack", interrupted)
    out = tmp_path / "out"
    r = run("encode", mixed, "-o", out, "--no-check")
    assert r.exit_code == 130
    files = [p.name for p in out.rglob("*") if p.is_file()]
    assert files == ["a.png.coin"]  # the one finished before Ctrl-C, nothing partial
    monkeypatch.setattr(Encoder, "pack", real)
    rep = _report(run("encode", mixed, "-o", out, "--json", "--no-check"))  # resumes
    assert rep["existing_skipped"] == 1 and rep["done"] == 3


def test_shards_cover_every_file_exactly_once(tiny_codec, mixed, tmp_path):
    seen: list[str] = []
    for i in range(3):
        rep = _report(run("encode", mixed, "-o", tmp_path / "out", "--shard", f"{i}/3", "--json", "--no-check"))
        seen += [item["file"] for item in rep["items"]]
    assert sorted(seen) == sorted(GOOD | {"nested/broken.png", "readme.txt"})
    assert {p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.coin")} == {
        f + ".coin" for f in GOOD}
    for bad in ("3/3", "x", "1/0", "-1/2"):
        r = run("encode", mixed, "-o", tmp_path / "o2", "--shard", bad)
        assert r.exit_code == 1 and "--shard" in r.output


def test_batched_fit_equals_one_by_one(tiny_codec):
    sigs = [Signal(smooth_image(h, w, seed=s).astype(np.float32) / 255, {"channels": 3})
            for h, w, s in ((20, 17, 1), (9, 30, 2), (40, 33, 3))]
    image = modalities.get("image")
    together = Encoder(tiny_codec, image, device="cpu").fit(sigs)
    for sig, lat in zip(sigs, together, strict=True):
        alone = Encoder(tiny_codec, image, device="cpu").fit([sig])[0]
        assert lat.shape == alone.shape
        assert float((lat - alone).abs().max()) < 1e-5


def test_stdin_to_stdout(tiny_codec, rgb_png):
    r = run("encode", "-", "-o", "-", "--modality", "image", input=rgb_png.read_bytes())
    assert r.exit_code == 0, r.output
    coin = r.stdout_bytes
    assert coin[:4] == b"COIN"
    sig = modalities.get("image").read(rgb_png)
    assert len(coin) == len(encode_signal(sig, modalities.get("image"), tiny_codec, device="cpu").data)
    r = run("decode", "-", "-o", "-", input=coin)
    assert r.exit_code == 0 and r.stdout_bytes[:8] == b"\x89PNG\r\n\x1a\n"
    r = run("decode", "-", "-o", "-", "--ext", "mp3", input=coin)
    assert r.exit_code == 1 and "cannot be written" in r.output
    r = run("encode", "-", "-o", "-", input=rgb_png.read_bytes())
    assert r.exit_code == 1 and "--modality" in r.output


def test_walk_skips_hidden_and_temporary_files(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    (tmp_path / ".x.png.abc.tmp.png").write_bytes(b"")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "y.png").write_bytes(b"")
    assert [p.name for p in batch.walk(tmp_path)] == ["x.png"]


def test_folder_options_that_do_not_apply_are_refused(tiny_codec, mixed, tmp_path):
    r = run("encode", mixed, "-o", tmp_path / "o", "--method", "coin")
    assert r.exit_code == 1 and "--method coin++" in r.output
    run("encode", mixed, "-o", tmp_path / "o", "--no-check")
    r = run("decode", tmp_path / "o", "-o", tmp_path / "d", "--scale", "2")
    assert r.exit_code == 1 and "single files" in r.output
    r = run("decode", tmp_path / "o", "-o", tmp_path / "d", "--ext", "wav", "--json")
    rep = json.loads(r.stdout)
    assert r.exit_code == 1 and rep["done"] == 0 and all("image is written as" in f["error"] for f in rep["failed"])


def test_codec_option_takes_only_files_of_its_modality(tiny_audio_codec, mixed, tmp_path):
    import soundfile as sf

    sf.write(str(mixed / "clip.wav"), np.zeros((800, 1)), 16000)
    rep = _report(run("encode", mixed, "-o", tmp_path / "o", "--codec", "tiny-audio-b5", "--json", "--no-check"))
    assert rep["done"] == 1
    assert {i["file"] for i in rep["items"] if i["status"] == "done"} == {"clip.wav"}
    assert "a.png" in rep["unknown_skipped"]
    rep = _report(run("encode", mixed, "-o", tmp_path / "o2", "--json", "--no-check"))  # by extension
    assert {i["file"] for i in rep["items"] if i["status"] == "done"} == GOOD | {"clip.wav"}


def test_an_output_folder_that_cannot_be_made_fails_that_file_only(tiny_codec, mixed, tmp_path):
    run("encode", mixed, "-o", tmp_path / "o", "--no-check")
    dec = tmp_path / "d"
    dec.mkdir()
    (dec / "nested").write_text("a file where a folder should go")
    r = run("decode", tmp_path / "o", "-o", dec, "--json")
    rep = json.loads(r.stdout)
    assert r.exit_code == 1 and rep["done"] == 2  # a.png and b.jpg
    assert {f["file"] for f in rep["failed"]} == {"nested/deeper/c.png.coin", "nested/gray.png.coin"}
    assert all("cannot write" in f["error"] for f in rep["failed"])
