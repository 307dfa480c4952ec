"""Lazy array-likes read rectangle by rectangle (`view[r0:r1, c0:c1]`), as tiling reads regions: a transformed or
resampled region is computed on demand, never held whole."""
from __future__ import annotations

from typing import Any

import numpy as np


class RectangleView:
    """Shape, dtype, ndim and size of a lazy (H, W, ...) array; subclasses compute `read(r0, r1, c0, c1)`."""

    shape: tuple[int, ...]
    dtype: np.dtype
    ndim: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        rows, cols = key
        r0, r1, _ = rows.indices(self.shape[0])
        c0, c1, _ = cols.indices(self.shape[1])
        return self.read(r0, r1, c0, c1)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.read(0, self.shape[0], 0, self.shape[1])
        return out if dtype is None else out.astype(dtype)
