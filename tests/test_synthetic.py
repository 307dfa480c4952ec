"""Synthetic slides: pyramidal JPEG TIFF opened by the real OpenSlide, mask exact against the generator's field."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from gigapath_desktop.slides import Region, open_slide
from gigapath_desktop.slides.synthetic import SyntheticField, mask_path_for, pyramid_shapes


def test_synthetic_slide_is_a_pyramidal_tiff_openslide_reads(synthetic_slide: Path) -> None:
    with open_slide(synthetic_slide) as slide:
        assert slide.vendor == "generic-tiff"
        assert slide.dimensions == (3000, 2200)
        assert list(slide.level_dimensions) == pyramid_shapes(3000, 2200)
        assert slide.level_count >= 3
        assert slide.mpp == (0.5, 0.5)
    with tifffile.TiffFile(synthetic_slide) as tif:
        page = tif.pages[0]
        assert page.is_tiled and page.compression == tifffile.COMPRESSION.JPEG


def test_mask_matches_the_generator_truth_at_every_level(synthetic_slide: Path) -> None:
    field = SyntheticField.create(3000, 2200, seed=7)
    mask_path = mask_path_for(synthetic_slide)
    with open_slide(mask_path) as mask_slide:
        for level, ds in enumerate(mask_slide.level_downsamples):
            w, h = mask_slide.level_dimensions[level]
            mask = mask_slide.read_region(Region(0, 0, round(w * ds), round(h * ds), level))[..., 0] > 127
            truth = field.tissue((np.arange(h) + 0.5) * ds, (np.arange(w) + 0.5) * ds)
            assert np.array_equal(mask, truth), f"level {level}"
    assert 0.2 < truth.mean() < 0.6
    with tifffile.TiffFile(mask_path) as tif:
        assert np.array_equal(tif.pages[0].asarray() > 127, field.tissue(np.arange(2200) + 0.5, np.arange(3000) + 0.5))


def test_tissue_looks_like_hne_on_bright_glass(synthetic_slide: Path) -> None:
    with open_slide(synthetic_slide) as slide, open_slide(mask_path_for(synthetic_slide)) as mask_slide:
        image = slide.read_region(Region(0, 0, 3000, 2200)).astype(float)
        tissue = mask_slide.read_region(Region(0, 0, 3000, 2200))[..., 0] > 127
    background, stained = image[~tissue].mean(axis=0), image[tissue].mean(axis=0)
    assert background.min() > 225, "glass is bright"
    assert stained[1] < background[1] - 40 and stained[1] < stained[0], "eosin/haematoxylin absorb green"
