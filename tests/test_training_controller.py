"""Training from the app's window (real Qt, offscreen): the classes it trains, labels it refuses before starting, and
the warnings a run brings."""
from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import Qt
from shapely.geometry import box

from conftest import CMU, TCGA
from gui_helpers import wait_job
from gigapath_desktop.annotations import TISSUE, Annotation, Role
from gigapath_desktop.ui.main_window import MainWindow


def test_this_slide_trains_the_project_classes_and_labels_it_cannot_learn_name_their_slides(
        window: MainWindow, qtbot, tmp_path: Path) -> None:  # noqa: ANN001
    """A project of Tumor and Stroma: "this slide" trains the project's 3 classes from its sparse strokes, not the
    tissue model. Training on the project, a slide with a region and no labels, then one with detected Tissue
    labels, are refused at Start by slide name and what to do in the app (no run starts); making Tissue a class of
    the project, as said, lets it train (its region of only Tissue is warned of by class name)."""
    assert window.projects.create(tmp_path / "study") and window.projects.add([CMU, TCGA])
    wait_job(qtbot, window)
    cmu, tcga = (window.session.project.slide(path.name).id for path in (CMU, TCGA))
    tumor, stroma = window.session.add_class("Tumor", (200, 0, 0)), window.session.add_class("Stroma", (0, 150, 0))
    assert window.projects.open_slide(tcga)
    window.session.apply("region", [], [Annotation.rectangle(1024, 1024, 512, 512)])
    assert window.projects.open_slide(cmu)
    window.session.apply("draw", [], [Annotation.rectangle(0, 0, 1024, 1024),
                                      Annotation(box(100, 100, 300, 300), cls=tumor),
                                      Annotation(box(500, 500, 700, 700), cls=stroma)])
    panel = window.panel
    qtbot.mouseClick(panel.sparse, Qt.MouseButton.LeftButton)
    assert window.session.training.sparse, "the choice is the session's (saved with it), not the widget's"
    qtbot.keyClick(panel.fold, Qt.Key.Key_Down)  # the user picks the finer 2 x 2 fold
    assert window.session.training.fold == 2 and panel.fold.currentText().startswith("2 x 2")
    window.session.set_training(steps=2, tile=512)
    assert panel.plan.text().startswith("1024 x 1024: 4 tiles")
    panel.mpp.setValue(1.0)  # the user trains at 1 µm/px (CMU records 0.499): the plan reads the region resampled
    assert window.session.training.mpp == 1.0 and panel.plan.text().startswith("511 x 511: 1 tile")
    assert panel.scope.currentData() == "slide" and window.start_training()
    qtbot.waitUntil(lambda: window.training.isFinished(), timeout=180_000)
    qtbot.wait(50)
    config = json.loads((window.training.job.out / "config.json").read_text())
    assert [(c["name"], c["color"]) for c in config["classes"]] == [
        ("Background", [160, 160, 160]), ("Tumor", [200, 0, 0]), ("Stroma", [0, 150, 0])]
    assert config["spec"]["train"][0]["mode"] == "sparse" and config["spec"]["mpp"] == 1.0
    assert config["training"]["fold"] == 2 and config["model"]["stride"] == 32, "the model of the chosen fold"
    assert "classes: Background, Tumor, Stroma" in panel.log.toPlainText()
    assert [e.split(":")[0] for e in window.errors] == ["no training region has labels of Background"], (
        "no one-class warning (the strokes are half Tumor, half Stroma), but glass is never learnt")
    window.errors.clear()

    qtbot.keyClick(panel.scope, Qt.Key.Key_Down)  # the user picks "all project slides"
    assert window.session.training.on_project
    trained = window.training
    assert not window.start_training() and window.training is trained
    assert window.errors == [f"{TCGA.name}: a Train or Validation region but no labels to learn from"]
    hint = window.error_box.informativeText()
    assert "Draw labels of Background, Tumor, Stroma" in hint and "Project panel" in hint

    assert window.projects.open_slide(tcga)
    window.detect_tissue()
    wait_job(qtbot, window)
    assert not window.start_training() and window.training is trained
    assert window.errors[-1] == (f"labels of a class that is not the model's (Background, Tumor, Stroma): 'Tissue' on "
                                 f"{TCGA.name}")
    hint = window.error_box.informativeText()
    assert "Edit > Delete selected" in hint and "Edit > New class…" in hint

    window.session.add_class("Tissue", TISSUE.color)
    assert window.start_training() and "classes: Background, Tumor, Stroma, Tissue" in panel.log.toPlainText()
    qtbot.waitUntil(lambda: window.training.isFinished(), timeout=180_000)
    qtbot.wait(50)
    assert window.session.project.runs[-1]["status"] == "finished"
    said = "\n\n".join(window.errors[2:])  # (one dialog, or two when the machine is busy)
    assert (f"the labels of {TCGA.name} (1024, 1024, 512, 512) L0 are 100.0 % Tissue: the model cannot learn the "
            f"other classes (Background, Tumor, Stroma)") in said
    assert f"{TCGA.name} records no µm/px" in said, "read at its own pixels, and said"


def test_a_runs_warnings_come_in_one_dialog_in_the_order_said_with_what_is_true_when_read(
        window: MainWindow, qtbot, tmp_path: Path) -> None:  # noqa: ANN001
    """Two Train regions of only tissue: one dialog holds both warnings, in the order the run said them; said while
    it runs, it stays true once the run has ended; a warning still pending when a run ends says it ended."""
    assert window.projects.create(tmp_path / "study") and window.projects.add([CMU])
    wait_job(qtbot, window)
    assert window.projects.open_slide(window.session.project.slide(CMU.name).id)
    window.session.apply("regions", [], [Annotation.rectangle(700, 2500, 500, 400),
                                         Annotation.rectangle(1200, 2500, 500, 400),
                                         Annotation(box(600, 2400, 1800, 2900), cls=TISSUE, role=Role.LABEL)])
    window.session.set_training(on_project=True)
    window.session.set_training(steps=1000, tile=512)
    assert window.start_training()
    qtbot.waitUntil(lambda: bool(window.errors), timeout=180_000)
    qtbot.wait(1000)
    assert window.training.isRunning()
    (said,) = window.errors
    first, second = said.split("\n\n")
    assert "(700, 2500, 500, 400)" in first and "(1200, 2500, 500, 400)" in second and "100.0 % tissue" in second
    assert window.error_box.informativeText().startswith("The training uses the regions and labels as they were at "
                                                         "Start: stop it (Stop) if it is still running")
    window.stop_training()
    qtbot.waitUntil(lambda: window.training.isFinished(), timeout=180_000)
    qtbot.wait(50)
    assert window.errors == [said]

    window.trainer.warning_timer.setInterval(600_000)  # the run ends before its warnings are due
    window.session.set_training(steps=1)
    assert window.start_training()
    qtbot.waitUntil(lambda: window.training.isFinished(), timeout=180_000)
    qtbot.waitUntil(lambda: len(window.errors) == 2, timeout=5_000)
    assert window.errors[1] == said
    assert window.error_box.informativeText() == ("The training has ended: change the regions or labels, then start "
                                                  "again.")
