"""Slide access through the real OpenSlide: geometry, resolution, pixels, errors, threads, plain images."""
from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openslide
import pytest
from PIL import Image

from conftest import ALL_SLIDES, CMU, DAPI, SLIDES, TCGA, TRITC
from gigapath_desktop import SlideError
from gigapath_desktop.slides import Region, open_slide

EXPECTED = {
    # file: (vendor, level-0 size, level count, mpp or None, background is bright)
    CMU: ("aperio", (2220, 2967), 1, 0.499, True),
    TCGA: ("aperio", (4443, 3567), 2, None, True),
    DAPI: ("hamamatsu", (3968, 4864), 7, 0.2282, False),
    TRITC: ("hamamatsu", (3968, 4864), 7, 0.2282, False),
}


@pytest.mark.parametrize("path", ALL_SLIDES, ids=lambda p: p.name)
def test_every_test_slide_reads_with_expected_geometry_and_pixels(path: Path) -> None:
    vendor, size, levels, mpp, bright = EXPECTED[path]
    with open_slide(path) as slide:
        assert slide.vendor == vendor
        assert slide.dimensions == size
        assert slide.level_count == levels
        assert len(slide.level_downsamples) == levels and slide.level_downsamples[0] == 1.0
        if mpp is None:
            assert slide.mpp is None
        else:
            assert slide.mpp is not None and slide.mpp[0] == pytest.approx(mpp, abs=1e-3)
        corner = slide.read_region(Region(0, 0, 64, 64))
        assert corner.shape == (64, 64, 3) and corner.dtype == np.uint8
        assert (corner.mean() > 200) if bright else (corner.mean() < 40)
        coarsest = slide.level_count - 1
        w, h = slide.level_dimensions[coarsest]
        ds = slide.level_downsamples[coarsest]
        whole = slide.read_region(Region(0, 0, round(w * ds), round(h * ds), coarsest))
        assert whole.shape == (h, w, 3)
        assert whole.std() > 5, "a real slide has structure, not a flat colour"
        thumb = slide.thumbnail(256)
        assert max(thumb.shape[:2]) <= 256 and thumb.shape[2] == 3


def test_pixels_match_openslide_directly() -> None:
    region = Region(1000, 1200, 300, 200)
    with open_slide(CMU) as slide:
        ours = slide.read_region(region)
    direct = np.asarray(openslide.OpenSlide(str(CMU)).read_region((1000, 1200), 0, (300, 200)))
    assert np.array_equal(ours, direct[..., :3])
    assert ours[..., 1].mean() < ours[..., 0].mean(), "H&E tissue at the centre is pink/purple: green is lowest"


def test_levels_are_consistent_downsamples() -> None:
    with open_slide(DAPI) as slide:
        fine = slide.read_region(Region(0, 0, 1024, 1024, 0)).astype(float)
        coarse = slide.read_region(Region(0, 0, 1024, 1024, 2)).astype(float)
    assert coarse.shape == (256, 256, 3)
    pooled = fine.reshape(256, 4, 256, 4, 3).mean(axis=(1, 3))
    assert np.abs(pooled - coarse).mean() < 6


def test_associated_images() -> None:
    with open_slide(CMU) as slide:
        assert {"label", "macro", "thumbnail"} <= set(slide.associated_image_names)
        label = slide.associated_image("label")
        assert label.ndim == 3 and label.shape[2] == 3
        with pytest.raises(SlideError, match="no associated image"):
            slide.associated_image("nope")


@pytest.mark.parametrize("path", ALL_SLIDES, ids=lambda p: p.name)
def test_truncated_copy_gives_slide_error(path: Path, tmp_path: Path) -> None:
    broken = tmp_path / path.name
    data = path.read_bytes()
    broken.write_bytes(data[: len(data) * 9 // 10])
    with pytest.raises(SlideError, match=broken.name):
        with open_slide(broken) as slide:
            w, h = slide.dimensions
            slide.read_region(Region(0, 0, w, h))


def test_a_truncated_pyramidal_tiff_is_refused_not_read_as_a_plain_image(tmp_path: Path) -> None:
    """OpenSlide refuses it; the plain-image reader took it: no µm/px, one level, a cut-off picture, no word."""
    from gigapath_desktop.slides.realistic import write_pyramid

    whole = tmp_path / "whole.tif"
    write_pyramid(whole, np.random.default_rng(0).integers(0, 255, (3000, 2000, 3), np.uint8), 0.5)
    data = whole.read_bytes()
    for keep in (0.9, 0.5):
        broken = tmp_path / "cut.tif"
        broken.write_bytes(data[: int(len(data) * keep)])
        with pytest.raises(SlideError, match="tiled TIFF that OpenSlide cannot read: the file is truncated"):
            open_slide(broken)
    with open_slide(whole) as slide:
        assert slide.vendor == "generic-tiff" and slide.mpp == (0.5, 0.5)


@pytest.mark.parametrize("path", [CMU, TCGA, DAPI], ids=lambda p: p.name)
def test_corrupt_tiles_give_slide_error(path: Path, tmp_path: Path) -> None:
    broken = tmp_path / path.name
    data = bytearray(path.read_bytes())
    n = len(data)
    data[n // 4 : n // 2] = b"\xff" * (n // 2 - n // 4)
    broken.write_bytes(bytes(data))
    with pytest.raises(SlideError, match="corrupt or truncated"):
        with open_slide(broken) as slide:
            w, h = slide.dimensions
            slide.read_region(Region(0, 0, w, h))


def test_non_slide_missing_and_out_of_bounds(tmp_path: Path) -> None:
    text = tmp_path / "notes.svs"
    text.write_text("not a slide")
    with pytest.raises(SlideError, match="not recognised as a slide"):
        open_slide(text)
    with pytest.raises(SlideError, match="no such file"):
        open_slide(tmp_path / "missing.ndpi")
    with open_slide(CMU) as slide:
        with pytest.raises(SlideError, match="outside the slide"):
            slide.read_region(Region(2000, 0, 500, 100))
        with pytest.raises(SlideError, match="level 3 does not exist"):
            slide.read_region(Region(0, 0, 10, 10, 3))
        with pytest.raises(SlideError, match="empty"):
            slide.read_region(Region(0, 0, 0, 10))


def test_reads_from_several_threads_agree() -> None:
    regions = [Region(x, y, 256, 256, level) for x in (0, 1024, 2048) for y in (0, 2048) for level in (0, 1, 2)]
    with open_slide(TRITC) as slide:
        sequential = [slide.read_region(r) for r in regions]
        with ThreadPoolExecutor(4) as pool:
            parallel = list(pool.map(slide.read_region, regions * 3))
    for i, image in enumerate(parallel):
        assert np.array_equal(image, sequential[i % len(regions)])


def test_plain_png_with_transparency_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, 30:, 3] = 255  # right half opaque red-ish, left half fully transparent
    path = tmp_path / "plain.png"
    Image.fromarray(rgba).save(path)
    with open_slide(path) as slide:
        assert slide.vendor == "image" and slide.dimensions == (60, 40) and slide.mpp is None
        pixels = slide.read_region(Region(0, 0, 60, 40))
    assert (pixels[:, :30] == 255).all()
    assert (pixels[:, 30:] == [200, 0, 0]).all()


def test_slide_copied_elsewhere_still_reads(tmp_path: Path) -> None:
    copy = tmp_path / "copy.svs"
    shutil.copy(SLIDES / "CMU-1-Small-Region.svs", copy)
    with open_slide(copy) as a, open_slide(CMU) as b:
        assert a.identity != b.identity  # different files key different caches
        assert np.array_equal(a.read_region(Region(5, 5, 20, 20)), b.read_region(Region(5, 5, 20, 20)))
        assert a.fingerprint == b.fingerprint  # the same content: the same annotations
    os.utime(copy, (1, 1))  # a touch or a re-sync
    with open_slide(copy) as a, open_slide(CMU) as b, open_slide(TCGA) as c:
        assert a.fingerprint == b.fingerprint != c.fingerprint
