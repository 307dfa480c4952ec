"""Brush strokes a user might paint, drawn from a slide's exact truth: the sparse labels of the tests and benchmarks
that train on strokes and score on the dense truth."""
from __future__ import annotations

import cv2
import numpy as np
from shapely.geometry import LineString

from gigapath_desktop.annotations.classes import ClassMap
from gigapath_desktop.annotations.model import Annotation, Kind, Role


def truth_strokes(truth: np.ndarray, names: list[str], per_class: int, rng: np.random.Generator,
                  width: int = 24, length: int = 240) -> list[Annotation]:
    """Brush strokes a user might paint on this slide: `per_class` short strokes (`width` px wide, up to `length`
    px long) inside each class of `truth`, as label annotations of the classes `names` (class i = names[i]),
    every painted pixel of the right class."""
    classes = ClassMap.named(names).classes
    radius = width // 2
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 5, 2 * radius + 5))
    strokes = []
    for value, cls in enumerate(classes):
        inside = cv2.erode((truth == value).astype(np.uint8), disc)
        ys, xs = np.nonzero(inside)
        if not len(ys):
            continue
        for i in rng.choice(len(ys), min(per_class, len(ys)), replace=False):
            strokes.append(Annotation(_stroke(inside, xs[i], ys[i], length, rng).buffer(radius),
                                      cls, Role.LABEL, Kind.BRUSH))
    return strokes


def _stroke(inside: np.ndarray, x: int, y: int, length: int, rng: np.random.Generator) -> LineString:
    """The longest straight stroke through (x, y) in a random direction, up to `length`, that stays `inside`."""
    angle = rng.uniform(0, np.pi)
    direction = np.array([np.cos(angle), np.sin(angle)])
    ends = []
    for sign in (1, -1):
        reach = 0
        while reach < length // 2:
            px, py = np.rint(np.array([x, y]) + sign * (reach + 4) * direction).astype(int)
            if not (0 <= py < inside.shape[0] and 0 <= px < inside.shape[1] and inside[py, px]):
                break
            reach += 4
        ends.append(np.array([x, y]) + sign * reach * direction + 0.5)
    if np.allclose(ends[0], ends[1]):
        ends[1] = ends[1] + 0.01
    return LineString(ends)
