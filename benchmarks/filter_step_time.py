"""Seconds per encoder step through the post-filter on one Kodak-sized image, each way it can run:
the post-filter's graphs kept from its one forward pass (the default for images up to
fit.KEEP_GRAPH_BYTES) or evaluated a second time for the backward pass, and the last step's
loss alone (fit.filtered_loss). Also checks that the ways agree. Random latents: the cost does not
depend on them.

    python benchmarks/filter_step_time.py [CODEC] [IMAGE]   # default image-klt-6x128-l64-b5, kodim01
"""
import sys
import time

import numpy as np
import torch
from PIL import Image

from coinpp import codec as codecs
from coinpp import fit, malloc

malloc.tune()  # as the CLI does
torch.set_num_threads(2)
name = sys.argv[1] if len(sys.argv) > 1 else "image-klt-6x128-l64-b5"
path = sys.argv[2] if len(sys.argv) > 2 else "../shared/data/kodak/kodim01.png"
c = codecs.load(name)
img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
goal = torch.from_numpy(img).permute(2, 0, 1).contiguous()
patches = -(-img.shape[0] // c.patch[0]) * -(-img.shape[1] // c.patch[1])
torch.manual_seed(0)
z = torch.randn(patches, c.net.cfg.latent_dim) * 0.1
views = c.preset().filter.views or c.postfilter.views  # None: the filter's own
kept_default = fit.KEEP_GRAPH_BYTES


def best_of(f, n: int = 2) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


for _ in range(2):  # the first round warms up
    fit.KEEP_GRAPH_BYTES = 0
    two_pass = best_of(lambda: fit.filtered_loss_and_latent_grad(c.net, c.postfilter, c.patch, goal, z, views))
    filter_two_pass = best_of(lambda: fit.loss_and_input_grad(c.postfilter, goal, goal, views))
    fit.KEEP_GRAPH_BYTES = kept_default
    kept = best_of(lambda: fit.filtered_loss_and_latent_grad(c.net, c.postfilter, c.patch, goal, z, views))
    filter_kept = best_of(lambda: fit.loss_and_input_grad(c.postfilter, goal, goal, views))
    alone = best_of(lambda: fit.filtered_loss(c.net, c.postfilter, c.patch, goal, z, views))
    print(f"{name}, {path.split('/')[-1]}, {views} views: step {two_pass:.2f} s (filter evaluated twice) / "
          f"{kept:.2f} s (graphs kept); the filter's part {filter_two_pass:.2f} / {filter_kept:.2f} s; "
          f"loss alone {alone:.2f} s", flush=True)
loss_kept, grad_kept = fit.loss_and_input_grad(c.postfilter, goal * 0.9, goal, views)
loss_two, grad_two = fit.loss_and_input_grad(c.postfilter, goal * 0.9, goal, views, keep_bytes=0)
alone = fit.filtered_loss(c.net, c.postfilter, c.patch, goal, z, views)
full = fit.filtered_loss_and_latent_grad(c.net, c.postfilter, c.patch, goal, z, views)[0]
print(f"agreement: loss {loss_kept:.6g} vs {loss_two:.6g}, gradient max difference "
      f"{(grad_kept - grad_two).abs().max().item():.3g}; loss alone {alone:.6g} vs {full:.6g}")
