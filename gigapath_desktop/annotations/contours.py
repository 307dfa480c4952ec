"""Mask -> polygons (with holes) in level-0 coordinates: the inverse of `raster.rasterize`.

OpenCV traces the centres of boundary pixels; growing each polygon by half a pixel (square joins) moves the outline
onto the pixel edges, so rasterizing the polygons back with the centre rule gives the same mask.
"""
from __future__ import annotations

import cv2
import numpy as np
import shapely
from shapely.affinity import affine_transform
from shapely.geometry import LineString, MultiPoint, Polygon
from shapely.geometry.base import BaseGeometry


def mask_to_polygons(
    mask: np.ndarray,
    origin: tuple[float, float] = (0.0, 0.0),
    downsample: float = 1.0,
    simplify: float = 0.0,
    min_area: float = 0.0,
) -> list[Polygon]:
    """Polygons (level-0 px) covering the non-zero pixels of `mask`, one per connected component, holes kept.

    `simplify` is a tolerance in level-0 px; `min_area` drops smaller components (level-0 px^2).
    """
    binary = np.ascontiguousarray(mask != 0, dtype=np.uint8)
    contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    links = hierarchy[0]  # next, previous, first child, parent
    x0, y0 = origin
    to_level0 = [downsample, 0, 0, downsample, x0 + 0.5 * downsample, y0 + 0.5 * downsample]
    polygons = []
    min_pixels = min_area / downsample**2
    for i in np.flatnonzero(links[:, 3] < 0):
        if min_pixels and _pixel_area(contours[i]) < min_pixels:
            continue  # cheap early exit for specks: no polygon is built for them
        holes = []
        child = links[i, 2]
        while child >= 0:
            holes.append(_outline(contours[child][:, 0, :]).buffer(-1.0, join_style="mitre"))
            child = links[child, 0]
        area = _outline(contours[i][:, 0, :])
        if holes:
            area = area.difference(shapely.unary_union(holes))
        geometry = affine_transform(area, to_level0)
        if simplify > 0:
            geometry = geometry.simplify(simplify, preserve_topology=True)
        for polygon in getattr(geometry, "geoms", [geometry]):
            if isinstance(polygon, Polygon) and not polygon.is_empty and polygon.area >= min_area:
                polygons.append(polygon)
    return polygons


def _pixel_area(contour: np.ndarray) -> float:
    """Pixels inside a traced ring: its centre-line area plus the half pixel around its length, plus the corners."""
    return cv2.contourArea(contour) + cv2.arcLength(contour, closed=True) / 2 + 1


def _outline(points: np.ndarray) -> BaseGeometry:
    """The pixel-edge area enclosed by a traced ring of pixel centres (also for 1-pixel-thin rings)."""
    pts = points.astype(np.float64)
    if len(pts) >= 3 and Polygon(pts).area > 0:
        core: BaseGeometry = shapely.make_valid(Polygon(pts))
    elif len(pts) >= 2:
        core = LineString(pts)
    else:
        core = MultiPoint(pts)
    return core.buffer(0.5, cap_style="square", join_style="mitre")
