"""Exact augmentation: each step trains on a transformed copy of the whole region, read rectangle by rectangle.

A step's augmentation is drawn once (from the run's seed and the step number, so a resumed run draws the same ones):
one of the 8 dihedral transforms of the whole region (flips and 90-degree turns), a colour change and sometimes a
mild blur. The transformed region is never materialised: `AugmentedRegion` is an array-like whose rectangles are
computed on demand from the source rectangles that map onto them, so the tiling plan cuts tiles from the
*transformed* region (tiles are never transformed one by one), and the tiled step equals the whole-region step on
the augmented region exactly.

The colour change is a per-channel look-up table, so it costs next to nothing per tile: a random scale and shift of
each channel's optical density (stain strength and hue, section thickness: H&E stains differ mostly by how much
light each channel absorbs), then brightness, contrast and gamma. With an ink chance (`TrainConfig.ink`), a
bright-field step may also get a stroke or two of marker ink of a random colour (`training/ink.py`), drawn before the
colour change as ink on the glass is. The blur is a Gaussian computed with a margin around each rectangle, mirrored
at the region's edges as a whole-region blur would be.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from gigapath_desktop.model.tiling import mirrored
from gigapath_desktop.slides.arraylike import RectangleView
from gigapath_desktop.training.data import RegionData
from gigapath_desktop.training.ink import InkLayer, InkStroke

BLUR_PROBABILITY = 0.25
MAX_BLUR_SIGMA = 1.2


@dataclass(frozen=True)
class Augmentation:
    """One step's draw: dihedral transform (transpose, then flips), colour table (256, 3) or None, blur sigma,
    marker strokes."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False
    lut: np.ndarray | None = None
    blur: float = 0.0
    ink: tuple[InkStroke, ...] = ()

    @classmethod
    def draw(cls, seed: int, step: int, colour: float = 1.0, dark_field: bool = False,
             ink: float = 0.0) -> "Augmentation":
        """The augmentation of `step` in a run seeded `seed`; `colour` scales the colour jitter (0 = none);
        `dark_field` (fluorescence: bright tissue on black) changes light by gains instead of stains and gets no ink;
        `ink` is the chance of marker strokes on a bright-field step."""
        rng = np.random.default_rng([seed, step])
        transpose, flip_rows, flip_cols = (bool(b) for b in rng.integers(0, 2, 3))
        table = dark_field_table if dark_field else colour_table
        lut = table(rng, colour) if colour > 0 else None
        blur = float(rng.uniform(0.5, MAX_BLUR_SIGMA)) if colour > 0 and rng.random() < BLUR_PROBABILITY else 0.0
        inked = not dark_field and rng.random() < ink
        strokes = tuple(InkStroke.draw(rng) for _ in range(rng.integers(1, 3))) if inked else ()
        return cls(transpose, flip_rows, flip_cols, lut, blur, strokes)

    def apply(self, region: RegionData) -> RegionData:
        return RegionData(AugmentedRegion(region.image, self), AugmentedRegion(region.labels, self, pixels=False),
                          name=region.name, slide=region.slide)


def colour_table(rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """A (256, 3) uint8 table: per-channel optical-density scale/shift, then brightness, contrast and gamma."""
    values = np.arange(256, dtype=np.float64)
    od = -np.log(np.maximum(values, 0.5) / 255.0)[:, None]
    od = od * np.exp(rng.normal(0.0, 0.18 * strength, 3)) + rng.normal(0.0, 0.02 * strength, 3)
    rgb = 255.0 * np.exp(-np.maximum(od, 0.0))
    contrast = np.exp(rng.normal(0.0, 0.1 * strength))
    brightness = rng.normal(0.0, 8.0 * strength)
    rgb = (rgb - 128.0) * contrast + 128.0 + brightness
    gamma = np.exp(rng.normal(0.0, 0.1 * strength))
    rgb = 255.0 * (np.clip(rgb, 0.0, 255.0) / 255.0) ** gamma
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def dark_field_table(rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Fluorescence: a per-channel exposure gain and a gamma. Black stays black: the stain model and the shifts
    about mid-grey of `colour_table` would lift the dark glass to the level of dim tissue."""
    values = np.arange(256, dtype=np.float64)[:, None]
    rgb = values * np.exp(rng.normal(0.0, 0.2 * strength, 3))
    gamma = np.exp(rng.normal(0.0, 0.1 * strength))
    rgb = 255.0 * (np.clip(rgb, 0.0, 255.0) / 255.0) ** gamma
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


class AugmentedRegion(RectangleView):
    """The transformed region as an array-like: shape, dtype, ndim and rectangle reads (`view[r0:r1, c0:c1]`)."""

    def __init__(self, source: Any, augmentation: Augmentation, pixels: bool = True, blur: bool = True) -> None:
        self.source = source
        self.aug = augmentation
        self.pixels = pixels  # False for labels: geometry only, no colour or blur
        self._blurred = pixels and blur and augmentation.blur > 0
        h, w = source.shape[:2]
        self.shape = (w, h, *source.shape[2:]) if augmentation.transpose else tuple(source.shape)
        self._ink = InkLayer(augmentation.ink, self.shape[:2]) if pixels and augmentation.ink and not self._blurred \
            else None
        self._unblurred = AugmentedRegion(source, augmentation, blur=False) if self._blurred else None
        self.dtype = source.dtype
        self.ndim = source.ndim

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        if self._blurred:
            return self._blur(r0, r1, c0, c1)
        out = self._dihedral(r0, r1, c0, c1)
        if self._ink is not None:
            out = self._ink.apply(out, r0, c0)
        if self.pixels and self.aug.lut is not None:
            out = cv2.LUT(out, self.aug.lut.reshape(1, 256, 3))
        return out

    def _dihedral(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Rows r0:r1, columns c0:c1 of the transformed region, read from the source rectangle they come from."""
        h, w = self.shape[:2]
        if self.aug.flip_rows:
            r0, r1 = h - r1, h - r0
        if self.aug.flip_cols:
            c0, c1 = w - c1, w - c0
        if self.aug.transpose:  # OpenCV's blocked transpose and flips: ~20x numpy's strided copies
            out = cv2.transpose(np.asarray(self.source[c0:c1, r0:r1]))
        else:
            out = np.asarray(self.source[r0:r1, c0:c1])
        flip = {(True, False): 0, (False, True): 1, (True, True): -1}.get((self.aug.flip_rows, self.aug.flip_cols))
        return np.ascontiguousarray(out if flip is None else cv2.flip(out, flip))

    def _blur(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """The blurred rectangle: blur a mirrored margin around it (as a whole-region blur would), keep the centre."""
        margin = int(np.ceil(4 * self.aug.blur))
        window = mirrored(self._unblurred, r0 - margin, c0 - margin, r1 - r0 + 2 * margin, c1 - c0 + 2 * margin)
        size = 2 * margin + 1
        blurred = cv2.GaussianBlur(window, (size, size), self.aug.blur, borderType=cv2.BORDER_REFLECT)
        return blurred[margin : margin + r1 - r0, margin : margin + c1 - c0]
