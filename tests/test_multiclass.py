"""K-class models from sparse annotations: class maps, sparse labels, the model's classes, the CLI's checks."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
import tifffile
from PIL import Image
from shapely.geometry import box

from conftest import CMU, TCGA
from gigapath_desktop.annotations import (
    UNLABELLED,
    Annotation,
    AnnotationClass,
    ClassMap,
    Role,
    rasterize,
    read_geojson,
    write_geojson,
)
from gigapath_desktop.errors import AnnotationError, GigaPathError, ModelError
from gigapath_desktop.inference import PredictJob, SlideSource, predict_array, run_predict_job
from gigapath_desktop.model import build_unet, load_model, save_model
from gigapath_desktop.model.info import ModelInfo, attach_info, model_info
from gigapath_desktop.slides import Region, open_slide
from gigapath_desktop.slides.realistic import Case, render, write_pyramid
from gigapath_desktop.training import TrainConfig, load_region, read_metrics
from gigapath_desktop.training.job import TrainJob, run_train_job
from gigapath_desktop.training.metrics import typed
from gigapath_desktop.training.spec import TrainSpec
from test_cli import run

TUMOR, STROMA = AnnotationClass("Tumor", (200, 0, 0)), AnnotationClass("Stroma", (150, 200, 150))


def test_sparse_labels_leave_uncovered_pixels_unlabelled_and_classes_paint_their_value() -> None:
    labels = [Annotation(box(10, 10, 30, 20), TUMOR), Annotation(box(40, 0, 50, 40), STROMA)]
    classes = ClassMap.named(["Background", "Tumor", "Stroma"])
    values = classes.values(labels)
    sparse = rasterize(labels, (0.0, 0.0), 1.0, (40, 60), values=values, fill=UNLABELLED)
    assert sparse[15, 20] == 1 and sparse[5, 45] == 2 and sparse[35, 5] == UNLABELLED
    assert np.count_nonzero(sparse == 1) == 20 * 10 and np.count_nonzero(sparse == 2) == 10 * 40
    dense = rasterize(labels, (0.0, 0.0), 1.0, (40, 60), values=values)
    assert dense[35, 5] == 0 and np.array_equal(dense != 0, sparse != UNLABELLED)


def test_an_unknown_label_class_is_refused_by_name() -> None:
    labels = [Annotation(box(0, 0, 5, 5), AnnotationClass("Necrosis", (0, 0, 0)))]
    with pytest.raises(AnnotationError, match="'Necrosis'"):
        ClassMap.named(["Background", "Tumor"]).values(labels)
    assert ClassMap.tissue().values(labels) == {"Necrosis": 1}  # the tissue model counts it as tissue, as before
    with pytest.raises(AnnotationError, match="repeat"):
        ClassMap.named(["Background", "Tumor", "Tumor"])
    with pytest.raises(AnnotationError, match="repeat"):  # a typo's class of its own, never labelled
        ClassMap.named(["Background", "tumor", "Tumor"])


def test_a_model_file_keeps_its_classes_and_resolution(tmp_path: Path) -> None:
    model = build_unet(classes=3)
    assert model.output_shape[-1] == 3 and model.layers[-1].activation.__name__ == "softmax"
    classes = ClassMap.named(["Background", "Tumor", "Stroma"], [TUMOR, STROMA])
    attach_info(model, ModelInfo(classes, mpp=0.5))
    loaded = load_model(save_model(model, tmp_path / "m.keras"))
    assert model_info(loaded) == ModelInfo(classes, 0.5)
    assert model_info(loaded).classes.classes[1].color == (200, 0, 0)
    assert model_info(load_model(save_model(build_unet(), tmp_path / "t.keras"))).classes == ClassMap.tissue()
    with pytest.raises(ModelError, match="2 classes apart"):
        attach_info(build_unet(), ModelInfo(classes))


def test_a_model_trained_at_a_level_warns_of_a_slide_read_at_another_scale(tmp_path: Path) -> None:
    """A model that learnt from 0.5 µm/px pixels (a level, no --mpp) ran on a 0.228 µm/px slide's level 0 without
    a word; its level 1 (0.456 µm/px) is the same scale."""
    from conftest import DAPI
    from gigapath_desktop.inference import PredictJob, run_predict_job

    model = build_unet()
    attach_info(model, ModelInfo(ClassMap.tissue(), None, 0.5))
    path = save_model(model, tmp_path / "m.keras")
    assert model_info(load_model(path)).source_mpp == 0.5
    notes = {level: run_predict_job(PredictJob(DAPI, path, tmp_path / f"{level}.tif", level=level, tile=1024,
                                               region=Region(0, 0, 1024, 1024, level))).notes for level in (0, 1)}
    assert any("learnt from pixels of 0.5 µm/px" in n and "read at 0.228" in n for n in notes[0]), notes[0]
    assert not any("learnt from" in n for n in notes[1]), notes[1]


def test_load_region_rasterizes_sparse_classes(tmp_path: Path) -> None:
    labels = [Annotation(box(100, 100, 300, 200), TUMOR), Annotation(box(400, 400, 500, 600), STROMA)]
    classes = ClassMap.named(["Background", "Tumor", "Stroma"])
    with open_slide(CMU) as slide:
        region = load_region(slide, Region(0, 0, 1000, 800), labels, classes=classes, sparse=True)
        dense = load_region(slide, Region(0, 0, 1000, 800), labels, classes=classes)
    counts = np.bincount(np.asarray(region.labels).ravel(), minlength=256)
    assert counts[1] == 200 * 100 and counts[2] == 100 * 200 and counts[UNLABELLED] == 1000 * 800 - 40000
    np.testing.assert_allclose(region.class_shares(3), [0, 0.5, 0.5])
    assert np.count_nonzero(np.asarray(dense.labels) == 0) == counts[UNLABELLED]


def test_train_refuses_labels_of_a_class_it_was_not_given(tmp_path: Path) -> None:
    labels = tmp_path / "labels.geojson"
    write_geojson([Annotation(box(100, 100, 300, 200), TUMOR),
                   Annotation(box(400, 400, 500, 600), AnnotationClass("Necrosis", (0, 0, 0)))], labels)
    out = tmp_path / "run"
    result = run("train", str(CMU), "--region", "0,0,1000,800", "--labels", str(labels), "--classes",
                 "Background,Tumor,Stroma", "--sparse", "--steps", "1", "--out", str(out))
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "'Necrosis'" in last and "Traceback" not in result.stderr
    assert not out.exists()


def test_train_a_three_class_sparse_model_from_the_cli(tmp_path: Path) -> None:
    labels = tmp_path / "labels.geojson"
    write_geojson([Annotation(box(100, 100, 600, 400), TUMOR), Annotation(box(1200, 200, 1800, 700), STROMA),
                   Annotation(box(100, 1300, 800, 1600), AnnotationClass("Background", (160, 160, 160)))], labels)
    out = tmp_path / "run"
    result = run("train", str(CMU), "--region", "0,0,2048,1792", "--labels", str(labels), "--classes",
                 "Background,Tumor,Stroma", "--sparse", "--mpp", "1.0", "--steps", "2", "--tile", "1024", "--out",
                 str(out))
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert [c["name"] for c in config["classes"]] == ["Background", "Tumor", "Stroma"]
    assert config["spec"]["train"][0]["mode"] == "sparse"
    info = model_info(load_model(out / "model.keras"))
    assert info.classes.names == ["Background", "Tumor", "Stroma"] and info.mpp == 1.0
    with open_slide(CMU) as slide:
        mpp = slide.mpp[0]  # 0.499: the region is read at about half its level-0 size
    assert config["train_pixels"] == round(2048 * mpp) * round(1792 * mpp)
    other_scale = run("train", str(CMU), "--region", "0,0,2048,1792", "--labels", str(labels), "--classes",
                      "Background,Tumor,Stroma", "--sparse", "--mpp", "2.0", "--steps", "3", "--out", str(out),
                      "--resume")
    last = other_scale.stderr.strip().splitlines()[-1]
    assert other_scale.returncode == 2 and last.startswith("error:") and "1 µm/px, not 2 µm/px" in last
    assert "decoding" not in other_scale.stdout, "refused before the region is decoded at the other scale"


def test_a_three_class_prediction_writes_a_label_map_class_contours_and_an_overlay(tmp_path: Path) -> None:
    """Every export of a K-class model: the label map (class indices, the classes in its description) read back by
    OpenSlide, GeoJSON contours per class with QuPath classifications, a PNG overlay in the class colours, and a
    pyramidal per-class probability TIFF (one channel per class, registered like the label map)."""
    model = darkness_model()
    classes = ClassMap.named(["Background", "Tumor", "Stroma"], [TUMOR, STROMA])
    attach_info(model, ModelInfo(classes))
    path = save_model(model, tmp_path / "m.keras")
    region = Region(300, 200, 1500, 1100)
    job = PredictJob(CMU, path, tmp_path / "labels.tif", region=region, png=tmp_path / "overlay.png", downsample=8,
                     geojson=tmp_path / "classes.geojson", tile=512, probabilities=tmp_path / "probabilities.tif")
    result = run_predict_job(job)
    with open_slide(CMU) as slide:
        probabilities = predict_array(model, SlideSource(slide, region), 512)
        expected = probabilities.argmax(axis=-1)
    with tifffile.TiffFile(job.probabilities) as tif:  # an OME-TIFF: one named plane per class, levels in SubIFDs
        series = tif.series[0]
        level0 = series.asarray().transpose(1, 2, 0)
        about = json.loads(tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Description"])
        assert series.axes == "CYX" and len(series.levels) > 2 and series.levels[1].shape[0] == 3
        half = series.levels[1].asarray()
    with open_slide(CMU) as slide:
        assert level0.shape == (*slide.dimensions[::-1], 3)
    pairs = level0[: 2 * half.shape[1] - 2, : 2 * half.shape[2] - 2].astype(int)
    means = (pairs[0::2, 0::2] + pairs[1::2, 0::2] + pairs[0::2, 1::2] + pairs[1::2, 1::2] + 2) // 4
    assert np.array_equal(half[:, :-1, :-1].transpose(1, 2, 0), means), "coarser levels hold the means of 2 x 2"
    inside = level0[region.y : region.y + region.height, region.x : region.x + region.width]
    assert np.abs(inside.astype(int) - np.round(probabilities * 255)).max() == 0
    assert not level0[: region.y].any(), "zeros outside the predicted region, as in the label map"
    assert about["channels"] == ["Background", "Tumor", "Stroma"] and "one channel per class" in about["values"]
    assert not list(tmp_path.glob(".prob-*")), "the scratch copy is removed"
    with open_slide(job.out) as labels:
        level0 = labels.read_region(region)[..., 0]
    assert np.array_equal(level0, expected) and set(np.unique(level0)) == {0, 1, 2}
    with tifffile.TiffFile(job.out) as tif:
        description = json.loads(tif.pages[0].description)
        assert set(np.unique(tif.pages[1].asarray())) <= {0, 1, 2}, "coarser levels hold classes, not means"
    assert description["values"] == "class index" and description["classes"] == classes.as_json()
    contours = read_geojson(job.geojson)
    assert {a.cls for a in contours} == {TUMOR, STROMA} and result.contours == len(contours)
    for cls, value in ((TUMOR, 1), (STROMA, 2)):
        painted = rasterize([a for a in contours if a.cls == cls], (region.x, region.y), 1.0, level0.shape)
        truth = level0 == value
        assert (painted.astype(bool) & truth).sum() / (painted.astype(bool) | truth).sum() > 0.85
    overlay = np.asarray(Image.open(job.png))
    with open_slide(CMU) as slide:
        plain = slide.thumbnail(max(overlay.shape[:2])).astype(int)
    changed = np.abs(overlay.astype(int) - plain).sum(axis=-1) > 30
    assert 0.05 < changed.mean() < 0.95


def darkness_model() -> keras.Model:
    """A 3-class model with hand-set weights: glass -> class 0, dark (purple) tissue -> 1, pale tissue -> 2; a
    known, spatially coherent label map without training. Only one path carries signal: the stem's channel 0
    (darkness of each 4 x 4 block), the centre tap of enc0, the skip into dec0, and +-10 x it into the logits."""
    model = build_unet(classes=3)
    for variable in model.trainable_variables:
        variable.assign(np.zeros(variable.shape, variable.dtype))

    def kernel(name: str, index: tuple, value: float) -> keras.layers.Layer:
        layer = model.get_layer(name)
        weights = np.zeros(layer.kernel.shape, np.float32)
        weights[index] = value
        layer.kernel.assign(weights)
        return layer

    stem = kernel("stem", (0, 0, slice(None), 0), -1 / 48)
    stem.bias.assign(np.eye(1, stem.bias.shape[0], dtype=np.float32)[0] * 0.5)
    size = model.get_layer("enc0").kernel.shape[0]
    kernel("enc0", (size // 2, size // 2, 0, 0), 1.0)
    kernel("dec0", (0, 0, -8, 0), 1.0)  # the last 8 inputs of dec0 are the enc0 skip
    logits = model.get_layer("logits_s2d")
    weights = np.zeros(logits.kernel.shape, np.float32)
    weights[0, 0, 0, 0::3], weights[0, 0, 0, 1::3] = -10, 10
    logits.kernel.assign(weights)
    logits.bias.assign(np.tile(np.float32([1, -6, 0]), logits.bias.shape[0] // 3))
    return model


def test_a_spec_trains_across_slides_in_a_seeded_order_validates_per_slide_and_class_and_resumes_exactly(
        synthetic_slide: Path, tmp_path: Path) -> None:
    """Regions on a real and a synthetic slide, sparse 3-class labels, validation on both slides: each step one whole
    region in a shuffled seeded order, per-slide and per-class validation Dice in metrics.csv, and a run stopped
    after 2 steps and resumed ends where the uninterrupted run ends."""
    cmu_labels, synthetic_labels = tmp_path / "cmu.geojson", tmp_path / "synthetic.geojson"
    write_geojson([Annotation(box(100, 100, 500, 400), TUMOR), Annotation(box(900, 500, 1000, 900), STROMA),
                   Annotation(box(100, 1700, 900, 1900), AnnotationClass("Background", (160, 160, 160)))], cmu_labels)
    write_geojson([Annotation(box(0, 0, 300, 300), STROMA), Annotation(box(600, 600, 900, 700), TUMOR),
                   Annotation(box(0, 0, 1024, 768), AnnotationClass("Region", (0, 0, 255)), Role.REGION),
                   Annotation(box(1024, 0, 2048, 768), AnnotationClass("Region", (0, 0, 255)), Role.VALIDATION)],
                  synthetic_labels)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({
        "classes": ["Background", "Tumor", "Stroma"],
        "train": [{"slide": str(CMU), "labels": "cmu.geojson", "mode": "sparse",
                   "regions": [[0, 0, 1024, 1024], [0, 1024, 1024, 1024]]},
                  {"slide": str(synthetic_slide), "labels": "synthetic.geojson", "mode": "sparse"}],
        "validation": [{"slide": str(CMU), "labels": "cmu.geojson", "regions": [[1024, 0, 1024, 1024]]},
                       {"slide": str(synthetic_slide), "labels": "synthetic.geojson"}]}))
    config = TrainConfig(steps=4, tile=512, checkpoint_every=2)
    whole = run_train_job(TrainJob(TrainSpec.read(spec), tmp_path / "whole", config))
    rows = [typed(r) for r in read_metrics(tmp_path / "whole" / "metrics.csv")]
    regions = [r["region"] for r in rows]
    assert len(set(regions)) == 3 and {r.split(" ")[0] for r in regions} == {CMU.name, synthetic_slide.name}
    assert all(0 <= rows[-1][f"val_dice:{name}"] <= 1 for name in ("Background", CMU.name, synthetic_slide.name))
    assert rows[-1]["val_dice:Tumor"] is None, "no Tumor in the validation labels: no Tumor Dice"

    run_train_job(TrainJob(TrainSpec.read(spec), tmp_path / "parts", replace(config, steps=2)))
    kept = cmu_labels.read_bytes()
    cmu_labels.write_bytes(kept.replace(b"Stroma", b"Tumor"))  # other labels under the same name: not this run's
    with pytest.raises(GigaPathError, match="cmu.geojson changed since the run started"):
        run_train_job(TrainJob(TrainSpec.read(spec), tmp_path / "parts", config, resume=True))
    cmu_labels.write_bytes(kept)
    recorded = (tmp_path / "parts" / "config.json").read_text()
    (tmp_path / "parts" / "config.json").write_text(recorded[:40])  # damaged: the resume cannot be checked
    with pytest.raises(GigaPathError, match="config.json is missing or unreadable"):
        run_train_job(TrainJob(TrainSpec.read(spec), tmp_path / "parts", config, resume=True))
    assert (tmp_path / "parts" / "config.json").read_text() == recorded[:40], "kept as it was"
    (tmp_path / "parts" / "config.json").write_text(recorded)
    resumed = run_train_job(TrainJob(TrainSpec.read(spec), tmp_path / "parts", config, resume=True))
    assert [r["region"] for r in read_metrics(tmp_path / "parts" / "metrics.csv")] == regions
    for a, b in zip(resumed.model.get_weights(), whole.model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_a_bad_spec_is_one_clear_error(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    for text, message in [("{", "not a JSON"), ('{"train": []}', "no item"), ('{"train": [{"slide": 3}]}', r"train\[0\]"),
                          ('{"train": [{"slide": "a.svs", "mode": "thin"}]}', "'dense' or 'sparse'"),
                          ('{"train": [{"slide": "a.svs"}], "mpp": NaN}', "positive number"),
                          ('{"train": [{"slide": "a.svs", "slide_mpp": -1}]}', r"train\[0\]: 'slide_mpp' must be a positive"),
                          ('{"train": [{"slide": "a.svs", "regions": [[0, 0, 10]]}]}', "regions"),
                          ('{"train": [{"slide": "a.svs", "slide_mpp": 0.5}], "validation": [{"slide": "./a.svs", '
                           '"slide_mpp": 0.25}]}', "two µm/px")]:
        spec.write_text(text)
        with pytest.raises(GigaPathError, match=message):
            TrainSpec.read(spec)
    item = {"slide": "a.svs", "regions": [[0, 0, 10, 10]]}
    spec.write_text(json.dumps({"train": [item, {"slide": "b.svs"}, item], "validation": [item, {"slide": "b.svs"}]}))
    assert TrainSpec.read(spec).repeats() == ["train[2] repeats train[0]",
                                              "validation[0] is train[0]: it validates on what it trains on"]
    result = run("train", "--spec", str(tmp_path / "missing.json"), "--out", str(tmp_path / "run"))
    assert result.returncode != 0 and result.stderr.strip().splitlines()[-1].startswith("error:")


def test_a_model_trained_at_an_mpp_reads_any_slide_at_it(tmp_path: Path) -> None:
    """A slide and its 2x-downsampled copy (twice the µm/px) give the same label map at the model's µm/px, on the
    same grid registered to each slide's level 0; a slide without µm/px runs at its level with a warning."""
    rng = np.random.default_rng(4)
    image, _ = render(Case("mpp", width=2048, height=1536, classes=3, tissue_fraction=0.5, island_scale=400,
                           sources=(str(CMU), str(TCGA))), rng)
    fine, coarse = tmp_path / "fine.tif", tmp_path / "coarse.tif"
    write_pyramid(fine, image, 0.5, jpeg_quality=95)
    write_pyramid(coarse, cv2.resize(image, (1024, 768), interpolation=cv2.INTER_AREA), 1.0, jpeg_quality=95)
    model = darkness_model()
    attach_info(model, ModelInfo(ClassMap.named(["Background", "Tumor", "Stroma"]), mpp=1.0))
    path = save_model(model, tmp_path / "m.keras")
    maps = []
    for slide in (fine, coarse):
        job = PredictJob(slide, path, tmp_path / f"{slide.stem}.labels.tif", tile=512)
        assert run_predict_job(job).notes == ()
        with tifffile.TiffFile(job.out) as tif:
            maps.append(tif.pages[0].asarray())
            assert json.loads(tif.pages[0].description)["mpp"] == pytest.approx(1.0)
        with open_slide(job.out) as written:
            assert written.mpp == pytest.approx((1.0, 1.0))
    assert maps[0].shape == maps[1].shape == (768, 1024)
    assert len(np.unique(maps[0])) == 3 and np.mean(maps[0] != maps[1]) < 0.01
    asked = PredictJob(fine, path, tmp_path / "asked.tif", level=7, tile=512, threshold=0.7, binary=True)
    notes = run_predict_job(asked).notes  # settings that do not apply to this model are named, never silently dropped
    assert notes == ("the model reads slides at 1 µm/px, so level 7 was not used",
                     "the model tells 3 classes apart, so its mask holds class indices: the tissue-mask settings "
                     "(threshold 0.7, binary) do not apply")
    with tifffile.TiffFile(asked.out) as tif:
        assert np.array_equal(tif.pages[0].asarray(), maps[0])

    write_pyramid(tmp_path / "plain.tif", image[:512, :512], None, jpeg_quality=95)
    result = run_predict_job(PredictJob(tmp_path / "plain.tif", path, tmp_path / "plain.labels.tif", tile=512))
    assert len(result.notes) == 1 and "records no µm/px" in result.notes[0]
    told = run("predict", str(tmp_path / "plain.tif"), "--model", str(path), "--out", str(tmp_path / "told.tif"),
               "--tile", "512", "--slide-mpp", "0.5")  # the user gives the slide's µm/px: read at the model's scale, no warning
    assert told.returncode == 0 and "warning" not in told.stderr, told.stderr
    with tifffile.TiffFile(tmp_path / "told.tif") as tif:
        told_map = tif.pages[0].asarray()
    assert told_map.shape == (256, 256), "1 µm/px from a 0.5 µm/px slide of 512 px"
    assert np.mean(told_map[:96, :96] != maps[0][:96, :96]) < 0.05, "the same map where no edge mirroring differs"


def test_the_app_overlays_a_three_class_prediction_in_the_class_colours(window, qtbot, tmp_path: Path) -> None:  # noqa: ANN001
    from gui_helpers import wait_job

    model = darkness_model()
    attach_info(model, ModelInfo(ClassMap.named(["Background", "Tumor", "Stroma"], [TUMOR, STROMA])))
    window.open_slide(CMU)
    window.session.set_model(save_model(model, tmp_path / "m.keras"))
    assert window.predict("visible")
    wait_job(qtbot, window)
    assert window.errors == []
    image = window.viewer.overlay.pixmap().toImage()
    colours = {image.pixelColor(x, y).getRgb()[:3] for x in range(0, image.width(), 7)
               for y in range(0, image.height(), 7) if image.pixelColor(x, y).alpha() > 0}
    assert {TUMOR.color, STROMA.color} <= colours
    window.session.apply("region", [], [Annotation.rectangle(0, 0, 500, 500)])
    assert window.predict("selection")
    wait_job(qtbot, window)
    dialog = window.export_dialog()  # a region predicted: the region by default
    assert not dialog.whole.isChecked() and not dialog.min_hole.isEnabled(), "no holes cleaned in a label map"
    assert "class indices" in dialog.min_hole.toolTip()
    dialog.done(0)
    assert window.predict("slide")
    wait_job(qtbot, window)
    dialog = window.export_dialog()
    assert dialog.whole.isChecked(), "the whole slide was predicted: the export covers it too"
    dialog.done(0)
