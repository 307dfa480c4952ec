"""Training data: a region's pixels and labels, both decoded/rasterized once into the disk cache."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import shapely

from gigapath_desktop.annotations import Annotation, Role, rasterize
from gigapath_desktop.annotations.classes import ClassMap
from gigapath_desktop.annotations.raster import UNLABELLED
from gigapath_desktop.errors import TrainingError
from gigapath_desktop.slides import ArrayCache, Region, Slide, cached_region
from gigapath_desktop.slides.cache import CancelFn, ProgressFn
from gigapath_desktop.slides.diskarray import DiskArray
from gigapath_desktop.slides.resample import Scale


@dataclass
class RegionData:
    """One training or validation region: image (H, W, 3) uint8 and labels (H, W) uint8 class indices ({0, 1} for
    the tissue model; UNLABELLED = not labelled); numpy arrays or `DiskArray`s (anything sliceable by rectangles
    with shape, dtype and ndim)."""

    image: np.ndarray | DiskArray
    labels: np.ndarray | DiskArray
    name: str = ""
    slide: str = ""  # the slide's path, to report validation per slide

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8, got {self.image.shape} {self.image.dtype}")
        if self.labels.shape != self.image.shape[:2]:
            raise ValueError(f"labels {self.labels.shape} do not match image {self.image.shape[:2]}")

    @property
    def pixels(self) -> int:
        return int(self.labels.size)

    def background_level(self, rows: int = 1024, every: int = 8) -> float:
        """Mean grey level of the pixels labelled background (sampled on a grid): ~240 for bright-field glass, near
        0 for fluorescence; 255 when there is no background."""
        total, count = 0.0, 0
        for y in range(0, self.labels.shape[0], rows):
            image = np.asarray(self.image[y : y + rows])[::every, ::every]
            background = np.asarray(self.labels[y : y + rows])[::every, ::every] == 0
            total += float(image[background].mean(axis=1).sum())
            count += int(background.sum())
        return total / count if count else 255.0

    def class_shares(self, classes: int = 2, rows: int = 1024) -> np.ndarray:
        """Share of each class among the labelled pixels (UNLABELLED left out), read in bands (labels may be a
        gigapixel array on disk). A label value the model has no class for is an error, never silently ignored."""
        counts = np.zeros(256, np.int64)
        for y in range(0, self.labels.shape[0], rows):
            counts += np.bincount(np.asarray(self.labels[y : y + rows]).ravel(), minlength=256)
        unknown = np.flatnonzero(counts[classes:UNLABELLED])
        if unknown.size:
            raise TrainingError(f"the labels of {self.name or 'a region'} hold the value {classes + unknown[0]}, but "
                                f"the model knows {classes} classes (0 to {classes - 1}; {UNLABELLED} = unlabelled)")
        labelled = counts[:classes].sum()
        if not labelled:
            raise TrainingError(f"{self.name or 'a region'} has no labelled pixel")
        return counts[:classes] / labelled


def load_region(
    slide: Slide,
    region: Region,
    annotations: Iterable[Annotation],
    cache: ArrayCache | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    classes: ClassMap | None = None,
    sparse: bool = False,
    scale: Scale | None = None,
) -> RegionData:
    """The region's pixels (decoded once) and its labels (rasterized once), read back from the disk cache.

    Label annotations paint their class's value in `classes` (default: the tissue model's Background 0 / Tissue 1);
    pixels no label covers are the first class, or UNLABELLED when `sparse` (a few strokes per class suffice).
    `scale` reads the region at another resolution than its level's (`slides.resample`), labels rasterized to match."""
    cache = cache or ArrayCache()
    classes = classes or ClassMap.tissue()
    labels = [a for a in annotations if a.role is Role.LABEL]
    values = classes.values(labels)
    image = cached_region(slide, region, cache, progress, cancel, scale)
    h, w = image.shape[:2]
    downsample = slide.level_downsamples[region.level] if scale is None else scale.downsample
    key = (f"labels-{slide.identity}-{region.x}-{region.y}-{region.width}-{region.height}-D{downsample:.12g}-"
           f"{_content_digest(labels, values, sparse)}")
    origin = (float(region.x), float(region.y))

    def fill(out: DiskArray) -> None:
        rasterize(labels, origin, downsample, (h, w), values=values, out=out, fill=UNLABELLED if sparse else 0)

    mask = cache.get_or_build(key, (h, w), np.uint8, fill)
    return RegionData(image, mask, name=f"{slide.path.name} {region.as_tuple()} L{region.level}",
                      slide=str(slide.path))


def _content_digest(labels: list[Annotation], values: dict[str, int], sparse: bool) -> str:
    """What the rasterized labels depend on (shapes, classes, their values, paint order, the fill), not ids or
    names: the same labels detected or imported again reuse one cache file instead of writing another."""
    digest = hashlib.sha256(b"labels-v3")  # v3: class values and sparse fill
    digest.update(repr((sorted(values.items()), sparse)).encode())
    for annotation in labels:
        digest.update(annotation.cls.name.encode() + b"\0" + shapely.to_wkb(annotation.geometry))
    return digest.hexdigest()[:16]
