"""Mask -> polygons (with holes) in level-0 coordinates: the inverse of `raster.rasterize`.

OpenCV traces the mask at twice its resolution (each pixel a 2 x 2 block): the traced rings then run a quarter pixel
inside every foreground edge (and a quarter pixel into the foreground around every hole), so each pixel centre lies
on the right side of its ring and rasterizing the polygons back with the centre rule gives the same mask exactly.
The rings become polygons as they are, one ring at a time, so time and memory stay linear in the mask and its
boundary (no buffers, no unions: a speckled mask with tens of thousands of holes once took minutes).
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
import shapely
from shapely.geometry import Polygon

from gigapath_desktop.errors import Cancelled


def mask_to_polygons(
    mask: np.ndarray,
    origin: tuple[float, float] = (0.0, 0.0),
    downsample: float = 1.0,
    simplify: float = 0.0,
    min_area: float = 0.0,
    cancel: Callable[[], bool] | None = None,
) -> list[Polygon]:
    """Polygons (level-0 px) covering the non-zero pixels of `mask`, one per connected component, holes kept.

    `simplify` is a tolerance in level-0 px (each ring on its own); `min_area` drops smaller components and fills
    smaller holes (level-0 px^2). `cancel()` is polled between components. Needs ~8 bytes per mask pixel.
    """
    binary = np.ascontiguousarray(mask != 0, dtype=np.uint8)
    doubled = _doubled(binary)
    # RETR_LIST, not RETR_CCOMP: OpenCV's hierarchy is quadratic in the number of holes (27 s for 250k); holes are
    # matched to their component by labelling the mask instead, which is linear.
    contours, _ = cv2.findContours(doubled, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    del doubled
    if not contours:
        return []
    _, labels = cv2.connectedComponents(binary, connectivity=8, ltype=cv2.CV_32S)
    shells: dict[int, np.ndarray] = {}
    holes: dict[int, list[np.ndarray]] = {}
    for contour in contours:
        points = contour[:, 0, :] // 2  # doubled cell -> mask pixel; bridge cells fall on background (label 0)
        component = int(labels[points[:, 1], points[:, 0]].max())
        if cv2.contourArea(contour, oriented=True) < 0:  # OpenCV traces outer borders one way round, holes the other
            shells[component] = contour
        else:
            holes.setdefault(component, []).append(contour)
    del labels
    scale = downsample / 2  # doubled-grid units -> level-0 px; a doubled cell u has its centre at pixel (u - 0.5) / 2
    offset = np.array(origin) + 0.25 * downsample
    min_pixels = min_area / downsample**2
    epsilon = 2 * simplify / downsample

    def rings(traced: list[np.ndarray], simplified: bool = True) -> np.ndarray:
        """LinearRings in level-0 px, made in one call (a component can have tens of thousands of holes)."""
        if epsilon > 0 and simplified:
            traced = [cv2.approxPolyDP(c, epsilon, closed=True) if len(c) > 4 else c for c in traced]
        traced = [c for c in traced if len(c) >= 3]
        if not traced:
            return np.empty(0, object)
        points = np.concatenate(traced)[:, 0, :] * scale + offset
        return shapely.linearrings(points, indices=np.repeat(np.arange(len(traced)), [len(c) for c in traced]))

    polygons = []
    for component, contour in shells.items():
        if cancel is not None and cancel():
            raise Cancelled("contour tracing was stopped")
        if min_pixels and _pixels(contour, +1) < min_pixels:
            continue
        kept = [h for h in holes.get(component, []) if not min_pixels or _pixels(h, -1) >= min_pixels]
        shell = rings([contour])
        if not len(shell):
            continue
        area = shapely.Polygon(shell[0], list(rings(kept)) if kept else None)
        if not area.is_valid:  # rings simplified into each other: the traced rings, valid by construction, instead
            # (not make_valid: it took minutes on one big component, out of the cancel's reach)
            area = shapely.Polygon(rings([contour], False)[0], list(rings(kept, False)) if kept else None)
        polygons.append(area)
    return polygons


def _pixels(contour: np.ndarray, side: int) -> float:
    """Mask pixels a doubled-grid ring encloses (side +1, a component) or surrounds (side -1, a hole)."""
    return cv2.contourArea(contour) / 4 + side * cv2.arcLength(contour, closed=True) / 8 + 0.25


def _doubled(binary: np.ndarray) -> np.ndarray:
    """The mask at twice the resolution, with a one-cell bridge wherever two pixels touch only at a corner.

    Without the bridge the traced rings on both sides of such a corner would share a segment (an invalid polygon
    whose repair costs more than the tracing); the bridge cell is a quarter pixel of background at the corner,
    which contains no pixel centre, so the traced polygons still rasterize back exactly."""
    doubled = cv2.resize(binary, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    a, b, c, d = binary[:-1, :-1], binary[:-1, 1:], binary[1:, :-1], binary[1:, 1:]  # a b / c d around a corner
    rows, cols = np.nonzero(a & d & ~b & ~c & 1)  # foreground on the main diagonal: bridge through b's corner cell
    doubled[2 * rows + 1, 2 * cols + 2] = 1
    rows, cols = np.nonzero(b & c & ~a & ~d & 1)  # foreground on the anti-diagonal: bridge through a's corner cell
    doubled[2 * rows + 1, 2 * cols + 1] = 1
    return doubled
