"""Exactness of every plan of the step (tiled, one tensor) against autodiff of the whole-region loss in float64,
and tiles closer to the truth in float32.

Relative difference of a gradient = max |a - b| / max |b| over the variable's entries; "worst variable" is the max.
"""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from gigapath_desktop.model import build_unet, model_geometry, with_dtype
from gigapath_desktop.model.tiling import TilePlan
from gigapath_desktop.slides import Region, open_slide
from gigapath_desktop.slides.synthetic import mask_path_for
from gigapath_desktop.training import reference_step, region_gradients, region_step


def _region(slide_path: Path, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    region = Region(0, 0, width, height)
    with open_slide(slide_path) as slide, open_slide(mask_path_for(slide_path)) as mask:
        return slide.read_region(region), (mask.read_region(region)[..., 0] > 127).astype(np.uint8)


def _worst(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(x - y).max() / np.abs(y).max()) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def model() -> keras.Model:
    keras.utils.set_random_seed(3)
    return build_unet()


@pytest.fixture(scope="module")
def odd_region(synthetic_slide: Path) -> tuple[np.ndarray, np.ndarray]:
    return _region(synthetic_slide, 1500, 2300)  # neither a multiple of the tile nor of the stride (64)


def test_tiled_forward_equals_whole_forward(model: keras.Model, odd_region: tuple) -> None:
    image, _ = odd_region
    geometry = model_geometry(model)
    whole_plan = TilePlan.create(*image.shape[:2], geometry, None)
    (whole_tile,) = whole_plan.tiles()
    whole = np.asarray(model(whole_plan.image(image, whole_tile)[None]))[0, ..., 0]
    plan = TilePlan.create(*image.shape[:2], geometry, 448)
    assert len(plan) > 6
    stitched = np.full(image.shape[:2], np.nan, np.float32)
    for tile in plan.tiles():
        target, part = plan.crop(np.asarray(model(plan.image(image, tile)[None]))[0, ..., 0], tile)
        stitched[target] = part
    # the same function piecewise: float32 convolutions may round differently by a few ulps with the input's size
    # (oneDNN blocking); exactness itself is shown in float64 below
    np.testing.assert_allclose(stitched, whole[: image.shape[0], : image.shape[1]], rtol=0, atol=1e-6)


def test_float64_tiled_and_one_tensor_gradients_equal_autodiff_of_the_whole_region(model: keras.Model,
                                                                                    odd_region: tuple) -> None:
    image, labels = odd_region
    loss_r, grads_r = reference_step(model, image, labels)
    loss_t, dice_t, grads_t = region_gradients(model, image, labels, tile=512, dtype="float64")
    loss_w, dice_w, grads_w = region_gradients(model, image, labels, tile=None, dtype="float64")
    assert abs(loss_t - loss_r) <= 1e-9 * abs(loss_r) and abs(loss_w - loss_r) <= 1e-9 * abs(loss_r)
    assert abs(dice_t - dice_w) <= 1e-9 * abs(dice_w)
    assert len(grads_t) == len(model.trainable_variables)
    assert all(g.dtype == np.float64 and g.shape == tuple(v.shape) for g, v in zip(grads_t, model.trainable_variables))
    assert _worst(grads_t, grads_r) <= 1e-9 and _worst(grads_w, grads_r) <= 1e-9


def test_float64_tiled_equals_whole_for_three_classes_with_unlabelled_pixels(odd_region: tuple) -> None:
    """K = 3 (background, two tissue classes), 30 % of the pixels unlabelled (255): the softmax loss, written-out
    gradient and per-class sums are exact tile by tile, and unlabelled pixels change nothing."""
    image, tissue = odd_region
    rng = np.random.default_rng(0)
    labels = tissue.copy()
    labels[(tissue == 1) & (np.arange(tissue.shape[1]) > tissue.shape[1] // 2)] = 2
    unlabelled = rng.random(labels.shape) < 0.3
    sparse = np.where(unlabelled, 255, labels).astype(np.uint8)
    keras.utils.set_random_seed(5)
    model = build_unet(classes=3)
    assert model.output_shape[-1] == 3
    loss_r, grads_r = reference_step(model, image, sparse)
    loss_w, terms_w, grads_w = region_step(model, image, sparse, tile=None, dtype="float64")
    loss_t, terms_t, grads_t = region_step(model, image, sparse, tile=448, dtype="float64")
    assert abs(loss_t - loss_r) <= 1e-9 * abs(loss_r) and abs(loss_w - loss_r) <= 1e-9 * abs(loss_r)
    assert _worst(grads_t, grads_r) <= 1e-9 and _worst(grads_w, grads_r) <= 1e-9
    np.testing.assert_allclose(terms_t.class_dice, terms_w.class_dice, rtol=1e-9)
    assert terms_t.valid == np.count_nonzero(~unlabelled)
    np.testing.assert_array_equal(terms_t.truth, [np.count_nonzero(sparse == c) for c in range(3)])
    # only labelled pixels count: the per-class sums match numpy over the labelled pixels of the model's output
    plan = TilePlan.create(*image.shape[:2], model_geometry(model), None)
    (whole,) = plan.tiles()
    probabilities = np.asarray(with_dtype(model, "float64")(plan.image(image, whole)[None]))[0]
    probabilities = probabilities[: image.shape[0], : image.shape[1]]
    onehot = np.eye(3)[labels] * ~unlabelled[..., None]
    np.testing.assert_allclose(terms_t.intersection, (probabilities * onehot).sum(axis=(0, 1)), rtol=1e-9)
    np.testing.assert_allclose(terms_t.predicted, (probabilities * ~unlabelled[..., None]).sum(axis=(0, 1)), rtol=1e-9)
    assert 0 < terms_t.dice < 1 and len(terms_t.class_dice) == 3


def test_float32_tiled_is_no_further_from_float64_truth_than_whole(model: keras.Model, odd_region: tuple) -> None:
    image, labels = odd_region
    _, truth = reference_step(model, image, labels)
    _, whole32 = reference_step(model, image, labels, dtype="float32")
    _, _, tiled32 = region_gradients(model, image, labels, tile=512, dtype="float32")
    whole_error, tiled_error = _worst(whole32, truth), _worst(tiled32, truth)
    print(f"float32 worst-variable relative error: whole {whole_error:.2e}, tiled {tiled_error:.2e}")
    assert tiled_error <= whole_error


def test_region_smaller_than_the_halo(model: keras.Model, synthetic_slide: Path) -> None:
    image, labels = _region(synthetic_slide, 70, 130)
    loss, truth = reference_step(model, image, labels)
    for tile in (None, 64):
        tiled = region_gradients(model, image, labels, tile=tile, dtype="float64")
        assert abs(tiled[0] - loss) <= 1e-9 * abs(loss)
        assert _worst(tiled[2], truth) <= 1e-9


def test_whole_region_too_large_for_memory_is_refused(model: keras.Model, tmp_path: Path) -> None:
    from gigapath_desktop import TrainingError
    from gigapath_desktop.slides.diskarray import DiskArray

    side = 60_000  # 3.6 GP: sparse files on disk, never read, since the check comes first
    image = DiskArray.create(tmp_path / "image.npy", (side, side, 3), np.uint8)
    labels = DiskArray.create(tmp_path / "labels.npy", (side, side), np.uint8)
    with pytest.raises(TrainingError, match="train tile by tile"):
        region_gradients(model, image, labels, tile=None)
