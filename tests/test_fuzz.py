"""Fuzzed decoding: mutated streams give a CoinError (one clear line), never another exception,
a hang or a large allocation.

CI runs a short campaign. A long one:
    COIN_FUZZ_EXAMPLES=100000 python -m pytest -q tests/test_fuzz.py
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest
from conftest import make_tiny_codec, smooth_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coinpp import container, modalities, overfit
from coinpp.decoder import decode_bytes
from coinpp.encoder import encode_signal
from coinpp.errors import CoinError
from coinpp.modalities import Signal

EXAMPLES = int(os.environ.get("COIN_FUZZ_EXAMPLES", "1000"))
TIME_LIMIT_S = 5.0  # per case; the tiny codec decodes a valid stream in milliseconds
RSS_GROWTH_CAP_MB = 512


@pytest.fixture(params=["coin++", "coin", "audio", "audio-context", "climate", "context", "bounded", "levels"])
def stream(request, tiny_audio_codec, tiny_climate_codec, tiny_context_codec, tiny_codec) -> bytes:
    """A valid stream of each codec kind (latents for a base network, an overfitted network) and
    of each modality (stereo audio: two channel groups, modality fields; climate: compressed
    attributes and coordinates, a missing-value mask, fields coded as differences; context: the
    neighbour-context entropy coder, on an image's patch grid and on audio's run of patches; bounded:
    climate with a residual layer; levels: climate with per-field ranges)."""
    if request.param in ("climate", "bounded", "levels"):
        from coinpp.evaluation.conformance import sample_signals

        sig = sample_signals("climate")["uk-6x9x13"]
        bound = 0.05 if request.param == "bounded" else None
        codec = tiny_climate_codec
        if request.param == "levels":
            codec = make_tiny_codec(Path(os.environ["COIN_CODECS_PATH"]), "tiny-levels-b6", bits=6,
                                    modality="climate", normalisation="field")
        return encode_signal(sig, modalities.get("climate"), codec, device="cpu", max_error=bound).data
    sig = Signal(smooth_image(37, 29).astype("float32") / 255, {"channels": 3})
    if request.param in ("audio", "audio-context"):
        wave = smooth_image(301, 2, 2)[:, 0, :].astype("float32") / 255
        sig = Signal(wave, {"sample_rate": 16000, "subtype": "PCM_16", "channels": 2})
        codec = tiny_audio_codec if request.param == "audio" else make_tiny_codec(
            Path(os.environ["COIN_CODECS_PATH"]), "tiny-audio-ctx-b5", bits=5, modality="audio", context=True)
        return encode_signal(sig, modalities.get("audio"), codec, device="cpu").data
    if request.param == "context":
        return encode_signal(sig, modalities.get("image"), tiny_context_codec, device="cpu").data
    if request.param == "coin":
        arch = container.SirenArch(2, 3, 8, 2)
        return overfit.encode_signal(sig, modalities.get("image"), arch, iterations=5, device="cpu").data
    return encode_signal(sig, modalities.get("image"), tiny_codec, device="cpu").data


def _decode_only_coin_errors(data: bytes, fix_crc: bool) -> str:
    if fix_crc and len(data) >= 10:  # get past the checksum so the parser itself is exercised
        import struct
        import zlib

        data = data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))
    t0 = time.perf_counter()
    try:
        decode_bytes(data, device="cpu")
        outcome = "decoded"
    except CoinError as e:
        assert "\n" not in str(e)
        outcome = type(e).__name__
    assert time.perf_counter() - t0 < TIME_LIMIT_S
    return outcome


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("set"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.just(0)),
)


def _mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for kind, pos, val in ops:
        if not b:
            break
        i = pos % len(b)
        if kind == "flip":
            b[i] ^= 1 << val
        elif kind == "truncate":
            b = b[:i]
        elif kind == "insert":
            b.insert(i, val)
        elif kind == "set":
            b[i] = val
        else:
            del b[i]
    return bytes(b)


def test_mutated_streams_only_raise_coin_errors(stream):
    outcomes: dict[str, int] = {}
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(ops=st.lists(mutation, min_size=1, max_size=4), fix_crc=st.booleans())
    def run(ops, fix_crc):
        out = _decode_only_coin_errors(_mutate(stream, ops), fix_crc)
        outcomes[out] = outcomes.get(out, 0) + 1

    run()
    growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    assert growth_mb < RSS_GROWTH_CAP_MB
    assert sum(outcomes.values()) >= EXAMPLES
    print(f"fuzz: {sum(outcomes.values())} cases: {outcomes}")


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=400))
def test_random_bytes_only_raise_coin_errors(data):
    try:
        decode_bytes(data, device="cpu")
    except CoinError:
        pass


@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(h=st.integers(1, 2**32 - 1), w=st.integers(1, 2**32 - 1), patches=st.integers(0, 2**32 - 1))
def test_huge_declared_sizes_are_refused_before_allocating(h, w, patches):
    import struct

    f = container.CoinFile("tiny-b4", bytes(16), 1, (1, 1), 3, (8, 8), 4, 8, b"")
    data = bytearray(container.write_bytes(f))
    i = data.index(b"GRID") + 8 + 2  # after modality and ndim
    struct.pack_into("<II", data, i, h, w)
    body = bytes(data[:-4])
    grid_end = data.index(b"GRID") + 8 + struct.unpack("<I", data[data.index(b"GRID") + 4:][:4])[0]
    body = body[: grid_end - 4] + struct.pack("<I", patches) + body[grid_end:]
    import zlib

    data = body + struct.pack("<I", zlib.crc32(body))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CoinError):
        decode_bytes(data, device="cpu")
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024 < 64


@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(width=st.integers(1, 65535), depth=st.integers(1, 255), h=st.integers(1, 2**32 - 1))
def test_huge_declared_networks_are_refused_before_allocating(width, depth, h):
    """A COIN header may declare any architecture and grid; nothing that large is allocated."""
    import struct
    import zlib

    f = container.NetworkFile(1, (1, 1), 3, container.SirenArch(2, 3, 1, 1), 16, bytes(2 * 9))
    data = bytearray(container.write_bytes(f))
    struct.pack_into("<HB", data, data.index(b"CDEC") + 8 + 4, width, depth)
    struct.pack_into("<I", data, data.index(b"GRID") + 8 + 2, h)
    body = bytes(data[:-4])
    data = body + struct.pack("<I", zlib.crc32(body))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        decode_bytes(data, device="cpu")
    except CoinError:
        pass
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024 < 64
