"""Step plans from a memory budget: the fastest exact plan that fits, said before training, refused when none fits."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import CMU
from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.model import build_unet, model_geometry
from gigapath_desktop.training import TrainConfig, Trainer, region_step
from gigapath_desktop.training.data import RegionData
from gigapath_desktop.training.events import LogEvent, TileEvent
from gigapath_desktop.training.config import FOLDS
from gigapath_desktop.training.plan import (CALIBRATIONS, GIB, MAX_SIDE, NEAR_FASTEST, estimate, plan_step, plans,
                                            step_tile)
from test_cli import run


def test_the_planner_knows_each_folds_geometry() -> None:
    assert set(CALIBRATIONS) == set(FOLDS) and TrainConfig().fold in FOLDS
    for fold in FOLDS:
        for classes in (2, 3):
            geometry = model_geometry(build_unet(classes=classes, block=fold))
            assert (geometry.stride, geometry.halo) == (CALIBRATIONS[fold].stride, CALIBRATIONS[fold].halo)
    assert CALIBRATIONS[2].bytes_per_pixel > CALIBRATIONS[4].bytes_per_pixel, "the finer fold holds more per pixel"
    assert CALIBRATIONS[2].seconds(1e6, 2048, False) > CALIBRATIONS[4].seconds(1e6, 2048, False), "and is slower"


@pytest.mark.parametrize("shape", [(4096, 4096), (16000, 16000), (16000, 64000), (2000, 1500), (300, 70000)])
@pytest.mark.parametrize("budget", [1, 3, 8])
@pytest.mark.parametrize("fold", FOLDS)
def test_the_plan_is_the_leanest_of_the_fastest_that_fit_the_budget(shape: tuple[int, int], budget: float,
                                                                    fold: int) -> None:
    plan = plan_step(*shape, budget * GIB, fold=fold)
    assert plan.peak_bytes <= budget * GIB
    fitting = [p for p in plans(*shape, fold=fold) if p.peak_bytes <= budget * GIB]
    fastest = min(p.seconds for p in fitting)
    assert plan.seconds <= NEAR_FASTEST * fastest
    assert all(p.peak_bytes >= plan.peak_bytes for p in fitting if p.seconds <= NEAR_FASTEST * fastest)
    bigger = plan_step(*shape, 4 * budget * GIB, fold=fold)
    assert bigger.seconds <= NEAR_FASTEST * plan.seconds, "more memory is never meaningfully slower"
    stride, halo = CALIBRATIONS[fold].stride, CALIBRATIONS[fold].halo
    if plan.tile is not None:
        assert plan.tile % stride == 0 and estimate(*shape, plan.tile, fold=fold) == plan
    sides = [plan.width, plan.height] if plan.tile is None else [min(plan.tile, max(shape))] * 2
    assert max(sides) + 2 * halo <= MAX_SIDE + stride, "no tensor beyond a Metal texture's side"


@functools.cache
def _geometry(fold: int) -> object:
    return model_geometry(build_unet(block=fold))


@pytest.mark.parametrize("shape", [(1, 1), (63, 65), (1100, 1400), (3000, 7777)])
@pytest.mark.parametrize("tile", [None, 256, 1000, 2048])
@pytest.mark.parametrize("fold", FOLDS)
def test_estimates_count_the_pixels_the_tiling_plan_reads(shape: tuple[int, int], tile: int | None, fold: int) -> None:
    from gigapath_desktop.model.tiling import TilePlan

    plan = TilePlan.create(*shape, _geometry(fold), tile)
    estimated = estimate(*shape, tile, fold=fold)
    assert (estimated.tiles, estimated.input_pixels) == (len(plan), plan.input_pixels())


def test_a_region_that_fits_is_one_tensor_and_a_gigapixel_one_is_tiled_within_the_budget() -> None:
    assert plan_step(2000, 1500).tile is None
    gigapixel = plan_step(16000, 64000)
    assert gigapixel.tile is not None and gigapixel.tile > 2048 and gigapixel.peak_bytes <= 3 * GIB
    assert gigapixel.input_pixels < estimate(16000, 64000, 2048).input_pixels, "bigger tiles read less halo"
    assert plan_step(100, 100).describe().endswith("under 0.1 s per step"), "not ~0.0 s"
    assert gigapixel.describe().endswith(f"~{gigapixel.seconds:.1f} s per step")


def test_a_budget_too_small_for_any_plan_is_refused_saying_what_would_do() -> None:
    with pytest.raises(GigaPathError, match=r"too small: even tiles of 256 px .* at least 0\.\d GiB"):
        plan_step(4096, 4096, 0.3 * GIB)
    with pytest.raises(GigaPathError, match=r"even the region as one tensor need"):
        plan_step(100, 100, 0.3 * GIB)
    assert step_tile("auto", (16000, 16000), 64, distributed=True) <= 2048, "tiles to spread over workers"
    assert step_tile(1024, (16000, 16000), 0.7) == 1024 and step_tile(None, (10, 10), 3) is None


def test_the_trainer_plans_and_records_its_models_own_fold() -> None:
    """The fold setting builds a new run's model; a Trainer given another model says that model's fold."""
    labels = np.zeros((256, 256), np.uint8)
    labels[64:192, 64:192] = 1
    region = RegionData(np.zeros((256, 256, 3), np.uint8), labels)
    for fold in FOLDS:
        other = next(f for f in FOLDS if f != fold)
        assert Trainer(build_unet(block=fold), [region], None, TrainConfig(fold=other)).config.fold == fold


def test_auto_steps_equal_the_fixed_tile_steps(synthetic_slide: Path) -> None:
    """'auto' changes how a step is computed, never what it computes: the same weights after 2 steps."""
    from gigapath_desktop.slides import Region, open_slide
    from gigapath_desktop.slides.synthetic import mask_path_for

    region = Region(0, 0, 1400, 1100)
    with open_slide(synthetic_slide) as slide, open_slide(mask_path_for(synthetic_slide)) as mask:
        data = RegionData(slide.read_region(region), (mask.read_region(region)[..., 0] > 127).astype(np.uint8))
    weights = []
    for tile in ("auto", 512):
        import keras

        keras.utils.set_random_seed(0)
        events: list = []
        trainer = Trainer(build_unet(), [data], None, TrainConfig(steps=2, tile=tile), listeners=[events.append])
        trainer.run()
        weights.append(trainer.model.get_weights())
        if tile == "auto":
            assert not [e for e in events if isinstance(e, TileEvent)], "a 1.5 MP region is one tensor within 3 GiB"
            assert any(isinstance(e, LogEvent) and "one tensor" in e.message for e in events)
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
    model = build_unet()  # each plan kind, exact in float64: the auto plan of a small budget tiles
    small = plan_step(1100, 1400, 0.7 * GIB)
    assert small.tile is not None and small.tiles > 1
    _, _, whole = region_step(model, data.image, data.labels, tile=None, dtype="float64")
    _, _, tiled = region_step(model, data.image, data.labels, tile=small.tile, dtype="float64")
    for a, b in zip(whole, tiled):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_train_plan_prints_each_regions_plan_and_a_small_budget_is_one_error(tmp_path: Path) -> None:
    args = ["train", str(CMU), "--region", "0,0,2220,2967", "--region", "0,0,512,512", "--auto-labels",
            "--out", str(tmp_path / "run")]
    shown = run(*args, "--plan")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.strip().splitlines()
    assert lines[0].startswith("memory budget 3 GiB, tile auto") and len(lines) == 3
    assert "2220 x 2967: the region as one tensor" in lines[1] and "GiB" in lines[1]
    assert not (tmp_path / "run").exists(), "--plan trains nothing"
    fixed = run(*args, "--plan", "--tile", "1024")
    assert "9 tiles of 1024 px" in fixed.stdout
    small = run(*args, "--memory-budget", "0.5", "--steps", "1")
    assert small.returncode == 2 and "memory budget must lie in [0.6" in small.stderr.strip().splitlines()[-1]
    assert "decoding" not in small.stdout and not (tmp_path / "run").exists(), "refused before any decoding"
    bad = run(*args, "--tile", "big")
    assert bad.returncode == 2 and "'auto' or a number of pixels" in bad.stderr
    nan = run(*args, "--memory-budget", "nan")
    assert nan.returncode == 2 and nan.stderr.strip().splitlines()[-1].startswith("error:")
    assert json.loads(json.dumps(TrainConfig().tile)) == "auto"


def test_the_app_shows_the_plan_before_start(window, qtbot) -> None:  # noqa: ANN001
    from gigapath_desktop.annotations import Annotation

    window.open_slide(CMU)
    window.session.apply("draw", [], [Annotation.rectangle(0, 0, 2000, 1500)])
    panel = window.panel
    assert panel.tile.text() == "auto" and "the region as one tensor" in panel.plan.text()
    panel.memory_budget.setValue(0.3)  # below what any plan needs: the box stops at the least budget
    assert window.session.training.memory_budget == 0.6 and "tiles of 384 px" in panel.plan.text()
    panel.tile.setValue(1024)
    assert "tiles of 1024 px" in panel.plan.text()
