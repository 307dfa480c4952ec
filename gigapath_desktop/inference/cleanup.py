"""Small holes filled and small specks removed in a predicted mask of any size, strip by strip.

Tissue labels are drawn (and detected, `annotations.tissue`) as outlines: a gap of a few cells inside tissue is
tissue, a speck of a few cells on the glass is not. A model trained on such labels still marks every small gap it
sees, so a shipped mask follows the labels' rule only after this clean-up. Components are labelled one strip of
rows at a time (OpenCV) and joined across strip edges with a union-find, so memory stays one strip plus a few
numbers per component that crosses a strip edge, and time stays linear in pixels, on gigapixel masks: each strip is
labelled once, and again only in the rows from its edges that small components crossing them span (at most the
whole strip). A component that touches the mask's edge is kept as it is: it may go on outside.
"""
from __future__ import annotations

from typing import Any, Callable

import cv2
import numpy as np

from gigapath_desktop.errors import Cancelled

STRIP_PIXELS = 2**23  # pixels labelled at a time: ~50 MB of labels and flags


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
    `min_object` pixels become background, then background components (4-connected) under `min_hole` pixels become
    tissue; either kind is kept as it is where it touches the mask's edge. `set_tissue(rows, where, on)` changes the
    values of `rows` at `where`."""
    for select, connectivity, limit, on in ((is_tissue, 8, min_object, False),
                                            (lambda rows: ~is_tissue(rows), 4, min_hole, True)):
        if limit > 0:
            _Components(mask, select, connectivity, strip_pixels, cancel).flip_smaller_than(
                limit, lambda rows, where, on=on: set_tissue(rows, where, on))


class _Components:
    """The components of `select(mask)`, labelled strip by strip. A component inside one strip is sized there and
    then. One that reaches a strip's top or bottom row is joined across strip edges by a union-find; once its whole
    size is known, a small one is labelled again in just the rows it spans from that edge."""

    def __init__(self, mask: Any, select: Callable[[np.ndarray], np.ndarray], connectivity: int, strip_pixels: int,
                 cancel: Callable[[], bool] | None) -> None:
        self.mask, self.select, self.connectivity, self.cancel = mask, select, connectivity, cancel
        self.height, self.width = mask.shape[:2]
        self.strip = max(1, min(self.height, strip_pixels // max(1, self.width)))

    def flip_smaller_than(self, limit: int, flip: Callable[[np.ndarray, np.ndarray], None]) -> None:
        """`flip(rows, where)` every component under `limit` pixels that does not touch the mask's edge, writing the
        changed rows back."""
        opens: list[np.ndarray] = []  # per strip, one row per open component (one reaching the strip's top or
        # bottom row): pixels in the strip, touches the mask's edge, first row, row after its last (in the strip)
        rims: list[tuple[int, int, np.ndarray, np.ndarray]] = []  # per strip: first row, rows, (id, column) of one
        # pixel of each open component on its top row, and on its bottom row
        joins: list[np.ndarray] = []
        base, above = 0, None
        for y in range(0, self.height, self.strip):
            rows, labels, stats = self._label(y, min(self.height, y + self.strip))
            area, top, left = stats[1:, cv2.CC_STAT_AREA], stats[1:, cv2.CC_STAT_TOP], stats[1:, cv2.CC_STAT_LEFT]
            bottom, right, last = top + stats[1:, cv2.CC_STAT_HEIGHT], left + stats[1:, cv2.CC_STAT_WIDTH], len(rows)
            opened = ((top == 0) & (y > 0)) | ((bottom == last) & (y + last < self.height))
            touches = (left == 0) | (right == self.width) | ((top == 0) & (y == 0)) | ((bottom == last) &
                                                                                    (y + last == self.height))
            small = np.concatenate([[False], (area < limit) & ~opened & ~touches])
            if small.any():  # whole inside the strip: flipped now
                self._write(y, rows, labels, small, flip)
            ids = np.full(len(stats), -1, np.int64)
            ids[1:][opened] = np.arange(base, base + np.count_nonzero(opened))
            opens.append(np.stack([area, touches, top, bottom], axis=1)[opened])
            if above is not None:
                joins.append(self._pairs(above, ids[labels[0]]))
            above = ids[labels[-1]]
            rims.append((y, last, _one_pixel_each(ids, labels[0]), _one_pixel_each(ids, labels[-1])))
            base += np.count_nonzero(opened)
        if not base:
            return
        info = np.concatenate(opens)
        parent = np.arange(base)
        for a, b in np.concatenate(joins) if joins else ():
            _union(parent, int(a), int(b))
        roots = _roots(parent)
        total = np.bincount(roots, weights=info[:, 0], minlength=base)
        touching = np.bincount(roots, weights=info[:, 1], minlength=base) > 0
        small_open = np.concatenate([(total < limit)[roots] & ~touching[roots], [False]])  # id -1: not open
        first = 0
        for (y, last, top, bottom), strip_info in zip(rims, opens):
            chosen = small_open[first : first + len(strip_info)]
            first += len(strip_info)
            if chosen.any():
                self._relabel(y, last, top, bottom, strip_info[chosen], small_open, flip)

    def _relabel(self, y: int, last: int, top: np.ndarray, bottom: np.ndarray, spans: np.ndarray,
                 small_open: np.ndarray, flip: Callable[[np.ndarray, np.ndarray], None]) -> None:
        """Label again the rows of the strip at `y` that its small open components span from either rim, and flip
        them; components are told by their pixel on a rim (labelling fewer rows only splits components, and a small
        one lies whole in the rows it spans)."""
        upper = spans[spans[:, 2] == 0, 3].max(initial=0)  # rows reached from the top rim
        lower = spans[spans[:, 3] == last, 2].min(initial=last)  # first row reached from the bottom rim
        bands = [(0, last, top, bottom)] if upper >= lower else [(0, upper, top, None), (lower, last, None, bottom)]
        for r0, r1, on_top, on_bottom in bands:
            if r1 <= r0:
                continue
            rows, labels, stats = self._label(y + r0, y + r1)
            ids = np.full(len(stats), -1, np.int64)
            for rim, row in ((on_top, labels[0]), (on_bottom, labels[-1])):
                if rim is not None:
                    ids[row[rim[:, 1]]] = rim[:, 0]
            self._write(y + r0, rows, labels, small_open[ids], flip)

    def _label(self, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.cancel is not None and self.cancel():
            raise Cancelled("the mask clean-up was stopped")
        rows = np.asarray(self.mask[y0:y1])
        _, labels, stats, _ = cv2.connectedComponentsWithStats(self.select(rows).view(np.uint8),
                                                               connectivity=self.connectivity, ltype=cv2.CV_32S)
        return rows, labels, stats

    def _write(self, y: int, rows: np.ndarray, labels: np.ndarray, chosen: np.ndarray,
               flip: Callable[[np.ndarray, np.ndarray], None]) -> None:
        flip(rows, chosen[labels])
        self.mask[y : y + rows.shape[0]] = rows

    def _pairs(self, above: np.ndarray, below: np.ndarray) -> np.ndarray:
        """Distinct (id above, id below) of touching pixels across a strip edge."""
        shifts = (0,) if self.connectivity == 4 else (-1, 0, 1)
        pairs = []
        for s in shifts:
            a = above[max(0, s): len(above) + min(0, s)]
            b = below[max(0, -s): len(below) + min(0, -s)]
            both = (a >= 0) & (b >= 0)
            a, b = a[both], b[both]
            new = np.ones(len(a), bool)  # runs of one pair along the edge (most of it) counted once before sorting
            new[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
            pairs.append(np.stack([a[new], b[new]], axis=1))
        return np.unique(np.concatenate(pairs), axis=0)


def _one_pixel_each(ids: np.ndarray, row: np.ndarray) -> np.ndarray:
    """(id, column) of the first pixel of each open component on a row of labels (ids: label -> id, -1 if not open)."""
    labels, columns = np.unique(row, return_index=True)
    keep = ids[labels] >= 0
    return np.stack([ids[labels][keep], columns[keep]], axis=1)


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
