"""Tissue detection on real bright-field and fluorescence slides, checked against independently derived masks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import CMU, DAPI, TCGA, TRITC
from gigapath_desktop import TissueDetectionError
from gigapath_desktop.annotations import Modality, Role, detect_tissue, rasterize, tissue_mask
from gigapath_desktop.slides import open_slide


@pytest.mark.parametrize("path", [CMU, TCGA], ids=lambda p: p.name)
def test_brightfield_detection_covers_the_tissue(path: Path) -> None:
    with open_slide(path) as slide:
        annotations = detect_tissue(slide)
        thumb = slide.thumbnail(512)
        w0 = slide.dimensions[0]
    assert annotations and all(a.role is Role.LABEL and a.cls.name == "Tissue" for a in annotations)
    detected = rasterize(annotations, (0, 0), w0 / thumb.shape[1], thumb.shape[:2]).astype(bool)
    # Independent truth, by a different rule than the detector's Otsu on saturation: glass is near-white in all
    # three channels, so a pixel whose darkest channel is below 210 is stained tissue.
    stained = thumb.min(axis=2) < 210
    recall = (detected & stained).sum() / stained.sum()
    precision = (detected & stained).sum() / detected.sum()
    assert recall > 0.9, f"detection misses tissue: recall {recall:.3f}"
    assert precision > 0.85, f"detection covers glass: precision {precision:.3f}"


@pytest.mark.parametrize("path", [DAPI, TRITC], ids=lambda p: p.name)
def test_fluorescence_is_recognised_and_covers_the_signal(path: Path) -> None:
    with open_slide(path) as slide:
        found = tissue_mask(slide)
        annotations = detect_tissue(slide)
        thumb = slide.thumbnail(512)
        w0 = slide.dimensions[0]
    assert found.modality is Modality.FLUORESCENCE
    detected = rasterize(annotations, (0, 0), w0 / thumb.shape[1], thumb.shape[:2]).astype(bool)
    # Independent truth: black glass stays below 30 in every channel; stained structures rise far above it.
    bright = thumb.max(axis=2) > 60
    assert (detected & bright).sum() / bright.sum() > 0.9
    assert 0.1 < detected.mean() < 0.98, "neither nothing nor the whole slide"


def test_blank_image_says_it_cannot(tmp_path: Path) -> None:
    path = tmp_path / "blank.png"
    Image.fromarray(np.full((300, 400, 3), 245, np.uint8)).save(path)
    with open_slide(path) as slide, pytest.raises(TissueDetectionError, match="cannot tell tissue from background"):
        detect_tissue(slide)
