"""The mask clean-up: strip by strip (union-find across strip edges) it equals labelling the whole mask at once."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from gigapath_desktop.errors import Cancelled
from gigapath_desktop.inference.cleanup import clean_mask
from gigapath_desktop.slides.diskarray import DiskArray


def whole_mask_cleanup(mask: np.ndarray, min_hole: int, min_object: int) -> np.ndarray:
    """The same rule on the whole mask at once: small 8-connected specks go, then small 4-connected holes that do
    not touch the edge are filled."""
    out = mask.copy()
    for connectivity, limit, on in ((8, min_object, False), (4, min_hole, True)):
        count, labels = cv2.connectedComponents((out != on).view(np.uint8), connectivity=connectivity)
        sizes = np.bincount(labels.ravel(), minlength=count)
        edge = np.zeros(count, bool)
        edge[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
        flip = (sizes < limit) & ~edge
        flip[0] = False
        out[flip[labels]] = on
    return out


def set_tissue(rows: np.ndarray, where: np.ndarray, on: bool) -> None:
    rows[where] = on


@pytest.mark.parametrize("seed", range(40))
def test_strip_by_strip_equals_the_whole_mask(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(3, 150, 2))
    noise = cv2.GaussianBlur(rng.random((h, w)), (0, 0), rng.uniform(0.5, 4))
    mask = noise > np.quantile(noise, rng.uniform(0.15, 0.85))
    min_hole, min_object = (int(v) for v in rng.integers(0, 80, 2))
    expected = whole_mask_cleanup(mask, min_hole, min_object)
    for rows in (1, 2, 7, 23, h):
        got = mask.copy()
        clean_mask(got, lambda m: m, set_tissue, min_hole, min_object, strip_pixels=rows * w)
        assert np.array_equal(got, expected), f"{rows}-row strips differ in {np.count_nonzero(got != expected)} px"


def test_a_mask_on_disk_is_cleaned_in_place_and_edge_components_are_kept(tmp_path) -> None:  # noqa: ANN001
    mask = np.zeros((60, 50), np.uint8)
    mask[10:50, 10:40] = 255
    mask[20:23, 20:23] = 0  # a 9 px hole: filled
    mask[30:40, 20:30] = 0  # a 100 px hole: kept
    mask[2:4, 45:47] = 255  # a 4 px speck: removed
    mask[0:3, 0:3] = 255  # a speck on the edge: kept (it may go on outside)
    store = DiskArray.create(tmp_path / "m.npy", mask.shape, np.uint8)
    store[0:60] = mask
    clean_mask(store, lambda m: m >= 128, lambda r, where, on: r.__setitem__(where, 255 if on else 0),
               min_hole=50, min_object=5, strip_pixels=7 * 50)
    cleaned = np.asarray(store[0:60])
    store.close()
    assert np.count_nonzero(cleaned != mask) == 9 + 4
    assert cleaned[20:23, 20:23].min() == 255 and cleaned[30:40, 20:30].max() == 0
    assert cleaned[2:4, 45:47].max() == 0 and cleaned[0:3, 0:3].min() == 255


def test_the_clean_up_can_be_stopped() -> None:
    mask = np.random.default_rng(0).random((400, 300)) > 0.5
    with pytest.raises(Cancelled):
        clean_mask(mask, lambda m: m, set_tissue, 10, 10, cancel=lambda: True)
