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
