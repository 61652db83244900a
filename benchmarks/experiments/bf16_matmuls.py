"""Would bfloat16 matmuls in the encoder's hidden layers pay? Time and quality on the held-out photos.

The encoder's hot path (model.forward_keeping and model.latent_grad_from: every SGD, Adam and filter
step) runs its hidden-layer products in bfloat16 (float32 accumulation inside the kernel) while the
first layer, the biases, the sine arguments and everything else stay float32. The decoder is untouched
(float32), so the files decode as any other; only the latents the encoder finds differ.

    python benchmarks/experiments/bf16_matmuls.py [--codec image-klt-6x128-l64-b5] [--crop 512x768]
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager

import torch

from coinpp import codec as codecs
from coinpp.bitstream import parse
from coinpp.decoder import Decoder
from coinpp.encoder import Encoder
from coinpp.evaluation.heldout import prepare, psnr
from coinpp.model import LatentModulatedSiren

BF16 = torch.bfloat16


def forward_keeping_bf16(self, coords, latents):
    w0, width = self.cfg.w0, self.cfg.width
    shifts = self.latent_map(latents)
    pre = []
    h = self.scaled(coords)
    for i, (W, b) in enumerate(zip(self.weights, self.biases, strict=True)):
        if i == 0:  # the coordinates' layer in float32: its products are the sines' phases
            u = h @ (W.T * w0)
        else:
            u = (h.to(BF16) @ (W.T * w0).to(BF16)).float()
        bias = ((shifts[:, i * width : (i + 1) * width] + b) * w0).unsqueeze(1)
        u = u + bias if u.dim() == 2 else u.add_(bias)
        pre.append(u)
        h = torch.sin(u)
    out = h @ self.out_weight.T
    return out.add_(self.out_bias + 0.5), pre


def latent_grad_from_bf16(self, pre, g_out, scale=1.0):
    w0 = self.cfg.w0
    g_h = g_out @ (self.out_weight * scale)
    g_shifts = []
    for i in range(len(pre) - 1, -1, -1):
        g_u = pre[i].cos_().mul_(g_h)
        g_shifts.append(g_u.sum(dim=1) * w0)
        if i > 0:
            g_h = (g_u.to(BF16) @ (self.weights[i] * w0).to(BF16)).float()
    return torch.cat(g_shifts[::-1], dim=1) @ self.latent_map.weight


@contextmanager
def bf16_hidden_layers():
    saved = LatentModulatedSiren.forward_keeping, LatentModulatedSiren.latent_grad_from
    LatentModulatedSiren.forward_keeping, LatentModulatedSiren.latent_grad_from = (forward_keeping_bf16,
                                                                                  latent_grad_from_bf16)
    try:
        yield
    finally:
        LatentModulatedSiren.forward_keeping, LatentModulatedSiren.latent_grad_from = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", default="image-klt-6x128-l64-b5")
    ap.add_argument("--data", default="../shared/data/train-images")
    ap.add_argument("--crop", default="512x768")
    args = ap.parse_args()
    image, signals, pixels = prepare(args.data, args.crop)
    torch.set_num_threads(2)
    c = codecs.load(args.codec)
    e = Encoder(c, image, device="cpu")
    print("| matmuls | bpp | PSNR post-filtered | encode s per photo |\n|---|---|---|---|")
    for label in ("float32", "bfloat16 hidden layers", "float32"):  # float32 twice: the machine's drift
        nbytes, pairs, secs = 0, [], 0.0
        for s in signals:
            t0 = time.perf_counter()
            if label.startswith("bfloat16"):
                with bf16_hidden_layers():
                    data = e.encode(s).data
            else:
                data = e.encode(s).data
            secs += time.perf_counter() - t0
            nbytes += len(data)
            with torch.no_grad():
                pairs.append((image.to_network(Decoder("cpu").decode(parse(data)), 3), s.values))
        print(f"| {label} | {8 * nbytes / pixels:.4f} | {psnr(pairs):.3f} dB | {secs / len(signals):.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
