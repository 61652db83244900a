"""The hand-written latent gradient must equal autograd's, first and second order."""

import pytest
import torch

from coinpp.model import LatentModulatedSiren, SirenConfig
from coinpp.patching import patch_coordinates

MODULATIONS = pytest.mark.parametrize("modulation", ["shift", "scale-shift"])


def _setup(seed=0, modulation="shift"):
    torch.manual_seed(seed)
    net = LatentModulatedSiren(SirenConfig(width=24, depth=3, latent_dim=6, modulation=modulation)).double()
    coords = patch_coordinates((5, 7)).double()
    targets = torch.rand(4, 35, 3, dtype=torch.float64)
    return net, coords, targets


@MODULATIONS
def test_latent_gradient_matches_autograd(modulation):
    net, coords, targets = _setup(modulation=modulation)
    z = (torch.randn(4, 6, dtype=torch.float64) * 0.1).requires_grad_(True)
    loss, grad = net.loss_and_latent_grad(coords, z, targets)
    (auto,) = torch.autograd.grad(loss.sum(), z)
    assert torch.allclose(grad, auto, rtol=1e-9, atol=1e-12)
    assert torch.allclose(loss, (net(coords, z) - targets).pow(2).mean(dim=(1, 2)))
    with torch.no_grad():  # the encoder's path: w0 folded in, cosines in place
        loss_e, grad_e = net.loss_and_latent_grad(coords, z.detach(), targets)
    assert torch.allclose(grad_e, auto, rtol=1e-9, atol=1e-12) and torch.allclose(loss_e, loss)
    shifts = net.latent_map(z[:1].detach()).expand(coords.shape[0], -1)  # decoding at arbitrary points
    assert torch.allclose(net.forward_points(coords, shifts), net(coords, z[:1].detach())[0])


def test_scale_shift_modulation_scales_each_layer():
    """sin(w0 ((1 + g) (W h + b) + s)): with only the scales' rows of the latent map set, a latent
    changes the output exactly as scaling the layers' affine outputs does."""
    net, coords, _ = _setup(modulation="scale-shift")
    depth, width = net.cfg.depth, net.cfg.width
    with torch.no_grad():
        net.latent_map.weight[: depth * width] = 0
        net.latent_map.weight[depth * width :] = 0
        net.latent_map.weight[depth * width :, 0] = 1.0  # latent 0 scales every unit by 1 + z0
    z = torch.zeros(1, 6, dtype=torch.float64)
    z[0, 0] = 0.5
    h = coords * net.cfg.coord_scale
    for W, b in zip(net.weights, net.biases, strict=True):
        h = torch.sin(net.cfg.w0 * 1.5 * (h @ W.T + b))
    expect = h @ net.out_weight.T + net.out_bias + 0.5
    assert torch.allclose(net(coords, z)[0], expect)


@MODULATIONS
def test_second_order_meta_gradient_matches_autograd(modulation):
    net, coords, targets = _setup(1, modulation)

    def meta_grads(manual: bool):
        net.zero_grad()
        z = torch.zeros(4, 6, dtype=torch.float64, requires_grad=True)
        for _ in range(2):
            if manual:
                _, g = net.loss_and_latent_grad(coords, z, targets)
            else:
                loss = (net(coords, z) - targets).pow(2).mean(dim=(1, 2)).sum()
                (g,) = torch.autograd.grad(loss, z, create_graph=True)
            z = z - net.learning_rates() * g
        (net(coords, z) - targets).pow(2).mean().backward()
        return [p.grad.clone() for p in net.parameters()]

    for a, b in zip(meta_grads(True), meta_grads(False), strict=True):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-10)


def test_zero_latent_is_unmodulated_and_output_is_centred():
    net, coords, _ = _setup()
    out = net(coords, torch.zeros(2, 6, dtype=torch.float64))
    assert out.shape == (2, 35, 3)
    assert torch.equal(out[0], out[1])
    assert abs(out.mean().item() - 0.5) < 0.2


def test_inner_loop_reduces_loss():
    net, coords, targets = _setup(2)
    z0 = torch.zeros(4, 6, dtype=torch.float64)
    before, _ = net.loss_and_latent_grad(coords, z0, targets)
    with torch.no_grad():
        net.inner_lr.fill_(0.05)
    z = net.inner_loop(coords, targets, steps=5)
    after, _ = net.loss_and_latent_grad(coords, z, targets)
    assert after.mean() < before.mean()
