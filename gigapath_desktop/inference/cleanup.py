"""Small holes filled and small specks removed in a predicted mask of any size, strip by strip.

Tissue labels are drawn (and detected, `annotations.tissue`) as outlines: a gap of a few cells inside tissue is
tissue, a speck of a few cells on the glass is not. A model trained on such labels still marks every small gap it
sees, so a shipped mask follows the labels' rule only after this clean-up. Components are labelled one strip of
rows at a time (OpenCV) and joined across strip edges with a union-find, so memory stays one strip plus a few
numbers per component, and time stays linear in pixels, on gigapixel masks. A component that touches the mask's
edge is kept as it is: it may go on outside.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import cv2
import numpy as np

from gigapath_desktop.errors import Cancelled

STRIP_PIXELS = 2**23  # pixels labelled at a time: ~120 MB of labels, ids and flags


def clean_mask(
    mask: Any,
    is_tissue: Callable[[np.ndarray], np.ndarray],
    set_tissue: Callable[[np.ndarray, np.ndarray, bool], None],
    min_hole: int = 0,
    min_object: int = 0,
    cancel: Callable[[], bool] | None = None,
    strip_pixels: int = STRIP_PIXELS,
) -> None:
    """Clean the 2-D `mask` in place (an ndarray or a writable `DiskArray`): tissue components (8-connected) under
    `min_object` pixels become background, then background components (4-connected) under `min_hole` pixels that
    do not touch the edge become tissue. `set_tissue(rows, where, on)` changes the values of `rows` at `where`."""
    for select, connectivity, limit, on in ((is_tissue, 8, min_object, False),
                                            (lambda rows: ~is_tissue(rows), 4, min_hole, True)):
        if limit <= 0:
            continue
        small = _Components(mask, select, connectivity, strip_pixels, cancel).smaller_than(limit)
        for y, rows, flip in small:
            if flip.any():
                set_tissue(rows, flip, on)
                mask[y : y + rows.shape[0]] = rows


class _Components:
    """The components of `select(mask)`, labelled strip by strip and joined across strip edges."""

    def __init__(self, mask: Any, select: Callable[[np.ndarray], np.ndarray], connectivity: int, strip_pixels: int,
                 cancel: Callable[[], bool] | None) -> None:
        self.mask, self.select, self.connectivity, self.cancel = mask, select, connectivity, cancel
        height, width = mask.shape[:2]
        self.strip = max(1, min(height, strip_pixels // max(1, width)))
        self.starts = range(0, height, self.strip)

    def smaller_than(self, limit: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield (first row, rows, pixels in a component under `limit` pixels that does not touch the edge) per
        strip; the first pass sizes every component, the second labels each strip again the same way."""
        parent, sizes, edge, bases = self._sized()
        roots = _roots(parent)
        total = np.bincount(roots, weights=sizes, minlength=len(parent))
        touches = np.bincount(roots, weights=edge.astype(np.float64), minlength=len(parent)) > 0
        small = np.concatenate([[False], (total < limit)[roots] & ~touches[roots]])  # index 0: not selected
        for y, base in zip(self.starts, bases):
            rows, labels, _ = self._label(y)
            ids = np.where(labels > 0, labels + base, 0)  # label 1 is id `base`, at `small[base + 1]`
            yield y, rows, small[ids]

    def _label(self, y: int) -> tuple[np.ndarray, np.ndarray, int]:
        if self.cancel is not None and self.cancel():
            raise Cancelled("the mask clean-up was stopped")
        rows = np.asarray(self.mask[y : y + self.strip])
        count, labels = cv2.connectedComponents(self.select(rows).view(np.uint8), connectivity=self.connectivity,
                                                ltype=cv2.CV_32S)
        return rows, labels, count - 1

    def _sized(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
        """(union-find parents, pixels, touches-the-edge) per component, ids numbered across strips from 0, and each
        strip's first id."""
        height = self.mask.shape[0]
        parent: list[np.ndarray] = []
        sizes: list[np.ndarray] = []
        edge: list[np.ndarray] = []
        bases: list[int] = []
        joins: list[np.ndarray] = []
        base, above = 0, None
        for y in self.starts:
            rows, labels, count = self._label(y)
            bases.append(base)
            ids = np.arange(base, base + count)
            parent.append(ids)
            sizes.append(np.bincount(labels.ravel(), minlength=count + 1)[1:])
            border = [labels[:, 0], labels[:, -1]] + [labels[0]] * (y == 0) + [labels[-1]] * (y + len(rows) == height)
            touching = np.zeros(count + 1, bool)
            touching[np.concatenate(border)] = True
            edge.append(touching[1:])
            below = np.where(labels[0] > 0, labels[0] + base - 1, -1)
            if above is not None:
                joins.append(self._pairs(above, below))
            above = np.where(labels[-1] > 0, labels[-1] + base - 1, -1)
            base += count
        parents = np.concatenate(parent)
        for a, b in np.concatenate(joins) if joins else ():
            _union(parents, int(a), int(b))
        return parents, np.concatenate(sizes), np.concatenate(edge), bases

    def _pairs(self, above: np.ndarray, below: np.ndarray) -> np.ndarray:
        """Distinct (id above, id below) of touching pixels across a strip edge."""
        shifts = (0,) if self.connectivity == 4 else (-1, 0, 1)
        pairs = []
        for s in shifts:
            a = above[max(0, s): len(above) + min(0, s)]
            b = below[max(0, -s): len(below) + min(0, -s)]
            both = (a >= 0) & (b >= 0)
            pairs.append(np.stack([a[both], b[both]], axis=1))
        return np.unique(np.concatenate(pairs), axis=0)


def _union(parent: np.ndarray, a: int, b: int) -> None:
    ra, rb = _find(parent, a), _find(parent, b)
    if ra != rb:
        parent[max(ra, rb)] = min(ra, rb)


def _find(parent: np.ndarray, a: int) -> int:
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


def _roots(parent: np.ndarray) -> np.ndarray:
    """Every id's root, by pointer jumping (vectorised)."""
    roots = parent.copy()
    while True:
        nxt = roots[roots]
        if np.array_equal(nxt, roots):
            return roots
        roots = nxt
