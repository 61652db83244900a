"""Per-dimension quantizer: ranges, clipping at the edges, error bound inside the range."""

import numpy as np
import torch

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
    out = q.quantize_ste(z)
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
