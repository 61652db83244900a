"""Audio: WAV/FLAC/OGG round trips, any output sample rate, multi-channel, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from coinpp import codec as codecs
from coinpp import container, modalities
from coinpp.bitstream import file_filter, parse
from coinpp.cli import cli
from coinpp.decoder import decode_bytes
from coinpp.encoder import Encoder, encode_each, encode_signal
from coinpp.errors import FormatError, InputError
from coinpp.file_filter import file_filter_bytes
from coinpp.postfilter import apply_waveform
from coinpp.training.postfilter import install

AUDIO = modalities.get("audio")
SPEECH_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech" / "test"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def clip(seconds: float = 0.25, rate: int = 16000, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A short generated clip: a chirp plus a little noise per channel, peak 0.5."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    chans = [0.4 * np.sin(2 * np.pi * (200 + 300 * c) * t * (1 + t)) + 0.02 * rng.standard_normal(t.size)
             for c in range(channels)]
    return np.stack(chans, -1)


def write(path: Path, data: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> Path:
    sf.write(str(path), data, rate, subtype=subtype)
    return path


def test_round_trip_keeps_length_rate_and_subtype(tiny_audio_codec, tmp_path):
    src = write(tmp_path / "a.wav", clip(), subtype="PCM_24")
    sig = AUDIO.read(src)
    assert sig.spatial == (4000,) and sig.meta == {"sample_rate": 16000, "subtype": "PCM_24", "channels": 1}
    r = run("encode", src, "-o", tmp_path / "a.coin")
    assert r.exit_code == 0, r.output
    assert "kbps" in r.output and "SNR" in r.output
    r = run("decode", tmp_path / "a.coin", "-o", tmp_path / "b.wav")
    assert r.exit_code == 0, r.output
    info = sf.info(str(tmp_path / "b.wav"))
    assert (info.frames, info.samplerate, info.channels, info.subtype) == (4000, 16000, 1, "PCM_24")
    r = run("decode", tmp_path / "a.coin", "-o", tmp_path / "b.flac")
    assert r.exit_code == 0 and sf.info(str(tmp_path / "b.flac")).format == "FLAC"


@pytest.mark.parametrize("rate", [48000, 8000, 44100])
def test_decode_at_another_sample_rate_keeps_the_duration(tiny_audio_codec, tmp_path, rate):
    src = write(tmp_path / "a.wav", clip(0.3))
    run("encode", src, "-o", tmp_path / "a.coin", "--no-check")
    r = run("decode", tmp_path / "a.coin", "-o", tmp_path / "r.flac", "--sample-rate", rate)
    assert r.exit_code == 0, r.output
    info = sf.info(str(tmp_path / "r.flac"))
    assert info.samplerate == rate and info.frames == round(0.3 * rate)


def test_resampled_decode_samples_the_same_function(tiny_audio_codec):
    from coinpp.modalities import Resolution, Signal

    sig = Signal(((clip(0.2) + 1) / 2).astype(np.float32), {"sample_rate": 16000, "subtype": "PCM_16",
                                                             "channels": 1})
    data = encode_signal(sig, AUDIO, tiny_audio_codec, device="cpu").data
    base, _ = decode_bytes(data, device="cpu")
    up, _ = decode_bytes(data, Resolution(size=(sig.spatial[0] * 2,)), device="cpu", postfilter=False)
    assert up.meta["sample_rate"] == 32000
    # the network itself: averaging pairs of 2x samples (centred on the original sample times) gives
    # back the 1x samples
    assert np.abs(up.values.reshape(-1, 2, 1).mean(axis=1) - base.values).max() < 0.05


def test_another_sample_rate_resamples_the_own_rate_decode_band_limited(tiny_audio_codec):
    from coinpp.modalities import Resolution, Signal
    from coinpp.resample import resample

    sig = Signal(((clip(0.2) + 1) / 2).astype(np.float32), {"sample_rate": 16000, "subtype": "PCM_16",
                                                             "channels": 1})
    data = encode_signal(sig, AUDIO, tiny_audio_codec, device="cpu").data
    base, _ = decode_bytes(data, device="cpu")
    up, _ = decode_bytes(data, Resolution(sample_rate=32000), device="cpu")
    network, _ = decode_bytes(data, Resolution(sample_rate=32000), device="cpu", postfilter=False)
    assert up.meta["sample_rate"] == 32000 and up.values.shape == network.values.shape == (6400, 1)
    np.testing.assert_allclose(up.values, np.clip(resample(base.values, 6400), 0, 1), atol=1e-6)
    np.testing.assert_allclose(up.values[::2], base.values, atol=1e-5)  # the coded instants are kept
    assert not np.allclose(up.values, network.values, atol=1e-3)


def test_band_limited_resampling_is_exact_for_tones_and_removes_what_the_new_rate_cannot_hold():
    from coinpp.resample import resample

    t8, t16 = np.arange(8000) / 8000, np.arange(16000) / 16000
    tone = resample(np.sin(2 * np.pi * 1000 * t8)[:, None], 16000)[:, 0]
    assert np.abs(tone[400:-400] - np.sin(2 * np.pi * 1000 * t16[400:-400])).max() < 1e-4
    high = resample(np.sin(2 * np.pi * 6000 * t16)[:, None], 8000)[:, 0]  # above 8 kHz audio's 4 kHz
    assert np.abs(high[200:-200]).max() < 1e-3
    low = resample(np.sin(2 * np.pi * 500 * t16)[:, None], 8000)[:, 0]
    assert np.abs(low[200:-200] - np.sin(2 * np.pi * 500 * t8[200:-200])).max() < 1e-3
    dc = resample(np.full((100, 2), 0.25), 441)
    np.testing.assert_allclose(dc, 0.25, atol=1e-6)


def test_multi_channel_codes_each_channel(tiny_audio_codec, tmp_path):
    src = write(tmp_path / "st.wav", clip(0.2, channels=3))
    sig = AUDIO.read(src)
    enc = encode_signal(sig, AUDIO, tiny_audio_codec, device="cpu")
    dec, parsed = decode_bytes(enc.data, device="cpu")
    assert parsed.file.groups == 3 and dec.values.shape == sig.values.shape
    mono = encode_signal(AUDIO.read(write(tmp_path / "m.wav", clip(0.2, channels=3)[:, :1])), AUDIO,
                         tiny_audio_codec, device="cpu")
    assert np.array_equal(enc.symbols[: len(mono.symbols)], mono.symbols)  # channel 0 coded as alone
    r = run("decode", tmp_path / "x.coin", "-o", tmp_path / "x.wav")  # missing file: clean error
    assert r.exit_code == 1


def test_silence_round_trips(tiny_audio_codec, tmp_path):
    src = write(tmp_path / "s.flac", np.zeros((3000, 2)))
    r = run("encode", src, "-o", tmp_path / "s.coin")
    assert r.exit_code == 0, r.output
    assert run("decode", tmp_path / "s.coin", "-o", tmp_path / "s.wav").exit_code == 0
    assert sf.info(str(tmp_path / "s.wav")).channels == 2


def test_bad_audio_gives_clear_errors(tiny_audio_codec, tmp_path):
    cases = {
        "empty.wav": (lambda p: write(p, np.zeros((0, 1))), "empty audio"),
        "ulaw.wav": (lambda p: write(p, clip(), subtype="ULAW"), "not supported"),
        "fast.wav": (lambda p: write(p, clip(0.01), rate=4_000_000), "sample rate"),
        "junk.flac": (lambda p: p.write_bytes(b"fLaC but not really"), "not a readable audio file"),
    }
    for name, (make, message) in cases.items():
        path = tmp_path / name
        make(path)
        with pytest.raises(InputError, match=message):
            AUDIO.read(path)
        r = run("encode", path, "-o", tmp_path / (name + ".coin"))
        assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output


def test_sample_rate_option_is_for_audio_only(tiny_codec, rgb_png, tmp_path):
    run("encode", rgb_png, "-o", tmp_path / "a.coin", "--no-check")
    r = run("decode", tmp_path / "a.coin", "-o", tmp_path / "a.png", "--sample-rate", 8000)
    assert r.exit_code == 1 and "applies to audio" in r.output


@pytest.mark.skipif(not SPEECH_TEST.is_dir(), reason="shared speech data not present")
def test_real_speech_clip_round_trip(tiny_audio_codec, tmp_path):
    first = sorted(SPEECH_TEST.glob("*.flac"))[0]
    data, rate = sf.read(str(first))
    src = write(tmp_path / "real.flac", data[: rate // 2], rate)
    sig = AUDIO.read(src)
    enc = encode_signal(sig, AUDIO, tiny_audio_codec, device="cpu")
    dec, _ = decode_bytes(enc.data, device="cpu")
    assert dec.values.shape == sig.values.shape and dec.meta["sample_rate"] == rate
    assert AUDIO.quality(sig, dec)["psnr"] > 20


def test_waveform_post_filter_is_fitted_installed_and_applied_outside_the_hash(tiny_audio_codec, tmp_path):
    import json

    from coinpp import codec as codecs
    from coinpp.modalities import Resolution

    folder = tmp_path / "speech"
    folder.mkdir()
    for i in range(5):
        write(folder / f"c{i}.wav", clip(0.3, seed=i))
    old = encode_signal(AUDIO.read(folder / "c0.wav"), AUDIO, tiny_audio_codec, device="cpu").data
    plain, _ = decode_bytes(old, device="cpu")
    r = run("postfilter", tiny_audio_codec.name, "--data", folder, "--taps", 9, "--clips", 3, "--val-files", 1)
    assert r.exit_code == 0, r.output
    assert "installed" in r.output
    codecs.clear_cache()
    c = codecs.load(tiny_audio_codec.name)
    assert c.hash == tiny_audio_codec.hash and c.spec.postfilter.kind == "fir" and c.spec.postfilter.taps == 9
    entry = json.loads((c.folder / "config.json").read_text())["postfilter"]
    assert entry["training"]["val_psnr_gain_db"] > 0 and entry["training"]["clips"] == 3
    assert "9-tap linear filter" in (c.folder / "MODEL_CARD.md").read_text()
    filtered, _ = decode_bytes(old, device="cpu")  # a file written before decodes, now filtered
    normative, _ = decode_bytes(old, device="cpu", postfilter=False)
    assert np.array_equal(normative.values, plain.values)
    assert not np.allclose(filtered.values, plain.values, atol=1e-4)
    from coinpp.postfilter import apply_waveform
    from coinpp.resample import resample

    np.testing.assert_allclose(filtered.values, np.clip(apply_waveform(c.postfilter, plain.values), 0, 1), atol=1e-6)
    up, _ = decode_bytes(old, Resolution(sample_rate=32000), device="cpu")  # filtered, then resampled
    np.testing.assert_allclose(up.values, np.clip(resample(filtered.values, len(up.values)), 0, 1), atol=1e-5)
    again = run("postfilter", tiny_audio_codec.name, "--data", folder, "--taps", 9, "--clips", 3)
    assert again.exit_code != 0 and "--force" in again.output
    bad = run("postfilter", tiny_audio_codec.name, "--data", folder, "--taps", 8, "--force")
    assert bad.exit_code != 0 and "--taps must be odd" in bad.output


def test_waveform_post_filter_entries_are_checked():
    from coinpp.spec import PostFilterSpec

    assert PostFilterSpec.from_dict({"kind": "fir", "taps": 33}).taps == 33
    for bad in ({"kind": "fir", "taps": 32}, {"kind": "fir"}, {"kind": "wavelet", "taps": 3}):
        with pytest.raises(ValueError):
            PostFilterSpec.from_dict(bad)



def _with_codec_filter(codec, taps: np.ndarray):
    """The codec with a waveform filter installed (as `coin postfilter` would), loaded again."""

    install(codec.folder, taps, {"clips": 1, "val_clips": 1, "val_psnr_gain_db": 0.0, "data": "test",
                                 "seed": 0, "wall_time_s": 0.0, "hardware": "test", "command": "test"})
    codecs.clear_cache()
    return codecs.load(codec.name)


def _without_file_filter(data: bytes) -> bytes:

    f = container.read_bytes(data)
    f.extra = {k: v for k, v in f.extra.items() if k != container.FILE_FILTER_TAG}
    return container.write_bytes(f)


def test_encoder_stores_a_filter_fitted_to_the_file_and_the_decoder_applies_it(tiny_audio_codec, tmp_path):
    weak = np.zeros(9)
    weak[4] = 0.8  # a codec filter that only turns the level down: a filter fitted to the file does better
    codec = _with_codec_filter(tiny_audio_codec, weak)
    sig = AUDIO.read(write(tmp_path / "c.wav", clip(0.3)))
    with_own = Encoder(codec, AUDIO, device="cpu").encode(sig).data
    without = Encoder(codec, AUDIO, device="cpu", file_filter=False).encode(sig).data
    taps = file_filter(parse(with_own))
    assert taps is not None and len(taps) == 9 and file_filter(parse(without)) is None
    assert len(with_own) == len(without) + 4 + 4 + 1 + 2 * 9  # the section: tag, length, count, taps
    assert _without_file_filter(with_own) == without
    normative, _ = decode_bytes(with_own, device="cpu", postfilter=False)
    assert np.array_equal(normative.values, decode_bytes(without, device="cpu", postfilter=False)[0].values)
    own, _ = decode_bytes(with_own, device="cpu")
    np.testing.assert_allclose(own.values, np.clip(apply_waveform(taps, normative.values), 0, 1), atol=1e-6)
    codec_filtered, _ = decode_bytes(without, device="cpu")
    assert AUDIO.quality(sig, own)["psnr"] > AUDIO.quality(sig, codec_filtered)["psnr"]


def test_no_file_filter_where_the_codec_has_none(tiny_audio_codec, tmp_path):
    sig = AUDIO.read(write(tmp_path / "c.wav", clip(0.3)))
    assert file_filter(parse(encode_signal(sig, AUDIO, tiny_audio_codec, device="cpu").data)) is None


@pytest.mark.parametrize("body", [b"", bytes([8]) + bytes(16), bytes([9]) + bytes(17), bytes([65]) + bytes(130)])
def test_a_malformed_file_filter_makes_the_file_corrupt(tiny_audio_codec, tmp_path, body):
    sig = AUDIO.read(write(tmp_path / "c.wav", clip(0.1)))
    f = container.read_bytes(encode_signal(sig, AUDIO, tiny_audio_codec, device="cpu").data)
    f.extra = {**f.extra, container.FILE_FILTER_TAG: body}
    with pytest.raises(FormatError, match="waveform filter"):
        decode_bytes(container.write_bytes(f), device="cpu")


def test_a_file_filter_in_an_image_file_makes_it_corrupt(tiny_codec, rgb_png):
    image = modalities.get("image")
    f = container.read_bytes(encode_signal(image.read(rgb_png), image, tiny_codec, device="cpu").data)
    f.extra = {**f.extra, container.FILE_FILTER_TAG: file_filter_bytes(np.ones(3) / 3)}
    with pytest.raises(FormatError, match="waveform filter section in image"):
        decode_bytes(container.write_bytes(f), device="cpu")


def test_info_names_the_files_own_filter(tiny_audio_codec, tmp_path):


    weak = np.zeros(9)
    weak[4] = 0.8
    codec = _with_codec_filter(tiny_audio_codec, weak)
    path = tmp_path / "c.coin"
    path.write_bytes(Encoder(codec, AUDIO, device="cpu").encode(AUDIO.read(write(tmp_path / "c.wav", clip(0.3)))).data)
    r = run("info", path, "--json")
    assert r.exit_code == 0, r.output
    assert "9-tap linear filter fitted to this file" in json.loads(r.output)["postfilter"]


def test_every_encoding_path_stores_the_files_filter(tiny_audio_codec, tmp_path):
    weak = np.zeros(9)
    weak[4] = 0.8
    codec = _with_codec_filter(tiny_audio_codec, weak)
    sig = AUDIO.read(write(tmp_path / "c.wav", clip(0.3)))
    enc = Encoder(codec, AUDIO, device="cpu")
    (shared,) = list(encode_each(sig, [enc]))
    assert shared.encoded.data == enc.encode(sig).data != _without_file_filter(shared.encoded.data)
