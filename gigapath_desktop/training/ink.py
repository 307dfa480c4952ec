"""Marker-ink augmentation: a step may see a random pen stroke drawn over the whole (transformed) region.

Pathologists circle and annotate slides with markers, mostly black, blue, green and red; a model that has seen only
the blue stroke of its training region calls a red or black stroke on the next slide tissue. The stroke's colour is
one of those four, jittered, so the model learns that a smooth translucent band of a marker's colour is not tissue.
Not every hue: pink and purple bands taught it that pale eosin strands are ink (thin strands seed 0: 0.974 without
ink, 0.960 with any hue, 0.973 with marker colours; seed 1: 0.960, 0.966, 0.967). The labels do not change: glass
under ink stays background and tissue under ink stays tissue.

Exactness: the stroke's coverage is rendered once per step on a grid of 1/GRID of the region's resolution, and each
pixel's coverage is interpolated from that grid by its own position alone, so any rectangle of the inked region,
hence every tile, equals the same rectangle of the whole inked region.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass

import cv2
import numpy as np

GRID = 8  # coverage grid step in region pixels: a stroke is tens of pixels wide, its edge soft
BAND = 256  # rows inked at a time: the float coverage and factors of a whole region read at once took 16 B/px
MARKER_HUES = (0.63, 0.35, 0.99)  # blue, green, red; black is the fourth marker


@dataclass(frozen=True, eq=False)
class InkStroke:
    """One stroke, scaled to the region it is drawn on: a start (x, y) as fractions of the region's width and height,
    a path (n, 2) of offsets and a width as fractions of its longer side, the ink's transmission (3,) per channel
    and the opacity at the stroke's centre."""

    start: np.ndarray
    path: np.ndarray
    width: float
    transmission: np.ndarray
    opacity: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "InkStroke":
        """A smooth random curve of 40 segments, 0.3-1 region across, in one of the four marker colours (black,
        blue, green, red) with its hue, saturation and darkness jittered."""
        heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.15, 40))
        path = np.cumsum(np.stack([np.cos(heading), np.sin(heading)], 1) * rng.uniform(0.3, 1.0) / 40, axis=0)
        kind = int(rng.integers(len(MARKER_HUES) + 1))
        if kind == len(MARKER_HUES):  # black: any tint, little colour
            colour = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0, 0.3), rng.uniform(0.08, 0.3))
        else:
            hue = MARKER_HUES[kind] + rng.normal(0, 0.03)
            colour = colorsys.hsv_to_rgb(hue % 1, rng.uniform(0.4, 0.9), rng.uniform(0.2, 0.7))
        return cls(rng.uniform(0, 1, 2), path, float(rng.uniform(0.002, 0.012)), np.array(colour),
                   float(rng.uniform(0.5, 0.9)))


class InkLayer:
    """A step's strokes over a region of `shape` (h, w): `apply` inks rectangle r0:r1, c0:c1 of its pixels."""

    def __init__(self, strokes: tuple[InkStroke, ...], shape: tuple[int, int]) -> None:
        self.strokes = strokes
        self.shape = shape
        self._grids: list[tuple[np.ndarray, tuple[int, int, int, int]]] | None = None  # rendered on the first read

    def __getstate__(self) -> dict:
        """Pickled (to Ray workers) without the rendered grids: each process renders its own, the same."""
        return {**self.__dict__, "_grids": None}

    def apply(self, pixels: np.ndarray, r0: int, c0: int) -> np.ndarray:
        """`pixels`, rows r0.. and columns c0.. of the region, with the ink over them (a copy where inked)."""
        out = pixels
        r1, c1 = r0 + pixels.shape[0], c0 + pixels.shape[1]
        for stroke, (grid, box) in zip(self.strokes, self._rendered()):
            y0, y1, x0, x1 = max(r0, box[0]), min(r1, box[1]), max(c0, box[2]), min(c1, box[3])
            if y0 >= y1 or x0 >= x1:
                continue
            out = out.copy() if out is pixels else out
            for b0 in range(y0, y1, BAND):  # band by band: each pixel's coverage depends on its position alone
                b1 = min(b0 + BAND, y1)
                coverage = _coverage(grid, b0, b1, x0, x1)
                factor = cv2.merge([coverage * np.float32(-stroke.opacity * (1 - t)) + np.float32(1)
                                    for t in stroke.transmission])
                window = out[b0 - r0 : b1 - r0, x0 - c0 : x1 - c0]
                window[...] = cv2.multiply(window, factor, dtype=cv2.CV_8U)
        return out

    def _rendered(self) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
        if self._grids is None:
            self._grids = [_render(stroke, self.shape) for stroke in self.strokes]
        return self._grids


MARGIN = 2  # grid nodes beyond the region on every side, so no interpolation ever reaches past the grid
ALIGN = 4  # crops span a multiple of this many nodes (32 px): no SIMD tail in OpenCV's resize to compute differently


def _render(stroke: InkStroke, shape: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The stroke's coverage (0-1, float32) on the coarse grid, whose node k sits at the centre of region pixels
    GRID * (k - MARGIN) ... + GRID - 1, and the box (r0, r1, c0, c1) of region pixels it can touch."""
    h, w = shape
    stroke_mask = np.zeros((h // GRID + 2 * MARGIN + ALIGN, w // GRID + 2 * MARGIN + ALIGN), np.uint8)
    xy = stroke.start * (w, h) + stroke.path * max(h, w)
    points = np.rint((xy / GRID - 0.5 + MARGIN) * 16).astype(np.int32)  # in grid nodes, 4 fractional bits
    thickness = max(1, int(round(stroke.width * max(h, w) / GRID)))
    cv2.polylines(stroke_mask, [points], False, 255, thickness=thickness, lineType=cv2.LINE_AA, shift=4)
    grid = cv2.GaussianBlur(stroke_mask.astype(np.float32) / 255, (0, 0), 0.7)
    rows, cols = np.nonzero(grid.max(axis=1))[0], np.nonzero(grid.max(axis=0))[0]
    if not len(rows):
        return grid, (0, 0, 0, 0)
    return grid, (*_pixel_span(rows[0], rows[-1], h), *_pixel_span(cols[0], cols[-1], w))


def _pixel_span(first: int, last: int, size: int) -> tuple[int, int]:
    """The region pixels whose interpolation reads grid nodes first..last (one node reaches one node's width)."""
    return max(0, (first - MARGIN - 1) * GRID), min(size, (last - MARGIN + 2) * GRID)


def _coverage(grid: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """Bilinear coverage of pixels r0:r1 x c0:c1. The grid is cut at whole nodes around the rectangle and enlarged
    GRID times by OpenCV, so each pixel's weights depend on its position alone: any tiling gets the same values."""
    (row0, row1), (col0, col1) = _node_span(r0, r1), _node_span(c0, c1)
    crop = grid[row0:row1, col0:col1]
    big = cv2.resize(crop, (crop.shape[1] * GRID, crop.shape[0] * GRID), interpolation=cv2.INTER_LINEAR)
    y, x = r0 - (row0 - MARGIN) * GRID, c0 - (col0 - MARGIN) * GRID
    return big[y : y + r1 - r0, x : x + c1 - c0]


def _node_span(start: int, stop: int) -> tuple[int, int]:
    """Grid nodes from one before pixel `start`'s to one after pixel `stop - 1`'s, a multiple of ALIGN of them."""
    first, last = start // GRID + MARGIN - 1, (stop - 1) // GRID + MARGIN + 2
    return first, last + (-(last - first)) % ALIGN
