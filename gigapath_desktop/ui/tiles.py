"""Background tile loading for the viewer: slide reads on worker threads, a bounded LRU of decoded tiles.

Workers return QImages (safe off the GUI thread); the viewer turns them into pixmaps on the GUI thread.
"""
from __future__ import annotations

from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.slides import Slide

TILE = 512  # level pixels per viewer tile


class TileKey(NamedTuple):
    level: int
    col: int
    row: int


def to_qimage(rgb: np.ndarray) -> QImage:
    """An RGB uint8 array as a QImage that owns its pixels."""
    rgb = np.ascontiguousarray(rgb)
    h, w = rgb.shape[:2]
    return QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


class TileCache:
    """Decoded tiles, least recently used dropped first once `budget_bytes` is exceeded."""

    def __init__(self, budget_bytes: int = 256 << 20) -> None:
        self.budget = budget_bytes
        self._items: OrderedDict[TileKey, QImage] = OrderedDict()
        self._bytes = 0

    def get(self, key: TileKey) -> QImage | None:
        image = self._items.get(key)
        if image is not None:
            self._items.move_to_end(key)
        return image

    def put(self, key: TileKey, image: QImage) -> None:
        if key in self._items:
            return
        self._items[key] = image
        self._bytes += image.sizeInBytes()
        while self._bytes > self.budget and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.sizeInBytes()

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)


class TileLoader(QObject):
    """Reads tiles on a thread pool; `loaded(key, image)` arrives on the GUI thread."""

    loaded = Signal(object, object)
    failed = Signal(str)

    def __init__(self, slide: Slide, workers: int = 4) -> None:
        super().__init__()
        self.slide = slide
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="tiles")
        self._pending: set[TileKey] = set()
        self._closed = False

    def request(self, key: TileKey) -> None:
        if not self._closed and key not in self._pending:
            self._pending.add(key)
            self._pool.submit(self._load, key)

    def _load(self, key: TileKey) -> None:
        try:
            ds = self.slide.level_downsamples[key.level]
            lw, lh = self.slide.level_dimensions[key.level]
            x, y = key.col * TILE, key.row * TILE
            size = (min(TILE, lw - x), min(TILE, lh - y))
            rgb = self.slide.read_pixels((round(x * ds), round(y * ds)), key.level, size)
            self.loaded.emit(key, to_qimage(rgb))
        except GigaPathError as exc:
            self.failed.emit(str(exc))
        finally:
            self._pending.discard(key)

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
