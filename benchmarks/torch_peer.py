"""The peer row of the training benchmark: what a user would write instead of our engine, a plain PyTorch CPU
whole-image training step of the same U-Net (same layers, kernels, strides and parameter count), soft Dice + BCE
over the whole region, Adam. PyTorch is a benchmark-only dependency (`pip install torch`), never needed by the app.

Usage: python benchmarks/torch_peer.py HEIGHT WIDTH [--steps N]   -> one JSON line: seconds per step, MP/s, peak RSS
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from common import peak_rss_bytes

BLOCK, POOL, FILTERS, KERNELS, SLOPE, BCE_WEIGHT = 4, 4, (8, 8, 8), (3, 5, 5), 0.2, 1.0


class UNet(nn.Module):
    """gigapath_desktop.model.unet.build_unet() in PyTorch: space-to-depth 4, 'valid' convolutions, pools of 4,
    nearest upsampling, centre-cropped skips merged by 1x1 convolutions, pixel shuffle out."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3 * BLOCK * BLOCK, FILTERS[0], 1)
        self.enc = nn.ModuleList(nn.Conv2d(FILTERS[max(i - 1, 0)], f, k) for i, (f, k) in enumerate(zip(FILTERS, KERNELS)))
        self.dec = nn.ModuleList(nn.Conv2d(FILTERS[i + 1] + FILTERS[i], FILTERS[i], 1) for i in range(len(FILTERS) - 1))
        self.logits = nn.Conv2d(FILTERS[0], BLOCK * BLOCK, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = F.pixel_unshuffle(image.float() / 127.5 - 1.0, BLOCK)
        x = F.leaky_relu(self.stem(x), SLOPE)
        skips = []
        for level, conv in enumerate(self.enc):
            if level:
                x = F.max_pool2d(x, POOL)
            x = F.leaky_relu(conv(x), SLOPE)
            skips.append(x)
        for level in reversed(range(len(self.dec))):
            x = F.interpolate(x, scale_factor=POOL, mode="nearest")
            skip = skips[level]
            dy, dx = (skip.shape[2] - x.shape[2]) // 2, (skip.shape[3] - x.shape[3]) // 2
            skip = skip[:, :, dy : dy + x.shape[2], dx : dx + x.shape[3]]
            x = F.leaky_relu(self.dec[level](torch.cat([x, skip], 1)), SLOPE)
        return F.pixel_shuffle(self.logits(x), BLOCK)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("height", type=int)
    parser.add_argument("width", type=int)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(0, 256, (1, 3, args.height, args.width), dtype=np.uint8))
    model = UNet()
    with torch.no_grad():
        out_shape = model(image).shape[2:]  # 'valid' convolutions and floor pooling: smaller than the input
    labels = torch.from_numpy((rng.random((1, 1, *out_shape)) > 0.5).astype(np.float32))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    times = []
    for _ in range(args.steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad()
        logits = model(image)
        p = torch.sigmoid(logits)
        dice = 1 - (2 * (p * labels).sum() + 1) / (p.sum() + labels.sum() + 1)
        loss = dice + BCE_WEIGHT * F.binary_cross_entropy_with_logits(logits, labels)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    seconds = float(np.median(times[1:]))  # the first step warms the allocator
    print(json.dumps({"mode": "pytorch-whole", "threads": torch.get_num_threads(), "params": sum(p.numel() for p in model.parameters()),
                      "seconds": seconds, "mp_per_s": args.height * args.width / seconds / 1e6,
                      "peak_rss_gib": peak_rss_bytes() / 2**30}))


if __name__ == "__main__":
    sys.exit(main())
