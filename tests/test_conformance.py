"""Golden streams: a change that alters how existing files decode fails here."""

from pathlib import Path

import pytest

from coinpp import codec as codecs
from coinpp.evaluation.conformance import ROOT, check, codecs_folder

STREAMS = sorted(ROOT.glob("*.coin"))


def test_there_are_conformance_streams_for_every_shipped_image_codec():
    shipped = {n for n, f in codecs.available().items() if "conformance" not in str(f)}
    covered = {p.name.split(".")[0] for p in STREAMS}
    assert STREAMS and shipped <= covered


@pytest.mark.parametrize("stream", STREAMS, ids=lambda p: p.name)
def test_stream_decodes_to_pinned_symbols_and_output(stream: Path, monkeypatch):
    monkeypatch.setenv("COIN_CODECS_PATH", str(codecs_folder()))
    codecs.clear_cache()
    result = check(stream)
    assert result["symbols"]


def test_there_are_conformance_streams_of_both_codec_kinds():
    from coinpp import container

    kinds = {container.read_bytes(p.read_bytes()).kind for p in STREAMS}
    assert kinds == {container.KIND_BASE_NETWORK, container.KIND_OVERFIT_NETWORK}


def test_a_changed_output_or_symbols_fail_the_check_with_a_real_error(tmp_path, monkeypatch):
    """Not an assert (gone under python -O): ConformanceError, for the symbols and for the output."""
    import json
    import shutil

    import numpy as np
    from PIL import Image

    from coinpp.evaluation.conformance import ConformanceError

    monkeypatch.setenv("COIN_CODECS_PATH", str(codecs_folder()))
    codecs.clear_cache()
    stream = ROOT / "conformance-tiny-b5.rgb-47x61.coin"
    for suffix in (".coin", ".json", ".png"):
        shutil.copy(stream.with_suffix(suffix), tmp_path / ("s" + suffix))
    copy = tmp_path / "s.coin"
    assert check(copy)["output"]
    ref = np.asarray(Image.open(copy.with_suffix(".png"))).copy()
    ref[10:20, 10:20] = 255 - ref[10:20, 10:20]  # the pinned output differs from what decodes
    Image.fromarray(ref).save(copy.with_suffix(".png"))
    with pytest.raises(ConformanceError, match="decoded output changed"):
        check(copy)
    meta = json.loads(copy.with_suffix(".json").read_text())
    meta["symbols_sha256"] = "0" * 64
    copy.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ConformanceError, match="symbols changed"):
        check(copy)


def test_there_are_residual_streams_of_every_base_and_prediction():
    import json

    metas = [json.loads(p.with_suffix(".json").read_text()) for p in STREAMS]
    bounded = [m for m in metas if "bound" in m]
    assert {m["base"] for m in bounded} == {0, 1} and {m["prediction"] for m in bounded} == {1, 2, 3, 4}
    assert any(m["bound"] == 0 for m in bounded)  # a lossless one
