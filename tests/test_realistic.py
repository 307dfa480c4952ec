"""Realistic test slides: real texture, truth that matches the layout, files OpenSlide reads back."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from conftest import DAPI
from gigapath_desktop.slides import Region, open_slide
from gigapath_desktop.slides.realistic import Case, make_realistic_slide, render


def test_slide_and_truth_are_pyramidal_tiffs_that_openslide_reads(tmp_path: Path) -> None:
    case = Case("t", width=1500, height=1100, tissue_fraction=0.4, island_scale=300, mpp=0.5)
    image_path, mask_path = make_realistic_slide(tmp_path / "s.tif", case, seed=3)
    with open_slide(image_path) as slide, open_slide(mask_path) as mask:
        assert slide.dimensions == mask.dimensions == (1500, 1100) and slide.level_count >= 2
        assert slide.mpp == (0.5, 0.5)
        rgb = slide.read_region(Region(0, 0, 1500, 1100))
        truth = mask.read_region(Region(0, 0, 1500, 1100))[..., 0]
    assert set(np.unique(truth)) == {0, 255}
    tissue = truth > 127
    assert 0.25 < tissue.mean() < 0.55
    saturation = rgb.max(axis=2).astype(int) - rgb.min(axis=2)
    assert np.median(saturation[tissue]) > 3 * np.median(saturation[~tissue])  # stained tissue on pale glass
    assert np.median(rgb[~tissue]) > 200
    assert not list(tmp_path.glob("*partial*"))


def test_same_seed_same_slide_other_seed_other_layout() -> None:
    case = Case("t", width=600, height=500, island_scale=200)
    a_image, a_truth = render(case, np.random.default_rng(1))
    b_image, b_truth = render(case, np.random.default_rng(1))
    _, c_truth = render(case, np.random.default_rng(2))
    assert np.array_equal(a_image, b_image) and np.array_equal(a_truth, b_truth)
    assert (a_truth != c_truth).mean() > 0.1


def test_fluorescence_case_is_dark_glass_with_bright_tissue() -> None:
    case = Case("f", width=800, height=600, modality="fluorescence", island_scale=250, sources=(str(DAPI),))
    image, truth = render(case, np.random.default_rng(0))
    tissue = truth.astype(bool)
    assert np.median(image[~tissue]) < 20 and image[tissue].mean() > 2 * image[~tissue].mean()
