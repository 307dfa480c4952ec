"""Exact augmentation: rectangles of the augmented region equal the same rectangles of the whole transformed
region, and the tiled step on an augmented region equals the whole-region step on it (float64)."""
from __future__ import annotations

from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

from gigapath_desktop.model import build_unet
from gigapath_desktop.slides import Region, open_slide
from gigapath_desktop.slides.synthetic import mask_path_for
from gigapath_desktop.training import RegionData, reference_step, region_gradients
from gigapath_desktop.training.augment import Augmentation
from gigapath_desktop.training.ink import InkLayer


@pytest.fixture(scope="module")
def region(synthetic_slide: Path) -> RegionData:
    r = Region(300, 200, 1100, 900)  # odd sizes, not multiples of the stride
    with open_slide(synthetic_slide) as slide, open_slide(mask_path_for(synthetic_slide)) as mask:
        return RegionData(slide.read_region(r), (mask.read_region(r)[..., 0] > 127).astype(np.uint8))


def _whole(aug: Augmentation, array: np.ndarray, pixels: bool) -> np.ndarray:
    """The reference: transform the whole array at once with numpy and OpenCV (and ink it as one rectangle)."""
    out = array.swapaxes(0, 1) if aug.transpose else array
    out = out[::-1] if aug.flip_rows else out
    out = np.ascontiguousarray(out[:, ::-1] if aug.flip_cols else out)
    if pixels and aug.ink:
        out = InkLayer(aug.ink, out.shape[:2]).apply(out, 0, 0)
    if pixels and aug.lut is not None:
        out = cv2.LUT(out, aug.lut.reshape(1, 256, 3))
    if pixels and aug.blur:
        size = 2 * int(np.ceil(4 * aug.blur)) + 1
        out = cv2.GaussianBlur(out, (size, size), aug.blur, borderType=cv2.BORDER_REFLECT)
    return out


@pytest.mark.parametrize("step", range(12))
def test_rectangles_of_the_augmented_region_equal_the_whole_transform(region: RegionData, step: int) -> None:
    aug = Augmentation.draw(seed=5, step=step, ink=0.5)
    if step % 3 == 0:  # make sure blurred draws are covered, inked or not
        aug = Augmentation(aug.transpose, aug.flip_rows, aug.flip_cols, aug.lut, 1.1, aug.ink)
    augmented = aug.apply(region)
    image, labels = _whole(aug, region.image, True), _whole(aug, region.labels, False)
    assert augmented.image.shape == image.shape and augmented.labels.shape == labels.shape
    rng = np.random.default_rng(step)
    for _ in range(6):
        r0, c0 = rng.integers(0, image.shape[0] - 1), rng.integers(0, image.shape[1] - 1)
        r1, c1 = rng.integers(r0 + 1, image.shape[0] + 1), rng.integers(c0 + 1, image.shape[1] + 1)
        assert np.array_equal(augmented.image[r0:r1, c0:c1], image[r0:r1, c0:c1])
        assert np.array_equal(augmented.labels[r0:r1, c0:c1], labels[r0:r1, c0:c1])


def test_draws_are_reproducible_and_vary() -> None:
    a, b = Augmentation.draw(1, 7), Augmentation.draw(1, 7)
    assert (a.transpose, a.flip_rows, a.flip_cols, a.blur) == (b.transpose, b.flip_rows, b.flip_cols, b.blur)
    assert np.array_equal(a.lut, b.lut)
    draws = [Augmentation.draw(1, step) for step in range(40)]
    assert len({(d.transpose, d.flip_rows, d.flip_cols) for d in draws}) == 8
    assert len({d.lut.tobytes() for d in draws}) == 40 and sum(d.blur > 0 for d in draws) >= 3
    assert all(Augmentation.draw(1, s, colour=0).lut is None for s in range(5))
    assert not any(d.ink for d in draws)  # no ink unless asked
    inked = [Augmentation.draw(1, step, ink=0.5) for step in range(40)]
    assert 10 <= sum(bool(d.ink) for d in inked) <= 30
    assert [d.lut.tobytes() for d in inked] == [d.lut.tobytes() for d in draws]  # the other draws do not move
    assert not any(Augmentation.draw(1, s, dark_field=True, ink=1.0).ink for s in range(10))  # no ink on black glass


def test_ink_darkens_a_stroke_of_the_pixels_and_leaves_the_labels(region: RegionData) -> None:
    aug = next(a for a in (Augmentation.draw(4, s, ink=1.0) for s in range(20)) if not a.blur)
    plain = Augmentation(aug.transpose, aug.flip_rows, aug.flip_cols, aug.lut).apply(region)
    inked = aug.apply(region)
    before, after = np.asarray(plain.image).astype(int), np.asarray(inked.image).astype(int)
    changed = (after != before).any(axis=2)
    assert 0.001 < changed.mean() < 0.5, "a stroke, not the whole region"
    assert (after <= before).all(), "ink only absorbs light"
    assert np.array_equal(np.asarray(inked.labels), np.asarray(plain.labels))


def _two_strokes(seed: int) -> tuple:
    """The ink of the first inked draw of `seed` that has two strokes (where they cross, both apply)."""
    return next(a.ink for a in (Augmentation.draw(seed, s, ink=1.0) for s in range(20)) if len(a.ink) == 2)


@pytest.mark.parametrize("shape", [(900, 1100), (5, 3)])
def test_inked_pixels_are_the_same_whatever_rectangle_reads_them(region: RegionData, shape: tuple[int, int]) -> None:
    ink = _two_strokes(seed=6)
    image = np.ascontiguousarray(np.asarray(region.image)[: shape[0], : shape[1]])
    inked = Augmentation(ink=ink).apply(RegionData(image, np.zeros(shape, np.uint8))).image
    whole = inked[0 : shape[0], 0 : shape[1]]
    tiled = np.concatenate([np.concatenate([inked[r : r + 37, c : c + 53] for c in range(0, shape[1], 53)], axis=1)
                            for r in range(0, shape[0], 37)])
    assert np.array_equal(tiled, whole)
    for r, c in [(0, 0), (0, shape[1] - 1), (shape[0] - 1, 0), (shape[0] - 1, shape[1] - 1)]:
        assert np.array_equal(inked[r : r + 1, c : c + 1], whole[r : r + 1, c : c + 1])


def test_float64_tiled_step_equals_whole_step_on_an_augmented_region(region: RegionData) -> None:
    keras.utils.set_random_seed(4)
    model = build_unet()
    aug = Augmentation.draw(seed=2, step=3)
    ink = _two_strokes(seed=2)
    aug = Augmentation(True, True, False, aug.lut, 0.9, ink)  # a turn, a flip, colour, two ink strokes and blur
    augmented = aug.apply(region)
    whole = reference_step(model, np.asarray(augmented.image), np.asarray(augmented.labels))
    tiled = region_gradients(model, augmented.image, augmented.labels, tile=320, dtype="float64")
    assert abs(tiled[0] - whole[0]) <= 1e-9 * abs(whole[0])
    worst = max(float(np.abs(t - w).max() / np.abs(w).max()) for t, w in zip(tiled[2], whole[1]))
    assert worst <= 1e-9
    plain = region_gradients(model, region.image, region.labels, tile=320, dtype="float64")
    assert abs(plain[0] - tiled[0]) > 1e-6, "the augmentation must change what the model sees"


def test_dark_field_regions_are_told_apart_and_keep_their_black_glass(region: RegionData) -> None:
    from conftest import DAPI

    assert region.background_level() > 200  # bright-field glass
    with open_slide(DAPI) as slide:
        image = slide.read_region(Region(0, 0, *slide.dimensions, slide.level_count - 1))
    dapi = RegionData(image, (image.mean(axis=2) > 40).astype(np.uint8))
    assert dapi.background_level() < 30
    for step in range(20):
        lut = Augmentation.draw(3, step, dark_field=True).lut
        assert lut[0].max() == 0 and lut[10].max() <= 25  # black stays black, dark glass stays dark
        assert (np.diff(lut.astype(int), axis=0) >= 0).all()  # and the order of grey levels is kept
