"""Per-dimension quantizer: ranges, clipping at the edges, error bound inside the range."""

import numpy as np
import torch

from coinpp import spec as specs
from coinpp.fit import quantize_ste
from coinpp.quantize import Quantizer


def _quantizer(bits=4):
    rng = np.random.default_rng(0)
    lat = rng.normal([0.0, 1.0, -2.0], [0.1, 1.0, 3.0], size=(5000, 3)).astype(np.float32)
    return Quantizer.fit(lat, bits), lat


def test_ranges_are_per_dimension():
    q, lat = _quantizer()
    assert q.step.shape == (3,)
    assert q.step[2] > 10 * q.step[0]
    assert np.allclose(q.low, lat.mean(0) - 3 * lat.std(0), rtol=1e-4, atol=1e-4)


def test_edges_and_clipping():
    q, _ = _quantizer(4)
    high = q.low + q.step * 15
    sym = q.quantize(np.stack([q.low, high, q.low - 100, high + 100]))
    assert sym.tolist() == [[0] * 3, [15] * 3, [0] * 3, [15] * 3]
    assert sym.dtype == np.int32


def test_error_within_half_step_inside_range():
    q, lat = _quantizer(5)
    inside = np.all((lat >= q.low) & (lat <= q.low + q.step * 31), axis=1)
    err = np.abs(q.dequantize(q.quantize(lat[inside])) - lat[inside])
    assert np.all(err <= q.step / 2 + 1e-6)


def test_straight_through_has_identity_gradient():
    q, _ = _quantizer(3)
    z = torch.zeros(2, 3, requires_grad=True)
    out = quantize_ste(q, z)
    out.sum().backward()
    assert torch.equal(z.grad, torch.ones(2, 3))
    assert np.allclose(out.detach().numpy(), q.dequantize(q.quantize(z.detach())))


def test_equal_distortion_steps_keep_the_mean_rate_and_the_range():
    rng = np.random.default_rng(0)
    lat = rng.normal(0, [0.1, 0.2, 0.05, 0.1], size=(5000, 4)).astype(np.float32)
    uniform = Quantizer.fit(lat, 4)
    sens = np.array([1.0, 4.0, 1.0, 16.0])
    q = Quantizer.fit(lat, 4, sensitivity=sens)
    # Equal distortion: sensitivity * step^2 is the same for every dimension.
    assert np.allclose(sens * q.step.astype(np.float64) ** 2, (sens * q.step.astype(np.float64) ** 2)[0], rtol=1e-5)
    assert np.isclose(np.log(q.step).mean(), np.log(uniform.step).mean(), atol=1e-5)
    top = q.low + q.step * (q.levels - 1)
    mean, std = lat.mean(0), lat.std(0)
    assert np.all(q.low <= mean - 3 * std + 1e-6) and np.all(top >= mean + 3 * std - 1e-6)
    assert q.bits > 4  # the finest dimension needs a larger alphabet to keep its range
    assert np.allclose((q.low + top) / 2, mean, atol=1e-6)


def _correlated(n=20000, seed=0):
    """Latents whose dimensions share one strong factor (as meta-learned latents do)."""
    rng = np.random.default_rng(seed)
    common = rng.normal(size=(n, 1))
    return (common * [0.3, 0.25, -0.2, 0.3] + rng.normal(0, 0.03, size=(n, 4)) + [0.1, -0.2, 0.0, 0.5]).astype(
        np.float32)


def _entropy_bits(symbols):
    total = 0.0
    for col in symbols.T:
        p = np.bincount(col) / len(col)
        p = p[p > 0]
        total -= (p * np.log2(p)).sum() * len(col)
    return total


def test_decorrelating_transform_is_orthonormal_and_round_trips():
    lat = _correlated()
    q = Quantizer.fit(lat, 4, decorrelate=True)
    assert np.allclose(q.basis @ q.basis.T, np.eye(4), atol=1e-5)
    assert np.allclose(q.centre, lat.mean(0), atol=1e-5)
    y = q.coefficients(lat)
    cov = np.cov(y.T)
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 1e-3 * cov.max()  # components uncorrelated
    assert np.all(np.diff(np.diag(cov)) <= 1e-9)  # largest first
    assert np.allclose(q.step, q.step[0])  # one step for every component
    # Inside the range, the error in latent space is at most half a step per component.
    inside = np.all((y >= q.low) & (y <= q.low + q.step * (q.levels - 1)), axis=1)
    err = q.dequantize(q.quantize(lat[inside])) - lat[inside]
    assert np.all(np.linalg.norm(err, axis=1) <= np.sqrt(4) * q.step[0] / 2 + 1e-5)
    # Refitting gives the same basis (component signs are fixed).
    assert np.allclose(Quantizer.fit(lat[::-1].copy(), 4, decorrelate=True).basis, q.basis, atol=1e-4)


def test_decorrelating_transform_codes_correlated_latents_in_fewer_bits():
    lat = _correlated()
    plain = Quantizer.fit(lat, 4)
    q = Quantizer.fit(lat, 4, decorrelate=True)
    mse = [float(((x.dequantize(x.quantize(lat)) - lat) ** 2).mean()) for x in (plain, q)]
    bits = [_entropy_bits(x.quantize(lat)) for x in (plain, q)]
    assert mse[1] < 1.2 * mse[0]  # about the same distortion...
    assert bits[1] < 0.8 * bits[0]  # ...for far fewer bits
    assert q.bits > 4  # the largest component needs a larger alphabet at the common step


def test_decorrelating_straight_through_matches_quantize_dequantize():
    lat = _correlated(2000)
    q = Quantizer.fit(lat, 3, decorrelate=True)
    z = torch.from_numpy(lat[:5]).requires_grad_(True)
    out = quantize_ste(q, z)
    out.sum().backward()
    assert torch.allclose(z.grad, torch.ones_like(z))
    assert np.allclose(out.detach().numpy(), q.dequantize(q.quantize(lat[:5])), atol=1e-5)
    assert q.latent_step.shape == (4,) and np.all(q.latent_step > 0)


def test_decorrelate_and_equal_distortion_steps_exclude_each_other():
    import pytest

    with pytest.raises(ValueError):
        Quantizer.fit(_correlated(100), 4, sensitivity=np.ones(4), decorrelate=True)


def test_codec_with_a_transform_declares_it_in_its_hashed_config(tmp_path):
    """Software that predates the transform must refuse such a codec (on the hash) rather than
    decode it without the transform; tables and config must agree."""
    import json
    import shutil

    import pytest

    from coinpp import codec as codecs
    from coinpp.errors import CodecError
    from coinpp.evaluation.conformance import TINY_PCA_CODEC, codecs_folder

    folder = tmp_path / TINY_PCA_CODEC
    shutil.copytree(codecs_folder() / TINY_PCA_CODEC, folder)
    c = codecs.load_folder(folder)
    assert c.quantizer.basis is not None and c.spec.transform == "principal-components"
    config = json.loads((folder / "config.json").read_text())
    old_view = {k: v for k, v in config.items() if k != "transform"}
    assert specs.codec_hash(folder, old_view).hex() != config["hash"]
    # A config without the field but with a matching hash still does not load: the tables disagree.
    old_view["hash"] = specs.codec_hash(folder, old_view).hex()
    (folder / "config.json").write_text(json.dumps(old_view))
    with pytest.raises(CodecError, match="transform"):
        codecs.load_folder(folder)


def test_info_says_a_file_codes_principal_components(monkeypatch):
    import json

    from click.testing import CliRunner

    from coinpp import codec as codecs
    from coinpp.cli import cli
    from coinpp.evaluation.conformance import ROOT, TINY_PCA_CODEC, codecs_folder

    monkeypatch.setenv("COIN_CODECS_PATH", str(codecs_folder()))
    codecs.clear_cache()
    r = CliRunner().invoke(cli, ["info", str(ROOT / f"{TINY_PCA_CODEC}.rgb-47x61.coin"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["coded_as"].startswith("principal components")
    r = CliRunner().invoke(cli, ["info", str(ROOT / "conformance-tiny-b5.rgb-47x61.coin"), "--json"])
    assert json.loads(r.output)["coded_as"] == "latent dimensions"
    codecs.clear_cache()
