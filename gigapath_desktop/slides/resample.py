"""Slides read at a chosen resolution (µm per pixel), whatever their scanner's.

`AreaResampled` is an array-like over a region read at any scale: each output pixel is the area-weighted mean of the
source pixels its footprint covers (area averaging, as OpenCV's INTER_AREA does when shrinking). Every output pixel
is a fixed function of the source, so any rectangle read alone equals the same rectangle of the whole resampled
region: tiled training and prediction stay exact, and gigapixel regions are never held whole.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gigapath_desktop.errors import SlideError
from gigapath_desktop.slides.arraylike import RectangleView
from gigapath_desktop.slides.slide import Region, Slide, SlideSource


STRIP = 128  # output rows resampled at a time
MAX_ENLARGE = 4  # the most a slide's pixels are enlarged to reach a finer µm/px


@dataclass(frozen=True)
class Scale:
    """How a region is read: from pyramid `level`, shrunk by `factor` (level pixels per output pixel);
    `downsample` is the product: level-0 pixels per output pixel."""

    level: int
    factor: float
    downsample: float

    @classmethod
    def for_mpp(cls, slide: Slide, mpp: float) -> "Scale":
        """The pyramid level to read `mpp` from (the coarsest no coarser than it) and the remaining factor."""
        if slide.mpp is None:
            raise SlideError(f"{slide.path}: records no µm/px, so it cannot be read at {mpp:g} µm/px")
        wanted = mpp / slide.mpp[0]  # level-0 pixels per output pixel
        if wanted < 1 / MAX_ENLARGE:
            raise SlideError(f"{slide.path}: reading it at {mpp:g} µm/px would enlarge its {slide.mpp[0]:g} µm/px "
                             f"pixels {1 / wanted:.3g}x; at most {MAX_ENLARGE}x (pixels finer than the scan's hold "
                             f"nothing new, and the region's size grows with the square)")
        level = max((k for k, d in enumerate(slide.level_downsamples) if d <= wanted * (1 + 1e-6)), default=0)
        return cls(level, wanted / slide.level_downsamples[level], wanted)


class AreaResampled(RectangleView):
    """`source` (rectangle-readable (H, W, C) uint8) shrunk by `factor`: shape, dtype, ndim and rectangle reads."""

    def __init__(self, source: Any, factor: float) -> None:
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"the resampling factor must be a positive number, got {factor}")
        self.source = source
        self.factor = factor
        h, w = source.shape[:2]
        self.shape = (max(1, round(h / factor)), max(1, round(w / factor)), *source.shape[2:])
        self.dtype = source.dtype
        self.ndim = source.ndim

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Output rows r0:r1, columns c0:c1, STRIP output rows at a time (memory ~ STRIP x source width)."""
        col_index, col_weight = _footprints(c0, c1, self.factor, self.source.shape[1])
        left, right = int(col_index.min()), int(col_index.max()) + 1
        out = np.empty((r1 - r0, c1 - c0, *self.shape[2:]), self.dtype)
        for s0 in range(r0, r1, STRIP):
            s1 = min(s0 + STRIP, r1)
            row_index, row_weight = _footprints(s0, s1, self.factor, self.source.shape[0])
            top = int(row_index.min())
            block = np.asarray(self.source[top : int(row_index.max()) + 1, left:right])
            block = block.reshape(*block.shape[:2], -1)
            across = sum(row_weight[:, k, None, None] * block[row_index[:, k] - top]
                         for k in range(row_index.shape[1]))
            strip = sum(col_weight[None, :, k, None] * across[:, col_index[:, k] - left]
                        for k in range(col_index.shape[1]))
            out[s0 - r0 : s1 - r0] = np.clip(np.rint(strip), 0, 255).astype(self.dtype).reshape(out[s0 - r0 : s1 - r0].shape)
        return out


def read_at(slide: Slide, region: Region, scale: Scale) -> AreaResampled:
    """The level-0 rectangle `region` of `slide` read at `scale` (lazily, rectangle by rectangle)."""
    return AreaResampled(SlideSource(slide, Region(region.x, region.y, region.width, region.height, scale.level)),
                         scale.factor)


def _footprints(start: int, stop: int, factor: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """For output pixels start..stop-1 along one axis: the source pixels each covers (n, k) and their area weights
    (summing to 1); footprints past the source's end are cut there."""
    lo = np.arange(start, stop) * factor
    hi = np.minimum(lo + factor, size)
    first = np.minimum(np.floor(lo).astype(np.int64), size - 1)
    count = int(np.max(np.ceil(hi) - first)) if stop > start else 1
    index = first[:, None] + np.arange(count)[None]
    overlap = np.clip(np.minimum(index + 1, hi[:, None]) - np.maximum(index, lo[:, None]), 0, None)
    weight = overlap / np.maximum(overlap.sum(axis=1, keepdims=True), 1e-12)
    return np.minimum(index, size - 1), weight.astype(np.float32)
