"""Projects and batch prediction: a study's slides in one folder, trained on across slides, predicted in one go."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import box

from conftest import CMU, TCGA
from gigapath_desktop.annotations import Annotation, AnnotationClass, Role, write_geojson
from gigapath_desktop.cli import main
from gigapath_desktop.errors import Cancelled, GigaPathError
from gigapath_desktop.inference.batch import BatchJob, run_batch
from gigapath_desktop.locks import FolderLock
from gigapath_desktop.model import build_unet, save_model
from gigapath_desktop.project.manifest import Project
from gigapath_desktop.slides import Region, open_slide
from gigapath_desktop.slides.realistic import Case, render, write_pyramid
from gigapath_desktop.slides.strokes import truth_strokes

CLASSES = ["Background", "Tumor", "Stroma"]
REGION = AnnotationClass("Region", (0, 120, 255))


def _realistic(path: Path, seed: int) -> list[Annotation]:
    """A 3-class realistic slide (0.5 µm/px) and sparse strokes of its truth."""
    rng = np.random.default_rng(seed)
    image, truth = render(Case("project", width=1536, height=1024, classes=3, tissue_fraction=0.45,
                               sources=(str(CMU), str(TCGA))), rng)
    write_pyramid(path, image, 0.5)
    return truth_strokes(truth, CLASSES, 6, rng)


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _summary(folder: Path) -> dict[str, dict[str, str]]:
    with (folder / "summary.csv").open() as f:
        return {Path(row["slide"]).name: row for row in csv.DictReader(f)}


def test_a_project_trains_a_sparse_three_class_model_across_slides_and_predicts_a_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """create, add a folder (a real and two synthetic slides, and a note), import QuPath-style per-image GeoJSON,
    train a 3-class sparse model on two slides and validate on the third; then predict a folder that also holds a
    corrupt slide and a non-slide file: outputs for the good ones, a summary row for each file, exit 1; a second run
    skips what exists."""
    slides = tmp_path / "slides"
    slides.mkdir()
    shutil.copy(CMU, slides / CMU.name)
    strokes = {name: _realistic(slides / f"{name}.tif", seed) for seed, name in enumerate(("a", "b"))}
    (slides / "notes.txt").write_text("scanned 2026-11-20")
    project_dir = tmp_path / "study"
    assert _cli(capsys, "project", "create", str(project_dir), "--classes", ",".join(CLASSES))[0] == 0
    code, out, err = _cli(capsys, "project", "add", str(project_dir), str(slides))
    assert code == 0 and out.count("added") == 3 and "notes.txt: not a slide file" in err

    tumor, stroma = AnnotationClass("Tumor", (200, 0, 0)), AnnotationClass("Stroma", (150, 200, 150))
    exports = tmp_path / "qupath-export"
    exports.mkdir()
    write_geojson([Annotation(box(0, 0, 1024, 1024), REGION, Role.REGION),
                   Annotation(box(100, 100, 500, 400), tumor), Annotation(box(600, 500, 700, 900), stroma),
                   Annotation(box(100, 700, 400, 1000), AnnotationClass("Background", (160, 160, 160)))],
                  exports / f"{CMU.name}.geojson")  # QuPath names an export after its image, extension and all
    write_geojson([Annotation(box(0, 0, 1536, 1024), REGION, Role.REGION), *strokes["a"]], exports / "a.geojson")
    write_geojson([Annotation(box(0, 0, 1536, 1024), REGION, Role.VALIDATION), *strokes["b"]], exports / "b.geojson")
    code, out, _ = _cli(capsys, "project", "import", str(project_dir), *map(str, sorted(exports.iterdir())))
    assert code == 0 and out.count("annotations added") == 3
    assert _cli(capsys, "project", "import", str(project_dir), str(exports / "a.geojson"))[1].startswith(
        f"{exports / 'a.geojson'}: 0 annotations added"), "importing the same export twice adds nothing"

    manifest = json.loads((project_dir / "project.json").read_text())  # Stroma recoloured in the project only
    manifest["classes"] = [{**c, "color": [10, 20, 30]} if c["name"] == "Stroma" else c for c in manifest["classes"]]
    (project_dir / "project.json").write_text(json.dumps(manifest))
    run = tmp_path / "run"
    code, out, err = _cli(capsys, "project", "train", str(project_dir), "--out", str(run), "--sparse", "--mpp", "2",
                          "--steps", "2", "--tile", "256")
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())
    assert [Path(i["slide"]).name for i in config["spec"]["train"]] == [CMU.name, "a.tif"]
    assert [Path(i["slide"]).name for i in config["spec"]["validation"]] == ["b.tif"]
    assert {i["mode"] for i in config["spec"]["train"]} == {"sparse"}
    recorded = Project.open(project_dir).runs[-1]
    assert recorded["status"] == "finished" and recorded["steps"] == 2 and 0 <= recorded["val_dice"] <= 1
    project_colours = {c.name: list(c.color) for c in Project.open(project_dir).classes}
    assert project_colours["Stroma"] == [10, 20, 30]
    assert {c["name"]: c["color"] for c in config["classes"]} == {n: project_colours[n] for n in CLASSES}, \
        "the model paints each class as the project does, whatever colour its labels came with"

    batch = tmp_path / "batch"
    batch.mkdir()
    for name in (CMU.name, "a.tif"):
        shutil.copy(slides / name, batch / name)
    (batch / "broken.svs").write_bytes((slides / "b.tif").read_bytes()[:20000])  # a slide cut short in a copy
    (batch / "readme.md").write_text("these are the slides of the pilot")
    out_dir = tmp_path / "masks"
    code, out, err = _cli(capsys, "predict-batch", "--model", str(run / "model.keras"), "--out", str(out_dir),
                          str(batch), "--geojson")
    assert code == 1 and "2 predicted, 1 skipped, 1 failed" in out and "error: " in err
    rows = _summary(out_dir)
    assert {name: row["status"] for name, row in rows.items()} == {
        CMU.name: "ok", "a.tif": "ok", "broken.svs": "error", "readme.md": "skipped"}
    assert rows["broken.svs"]["error"] and rows[CMU.name]["area_unit"] == "mm²"
    with open_slide(CMU) as slide:
        slide_mm2 = slide.dimensions[0] * slide.dimensions[1] * slide.mpp[0] * slide.mpp[1] / 1e6
    total = sum(float(rows[CMU.name][f"area:{c}"]) for c in CLASSES)
    assert total == pytest.approx(slide_mm2, rel=0.01), "the class areas add up to the slide's"
    for name in (CMU.name, "a.tif"):
        with open_slide(batch / name) as slide, open_slide(out_dir / f"{Path(name).stem}.tif") as mask:
            scale = slide.mpp[0] / 2  # the model's 2 µm/px
            assert mask.dimensions == pytest.approx((slide.dimensions[0] * scale, slide.dimensions[1] * scale), abs=1)
        assert (out_dir / f"{Path(name).stem}.geojson").is_file()
    assert sorted(p.name for p in out_dir.iterdir() if not p.name.startswith(".")) == sorted(
        ["summary.csv", "CMU-1-Small-Region.tif", "CMU-1-Small-Region.geojson", "a.tif", "a.geojson"])

    written = (out_dir / "a.tif").stat().st_mtime_ns
    code, out, _ = _cli(capsys, "predict-batch", "--model", str(run / "model.keras"), "--out", str(out_dir),
                        str(batch), "--geojson")
    assert code == 1 and "0 predicted, 3 skipped, 1 failed" in out
    again = _summary(out_dir)["a.tif"]
    assert again["status"] == "skipped" and (out_dir / "a.tif").stat().st_mtime_ns == written
    assert again["area:Tumor"] == rows["a.tif"]["area:Tumor"], "a skipped slide keeps the figures of its run"
    other = tmp_path / "other"  # another slide of the same name, predicted into the same folder later
    other.mkdir()
    shutil.copy(slides / "b.tif", other / "a.tif")
    code, out, _ = _cli(capsys, "predict-batch", "--model", str(run / "model.keras"), "--out", str(out_dir),
                        str(other))
    assert code == 1 and "0 predicted, 0 skipped, 1 failed" in out, "never passed off as the other slide's mask"
    with (out_dir / "summary.csv").open() as f:  # the rows of the earlier batches' slides stay beside this one's
        by_path = {row["slide"]: row for row in csv.DictReader(f)}
    assert set(by_path) == {str((other / "a.tif").resolve()), str((batch / "a.tif").resolve()),
                            str((batch / CMU.name).resolve())}
    assert "is the mask of" in by_path[str((other / "a.tif").resolve())]["error"]
    assert (out_dir / "a.tif").stat().st_mtime_ns == written

    code, out, err = _cli(capsys, "predict-batch", "--model", str(run / "model.keras"), "--out",
                          str(tmp_path / "project-masks"), "--project", str(project_dir))
    assert code == 0, err
    dice = {name: row["dice"] for name, row in _summary(tmp_path / "project-masks").items()}
    assert all(0 <= float(dice[name]) <= 1 for name in (CMU.name, "a.tif", "b.tif")), "Dice where labels exist"

    shutil.copy(run / "model.keras", tmp_path / "another.keras")  # a re-run with another model: not "done"
    code, out, _ = _cli(capsys, "predict-batch", "--model", str(tmp_path / "another.keras"), "--out", str(out_dir),
                        str(batch / CMU.name))
    assert code == 1 and "0 predicted, 0 skipped, 1 failed" in out
    assert "was made by another model" in _summary(out_dir)[CMU.name]["error"]

    shutil.copy(slides / "b.tif", slides / "a.tif")  # another slide copied over a project slide's file
    code, out, _ = _cli(capsys, "project", "list", str(project_dir))
    assert "a.tif" in out and "CHANGED: the file now holds another slide" in out
    code, _, err = _cli(capsys, "project", "train", str(project_dir), "--out", str(tmp_path / "run2"), "--steps", "1")
    assert code == 2 and err.startswith("error: a.tif: the file now holds another slide"), err
    code, out, _ = _cli(capsys, "predict-batch", "--model", str(run / "model.keras"), "--out",
                        str(tmp_path / "changed-masks"), "--project", str(project_dir))
    rows = _summary(tmp_path / "changed-masks")
    assert code == 1 and rows["a.tif"]["status"] == "error" and "another slide" in rows["a.tif"]["error"]
    assert rows["b.tif"]["status"] == "ok", "the other slides go on"


def test_project_train_names_the_slides_whose_labels_are_of_a_class_it_does_not_train(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A project's labels files are named by slide id: a label class left out of --classes is refused naming the
    slides that hold it, before anything is decoded."""
    project = Project.create(tmp_path / "study")
    project.add([CMU, TCGA])
    for slide, cls in ((CMU, AnnotationClass("Tissue", (64, 160, 64))), (TCGA, AnnotationClass("Tumor", (200, 0, 0)))):
        write_geojson([Annotation(box(0, 0, 1024, 1024), REGION, Role.REGION),
                       Annotation(box(100, 100, 500, 400), cls)], tmp_path / f"{slide.name}.geojson")
        project.import_geojson(tmp_path / f"{slide.name}.geojson")
    code, _, err = _cli(capsys, "project", "train", str(project.folder), "--out", str(tmp_path / "run"), "--classes",
                        ",".join(CLASSES), "--steps", "1")
    assert code != 0 and "Traceback" not in err
    assert (f"label class(es) 'Tissue' are not among the model's classes (Background, Tumor, Stroma): 'Tissue' on "
            f"{CMU.name}; add them to the classes, or remove those labels") in err
    assert not (tmp_path / "run").exists()


def test_batch_areas_and_dice_are_those_of_the_written_mask(tmp_path: Path) -> None:
    """The class areas are the mask's pixels of each class times the pixel area, and labels traced from the mask
    itself score a Dice of 1."""
    from test_multiclass import darkness_model

    from gigapath_desktop.annotations import ClassMap, mask_to_polygons
    from gigapath_desktop.inference import PredictJob, run_predict_job
    from gigapath_desktop.inference.batch import label_dice
    from gigapath_desktop.model.info import ModelInfo, attach_info

    model = darkness_model()
    classes = ClassMap.named(CLASSES)
    attach_info(model, ModelInfo(classes))
    path = save_model(model, tmp_path / "m.keras")
    result = run_predict_job(PredictJob(CMU, path, tmp_path / "m.tif", tile=1024))
    with open_slide(result.out) as mask, open_slide(CMU) as slide:
        values = mask.read_region(Region(0, 0, *mask.dimensions))[..., 0]
        mpp = slide.mpp
    assert values.size == sum(result.class_pixels.values())
    areas, unit = result.areas()
    for k, name in enumerate(CLASSES):
        assert result.class_pixels[name] == np.count_nonzero(values == k)
        assert areas[name] == pytest.approx(np.count_nonzero(values == k) * mpp[0] * mpp[1] / 1e6) and unit == "mm²"
    traced = [Annotation(p, classes.classes[k]) for k in (1, 2) for p in mask_to_polygons(values == k)]
    assert label_dice(result, traced) == pytest.approx(1.0, abs=1e-3)
    wrong = [Annotation(a.geometry, classes.classes[3 - CLASSES.index(a.cls.name)]) for a in traced]
    assert label_dice(result, wrong) < 0.1, "swapped classes score low"


def test_predict_batch_refuses_what_it_cannot_do_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = save_model(build_unet(), tmp_path / "m.keras")
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        shutil.copy(CMU, tmp_path / folder / "slide.svs")
    (tmp_path / "notes").mkdir()
    for name in "abcd":
        (tmp_path / "notes" / f"{name}.txt").write_text("not a slide")
    base = ["predict-batch", "--model", str(model)]
    for args, message in [([*base, "--out", str(tmp_path / "o"), str(tmp_path / "one"), "--threshold", "nan"], "--threshold"),
                          ([*base, "--out", str(tmp_path / "one"), str(tmp_path / "one")], "no slides to predict"),
                          ([*base, "--out", str(tmp_path / "o"), str(tmp_path / "notes")],
                           "(4 skipped: a.txt: not a slide file; b.txt: not a slide file; c.txt: not a slide file; "
                           "and 1 more)"),
                          ([*base, "--out", str(tmp_path / "o")], "needs slides")]:
        code, _, err = _cli(capsys, *args)
        assert code == 2 and err.startswith("error:") and message in err, err
    code, _, err = _cli(capsys, *base, "--out", str(tmp_path / "o"), str(tmp_path / "one"), str(tmp_path / "two"),
                        "--tile", "1024")
    rows = [row for row in csv.DictReader((tmp_path / "o" / "summary.csv").open())]
    assert code == 1 and [r["status"] for r in rows] == ["ok", "error"] and "same name" in rows[1]["error"]
    _cli(capsys, *base, "--out", str(tmp_path / "o"), str(tmp_path / "one"))
    assert _summary(tmp_path / "o")["slide.svs"]["error"].startswith("outputs exist, kept (--overwrite")


def test_adding_only_missing_paths_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Project.create(tmp_path / "study")
    code, out, err = _cli(capsys, "project", "add", str(tmp_path / "study"), str(tmp_path / "nosuch.svs"))
    assert code == 2 and not out and err == "error: no slides added (1 skipped: nosuch.svs: no such file or folder)\n"
    (tmp_path / "empty.svs").write_bytes(b"")
    code, out, err = _cli(capsys, "project", "add", str(tmp_path / "study"), str(CMU), str(tmp_path / "empty.svs"))
    assert code == 1 and out.startswith("added CMU-1-Small-Region.svs"), "a named file that is no slide: not 0"
    assert err.startswith(f"skipped {tmp_path / 'empty.svs'}: not recognised as a slide")


def test_a_moved_slide_is_relinked_by_its_content(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    slides, moved = tmp_path / "slides", tmp_path / "archive" / "2026"
    slides.mkdir()
    moved.mkdir(parents=True)
    shutil.copy(CMU, slides / "case1.svs")
    project = Project.create(tmp_path / "study")
    project.add([slides / "case1.svs"])
    os.utime(slides / "case1.svs", (1, 1))  # a touch keeps the identity
    assert project.add([slides / "case1.svs"]).known, "the same slide is not added twice"
    shutil.copy(CMU, tmp_path / "copy.svs")
    assert project.add([tmp_path / "copy.svs"]).known, "nor a copy of it"
    (slides / "case1.svs").rename(moved / "case1.svs")
    code, out, _ = _cli(capsys, "project", "list", str(project.folder))
    assert "MISSING" in out and "classes: the tissue model's (Background, Tissue)" in out, "not 'none yet'"
    write_geojson([Annotation(box(0, 0, 10, 10))], tmp_path / "other.geojson")
    (tmp_path / "other.svs").write_bytes(b"not a slide")
    code, _, err = _cli(capsys, "project", "relink", str(project.folder), "case1", str(tmp_path / "other.svs"))
    assert code == 2 and err.startswith("error:")
    code, out, _ = _cli(capsys, "project", "relink", str(project.folder), "--search", str(tmp_path / "archive"))
    assert code == 0 and "relinked case1.svs" in out
    assert Project.open(project.folder).slide("case1").path == (moved / "case1.svs").resolve()


def test_a_project_says_what_is_wrong_and_never_overwrites_an_unreadable_manifest(tmp_path: Path) -> None:
    project = Project.create(tmp_path / "study")
    with pytest.raises(GigaPathError, match="a project already"):
        Project.create(tmp_path / "study")
    with pytest.raises(GigaPathError, match="is not empty"):  # (it holds "study": a project in a project)
        Project.create(tmp_path)
    with pytest.raises(GigaPathError, match="not a project"):
        Project.open(tmp_path)
    project.add([CMU])
    write_geojson([Annotation(box(0, 0, 10, 10))], tmp_path / "unknown.geojson")
    with pytest.raises(GigaPathError, match="no slide of the project is named 'unknown'; name it with --slide"):
        project.import_geojson(tmp_path / "unknown.geojson")
    tumor = [Annotation(box(0, 0, 10, 10), AnnotationClass("Tumor", (200, 0, 0)))]
    write_geojson(tumor, tmp_path / f"{CMU.stem}.geojson")
    project.import_geojson(tmp_path / f"{CMU.stem}.geojson")
    assert [c.name for c in project.classes] == ["Background", "Tumor"], "learnt classes start with Background"
    with FolderLock(project.slide_folder(project.slides[0].id)):  # the slide is open in the app
        with pytest.raises(GigaPathError, match="in use"):
            project.import_geojson(tmp_path / f"{CMU.stem}.geojson")
    with pytest.raises(GigaPathError, match="no slide has a Train region"):
        project.spec()
    manifest = project.folder / "project.json"
    good = json.loads(manifest.read_text())
    escaping = {**good, "slides": [{**good["slides"][0], "id": "../../../elsewhere"}]}  # an edited or shared file
    newer = {**good, "version": 99, "added_by_a_newer_app": True}
    for text, says in [('{"format": "gigapath-project", "slides": [{"id": 1}]}', "not a readable project"),
                       (json.dumps(escaping), "not a slide fingerprint"), (json.dumps(newer), "format version 99")]:
        manifest.write_text(text)
        before = manifest.read_bytes()
        with pytest.raises(GigaPathError, match=says):
            Project.open(project.folder)
        with pytest.raises(GigaPathError, match=says):
            project.add([CMU])
        assert manifest.read_bytes() == before
    assert not (tmp_path.parent / "elsewhere").exists()


def test_a_run_recorded_as_running_whose_process_is_gone_reads_as_interrupted(tmp_path: Path) -> None:
    """Killed (or its last write failed on a full disk), it stayed "running" in project.json for good."""
    from gigapath_desktop.locks import FolderLock

    project = Project.create(tmp_path / "study")
    run = tmp_path / "study" / "runs" / "r1"
    run.mkdir(parents=True)
    project.add_run(run, status="running")
    with FolderLock(run):  # a live run holds its folder
        assert Project.open(project.folder).runs[-1]["status"] == "running"
    assert Project.open(project.folder).runs[-1]["status"].startswith("interrupted")


def _model_and_two_slides(tmp_path: Path) -> tuple[Path, Path]:
    """A tissue model and a folder of two copies of CMU (one.svs, two.svs)."""
    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ("one.svs", "two.svs"):
        shutil.copy(CMU, slides / name)
    return save_model(build_unet(), tmp_path / "m.keras"), slides


def test_a_stopped_batch_leaves_no_partial_output_and_keeps_the_finished_rows(tmp_path: Path) -> None:
    model, slides = _model_and_two_slides(tmp_path)
    tiles = []

    def progress(index: int, count: int, done: int, total: int) -> None:
        tiles.append((index, done))

    job = BatchJob(model, tmp_path / "out", (slides / "one.svs", slides / "two.svs"), png=True, tile=512)
    with pytest.raises(Cancelled):
        run_batch(job, progress=progress, cancel=lambda: any(index == 1 and done for index, done in tiles))
    assert sorted(p.name for p in job.out.iterdir() if not p.name.startswith(".")) == ["one.png", "one.tif",
                                                                                       "summary.csv"]
    assert [row["status"] for row in _summary(job.out).values()] == ["ok"]
    dead = subprocess.Popen([sys.executable, "-c", ""])  # what a batch killed with -9 leaves: its pid is gone
    dead.wait()
    (job.out / f".two.partial-{dead.pid}.tif").write_bytes(b"half a mask")
    (job.out / f".mask-levels-{dead.pid}-abc123").mkdir()
    run_batch(job)
    assert sorted(p.name for p in job.out.iterdir()) == [".lock", "one.png", "one.tif", "summary.csv", "two.png",
                                                         "two.tif"], "a re-run clears what the killed one left"


def test_the_app_keeps_each_project_slides_annotations_and_fills_the_batch_results(
        window, qtbot, tmp_path: Path) -> None:  # noqa: ANN001
    """Open a project in the app, switch slides: each keeps its own annotations (in the project, across a reopen);
    train on one slide's Train region and validate on another's; batch prediction over the project with that model
    fills the results table, with Dice where a slide has labels, and a result opens its slide with the mask
    overlaid."""
    from gui_helpers import wait_job

    shutil.copy(CMU, tmp_path / "cmu.svs")
    _realistic(tmp_path / "pilot.tif", seed=3)
    assert window.projects.create(tmp_path / "study") and window.projects.add([tmp_path / "cmu.svs", tmp_path / "pilot.tif"])
    wait_job(qtbot, window)
    panel, project = window.projects.panel, window.session.project
    cmu, pilot = (project.slide(name) for name in ("cmu", "pilot"))
    assert panel.slides.count() == 2 and panel.count(cmu.id) == 0

    assert window.projects.open_slide(cmu.id)
    window.session.apply("draw", [], [Annotation(box(200, 200, 900, 700), name="cmu tissue")])
    assert panel.count(cmu.id) == 1
    assert window.projects.open_slide(pilot.id)
    assert len(window.session.annotations) == 0 and (panel.count(cmu.id), panel.count(pilot.id)) == (1, 0)
    window.session.apply("draw", [], [Annotation(box(0, 0, 300, 300)), Annotation(box(400, 400, 600, 700))])
    assert window.projects.open_slide(cmu.id)
    assert [a.name for a in window.session.annotations] == ["cmu tissue"]
    window.session.autosave.flush()
    assert window.projects.open(tmp_path / "study")
    assert (panel.count(cmu.id), panel.count(pilot.id)) == (1, 2)

    window.session.apply("draw", [], [Annotation.rectangle(0, 0, 1024, 1024)])  # CMU trains
    assert window.projects.open_slide(pilot.id)
    window.session.apply("draw", [], [Annotation.rectangle(0, 0, 1536, 1024, role=Role.VALIDATION)])  # pilot validates
    window.session.set_training(on_project=True)
    window.session.set_training(steps=2)
    assert window.start_training()
    qtbot.waitUntil(lambda: window.training is not None and window.training.isFinished(), timeout=180_000)
    qtbot.wait(50)
    run = Project.open(tmp_path / "study").runs[-1]
    assert run["status"] == "finished" and run["steps"] == 2 and 0 <= run["val_dice"] <= 1, run
    assert window.session.model_path == Path(run["out"]) / "model.keras", "the project's model is offered"
    assert window.projects.batch.start(tmp_path / "masks")
    qtbot.waitUntil(lambda: not window.projects.batch.running(), timeout=120_000)
    qtbot.wait(50)
    table = window.projects.batch_panel.table
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    cells = {table.item(r, 0).text(): {h: table.item(r, c).text() for c, h in enumerate(headers)}
             for r in range(table.rowCount())}
    assert set(cells) == {"cmu.svs", "pilot.tif"} and all(c["status"] == "ok" for c in cells.values())
    assert 0 <= float(cells["pilot.tif"]["Dice"]) <= 1 and float(cells["cmu.svs"]["area: Tissue"]) >= 0
    assert window.errors == []
    assert window.projects.show_result(window.projects.batch_panel.rows[1])
    wait_job(qtbot, window)
    assert window.session.slide.path.name == "pilot.tif" and window.viewer.overlay is not None
    assert window._exports() == tmp_path / "study" / "exports" / "pilot", "a project slide exports by its name"
    assert window.projects.batch.start(tmp_path / "stopped")  # a stop is said at once, done at the next check
    window.projects.batch_panel.stop_button.click()
    assert "stopping" in window.projects.batch_panel.status.text()
    assert not window.projects.batch_panel.stop_button.isEnabled()
    qtbot.waitUntil(lambda: not window.projects.batch.running(), timeout=120_000)
    qtbot.wait(50)
    assert window.projects.batch_panel.status.text().startswith("stopped") and window.errors == []


def test_the_training_panel_says_what_a_project_training_reads_whichever_slide_is_opened(
        window, qtbot, tmp_path: Path) -> None:  # noqa: ANN001
    """Training on the project, the panel counts every project slide's regions (not the open slide's), with the
    plan of the largest; opening another slide or drawing a region mid-training leaves what it says of the run."""
    from gui_helpers import wait_job

    assert window.projects.create(tmp_path / "study") and window.projects.add([CMU, TCGA])
    wait_job(qtbot, window)
    cmu, tcga = (window.session.project.slide(path.name) for path in (CMU, TCGA))
    panel = window.panel
    assert window.open_slide(TCGA) and window.session.on_project_slide(), "opened by path (File > Open, at start)"
    assert window.session.folder == window.session.project.slide_folder(tcga.id)
    assert window.projects.open_slide(cmu.id)
    window.session.apply("draw", [], [Annotation.rectangle(0, 0, 1024, 1024), Annotation(box(100, 100, 600, 600))])
    assert window.projects.open_slide(tcga.id)
    window.session.apply("draw", [], [Annotation.rectangle(0, 0, 768, 768), Annotation(box(50, 50, 500, 500)),
                                      Annotation.rectangle(1000, 1000, 512, 512, role=Role.VALIDATION)])
    assert panel.train_region.currentText().startswith("Train 1 ") and panel.plan.text().startswith("768 x 768: ")

    window.session.set_training(on_project=True)
    assert panel.plan.text().startswith("the largest of 2 regions, 1024 x 1024: "), panel.plan.text()
    said = (panel.train_data.text(), panel.val_data.text(), panel.plan.text())
    assert said[:2] == ("2 regions on 2 slides", f"1 region on {TCGA.name}")
    assert panel.train_data.isVisible() and not panel.train_region.isVisible(), "not the open slide's region"

    window.session.set_training(steps=1000)
    assert window.start_training()
    qtbot.waitUntil(lambda: window.training.trainer is not None, timeout=180_000)
    assert window.projects.open_slide(cmu.id)
    window.session.apply("draw", [], [Annotation.rectangle(1200, 1200, 256, 256)])
    assert (panel.train_data.text(), panel.val_data.text(), panel.plan.text()) == said, "what the run reads"
    assert panel.train_data.isVisible() and not panel.train_region.isVisible()
    window.stop_training()
    qtbot.waitUntil(lambda: window.training.isFinished(), timeout=180_000)
    qtbot.wait(50)
    assert panel.train_data.text() == "3 regions on 2 slides", "once it ends, the project as it is now"

    window.session.set_training(on_project=False)
    assert panel.scope.currentData() == "slide"
    assert panel.train_region.isVisible() and not panel.train_data.isVisible()
    assert panel.plan.text().startswith("1024 x 1024: "), "this slide's chosen region"
    assert window.errors == [f"the labels of {TCGA.name} (1000, 1000, 512, 512) L0 are 100.0 % Background: its "
                             f"validation Dice says little about the other classes; validate on a region that holds "
                             f"them too"], "the validation rectangle lies beside the tissue drawn: all background"


def test_a_restart_brings_back_the_project_its_slides_annotations_and_the_training_choices(
        window, qtbot, tmp_path: Path) -> None:  # noqa: ANN001
    """Quit with a project open and "all project slides" + sparse labels chosen; the next start reopens the
    project, so the slide opened from Open recent is the project's, with its annotations; a slide of the project
    opened before the project was (another store) is re-opened as the project's when the project opens."""
    from conftest import dispose_window
    from gigapath_desktop.ui.main_window import MainWindow
    from gui_helpers import wait_job

    assert window.projects.create(tmp_path / "study") and window.projects.add([CMU])
    wait_job(qtbot, window)
    assert window.projects.open_slide(window.session.project.slide(CMU.name).id)
    window.session.apply("draw", [], [Annotation.rectangle(0, 0, 500, 500), Annotation(box(10, 10, 90, 90))])
    window.session.set_training(on_project=True, sparse=True, steps=7)
    overview = next(d for d in window.docks if d.windowTitle() == "Overview")
    overview.close()  # the layout the user left comes back too
    window.close()

    again = MainWindow()
    try:
        assert again.session.project is not None and again.session.project.folder == (tmp_path / "study").absolute()
        assert again.session.training.on_project and again.session.training.sparse and again.session.training.steps == 7
        assert again.panel.scope.currentData() == "project" and again.panel.sparse.isChecked()
        again.show()
        assert [d.isVisible() for d in again.docks if d.windowTitle() in ("Overview", "Training")] == [False, True]
        assert again.open_slide(CMU)  # as File > Open recent does
        assert again.session.on_project_slide() and len(again.session.annotations) == 2
    finally:
        dispose_window(again)

    third = MainWindow()
    try:
        third.session.use_project(None)  # as if the project had not been reopened
        assert third.open_slide(CMU) and not third.session.on_project_slide()
        assert third.projects.open(tmp_path / "study")
        qtbot.waitUntil(lambda: third.session.on_project_slide(), timeout=10_000)
        assert len(third.session.annotations) == 2, "the project's annotations, not another store's"
    finally:
        dispose_window(third)


def test_adding_slides_with_no_project_open_says_so_before_any_file_is_chosen(window, monkeypatch) -> None:  # noqa: ANN001
    from PySide6.QtWidgets import QFileDialog

    asked: list[str] = []
    monkeypatch.setattr(QFileDialog, "getOpenFileNames", lambda *args: asked.append("files") or ([], ""))
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args: asked.append("folder") or "")
    window.projects.add_dialog()
    window.projects.add_folder_dialog()
    assert window.errors == ["no project is open"] * 2 and asked == []


def test_a_slide_without_a_resolution_is_given_one_that_trainings_and_batches_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """TCGA records no µm/px: `project set-mpp` gives it one, kept in the project; the spec trains it at that
    scale, a batch reads it at the model's µm/px, and the mask made before is no longer passed off as done."""
    from test_multiclass import darkness_model

    from gigapath_desktop.annotations import ClassMap
    from gigapath_desktop.model.info import ModelInfo, attach_info

    study = tmp_path / "study"
    project = Project.create(study)
    (entry,) = project.add([TCGA]).added
    write_geojson([Annotation(box(0, 0, 1024, 1024), REGION, Role.REGION)],
                  project.annotations_path(entry.id))
    _, out, _ = _cli(capsys, "project", "list", str(study))
    assert "µm/px not recorded" in out
    for bad in ("nan", "0", "-1", "2000"):
        code, _, err = _cli(capsys, "project", "set-mpp", str(study), entry.name, bad)
        assert code == 2 and err.startswith("error: µm/px must be") and bad in err, err
    code, _, err = _cli(capsys, "project", "set-mpp", str(study), entry.name)
    assert code == 2 and "or --clear" in err
    code, out, _ = _cli(capsys, "project", "set-mpp", str(study), entry.name, "0.5")
    assert code == 0 and out == f"{entry.name}: 0.5 µm/px (given; the file records none)\n"
    assert Project.open(study).spec(mpp=2.0).train[0].slide_mpp == 0.5
    with pytest.raises(GigaPathError, match="µm/px must be"):
        Project.open(study).set_mpp(entry.id, float("inf"))
    manifest = json.loads((study / "project.json").read_text())
    (tmp_path / "bad").mkdir()
    manifest["slides"][0]["given_mpp"] = "0.5"
    (tmp_path / "bad" / "project.json").write_text(json.dumps(manifest))
    with pytest.raises(GigaPathError, match="not a readable project.*µm/px must be"):
        Project.open(tmp_path / "bad")

    model = darkness_model()
    attach_info(model, ModelInfo(ClassMap.named(CLASSES), mpp=2.0))
    path = save_model(model, tmp_path / "m.keras")
    code, _, _ = _cli(capsys, "project", "set-mpp", str(study), entry.name, "--clear")
    _cli(capsys, "predict-batch", "--project", str(study), "--model", str(path), "--out", str(tmp_path / "o"))
    with open_slide(tmp_path / "o" / f"{TCGA.stem}.tif") as mask:
        assert mask.dimensions == open_slide(TCGA).dimensions, "no µm/px: read at its own level 0"
    _cli(capsys, "project", "set-mpp", str(study), entry.name, "0.5")
    code, _, _ = _cli(capsys, "predict-batch", "--project", str(study), "--model", str(path), "--out", str(tmp_path / "o"))
    error = _summary(tmp_path / "o")[TCGA.name]["error"]
    assert code == 1 and "at another µm/px of the slide (given none, now 0.5)" in error, error
    code, _, _ = _cli(capsys, "predict-batch", "--project", str(study), "--model", str(path), "--out",
                      str(tmp_path / "o"), "--overwrite")
    with open_slide(tmp_path / "o" / f"{TCGA.stem}.tif") as mask:
        assert code == 0 and mask.dimensions == (1111, 892) and mask.mpp == (2.0, 2.0), "read at 2 µm/px: a quarter"


def test_labels_of_one_class_score_a_mask_that_calls_more_of_that_class_lower(tmp_path: Path) -> None:
    """Labels of one class (Detect tissue's Tissue, say) are read as dense training reads them: the rest of their
    bounds is Background, so a model calling pale tissue dark too scores lower than one that matches them (over the
    labelled pixels alone both scored 1)."""
    from test_multiclass import darkness_model

    from gigapath_desktop.annotations import ClassMap, mask_to_polygons
    from gigapath_desktop.model.info import ModelInfo, attach_info

    model = darkness_model()
    classes = ClassMap.named(CLASSES)
    attach_info(model, ModelInfo(classes))
    sane = save_model(model, tmp_path / "sane.keras")
    logits = model.get_layer("logits_s2d")
    logits.bias.assign(np.tile(np.float32([1, -3, 0]), logits.bias.shape[0] // 3))  # Tumor from half the darkness
    eager = save_model(model, tmp_path / "eager.keras")
    first = run_batch(BatchJob(sane, tmp_path / "first", (CMU,), tile=1024))[0]
    with open_slide(first.outputs[0]) as mask:
        tumor = mask.read_region(Region(0, 0, *mask.dimensions))[..., 0] == 1
    write_geojson([Annotation(p, classes.classes[1]) for p in mask_to_polygons(tumor)], tmp_path / "labels.geojson")
    dice = {path.stem: run_batch(BatchJob(path, tmp_path / path.stem, (CMU,), tile=1024,
                                          labels={CMU: tmp_path / "labels.geojson"}))[0].dice for path in (sane, eager)}
    assert dice["eager"] < dice["sane"] - 0.1, dice


def test_a_batch_with_other_clean_up_settings_does_not_pass_the_masks_off_as_done(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same settings skip what exists; other clean-up is an error row where it applies (CMU records its µm/px),
    and skips a slide without µm/px, whose mask no clean-up setting changes."""
    model = save_model(build_unet(), tmp_path / "m.keras")
    batch = ["predict-batch", "--model", str(model), "--out", str(tmp_path / "o"), str(CMU), str(TCGA),
             "--tile", "1024"]
    assert _cli(capsys, *batch)[0] == 0
    code, out, _ = _cli(capsys, *batch)
    assert code == 0 and "0 predicted, 2 skipped, 0 failed" in out
    code, out, _ = _cli(capsys, *batch, "--min-hole", "0", "--min-object", "5000")
    rows = _summary(tmp_path / "o")
    assert code == 1 and "0 predicted, 1 skipped, 1 failed" in out, out
    assert "was made with another clean-up (holes 1000" in rows[CMU.name]["error"], rows[CMU.name]["error"]
    assert rows[TCGA.name]["status"] == "skipped"


def test_an_interrupted_overwrite_keeps_the_rows_of_the_slides_it_had_not_reached(tmp_path: Path) -> None:
    from dataclasses import replace

    model, slides = _model_and_two_slides(tmp_path)
    job = BatchJob(model, tmp_path / "out", (slides / "one.svs", slides / "two.svs"), tile=1024)
    run_batch(job)
    before = _summary(job.out)
    tiles = []
    with pytest.raises(Cancelled):
        run_batch(replace(job, overwrite=True), progress=lambda index, *_: tiles.append(index),
                  cancel=lambda: 1 in tiles)
    after = _summary(job.out)
    assert list(after) == ["one.svs", "two.svs"] and after["two.svs"] == before["two.svs"], "two's old mask remains"


def test_a_mask_predicted_again_takes_away_the_earlier_contours_and_preview_of_it(tmp_path: Path) -> None:
    """They stayed beside the new mask, showing the one it replaced (a re-run with --overwrite but no --geojson)."""
    from dataclasses import replace

    model, slides = _model_and_two_slides(tmp_path)
    job = BatchJob(model, tmp_path / "out", (slides / "one.svs",), tile=1024, geojson=True, png=True)
    run_batch(job)
    assert {p.name for p in job.out.glob("one.*")} == {"one.tif", "one.geojson", "one.png"}
    run_batch(replace(job, geojson=False, png=False, overwrite=True))
    assert {p.name for p in job.out.glob("one.*")} == {"one.tif"}


def test_a_batch_warns_of_a_slide_without_a_resolution_on_the_terminal(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = save_model(build_unet(), tmp_path / "m.keras")
    code, _, err = _cli(capsys, "predict-batch", "--model", str(model), "--out", str(tmp_path / "o"), str(TCGA),
                        "--tile", "1024")
    assert code == 0 and (f"warning: {TCGA.resolve()}: {TCGA.name} records no µm/px, so small holes and specks were "
                          "left as predicted (--slide-mpp gives it one, or project set-mpp for a project's slide)\n"
                          ) in err, err
