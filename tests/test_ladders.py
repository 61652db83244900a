"""Quality ladders: -q picks a rung, a rate target gives the best rung whose real file meets it, presets
change the encoder and not the format, and the shipped ladders are ordered by their measured points."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_tiny_codec

from coinpp import codec as codecs
from coinpp import ladders, modalities
from coinpp import spec as specs
from coinpp.cli import cli
from coinpp.encoder import Encoder, RateSearch, encode_to_rate
from coinpp.errors import CodecError

RUNGS = ["tiny-b3", "tiny-b4", "tiny-b6"]


@pytest.fixture()
def ladder(tiny_codec) -> Path:
    """Three tiny image codecs of one network at 3, 4 and 6 bits, and a ladders.json naming them."""
    root = Path(os.environ["COIN_CODECS_PATH"])
    for bits in (3, 6):
        make_tiny_codec(root, f"tiny-b{bits}", bits=bits)
    (root / ladders.LADDERS_FILE).write_text(json.dumps(
        {"image": {"unit": "bpp", "default": "tiny-b4", "rungs": RUNGS}, "also": {}}))
    codecs.clear_cache()
    return root


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _size(path: Path, rgb_png: Path) -> float:
    signal = modalities.get("image").read(rgb_png)
    return 8 * path.stat().st_size / (signal.spatial[0] * signal.spatial[1])


def test_quality_picks_the_rung(ladder, rgb_png, tmp_path):
    for q, name in enumerate(RUNGS, 1):
        out = tmp_path / f"q{q}.coin"
        r = run("encode", rgb_png, "-o", out, "-q", q, "--no-check")
        assert r.exit_code == 0, r.output
        info = json.loads(run("info", out, "--json").output)
        assert info["codec"] == name
    r = run("encode", rgb_png, "-o", tmp_path / "q9.coin", "-q", 9)
    assert r.exit_code == 1 and "quality 1 (smallest) to 3 (best)" in r.output


def test_rate_target_gives_the_best_rung_within_it(ladder, rgb_png, tmp_path):
    sizes = {}
    for q in (1, 2, 3):
        out = tmp_path / f"q{q}.coin"
        assert run("encode", rgb_png, "-o", out, "-q", q, "--no-check").exit_code == 0
        sizes[q] = _size(out, rgb_png)
    assert sizes[1] < sizes[2] < sizes[3]
    for target, want in (((sizes[2] + sizes[3]) / 2, 2), (sizes[3] * 1.01, 3), (sizes[1], 1)):
        out = tmp_path / "t.coin"
        r = run("encode", rgb_png, "-o", out, "--bpp", target, "--no-check", "--force")
        assert r.exit_code == 0, r.output
        assert out.read_bytes() == (tmp_path / f"q{want}.coin").read_bytes()
        assert _size(out, rgb_png) <= target
    r = run("encode", rgb_png, "-o", tmp_path / "x.coin", "--bpp", sizes[1] * 0.5)
    assert r.exit_code == 1 and "even the smallest image codec (tiny-b3)" in r.output and rgb_png.name in r.output


def test_rate_search_fits_each_network_once(ladder, rgb_png, monkeypatch):
    image = modalities.get("image")
    signal = image.read(rgb_png)
    encoders = [Encoder(codecs.load(n), image, device="cpu") for n in RUNGS]
    fits = []
    real = Encoder.fit
    monkeypatch.setattr(Encoder, "fit", lambda self, s: fits.append(self.codec.name) or real(self, s))
    search = RateSearch()
    enc = encode_to_rate(signal, encoders, 1000.0, "bpp", search)
    assert enc.codec.name == "tiny-b6" and len(search.tried) == 3 and len(fits) == 1
    with pytest.raises(CodecError, match="smallest"):
        encode_to_rate(signal, encoders, 1e-6, "bpp")


def test_rate_options_are_checked(ladder, rgb_png, tmp_path):
    out = tmp_path / "a.coin"
    for args, message in ((["--kbps", "8"], "--kbps does not apply to image; give --bpp"),
                          (["--bpp", "0.2", "-q", "2"], "not more than one"),
                          (["--bpp", "0.2", "--codec", "tiny-b4"], "not more than one"),
                          (["--bpp", "-1"], "positive"),
                          (["--preset", "max", "--fast"], "--fast is --preset fast")):
        r = run("encode", rgb_png, "-o", out, *args)
        assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output, (args, r.output)


def test_presets_change_the_encoder_not_the_format(ladder, rgb_png, tmp_path):
    c = codecs.load("tiny-b4")
    assert c.preset("max").sgd_steps == 2 * c.preset().sgd_steps
    assert c.preset("fast") == specs.EncoderPreset("fast", c.preset().phases)  # no filter phase to drop
    with pytest.raises(CodecError, match="no preset"):
        c.preset("turbo")
    for preset in ("fast", "default", "max"):
        out = tmp_path / f"{preset}.coin"
        r = run("encode", rgb_png, "-o", out, "--preset", preset)
        assert r.exit_code == 0, r.output
        assert run("decode", out, "-o", tmp_path / f"{preset}.png").exit_code == 0


def test_quiet_prints_nothing(ladder, rgb_png, tmp_path):
    r = run("encode", rgb_png, "-o", tmp_path / "a.coin", "--quiet")
    assert r.exit_code == 0 and r.output == ""
    r = run("decode", tmp_path / "a.coin", "-o", tmp_path / "a.png", "--quiet")
    assert r.exit_code == 0 and r.output == ""


def test_codecs_lists_the_ladder_in_full_when_piped(ladder):
    r = run("codecs")
    lines = r.output.splitlines()
    assert lines[0].startswith("image (-q 1..3")
    assert [line.split()[:2] for line in lines[1:4]] == [["1", "tiny-b3"], ["2", "tiny-b4"], ["3", "tiny-b6"]]
    assert "(default)" in lines[2]


def test_the_shipped_ladders_are_ordered_and_complete():
    root = Path(__file__).resolve().parent.parent / "codecs"
    lad = ladders.read_ladders(root)
    assert set(lad.by_modality) == {"image", "audio", "mri", "climate"}
    for modality, ladder in lad.by_modality.items():
        points = []
        for name in ladder.rungs:
            cfg = json.loads((root / name / "config.json").read_text())
            assert cfg["modality"] == modality
            points.append((cfg["measured"][ladder.unit], cfg["measured"]["psnr_db"]))
        assert points == sorted(points) and [q for _, q in points] == sorted(q for _, q in points), modality
        assert ladders.DEFAULT_CODECS[modality] == ladder.default
    assert all((root / n / "config.json").is_file() for n in lad.also)
    # Every shipped codec is on a ladder or named as also installed; the rest are legacy.
    assert {p.parent.name for p in root.glob("*/config.json")} == lad.names()


def test_no_network_is_shipped_twice():
    root = Path(__file__).resolve().parent.parent / "codecs"
    assert not list(root.glob("*/weights.safetensors"))
    networks = {json.loads(p.read_text())["network"] for p in root.glob("*/config.json")}
    assert networks == {p.stem for p in (root / specs.NETWORKS).glob("*.safetensors")}
