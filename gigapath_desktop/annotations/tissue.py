"""Tissue vs background from a low-resolution view of the slide, to bootstrap labels.

Bright-field (H&E): tissue is coloured, glass is white and grey, so Otsu is run on HSV saturation.
Fluorescence (dark background, as the NDPI DAPI/TRITC samples): tissue is brighter than the black glass; the
histogram is one dark peak with a long bright tail, so the triangle threshold is used on the brightest channel, and a
wider closing joins stained nuclei into tissue. Which case applies is decided from the median brightness. Then morphology removes
speckle, small objects go, small holes are filled, and the mask is traced into polygons with holes.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import cv2
import numpy as np
from skimage import color, filters, morphology

from gigapath_desktop.annotations.contours import mask_to_polygons
from gigapath_desktop.annotations.model import TISSUE, Annotation, AnnotationClass, Kind, Role
from gigapath_desktop.errors import TissueDetectionError
from gigapath_desktop.slides.slide import Slide

THUMBNAIL_SIZE = 2048
MIN_CONTRAST = 0.04  # Otsu classes whose means differ by less (on a 0-1 scale) are noise, not tissue
# Objects and holes kept: a few cells (~30 µm) across. Dust specks stay below it; at 20000 µm² (an earlier default)
# the labels filled empty ~140 µm cavities as tissue and left loose tissue fragments out, which taught a model both.
MIN_AREA_UM2 = 1000.0


class Modality(str, enum.Enum):
    BRIGHTFIELD = "brightfield"
    FLUORESCENCE = "fluorescence"


@dataclass
class TissueMask:
    """The low-resolution tissue mask and how it was made."""

    mask: np.ndarray
    downsample: float
    modality: Modality
    threshold: float


def detect_tissue(
    slide: Slide,
    cls: AnnotationClass = TISSUE,
    min_area_um2: float = MIN_AREA_UM2,
    modality: Modality | None = None,
) -> list[Annotation]:
    """Tissue polygons (level-0 px) as label annotations of class `cls`; raises `TissueDetectionError`."""
    found = tissue_mask(slide, min_area_um2, modality)
    polygons = mask_to_polygons(found.mask, downsample=found.downsample, simplify=found.downsample)
    return [Annotation(p, cls=cls, role=Role.LABEL, kind=Kind.POLYGON, name="detected tissue") for p in polygons]


def tissue_mask(slide: Slide, min_area_um2: float = MIN_AREA_UM2, modality: Modality | None = None) -> TissueMask:
    """The boolean tissue mask of a thumbnail of at most THUMBNAIL_SIZE px, with its downsample."""
    rgb = slide.thumbnail(THUMBNAIL_SIZE)
    downsample = slide.dimensions[0] / rgb.shape[1]
    modality = modality or guess_modality(rgb)
    signal = _signal(rgb, modality)
    threshold = float(filters.threshold_otsu(signal) if modality is Modality.BRIGHTFIELD else filters.threshold_triangle(signal))
    tissue = signal > threshold
    if tissue.all() or not tissue.any() or signal[tissue].mean() - signal[~tissue].mean() < MIN_CONTRAST:
        raise TissueDetectionError(
            f"{slide.path}: cannot tell tissue from background ({modality.value} mode found no contrast); "
            "draw the labels by hand instead"
        )
    min_pixels = _min_object_pixels(slide, downsample, min_area_um2, tissue.size)
    tissue = _morphology(tissue, cv2.MORPH_OPEN, 1)
    tissue = _morphology(tissue, cv2.MORPH_CLOSE, _closing_radius(slide, downsample, modality))
    tissue = morphology.remove_small_objects(tissue, max_size=min_pixels)
    tissue = morphology.remove_small_holes(tissue, max_size=min_pixels)
    return TissueMask(tissue, downsample, modality, threshold)


def guess_modality(rgb: np.ndarray) -> Modality:
    """Fluorescence when the typical pixel is dark (black glass), else bright-field."""
    return Modality.FLUORESCENCE if np.median(rgb.max(axis=2)) < 100 else Modality.BRIGHTFIELD


def _signal(rgb: np.ndarray, modality: Modality) -> np.ndarray:
    """A 0-1 image in which tissue is high: saturation for bright-field, brightest channel for fluorescence."""
    if modality is Modality.FLUORESCENCE:
        return filters.gaussian(rgb.max(axis=2).astype(np.float32) / 255.0, sigma=4.0)
    return filters.gaussian(color.rgb2hsv(rgb)[..., 1].astype(np.float32), sigma=1.0)


def _morphology(mask: np.ndarray, operation: int, radius: int) -> np.ndarray:
    """Binary opening/closing with a disk (OpenCV: fast for the wide disks fluorescence needs)."""
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.morphologyEx(mask.astype(np.uint8), operation, disk, borderType=cv2.BORDER_REPLICATE).astype(bool)


def _closing_radius(slide: Slide, downsample: float, modality: Modality) -> int:
    """Bright-field: 2 px bridges speckle. Fluorescence (often nuclear stains): ~25 µm joins nuclei into tissue."""
    if modality is Modality.BRIGHTFIELD:
        return 2
    um_per_pixel = slide.mpp[0] * downsample if slide.mpp else 1.0
    return int(np.clip(25.0 / um_per_pixel, 2, 30))


def _min_object_pixels(slide: Slide, downsample: float, min_area_um2: float, total: int) -> int:
    """Smallest object kept, in thumbnail pixels: from microns when the slide records them, else 0.05 % of the view."""
    mpp = slide.mpp
    if mpp is None:
        return max(4, int(total * 0.0005))
    um2_per_pixel = mpp[0] * mpp[1] * downsample**2
    return max(4, int(min_area_um2 / um2_per_pixel))
