"""Mask exports: a pyramidal tiled TIFF written as the mask is produced, a PNG preview, GeoJSON contours, and the
per-class probabilities as a pyramidal OME-TIFF.

The TIFF covers the whole slide at the prediction level (zeros outside the predicted region), so it lines up with the
slide in QuPath and OpenSlide without any offset; its resolution tags come from the slide's microns per pixel and its
ImageDescription records the source slide, model and region. Level 0 is written tile row by tile row while each row
is also halved into the next level's scratch file; the scratch levels then give the coarser levels, the preview and
the contours. Nothing holds the whole mask in memory.
"""
from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np
import tifffile
from PIL import Image

from gigapath_desktop.annotations import (
    TISSUE,
    Annotation,
    AnnotationClass,
    ClassMap,
    Kind,
    Role,
    mask_to_polygons,
    write_geojson,
)
from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.outputs import atomic_path, scratch_prefix
from gigapath_desktop.slides.diskarray import DiskArray

TILE = 512
PREVIEW_MAX_PIXELS = 2**26  # a PNG preview's (~5 bytes each while it is drawn)
CONTOUR_MAX_PIXELS = 2**26  # contours are traced on the finest level at most this large (~8 bytes/px)


@dataclass(frozen=True)
class MaskValues:
    """What a mask's uint8 values mean: tissue probability x 255 ("probability"; also each channel of a per-class
    probability TIFF), 0/255 tissue ("binary"), or the class indices of a K-class model ("labels"); decides how
    levels are halved, previewed and traced."""

    kind: str
    classes: ClassMap = ClassMap.tissue()
    threshold: int = 128  # probability masks: tissue at or above

    def areas(self) -> list[tuple[AnnotationClass, Callable[[np.ndarray], np.ndarray]]]:
        """Each foreground class with the test that finds its pixels in a mask."""
        if self.kind != "labels":
            return [(self.classes.classes[1], self.is_tissue)]
        return [(cls, lambda mask, k=k: mask == k) for k, cls in enumerate(self.classes.classes) if k]

    def is_tissue(self, mask: np.ndarray) -> np.ndarray:
        return mask >= self.threshold

    def set_tissue(self, mask: np.ndarray, where: np.ndarray, on: bool) -> None:
        """Make `mask` tissue (or background) at `where`: 0/255, or a probability moved just across the threshold,
        so thresholding the mask gives the cleaned-up tissue while other values keep the model's confidence."""
        if self.kind == "binary":
            mask[where] = 255 if on else 0
        else:
            mask[where] = np.maximum(mask[where], self.threshold) if on else np.minimum(mask[where], self.threshold - 1)

    def counts(self, mask: np.ndarray) -> np.ndarray:
        """How many pixels of `mask` each class has, in class order."""
        if self.kind == "labels":
            return np.bincount(mask.ravel(), minlength=len(self.classes.classes))[: len(self.classes.classes)]
        tissue = np.count_nonzero(mask >= self.threshold)
        return np.array([mask.size - tissue, tissue])

    def halve(self, a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
        """One coarser pixel from four: the mean of probabilities, the majority of 0/255 tissue, the most frequent
        class (ties: the first of a, b, c, d)."""
        if self.kind == "labels":  # votes counted pairwise in uint8: a few bytes per pixel on gigapixel-wide rows
            ab, ac, ad, bc, bd, cd = a == b, a == c, a == d, b == c, b == d, c == d
            votes = [ab.view(np.uint8) + ac + ad, ab.view(np.uint8) + bc + bd, ac.view(np.uint8) + bc + cd,
                     ad.view(np.uint8) + bd + cd]
            out, best = a.copy(), votes[0]
            for candidate, vote in zip((b, c, d), votes[1:]):
                better = vote > best
                out[better], best = candidate[better], np.maximum(best, vote)
            return out
        mean = (a.astype(np.uint16) + b + c + d + 2) // 4
        return (np.where(mean >= 128, 255, 0) if self.kind == "binary" else mean).astype(np.uint8)


@dataclass
class MaskLevels:
    """Scratch copies of every pyramid level (uint8, 0-255), kept on disk until `close()`."""

    folder: Path
    levels: list[DiskArray]
    downsample: float  # slide level-0 pixels per mask level-0 pixel

    def level_downsample(self, k: int) -> float:
        return self.downsample * 2**k

    def close(self) -> None:
        for level in self.levels:
            level.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "MaskLevels":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_mask_tiff(
    path: Path,
    rows: Iterator[tuple[int, np.ndarray]],
    shape: tuple[int, int],
    downsample: float,
    mpp: tuple[float, float] | None,
    description: dict[str, Any],
    values: MaskValues,
) -> MaskLevels:
    """Write `rows` ((first row, uint8 rows x width) chunks of TILE rows, top to bottom) as a pyramidal TIFF of
    `shape` (height, width) at `path`.

    Returns the scratch levels for previews and contours; the caller closes them.
    """
    folder = Path(tempfile.mkdtemp(prefix=scratch_prefix("mask-levels"), dir=path.parent))
    levels: list[DiskArray] = []
    try:
        with tifffile.TiffWriter(path, bigtiff=True) as tif:
            level_shape, source = shape, rows
            while True:
                store = DiskArray.create(folder / f"level{len(levels)}.npy", level_shape, np.uint8)
                levels.append(store)
                k = len(levels) - 1
                tif.write(
                    _tiles(source, level_shape, store), shape=level_shape, dtype=np.uint8, photometric="minisblack",
                    tile=(TILE, TILE), compression="zlib", compressionargs={"level": 1}, subfiletype=1 if k else 0,
                    description=json.dumps(description) if k == 0 else None, metadata=None,
                    **_resolution(mpp, downsample * 2**k),
                )
                if max(level_shape) <= TILE:
                    break
                source = _halved(store, values)
                level_shape = (math.ceil(level_shape[0] / 2), math.ceil(level_shape[1] / 2))
    except BaseException:
        MaskLevels(folder, levels, downsample).close()
        raise
    return MaskLevels(folder, levels, downsample)


def write_channels_tiff(
    path: Path,
    rows: Iterator[tuple[int, np.ndarray]],
    shape: tuple[int, int, int],
    downsample: float,
    mpp: tuple[float, float] | None,
    description: dict[str, Any],
    names: list[str],
) -> None:
    """Write `rows` (as for `write_mask_tiff`) of a (height, width, channels) probability image as a pyramidal
    OME-TIFF: one plane per channel, named, the coarser levels (means of 2 x 2) in SubIFDs, `description` as JSON in
    the OME Description. Bio-Formats, QuPath's reader of multi-channel images, sees named channels and a pyramid this
    way; the masks' plain layout would show it one RGB-like image at full resolution only."""
    folder = Path(tempfile.mkdtemp(prefix=scratch_prefix("channel-levels"), dir=path.parent))
    levels: list[DiskArray] = []
    try:
        levels.append(DiskArray.create(folder / "level0.npy", shape, np.uint8))
        for y, chunk in rows:
            _put(levels[0], y, chunk)
        while max(levels[-1].shape[:2]) > TILE:
            h, w = levels[-1].shape[:2]
            levels.append(DiskArray.create(folder / f"level{len(levels)}.npy",
                                           (math.ceil(h / 2), math.ceil(w / 2), shape[2]), np.uint8))
            for y, chunk in _halved(levels[-2], MaskValues("probability")):
                _put(levels[-1], y, chunk)
        metadata = {"axes": "CYX", "Channel": {"Name": list(names)}, "Description": json.dumps(description),
                    **_physical_size(mpp, downsample)}
        with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
            for k, level in enumerate(levels):
                h, w, channels = level.shape
                tif.write(_planes(level), shape=(channels, h, w), dtype=np.uint8, photometric="minisblack",
                          tile=(TILE, TILE), compression="zlib", compressionargs={"level": 1},
                          subifds=len(levels) - 1 if k == 0 else None, subfiletype=1 if k else 0,
                          metadata=metadata if k == 0 else None, **_resolution(mpp, downsample * 2**k))
    finally:
        MaskLevels(folder, levels, downsample).close()


def check_preview(dimensions: tuple[int, int], downsample: float) -> None:
    """Refuse, before any work, a preview too large to draw (a 1.6 GP slide at downsample 1: ~35 GB)."""
    pixels = (dimensions[0] / downsample) * (dimensions[1] / downsample)
    if pixels > PREVIEW_MAX_PIXELS:
        least = math.ceil(math.sqrt(dimensions[0] * dimensions[1] / PREVIEW_MAX_PIXELS))
        raise GigaPathError(f"a PNG preview at downsample {downsample:g} would hold {pixels / 1e6:,.0f} MP; choose a "
                            f"downsample of {least} or more")


def write_preview_png(path: Path, slide_rgb: np.ndarray, levels: MaskLevels, downsample: float,
                      values: MaskValues) -> None:
    """The slide at `downsample` with the mask overlaid (50 %; tissue green, classes in their colours), atomically."""
    h, w = slide_rgb.shape[:2]
    k = max((k for k in range(len(levels.levels)) if levels.level_downsample(k) <= downsample), default=0)
    resize = cv2.INTER_NEAREST if values.kind == "labels" else cv2.INTER_AREA
    mask = cv2.resize(np.asarray(levels.levels[k]), (w, h), interpolation=resize)
    out = slide_rgb.copy()  # (uint8 throughout: a float copy took 22 bytes a preview pixel)
    for cls, find in values.areas():
        on = find(mask)
        colour = np.array((0, 200, 0) if cls == TISSUE else cls.color, np.uint16)
        out[on] = (out[on] + colour) // 2
    with atomic_path(path) as tmp:
        Image.fromarray(out).save(tmp)


def write_contours(path: Path, levels: MaskLevels, values: MaskValues, cancel: Callable[[], bool] | None = None,
                   window: tuple[int, int, int, int] | None = None) -> int:
    """Contours of tissue, or of each class but the first (holes kept, simplified to the traced level's pixel size),
    as QuPath GeoJSON with their classification; returns the count. `window`: (row, col, height, width) of the mask's
    level 0 that holds the prediction (default: all of it); it is traced on the finest level at which it holds at
    most CONTOUR_MAX_PIXELS, so a region of a big slide keeps its own resolution."""
    row, col, height, width = window or (0, 0, *levels.levels[0].shape[:2])
    k = next((k for k in range(len(levels.levels)) if height * width <= CONTOUR_MAX_PIXELS * 4**k),
             len(levels.levels) - 1)
    r0, c0, r1, c1 = row >> k, col >> k, -(-(row + height) >> k), -(-(col + width) >> k)
    ds = levels.level_downsample(k)
    mask = np.asarray(levels.levels[k][r0:r1, c0:c1])
    annotations = []
    for cls, find in values.areas():
        polygons = mask_to_polygons(find(mask), origin=(c0 * ds, r0 * ds), downsample=ds, simplify=0.5 * ds,
                                    min_area=4 * ds * ds, cancel=cancel)
        annotations += [Annotation(p, cls=cls, role=Role.LABEL, kind=Kind.POLYGON, name=f"predicted {cls.name.lower()}")
                        for p in polygons]
    write_geojson(annotations, path)
    return len(annotations)


def _tiles(rows: Iterator[tuple[int, np.ndarray]], shape: tuple[int, int], store: DiskArray) -> Iterator[np.ndarray]:
    """TIFF tiles in row-major order from chunks of TILE rows; each chunk is also saved to the scratch level."""
    width = shape[1]
    padded = math.ceil(width / TILE) * TILE
    for y, chunk in rows:
        _put(store, y, chunk)
        block = np.zeros((TILE, padded), np.uint8)
        block[: chunk.shape[0], :width] = chunk
        for x in range(0, padded, TILE):
            yield block[:, x : x + TILE]


def _planes(level: DiskArray) -> Iterator[np.ndarray]:
    """OME-TIFF tiles of a (height, width, channels) level: each channel's tiles in row-major order, channel after
    channel."""
    h, w, channels = level.shape
    for c in range(channels):
        for y in range(0, h, TILE):
            rows = np.asarray(level[y : y + TILE])[..., c]
            for x in range(0, w, TILE):
                tile = np.zeros((TILE, TILE), np.uint8)
                part = rows[:, x : x + TILE]
                tile[: part.shape[0], : part.shape[1]] = part
                yield tile


def _put(store: DiskArray, y: int, chunk: np.ndarray) -> None:
    """Rows into a scratch level; columns of zeros at either side are left unwritten (the sparse file reads them as
    zeros), so a region's mask on a whole-slide canvas takes the region's disk, not the slide's."""
    columns = np.flatnonzero(chunk.reshape(chunk.shape[0], chunk.shape[1], -1).any(axis=(0, 2)))
    if len(columns):
        x0, x1 = columns[0], columns[-1] + 1
        store[y : y + chunk.shape[0], x0:x1] = chunk[:, x0:x1]


def _halved(store: DiskArray, values: MaskValues) -> Iterator[tuple[int, np.ndarray]]:
    """The next level from a scratch level, 2 x 2 pixels into one (`MaskValues.halve`), TILE rows at a time."""
    h, w = store.shape[:2]
    for y in range(0, h, 2 * TILE):
        rows = np.asarray(store[y : y + 2 * TILE])
        if rows.shape[0] % 2:
            rows = np.concatenate([rows, rows[-1:]])
        if w % 2:
            rows = np.concatenate([rows, rows[:, -1:]], axis=1)
        yield y // 2, values.halve(rows[0::2, 0::2], rows[1::2, 0::2], rows[0::2, 1::2], rows[1::2, 1::2])


def _resolution(mpp: tuple[float, float] | None, downsample: float) -> dict[str, Any]:
    if mpp is None:
        return {}
    return {"resolution": (1e4 / (mpp[0] * downsample), 1e4 / (mpp[1] * downsample)), "resolutionunit": "CENTIMETER"}


def _physical_size(mpp: tuple[float, float] | None, downsample: float) -> dict[str, Any]:
    if mpp is None:
        return {}
    return {"PhysicalSizeX": mpp[0] * downsample, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": mpp[1] * downsample,
            "PhysicalSizeYUnit": "µm"}
