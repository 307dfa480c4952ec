"""Prediction and export: tiled == whole, TIFF read back by OpenSlide and tifffile, GeoJSON round trip, quality on
a different synthetic slide, and clean failures."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tifffile

from gigapath_desktop import Cancelled, ModelError, SlideError
from gigapath_desktop.annotations import rasterize, read_geojson
from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.inference import PredictJob, SlideSource, predict_array, run_predict_job
from gigapath_desktop.model import build_unet, save_model
from gigapath_desktop.slides import Region, open_slide
from gigapath_desktop.slides.synthetic import make_slide, mask_path_for
from gigapath_desktop.training import RegionData, TrainConfig, Trainer
from test_cleanup import whole_mask_cleanup


@pytest.fixture(scope="module")
def trained(synthetic_slide: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained on the shared synthetic slide (seed 7), saved as .keras."""
    region = Region(0, 0, 2048, 2048)
    with open_slide(synthetic_slide) as slide, open_slide(mask_path_for(synthetic_slide)) as mask:
        data = RegionData(slide.read_region(region), (mask.read_region(region)[..., 0] > 127).astype(np.uint8))
    keras.utils.set_random_seed(0)
    trainer = Trainer(build_unet(), [data], None, TrainConfig(steps=30, learning_rate=0.03, tile=None))
    trainer.run()
    return save_model(trainer.model, tmp_path_factory.mktemp("model") / "model.keras")


@pytest.fixture(scope="module")
def other_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A different synthetic slide (another seed) to predict on."""
    path, _ = make_slide(tmp_path_factory.mktemp("other") / "other.tif", 2600, 1900, seed=8)
    return path


def test_tiled_prediction_equals_whole_image_prediction(trained: Path, other_slide: Path) -> None:
    model = keras.models.load_model(trained)
    with open_slide(other_slide) as slide:
        source = SlideSource(slide, Region(100, 50, 1700, 1333))  # odd size, odd origin
        whole = predict_array(model, source, tile=None)
        tiled = predict_array(model, source, tile=448)
    assert whole.shape == (1333, 1700)
    assert np.abs(tiled - whole).max() <= 1e-5  # float32 rounding of the logits (exactness: test_gradients)


def test_exports_open_in_openslide_and_tifffile_and_contours_round_trip(trained: Path, other_slide: Path, tmp_path: Path) -> None:
    region = Region(200, 300, 1900, 1400)
    job = PredictJob(other_slide, trained, tmp_path / "mask.tif", region=region, png=tmp_path / "preview.png",
                     downsample=4, geojson=tmp_path / "contours.geojson", tile=512, probabilities=tmp_path / "prob.tif",
                     min_hole_um2=0)  # the model's own values (the clean-up: test_small_holes_are_filled...)
    result = run_predict_job(job)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["contours.geojson", "mask.tif", "preview.png", "prob.tif"]
    with open_slide(other_slide) as slide:
        expected = np.round(predict_array(keras.models.load_model(trained), SlideSource(slide, region)) * 255)
        dims, mpp = slide.level_dimensions, slide.mpp
    with open_slide(job.out) as mask_slide:
        assert mask_slide.vendor == "generic-tiff"
        assert mask_slide.dimensions == dims[0] and mask_slide.mpp == pytest.approx(mpp)
        assert mask_slide.level_count >= 3
        via_openslide = mask_slide.read_region(Region(200, 300, 1900, 1400))[..., 0]
    with tifffile.TiffFile(job.out) as tif:
        level0 = tif.pages[0].asarray()
        description = json.loads(tif.pages[0].description)
        assert [p.shape for p in tif.pages[:3]] == [(1900, 2600), (950, 1300), (475, 650)]
    assert description["source_slide"].endswith("other.tif") and description["model"].endswith("model.keras")
    assert np.abs(level0[300:1700, 200:2100].astype(int) - expected).max() <= 1
    assert np.array_equal(via_openslide, level0[300:1700, 200:2100])
    assert level0[:300].max() == 0 and level0[:, :200].max() == 0, "outside the region stays empty"
    with tifffile.TiffFile(job.probabilities) as tif:  # the tissue model's one channel: its probability mask
        assert json.loads(tif.pages[0].description)["channels"] == ["Tissue"]
        assert np.array_equal(tif.pages[0].asarray().reshape(level0.shape), level0)
    thresholded = level0 >= 128
    polygons = read_geojson(job.geojson)
    assert polygons and result.contours == len(polygons)
    back = rasterize(polygons, (0, 0), 1.0, level0.shape).astype(bool)
    iou = (back & thresholded).sum() / (back | thresholded).sum()
    assert iou >= 0.98, f"IoU {iou:.4f}"


def test_quality_on_a_different_synthetic_slide(trained: Path, other_slide: Path, tmp_path: Path) -> None:
    job = PredictJob(other_slide, trained, tmp_path / "mask.tif", binary=True)
    run_predict_job(job)
    predicted = tifffile.imread(job.out, key=0) > 0
    truth = tifffile.imread(mask_path_for(other_slide), key=0) > 127
    dice = 2 * (predicted & truth).sum() / (predicted.sum() + truth.sum())
    print(f"Dice on a different synthetic slide: {dice:.4f}")
    assert dice >= 0.98


def test_bad_inputs_fail_cleanly_without_leftovers(trained: Path, other_slide: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelError, match="junk.keras"):
        run_predict_job(PredictJob(other_slide, junk, tmp_path / "a.tif"))
    with pytest.raises(SlideError, match="outside the slide"):
        run_predict_job(PredictJob(other_slide, trained, tmp_path / "b.tif", region=Region(2000, 0, 1000, 100)))
    with pytest.raises(GigaPathError, match="does not exist"):
        run_predict_job(PredictJob(other_slide, trained, tmp_path / "missing" / "c.tif"))
    calls = []
    with pytest.raises(Cancelled):
        run_predict_job(PredictJob(other_slide, trained, tmp_path / "d.tif", png=tmp_path / "d.png", tile=256,
                                   probabilities=tmp_path / "d.prob.tif"),
                        progress=lambda d, t: calls.append(d), cancel=lambda: len(calls) >= 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.keras"]
    said: list[str] = []  # a stop asked while the preview is drawn: no output replaced (they all were)
    with pytest.raises(Cancelled, match="before the outputs were renamed"):
        run_predict_job(PredictJob(other_slide, trained, tmp_path / "f.tif", png=tmp_path / "f.png"),
                        cancel=lambda: "drawing the preview" in said, say=said.append)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.keras"]
    dead = subprocess.Popen([sys.executable, "-c", ""])  # what a prediction killed with -9 leaves: its pid is gone
    dead.wait()
    left = [tmp_path / name for name in (f".e.partial-{dead.pid}.tif", f".mask-levels-{dead.pid}-x1",
                                         f".prob-{dead.pid}-x2")]
    live = tmp_path / f".clean-{os.getpid()}-x3"  # (a prediction of this process, still at work)
    for path in left[1:] + [live]:
        path.mkdir()
        (path / "level0.npy").write_bytes(b"0" * 1000)
    left[0].write_bytes(b"half a mask")
    run_predict_job(PredictJob(other_slide, trained, tmp_path / "e.tif", region=Region(0, 0, 512, 512)))
    assert not any(p.exists() for p in left) and live.is_dir(), "the killed run's leftovers go, a live one's stay"


def test_predict_command_line(trained: Path, other_slide: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.tif"
    result = subprocess.run(
        [sys.executable, "-m", "gigapath_desktop", "predict", str(other_slide), "--model", str(trained), "--out", str(out),
         "--png", str(tmp_path / "p.png"), "--downsample", "8", "--geojson", str(tmp_path / "c.geojson")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert out.is_file() and (tmp_path / "p.png").is_file() and (tmp_path / "c.geojson").is_file()
    bad = subprocess.run([sys.executable, "-m", "gigapath_desktop", "predict", str(other_slide), "--model",
                          str(tmp_path / "nope.keras"), "--out", str(tmp_path / "x.tif")], capture_output=True, text=True)
    assert bad.returncode == 2 and "no such model" in bad.stderr and not (tmp_path / "x.tif").exists()
    for area in ("nan", "-5", "inf"):
        bad = subprocess.run([sys.executable, "-m", "gigapath_desktop", "predict", str(other_slide), "--model",
                              str(trained), "--out", str(tmp_path / "y.tif"), "--min-hole", area],
                             capture_output=True, text=True)
        assert bad.returncode == 2 and bad.stderr.splitlines()[-1].startswith("error: --min-hole"), bad.stderr
        assert not (tmp_path / "y.tif").exists()


def test_regions_touching_the_far_edges_of_rounded_down_levels(trained: Path, tmp_path: Path) -> None:
    """A 1000 x 1003 slide whose levels are rounded down (501 rows at downsample 2), as many scanners write them."""
    rng = np.random.default_rng(0)
    path = tmp_path / "odd.tif"
    with tifffile.TiffWriter(path) as tif:
        for k, (w, h) in enumerate([(1000, 1003), (500, 501), (250, 250)]):
            tif.write(rng.integers(0, 255, (h, w, 3), np.uint8), photometric="rgb", tile=(256, 256),
                      subfiletype=1 if k else 0)
    with open_slide(path) as slide:
        assert slide.level_dimensions[1] == (500, 501)
        for level in (1, 2):
            lw, lh = slide.level_dimensions[level]
            for x, y in rng.integers(0, 1000, (300, 2)):
                region = Region(int(x), int(y), 1000 - int(x), 1003 - int(y), level)
                col, row, w, h = slide.level_rect(region)
                assert 0 <= col and 0 <= row and w >= 1 and h >= 1 and col + w <= lw and row + h <= lh
    job = PredictJob(path, trained, tmp_path / "mask.tif", region=Region(5, 3, 995, 1000, 1), level=1, tile=256)
    run_predict_job(job)
    with open_slide(tmp_path / "mask.tif") as mask:
        assert mask.dimensions == (500, 501)


def test_small_holes_are_filled_and_specks_removed_as_labels_are_drawn(trained: Path, other_slide: Path,
                                                                       tmp_path: Path) -> None:
    """The clean-up on a real prediction: exactly the whole-mask rule at the slide's µm/px, each changed probability
    moved just across the threshold, the areas counted after it; a slide without µm/px is left as predicted."""
    region = Region(200, 300, 1900, 1400)
    raw = run_predict_job(PredictJob(other_slide, trained, tmp_path / "raw.tif", region=region, min_hole_um2=0))
    job = PredictJob(other_slide, trained, tmp_path / "clean.tif", region=region, min_hole_um2=300,
                     min_object_um2=300, tile=512)
    result = run_predict_job(job)
    before = tifffile.imread(raw.out, key=0)[300:1700, 200:2100]
    with tifffile.TiffFile(job.out) as tif:
        after = tif.pages[0].asarray()[300:1700, 200:2100]
        description = json.loads(tif.pages[0].description)
    with open_slide(other_slide) as slide:
        pixels = math.ceil(300 / (slide.mpp[0] * slide.mpp[1]))
    expected = whole_mask_cleanup(before >= 128, pixels, pixels)
    assert np.array_equal(after >= 128, expected)
    changed = expected != (before >= 128)
    assert changed.any() and np.array_equal(after[~changed], before[~changed])
    assert set(np.unique(after[changed])) <= {127, 128} | set(np.unique(before[changed]))
    assert description["min_hole_um2"] == 300 and description["min_object_um2"] == 300
    assert result.class_pixels["Tissue"] == np.count_nonzero(expected)
    with open_slide(other_slide) as slide:
        without_mpp = tmp_path / "no-mpp.tif"
        tifffile.imwrite(without_mpp, slide.read_region(region), tile=(256, 256))
    plain = run_predict_job(PredictJob(without_mpp, trained, tmp_path / "plain.tif", min_hole_um2=300))
    assert any("records no µm/px" in note for note in plain.notes)
    assert np.array_equal(tifffile.imread(plain.out, key=0), before)


def test_a_small_region_on_a_big_slide_takes_a_bands_memory_and_the_regions_disk(tmp_path: Path) -> None:
    """A region's mask is placed on a whole-slide canvas: the rows outside it were allocated at once (a 1 MP region
    of a 1.6 GP slide peaked at 2.5 GB) and written to the scratch pyramid in full (a 1 GB tmpfs ran out)."""
    import tracemalloc

    from gigapath_desktop.inference.job import _canvas_rows
    from gigapath_desktop.inference.writers import TILE, MaskValues, write_contours, write_mask_tiff

    height, width = 40_000, 12_000
    band = np.full((1024, 1024), 255, np.uint8)
    tracemalloc.start()
    chunks = [(y, len(rows)) for y, rows in _canvas_rows(iter([(0, band)]), (height, width), (35_000, 9_000))]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    canvas = height * width
    assert peak < 6 * band.shape[0] * width, f"{peak / 2**20:.0f} MiB for a canvas of {canvas / 2**20:.0f} MiB"
    assert [y for y, _ in chunks] == list(range(0, height, TILE)) and sum(n for _, n in chunks) == height

    band[::2] = 0  # 512 stripes 1 px wide: only the finest level tells them apart
    rows = _canvas_rows(iter([(0, band)]), (16_384, 16_384), (12_000, 3_000))
    with write_mask_tiff(tmp_path / "m.tif", rows, (16_384, 16_384), 1.0, None, {}, MaskValues("binary")) as levels:
        used = sum(f.stat().st_blocks * 512 for f in levels.folder.iterdir())
        assert used < 32 * 2**20, f"{used / 2**20:.0f} MiB of scratch for a 1 MP region (the canvas: 256 MiB)"
        values = MaskValues("binary")
        assert write_contours(tmp_path / "c.geojson", levels, values, window=(12_000, 3_000, 1024, 1024)) == 512
        stripes = read_geojson(tmp_path / "c.geojson")
        assert min(s.geometry.bounds[0] for s in stripes) == pytest.approx(3_000, abs=1), "registered to level 0"
        assert write_contours(tmp_path / "c.geojson", levels, values) < 512, "(the whole canvas: a coarser level)"
    with tifffile.TiffFile(tmp_path / "m.tif") as tif:
        level0 = tif.pages[0].asarray()
    assert np.count_nonzero(level0) == np.count_nonzero(band) and level0[12_001:13_024:2, 3_000:4_024].all()


def test_a_preview_too_large_to_draw_is_refused_before_any_work() -> None:
    """--downsample 1 on a 1.6 GP slide would have needed ~35 GB (a float copy of the thumbnail)."""
    from gigapath_desktop.inference.writers import check_preview

    with pytest.raises(GigaPathError, match="1,600 MP; choose a downsample of 5 or more"):
        check_preview((40_000, 40_000), 1.0)
    check_preview((40_000, 40_000), 5.0)
