"""Rasterize label annotations into a uint8 mask for any region at any level, strip by strip.

Coverage rule: a mask pixel takes an annotation's value when the pixel's centre lies inside the annotation
(exterior ring in, holes out; a centre exactly on a left/top edge counts as inside, on a right/bottom edge as outside,
so two annotations sharing an edge never both claim a pixel). Pixel (row i, col j) of a region with level-0 origin
(x0, y0) read at downsample d has its centre at level-0 (x0 + (j + 0.5) d, y0 + (i + 0.5) d). Later annotations
paint over earlier ones.

The fill is a vectorised even-odd scanline: OpenCV's and Pillow's fills also paint pixels the boundary merely touches
(a 10 x 10 square becomes 11 x 11), and scikit-image tests every pixel of the bounding box against every vertex.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
from shapely.geometry import MultiPolygon, Polygon

from gigapath_desktop.annotations.model import BACKGROUND, TISSUE, Annotation, Role

UNLABELLED = 255  # the label value the loss and every metric ignore (sparse labels: pixels no annotation covers)
STRIP_PIXELS = 1 << 22  # pixels per strip: bounds the fill's scratch memory (~9 bytes/px) for any region width


def rasterize(
    annotations: Iterable[Annotation],
    origin: tuple[float, float],
    downsample: float,
    shape: tuple[int, int],
    values: Mapping[str, int] | None = None,
    out: np.ndarray | None = None,
    fill: int = 0,
) -> np.ndarray:
    """Paint the label annotations into an (h, w) uint8 mask (or into `out`, e.g. a memmap, strip by strip).

    `values` maps class names to mask values (unlisted classes paint 0); by default Background paints 0 and every
    other class 1: a QuPath "Tumor" or "Stroma" area is tissue (`other_classes` names them, so users hear of it).
    Pixels no annotation covers get `fill`: 0 (dense labels: the background class) or UNLABELLED (sparse labels).
    """
    h, w = shape
    if out is None:
        out = np.zeros((h, w), np.uint8)
    labels = [a for a in annotations if a.role is Role.LABEL]
    x0, y0 = origin

    def value(name: str) -> int:
        return values.get(name, 0) if values is not None else int(name != BACKGROUND.name)

    painted = [(_pixel_rings(a.geometry, x0, y0, downsample), value(a.cls.name)) for a in labels]
    rows = max(1, STRIP_PIXELS // max(w, 1))
    for row0 in range(0, h, rows):
        strip = np.full((min(rows, h - row0), w), fill, np.uint8)
        for rings, value in painted:
            _fill(strip, rings, value, row0)
        out[row0 : row0 + strip.shape[0]] = strip
    return out


def other_classes(annotations: Iterable[Annotation]) -> list[str]:
    """Names of label classes other than Tissue and Background, which binary training counts as tissue."""
    names = {a.cls.name for a in annotations if a.role is Role.LABEL}
    return sorted(names - {TISSUE.name, BACKGROUND.name})


def _pixel_rings(geometry: Polygon | MultiPolygon, x0: float, y0: float, downsample: float) -> list[np.ndarray]:
    """Every ring (exteriors and holes) as (n, 2) arrays of (col, row) in pixel-centre coordinates."""
    polygons = geometry.geoms if isinstance(geometry, MultiPolygon) else [geometry]
    rings = []
    for polygon in polygons:
        for ring in [polygon.exterior, *polygon.interiors]:
            xy = np.asarray(ring.coords, dtype=np.float64)
            rings.append(np.column_stack([(xy[:, 0] - x0) / downsample - 0.5, (xy[:, 1] - y0) / downsample - 0.5]))
    return rings


def _fill(strip: np.ndarray, rings: list[np.ndarray], value: int, row0: int) -> None:
    """Even-odd fill of `rings` into the rows [row0, row0 + len(strip)) of the mask that `strip` holds."""
    nrows, width = strip.shape
    edges = np.concatenate([np.column_stack([r[:-1], r[1:]]) for r in rings])  # x0, y0, x1, y1
    edges = edges[edges[:, 1] != edges[:, 3]]
    ylo, yhi = np.minimum(edges[:, 1], edges[:, 3]), np.maximum(edges[:, 1], edges[:, 3])
    first = np.maximum(np.ceil(ylo), row0).astype(np.int64)
    stop = np.minimum(np.ceil(yhi), row0 + nrows).astype(np.int64)
    counts = np.maximum(stop - first, 0)
    if counts.sum() == 0:
        return
    edge_of = np.repeat(np.arange(len(edges)), counts)
    rows = first[edge_of] + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    ex0, ey0, ex1, ey1 = edges[edge_of].T
    xs = ex0 + (rows - ey0) * (ex1 - ex0) / (ey1 - ey0)
    order = np.lexsort((xs, rows))
    rows, xs = rows[order].reshape(-1, 2)[:, 0] - row0, xs[order].reshape(-1, 2)
    start = np.clip(np.ceil(xs[:, 0]), 0, width).astype(np.int64)
    end = np.clip(np.ceil(xs[:, 1]), 0, width).astype(np.int64)
    keep = end > start
    rows, start, end = rows[keep], start[keep], end[keep]
    if len(rows) == 0:
        return
    c0, c1 = int(start.min()), int(end.max())
    diff = np.zeros((nrows, c1 - c0 + 1), np.int32)
    np.add.at(diff, (rows, start - c0), 1)
    np.add.at(diff, (rows, end - c0), -1)
    inside = np.cumsum(diff, axis=1, dtype=np.int32)[:, :-1] > 0
    strip[:, c0:c1][inside] = value

