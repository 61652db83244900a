"""The field's measures beside PSNR: MS-SSIM for images, wideband PESQ and STOI for speech."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import smooth_image

from coinpp import modalities
from coinpp.evaluation.metrics import extra_measures
from coinpp.modalities import Signal

pytest.importorskip("pytorch_msssim")
pytest.importorskip("pesq")
pytest.importorskip("pystoi")


def _image(h, w, noise, seed=0):
    rng = np.random.default_rng(seed)
    v = smooth_image(h, w).astype(np.float64) / 255 + rng.normal(0, noise, (h, w, 3))
    return Signal(np.clip(v, 0, 1).astype(np.float32), {"channels": 3})


def test_ms_ssim_orders_decodes_and_skips_small_images():
    m = modalities.get("image")
    original = _image(192, 200, 0.0)
    same = extra_measures(m, original, original)["ms_ssim"]
    slight, heavy = (extra_measures(m, original, _image(192, 200, n, 1))["ms_ssim"] for n in (0.01, 0.1))
    assert same == pytest.approx(1.0) and 1.0 > slight > heavy > 0
    assert extra_measures(m, _image(100, 200, 0.0), _image(100, 200, 0.0)) == {}  # too small for 5 scales


def _speech_like(seconds=2.0, rate=16000, seed=0):
    """Voiced bursts (harmonics of a gliding pitch, syllable envelopes) with pauses."""
    t = np.arange(int(seconds * rate)) / rate
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None) ** 2
    rng = np.random.default_rng(seed)
    return 0.3 * voiced * envelope / 3 + 0.001 * rng.standard_normal(t.size)


def test_pesq_and_stoi_order_decodes_of_speech():
    m = modalities.get("audio")
    wave = _speech_like()
    meta = {"sample_rate": 16000, "subtype": "PCM_16", "channels": 1}

    def sig(w):
        return Signal(((np.clip(w, -1, 1) + 1) / 2)[:, None].astype(np.float32), meta)

    rng = np.random.default_rng(1)
    clean = extra_measures(m, sig(wave), sig(wave))
    slight = extra_measures(m, sig(wave), sig(wave + 0.003 * rng.standard_normal(wave.size)))
    heavy = extra_measures(m, sig(wave), sig(wave + 0.05 * rng.standard_normal(wave.size)))
    assert clean["pesq"] > slight["pesq"] > heavy["pesq"] and clean["stoi"] >= slight["stoi"] > heavy["stoi"]
    # PESQ is defined (wideband) at 16 kHz only; STOI at any rate
    other = dict(meta, sample_rate=8000)
    at8k = extra_measures(m, Signal(sig(wave).values[::2], other), Signal(sig(wave).values[::2], other))
    assert "pesq" not in at8k and at8k["stoi"] == pytest.approx(1.0, abs=1e-3)
