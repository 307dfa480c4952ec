"""One tiling plan for training, prediction and distributed steps.

A region of H x W pixels is padded up to multiples of the model's stride S (the loss ignores the padding), then cut
into output tiles whose origins and sizes are multiples of S. Each tile's input is its output rectangle plus the halo
on every side, read from the region mirrored at its edges ('symmetric'), so every tile sees exactly the pixels the
whole padded region would give it: tiled and whole-region outputs are the same function evaluated piecewise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from gigapath_desktop.model.geometry import Geometry


@dataclass(frozen=True)
class Tile:
    """An output rectangle of the padded region, in region pixels."""

    y: int
    x: int
    height: int
    width: int

    @property
    def pixels(self) -> int:
        return self.height * self.width


@dataclass(frozen=True)
class TilePlan:
    height: int
    width: int
    geometry: Geometry
    tile: int  # output tile side, a multiple of the stride

    @classmethod
    def create(cls, height: int, width: int, geometry: Geometry, tile: int | None = None) -> "TilePlan":
        """`tile=None` makes the whole padded region one tile."""
        s = geometry.stride
        padded = max(math.ceil(height / s), math.ceil(width / s)) * s
        side = padded if tile is None else max(s, round(tile / s) * s)
        return cls(height, width, geometry, side)

    @property
    def padded_shape(self) -> tuple[int, int]:
        s = self.geometry.stride
        return (math.ceil(self.height / s) * s, math.ceil(self.width / s) * s)

    def tiles(self) -> Iterator[Tile]:
        ph, pw = self.padded_shape
        for y in range(0, ph, self.tile):
            for x in range(0, pw, self.tile):
                yield Tile(y, x, min(self.tile, ph - y), min(self.tile, pw - x))

    def __len__(self) -> int:
        ph, pw = self.padded_shape
        return math.ceil(ph / self.tile) * math.ceil(pw / self.tile)

    def input_pixels(self) -> int:
        """Pixels actually fed to the model over all tiles (output plus halos): the cost of the plan."""
        h2 = 2 * self.geometry.halo
        return sum((t.height + h2) * (t.width + h2) for t in self.tiles())

    def image(self, image: np.ndarray, tile: Tile) -> np.ndarray:
        """The tile's input: (height + 2 halo, width + 2 halo, C) from `image` mirrored at the region's edges."""
        halo = self.geometry.halo
        return mirrored(image, tile.y - halo, tile.x - halo, tile.height + 2 * halo, tile.width + 2 * halo)

    def labels(self, labels: np.ndarray, tile: Tile, pad: int) -> np.ndarray:
        """The labels of the tile's output rectangle, `pad` (a value the loss leaves out) where it reaches past the
        region."""
        out = np.full((tile.height, tile.width), pad, np.uint8)
        h, w = min(tile.height, self.height - tile.y), min(tile.width, self.width - tile.x)
        out[:h, :w] = labels[tile.y : tile.y + h, tile.x : tile.x + w]
        return out

    def crop(self, output: np.ndarray, tile: Tile) -> tuple[tuple[slice, slice], np.ndarray]:
        """Where a tile's output goes in the (unpadded) region, and the part of it that lands there."""
        h, w = min(tile.height, self.height - tile.y), min(tile.width, self.width - tile.x)
        return (slice(tile.y, tile.y + h), slice(tile.x, tile.x + w)), output[:h, :w]


def mirrored(image: np.ndarray, y0: int, x0: int, height: int, width: int) -> np.ndarray:
    """image[y0:y0+height, x0:x0+width] with out-of-range rows/columns mirrored as np.pad(mode='symmetric') would
    mirror the whole region (repeatedly, for regions smaller than the halo); reads only the rows/columns it needs."""
    h, w = image.shape[:2]
    if y0 >= 0 and x0 >= 0 and y0 + height <= h and x0 + width <= w:
        return np.asarray(image[y0 : y0 + height, x0 : x0 + width])
    rows = _symmetric(np.arange(y0, y0 + height), h)
    cols = _symmetric(np.arange(x0, x0 + width), w)
    r0, c0 = int(rows.min()), int(cols.min())
    window = np.asarray(image[r0 : rows.max() + 1, c0 : cols.max() + 1])
    out = np.empty((height, window.shape[1], *window.shape[2:]), window.dtype)
    for start, stop, src in _runs(rows - r0):
        out[start:stop] = window[src]
    result = np.empty((height, width, *window.shape[2:]), window.dtype)
    for start, stop, src in _runs(cols - c0):
        result[:, start:stop] = out[:, src]
    return result


def _symmetric(index: np.ndarray, n: int) -> np.ndarray:
    """Map indices onto 0..n-1 by mirroring at the edges (edge pixel repeated), periodically."""
    m = index % (2 * n)
    return np.where(m < n, m, 2 * n - 1 - m)


def _runs(index: np.ndarray) -> list[tuple[int, int, slice]]:
    """Split a mirrored index array into runs of steps +1 or -1, each copied as one slice (fast block copies)."""
    runs = []
    start = 0
    while start < len(index):
        step = int(index[start + 1] - index[start]) if start + 1 < len(index) else 1
        if step not in (1, -1):
            step = 1
        stop = start + 1
        while stop < len(index) and index[stop] - index[stop - 1] == step:
            stop += 1
        a, b = int(index[start]), int(index[stop - 1])
        runs.append((start, stop, slice(a, b + 1) if step == 1 else slice(a, b - 1 if b > 0 else None, -1)))
        start = stop
    return runs
