"""The window's panels as a QuPath user expects them: selection, the annotation list, region roles, plots, export
defaults, restore after a restart, discoverable shortcuts, the overview and the scale bar."""
from __future__ import annotations

import csv
import shutil
import threading
import time
from pathlib import Path

from PySide6.QtCore import QObject, QPoint, QPointF, QRect, Qt, QTimer, Slot
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QApplication, QColorDialog, QDialog, QFileDialog, QInputDialog, QMessageBox,
                               QPushButton)
from shapely.geometry import box

from conftest import CMU, TCGA, dispose_window
from gui_helpers import click, drag, wait_job
from gigapath_desktop.annotations import Annotation, AnnotationClass, Role
from gigapath_desktop.resources import demo_slide
from gigapath_desktop.training import StepEvent, TileEvent
from gigapath_desktop.training.metrics import COLUMNS
from gigapath_desktop.ui.annotation_list import EditDialog
from gigapath_desktop.ui.export_dialog import ExportChoice
from gigapath_desktop.ui.jobs import JobRunner
from gigapath_desktop.ui.main_window import MainWindow
from gigapath_desktop.ui.viewer import Tool


def _row(window: MainWindow, annotation: Annotation) -> int:
    return window.annotation_list._ids.index(annotation.id)


def test_a_click_picks_the_smallest_shape_and_the_list_follows(window: MainWindow, qtbot) -> None:  # noqa: ANN001
    window.open_slide(CMU)
    small = Annotation(box(1000, 1000, 1100, 1100), name="small")
    large = Annotation(box(200, 200, 2000, 2800), name="tissue")  # drawn later: first in paint order until now
    window.session.apply("draw", [], [small, large])
    window.tool_actions[Tool.SELECT].trigger()
    viewer = window.viewer
    click(viewer.viewport(), viewer.mapFromScene(QPointF(1050, 1050)))
    assert window.session.selection == (small.id,)
    listing = window.annotation_list
    qtbot.waitUntil(lambda: listing.rowCount() == 2)
    assert {i.row() for i in listing.selectedIndexes()} == {_row(window, small)}
    assert listing.item(_row(window, small), 2).text() == "Label" and "px²" not in listing.item(0, 3).text()

    listing.selectRow(_row(window, large))  # a click in the list selects on the canvas too
    assert window.session.selection == (large.id,)
    assert [a.id for a in viewer.selected_annotations()] == [large.id]

    drag(viewer.viewport(), viewer.mapFromScene(QPointF(1050, 1050)), viewer.mapFromScene(QPointF(1050, 1050)))
    window.session.select([small.id])
    port = viewer.viewport()
    drag(port, viewer.mapFromScene(QPointF(1050, 1050)), port.rect().topLeft() + port.rect().center() * 0.02)
    x0, y0, x1, y1 = window.session.annotations.find(small.id).bounds
    assert x0 >= 0 and y0 >= 0 and (x1 - x0, y1 - y0) == (100, 100), "a shape cannot be dragged off the slide"
    assert x0 < 900, "it did move"

    window.session.select([small.id, large.id])
    delete = next(a for a in window.menus.actions if a.text() == "Delete selected")
    delete.trigger()
    assert len(window.session.annotations) == 0
    window.session.history.undo()
    assert len(window.session.annotations) == 2


def test_region_roles_are_explicit_and_visible(window: MainWindow, qtbot) -> None:  # noqa: ANN001
    window.open_slide(CMU)
    window.tool_actions[Tool.RECTANGLE].trigger()
    viewer, port = window.viewer, window.viewer.viewport()
    for a, b in (((100, 100), (900, 900)), ((100, 1200), (900, 2000))):
        drag(port, viewer.mapFromScene(QPointF(*a)), viewer.mapFromScene(QPointF(*b)))
    first, second = window.session.annotations
    assert first.role is second.role is Role.REGION
    assert window.panel.val_region.currentData() is None, "a second rectangle does not silently validate"
    qtbot.waitUntil(lambda: window.annotation_list.rowCount() == 2)
    assert [window.annotation_list.item(_row(window, a), 0).text() for a in (first, second)] == ["Train 1", "Train 2"]
    assert window.panel.train_region.itemText(1).startswith("Train 2 "), "the list and the choices say the same"

    def choose_validation() -> None:
        dialog = QApplication.activeModalWidget()
        if isinstance(dialog, EditDialog):
            dialog.role.setCurrentIndex(dialog.role.findData(Role.VALIDATION))
            dialog.name.setText("held out")
            dialog.accept()
        else:
            QTimer.singleShot(20, choose_validation)

    QTimer.singleShot(20, choose_validation)
    window.annotation_list.edit_annotation(second.id)
    assert window.panel.val_region.currentData() == second.id and window.panel.train_region.count() == 1
    qtbot.waitUntil(lambda: window.annotation_list.item(_row(window, second), 2).text() == "Validation")
    tag = viewer._items[second.id].childItems()[0]
    assert tag.text() == "Validation held out"
    window.session.history.undo()
    assert window.panel.val_region.currentData() is None


def test_canvas_tags_say_the_region_titles_the_list_says(window: MainWindow, qtbot) -> None:  # noqa: ANN001
    window.open_slide(CMU)
    first, second, validation = (Annotation.rectangle(0, 0, 500, 500), Annotation.rectangle(0, 600, 500, 500),
                                 Annotation.rectangle(600, 0, 500, 500, role=Role.VALIDATION))
    window.session.apply("regions", [], [first, second, validation])

    def tags() -> dict[str, str]:
        return {key: item.childItems()[0].text() for key, item in window.viewer._items.items()
                if item.annotation.role.is_area}

    assert tags() == {first.id: "Train 1", second.id: "Train 2", validation.id: "Validation 1"}
    qtbot.waitUntil(lambda: window.annotation_list.rowCount() == 3)
    assert window.annotation_list.item(_row(window, second), 0).text() == tags()[second.id], "as the list says"
    window.session.delete([first])
    assert tags() == {second.id: "Train 1", validation.id: "Validation 1"}, "renumbered when a region goes"
    window.session.change(window.session.annotations.find(second.id), role=Role.VALIDATION)
    assert tags() == {second.id: "Validation 1", validation.id: "Validation 2"}, "and when one changes role"
    window.session.history.undo()
    window.session.history.undo()  # (the deleted region comes back in its place)
    assert tags() == {first.id: "Train 1", second.id: "Train 2", validation.id: "Validation 1"}
    assert window.panel.train_region.itemText(1).startswith("Train 2 "), "as the region choices say"


def test_plots_say_when_a_run_stopped_and_are_cleared_with_another_slide(window: MainWindow, tmp_path: Path) -> None:
    window.open_slide(CMU)
    run = tmp_path / "run"
    run.mkdir()
    with (run / "metrics.csv").open("w", newline="") as f:
        rows = csv.DictWriter(f, COLUMNS)
        rows.writeheader()
        for step in range(1, 6):
            rows.writerow({"step": step, "loss": 1 / step, "dice": 0.5, "val_dice": "", "seconds": 2.0,
                           "mpix_per_s": 3.0, "rss_bytes": 2**30, "learning_rate": 0.01, "recoveries": 0})
    (run / "model.keras").write_bytes(b"not loaded until used")
    assert window.open_run(run)
    counts = window.panel.point_counts()
    assert counts["loss"] == 5 and counts["rss"] == 5, "an opened run shows its memory too"
    assert window.session.model_path == run / "model.keras"
    assert "system available" not in [c.name() for c in window.panel.curves.values()]
    window.open_slide(TCGA)
    assert set(window.panel.point_counts().values()) == {0} and window.panel.log.toPlainText() == ""
    assert window.session.model_path is None, "the model belongs to the previous slide"


def test_a_relaunch_restores_annotations_roles_and_model(qtbot, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    model = tmp_path / "run" / "model.keras"
    model.parent.mkdir()
    model.write_bytes(b"weights")
    first = MainWindow()
    first.open_slide(CMU)
    validation = Annotation.rectangle(0, 1500, 2000, 1000, role=Role.VALIDATION)
    first.session.apply("regions", [], [Annotation.rectangle(0, 0, 2000, 1400), validation])
    first.session.set_model(model)
    dispose_window(first)

    second = MainWindow()
    assert second.settings.recent_slides == [str(CMU.resolve())]
    second.open_slide(second.settings.recent_slides[0])
    assert second.session.model_path == model and str(model) in second.results.model_label.text()
    assert second.panel.val_region.currentData() == validation.id
    asked: list[str] = []
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda parent, title, start: asked.append(start) or "")
    second.open_run_dialog()
    assert asked == [str(second.trainer.runs_dir())], "Open run starts in the runs folder"
    dispose_window(second)


def test_brush_keys_tooltips_help_and_panels_come_back(window: MainWindow, qtbot) -> None:  # noqa: ANN001
    window.open_slide(CMU)
    window.activateWindow()
    window.viewer.setFocus()
    qtbot.waitActive(window)
    size = window.viewer.brush_pixels
    qtbot.keyClick(window.viewer, Qt.Key.Key_BracketRight)
    assert window.viewer.brush_pixels > size and window.menus.brush_size.value() == window.viewer.brush_pixels
    qtbot.keyClick(window.viewer, Qt.Key.Key_BracketLeft)
    qtbot.keyClick(window.viewer, Qt.Key.Key_BracketLeft)
    assert window.viewer.brush_pixels < size
    window.menus.brush_size.setValue(80)
    assert window.viewer.brush_pixels == 80
    assert window.tool_actions[Tool.BRUSH].toolTip().endswith("(B)")
    menus = {a.text().replace("&", ""): a.menu() for a in window.menuBar().actions()}
    assert {a.text() for a in menus["Help"].actions()} >= {"Keyboard shortcuts", "About GigaPath Desktop"}
    annotations_dock = next(d for d in window.docks if d.windowTitle() == "Annotations")
    annotations_dock.close()
    toggle = next(a for a in menus["View"].actions() if a.text() == "Annotations")
    toggle.trigger()
    assert annotations_dock.isVisible()
    assert window.viewer.width() > window.width() / 2, "the viewer takes the largest share"


def test_export_defaults_to_a_writable_per_slide_folder_with_browse(window: MainWindow, tmp_path: Path) -> None:
    window.open_slide(CMU)
    window.export_mask_dialog()  # no model: said before a dialog is filled in for nothing
    assert window.errors == ["no model yet"] and QApplication.activeModalWidget() is None
    dialog = window.export_dialog()
    assert dialog.whole.isChecked(), "no region to export: the whole slide, said as such"
    assert dialog.min_hole.isEnabled(), "a tissue model's clean-up on a slide with a µm/px"
    choice = dialog.choice()
    assert choice.tiff == tmp_path / "exports" / CMU.stem / f"{CMU.stem}.mask.tif"
    assert choice.preview_side == 2967 and choice.png is not None, "no preview larger than the slide (2220 x 2967)"
    assert (choice.min_hole_um2, choice.min_object_um2) == (1000, 0), "holes filled as the tissue detector draws"
    dialog.min_object.setValue(250)
    assert dialog.choice().min_object_um2 == 250
    dialog.tiff.setText(str(tmp_path / "typo" / "m.tif"))
    said: list[str] = []

    def close_warning() -> None:
        box = QApplication.activeModalWidget()
        if box is dialog or box is None:
            QTimer.singleShot(20, close_warning)
            return
        said.append(box.text())
        box.close()

    QTimer.singleShot(20, close_warning)
    dialog.accept()  # OK with a folder that does not exist: said over the dialog, which keeps what was typed
    assert said and "does not exist" in said[0] and dialog.result() != QDialog.DialogCode.Accepted
    assert dialog.tiff.text() == str(tmp_path / "typo" / "m.tif")
    assert len([b for b in dialog.findChildren(QPushButton) if b.text() == "Browse…"]) == 3
    assert dialog.tiff.width() >= 400 or dialog.tiff.minimumWidth() >= 400
    (tmp_path / "old.mask.tif").write_bytes(b"an earlier export")
    dialog.tiff.setText(str(tmp_path / "old.mask.tif"))
    for answer in (QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes):  # files there: replaced if said so
        asked: list[str] = []

        def reply(answer: QMessageBox.StandardButton = answer) -> None:
            box = QApplication.activeModalWidget()
            if not isinstance(box, QMessageBox):
                QTimer.singleShot(20, reply)
                return
            asked.append(box.text())
            box.button(answer).click()

        QTimer.singleShot(20, reply)
        dialog.accept()
        assert asked and asked[0].startswith("Replace old.mask.tif")
        assert (dialog.result() == QDialog.DialogCode.Accepted) == (answer == QMessageBox.StandardButton.Yes)
    assert (tmp_path / "old.mask.tif").read_bytes() == b"an earlier export", "asking writes nothing"
    dialog.done(QDialog.DialogCode.Rejected)
    assert window.save_start() == str(tmp_path / "exports"), "Save session starts in the user's folder, not the slide's"
    window.save_session(str(tmp_path / "session"))
    assert window.save_start() == str(tmp_path / "session"), "then in the session's own"
    assert Path(window.open_start()) == CMU.parent.resolve(), "open dialogs start where the last slide was"
    window.open_slide(TCGA)
    assert window.export_dialog().choice().preview_side == 4096, "a larger slide (4443 x 3567) previews at 4096 px"
    window.open_slide(demo_slide())
    assert window.open_start() == str(tmp_path / "exports"), "but not inside the app, at the bundled demo slide"
    assert window._exports().is_dir(), "an export dialog's folder exists, or Qt starts in the working directory"


def test_overview_rectangle_is_inside_and_the_scale_bar_stays(window: MainWindow, qtbot) -> None:  # noqa: ANN001
    window.open_slide(CMU)
    window.viewer.fit()
    drawn = window.overview.drawn_rect
    picture = window.overview.pixmap().rect()
    assert drawn.left() >= 1 and drawn.top() >= 1 and drawn.right() <= picture.width() - 1
    assert drawn.bottom() <= picture.height() - 1
    viewer = window.viewer
    port = viewer.viewport()
    drag(port, port.rect().center(), port.rect().center() + port.rect().center() / 4)
    bar = viewer.scale_bar
    assert bar.isVisible() and bar.label.endswith(("µm", "mm")) and bar.geometry().bottom() < port.height()
    assert bar.geometry().left() >= 0 and bar.pixels > 20


def test_a_drawing_in_progress_survives_a_slide_switch(window: MainWindow, qtbot) -> None:  # noqa: ANN001
    window.open_slide(CMU)
    window.tool_actions[Tool.POLYGON].trigger()
    port = window.viewer.viewport()
    click(port, port.rect().center())
    click(port, port.rect().center() + port.rect().center() / 4)
    window.open_slide(TCGA)
    qtbot.keyClick(window.viewer, Qt.Key.Key_Escape)
    drag(port, port.rect().center(), port.rect().center() / 2)  # moves over the viewer: no stale preview is touched
    assert window.errors == []


def test_selection_survives_edits_and_a_large_selection_is_one_event(window: MainWindow, qtbot) -> None:  # noqa: ANN001
    window.open_slide(CMU)
    shapes = [Annotation(box(10 * i, 10, 10 * i + 8, 18)) for i in range(200)]
    window.session.apply("draw", [], shapes)
    events: list[tuple] = []
    window.session.events.selection.connect(events.append)
    qtbot.waitUntil(lambda: window.annotation_list.rowCount() == 200)
    window.annotation_list.selectAll()
    assert len(window.session.selection) == 200 and len(events) == 1, "one selection, not one per row"
    renamed = window.session.change(shapes[0], name="renamed")
    assert renamed.id in window.session.selection and window.viewer._items[renamed.id].highlighted
    window.session.delete(window.session.selected())
    assert len(window.session.annotations) == 0 and window.session.selection == ()


def test_region_choices_follow_role_changes_and_no_validation_sticks(window: MainWindow) -> None:
    window.open_slide(CMU)
    train, val = Annotation.rectangle(0, 0, 900, 900), Annotation.rectangle(0, 1000, 900, 900, role=Role.VALIDATION)
    window.session.apply("regions", [], [train, val])
    box = window.panel.val_region
    assert box.currentData() == val.id
    box.setCurrentIndex(0)
    box.activated.emit(0)  # the user picks "none"
    window.session.apply("more", [], [Annotation.rectangle(1000, 1000, 500, 500, role=Role.VALIDATION)])
    assert box.currentData() is None, "no validation stays chosen"
    window.session.change(train, role=Role.LABEL)
    assert window.panel.train_region.count() == 0, "a region turned into a label no longer trains"


def test_a_session_or_settings_file_with_a_bad_tile_changes_nothing(window: MainWindow, tmp_path: Path) -> None:
    import json

    window.open_slide(CMU)
    folder = tmp_path / "session"
    folder.mkdir()
    (folder / "session.json").write_text(json.dumps({"slide": str(TCGA), "settings": {"tile": None}}))
    assert not window.open_session(folder)
    assert "not a readable session" in window.error_box.text() and window.session.slide.path == CMU
    assert window.session.folder is None and window.panel.tile.text() == "auto"


class _Chain(QObject):
    """On the GUI thread, starts a second task from the first one's result, as a click on a button that the result
    enabled does, and notes whether the first task's thread was still alive at that moment."""

    def __init__(self, runner: JobRunner) -> None:
        super().__init__()
        self.runner, self.results, self.first_thread_alive, self.started = runner, [], None, None

    @Slot(object)
    def chain(self, result: object) -> None:
        self.first_thread_alive = self.runner.worker.isRunning()
        self.started = self.runner.run("second", lambda progress, cancel: result + 1, self.results.append)


def test_a_task_started_from_the_last_ones_result_is_not_refused(window: MainWindow, qtbot) -> None:  # noqa: ANN001
    gate = threading.Event()
    chain = _Chain(window.jobs)
    assert window.jobs.run("first", lambda progress, cancel: gate.wait(30) and 1, chain.chain)
    # the first thread lingers after delivering its result (as a busy machine can make it): it was refused
    window.jobs.worker.succeeded.connect(lambda result: time.sleep(2), Qt.ConnectionType.DirectConnection)
    gate.set()
    qtbot.waitUntil(lambda: chain.results == [2], timeout=30_000)
    assert chain.first_thread_alive and chain.started and window.errors == []


def test_the_progress_line_says_paused_and_the_eta_leaves_the_pause_out(window: MainWindow) -> None:
    panel = window.panel
    panel.begin(10)
    panel.set_running(True)
    panel.on_event(StepEvent(2, 10, 0.5, 0.8, None, 1.0, 3.0, 2**30, None, "CPU"))
    assert panel.eta.text().startswith("step 2/10, ETA")
    panel.set_running(True, paused=True)
    assert panel.eta.text() == "paused at step 2/10"
    panel.on_event(TileEvent(3, 1, 4))  # the step in flight reaches the next pause point
    assert panel.eta.text() == "paused at step 2/10" and panel.pause.text() == "Resume"
    panel._t0 -= 3600  # the run began an hour ago and spent it paused
    panel._paused_since -= 3600
    panel.set_running(True, paused=False)
    minutes = int(panel.eta.text().split("ETA ")[1].split(" min")[0])
    assert panel.eta.text().startswith("step 2/10, ETA") and 0 <= minutes < 30, "the hour paused is not in the ETA"
    panel.set_running(False)


def test_the_window_fits_a_laptop_screen(window: MainWindow) -> None:
    """Panels scroll instead of holding the window up: it can shrink to well under 1280 x 800 (a 13-inch laptop)."""
    hint = window.minimumSizeHint()
    assert hint.width() <= 800 and hint.height() <= 600, hint
    window._fit_to_screen(1500, 950)  # as it opens (the fixture resized it); the offscreen screen is 800 x 800
    free = QApplication.primaryScreen().availableGeometry()
    assert window.width() <= free.width() and window.height() <= free.height()


def test_export_model_copies_under_a_temporary_name_and_a_bad_folder_is_a_dialog(window: MainWindow, tmp_path: Path,
                                                                                 monkeypatch) -> None:  # noqa: ANN001
    window.open_slide(CMU)
    model = tmp_path / "run" / "model.keras"
    model.parent.mkdir()
    model.write_bytes(b"model bytes " * 1000)
    window.session.set_model(model)
    target = tmp_path / "out" / "copy.keras"
    target.parent.mkdir()
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *args: (str(target), ""))
    window.export_model_dialog()
    assert target.read_bytes() == model.read_bytes()
    assert [p.name for p in target.parent.iterdir()] == ["copy.keras"], "no temporary file left beside it"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *args: (str(tmp_path / "missing" / "m.keras"), ""))
    window.export_model_dialog()
    assert window.error_box.isVisible() and "cannot write" in window.error_box.text()


def _answer_new_class(name: str, offered: list[QColor]) -> None:
    """Type `name` in the New class dialog, then take the colour the picker offers (kept in `offered`)."""
    def step() -> None:
        dialog = QApplication.activeModalWidget()
        if isinstance(dialog, QColorDialog):
            offered.append(dialog.currentColor())
            dialog.accept()
            return
        if isinstance(dialog, QInputDialog):
            dialog.setTextValue(name)
            dialog.accept()
        QTimer.singleShot(20, step)

    QTimer.singleShot(20, step)


def test_each_new_class_is_offered_a_colour_no_class_has(window: MainWindow) -> None:
    new_class = next(a for a in window.menus.actions if a.text() == "New class…")
    offered: list[QColor] = []
    for name in ("Tumor", "Stroma"):
        _answer_new_class(name, offered)
        new_class.trigger()
        assert window.menus.class_box.currentText() == name
    colours = [c.color for c in window.session.classes]
    assert len(set(colours)) == len(colours), f"two classes share a colour: {window.session.classes}"
    assert [c.getRgb()[:3] for c in offered] == colours[-2:], "the user took the colours the picker offered"
    _answer_new_class("Tissue", offered)  # a name the session knows: it takes the colour, and stays chosen
    new_class.trigger()
    assert window.menus.class_box.currentText() == "Tissue"
    assert [c.color for c in window.session.classes if c.name == "Tissue"] == [offered[-1].getRgb()[:3]]
    assert "exists already" in window.statusBar().currentMessage()
    _answer_new_class("tumor", offered)  # a known name but for case: said, not a class of its own
    new_class.trigger()
    assert "'Tumor' already" in window.error_box.text() and "tumor" not in [c.name for c in window.session.classes]


def test_the_toolbars_class_is_renamed_and_removed_from_the_edit_menu(window: MainWindow) -> None:
    window.open_slide(CMU)
    typo = window.session.add_class("Tumour", (200, 0, 0))
    window.menus.class_box.setCurrentIndex(window.menus.class_box.findText("Tumour"))
    window.session.apply("draw", [], [Annotation(box(10, 10, 200, 200), cls=typo)])
    actions = {a.text(): a for a in window.menus.actions}
    def answer() -> None:
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, QInputDialog):
            QTimer.singleShot(20, answer)
            return
        dialog.setTextValue("Tumor")
        dialog.accept()

    QTimer.singleShot(20, answer)
    actions["Rename class…"].trigger()
    assert window.menus.class_box.currentText() == "Tumor" and window.viewer.current_class.name == "Tumor"
    assert [a.cls.name for a in window.session.annotations] == ["Tumor"]
    actions["Remove class"].trigger()
    assert "labels of Tumor are on this slide" in window.error_box.text()
    window.session.history.undo()
    window.session.history.undo()  # the label drawn
    window.menus.class_box.setCurrentIndex(window.menus.class_box.findText("Tumour"))
    actions["Remove class"].trigger()
    assert "Tumour" not in [c.name for c in window.session.classes]
    assert window.menus.class_box.findText("Tumour") == -1


def test_a_class_gets_another_colour_from_the_edit_menu(window: MainWindow) -> None:
    """Edit > Class colour… recolours the class chosen in the toolbar: its swatch, and its strokes on the canvas."""
    window.open_slide(CMU)
    tumor = window.session.add_class("Tumor", (150, 200, 150))  # close to Tissue's green
    window.menus.class_box.setCurrentIndex(window.menus.class_box.findText("Tumor"))
    window.session.apply("draw", [], [Annotation(box(10, 10, 200, 200), cls=tumor)])

    def answer() -> None:
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, QColorDialog):
            QTimer.singleShot(20, answer)
            return
        assert dialog.windowTitle() == "Colour of Tumor" and dialog.currentColor().getRgb()[:3] == (150, 200, 150)
        dialog.setCurrentColor(QColor(120, 0, 160))
        dialog.accept()

    QTimer.singleShot(20, answer)
    next(a for a in window.menus.actions if a.text() == "Class colour…").trigger()
    classes = window.menus.class_box
    assert classes.currentText() == "Tumor"
    swatch = classes.itemIcon(classes.currentIndex()).pixmap(12, 12).toImage().pixelColor(5, 5)
    assert swatch.getRgb()[:3] == (120, 0, 160)
    stroke = window.viewer._items[window.session.annotations[0].id]
    assert stroke.pen().color().getRgb()[:3] == (120, 0, 160), "the stroke on the canvas is redrawn"


def test_what_a_training_reads_replaces_the_region_choices_without_moving_a_button(window: MainWindow,
                                                                                  tmp_path: Path) -> None:
    slide = tmp_path / "CMU-1-Small-Region-scanned-again-at-40x-for-the-second-reading-of-the-study.svs"
    shutil.copyfile(CMU, slide)
    window.open_slide(slide)
    train, validation = Annotation.rectangle(0, 0, 1000, 1000), Annotation.rectangle(0, 1200, 1000, 1000,
                                                                                     role=Role.VALIDATION)
    window.session.apply("regions", [], [train, validation])
    panel = window.panel

    def pause() -> QRect:
        QApplication.processEvents()  # (the layouts settle)
        return QRect(panel.pause.mapTo(panel, QPoint(0, 0)), panel.pause.size())

    before, width = pause(), panel.sizeHint().width()
    panel.show_data(window.session.training_data(False, train.id, validation.id))
    assert panel.train_data.isVisible() and not panel.train_region.isVisible()
    assert panel.train_data.text() == panel.train_data.toolTip() == f"1 region on {slide.name}"
    assert pause() == before, "a click meant for Pause must not land on the progress bar"
    assert panel.sizeHint().width() <= width and panel.minimumSizeHint().width() <= width, "the name widened the panel"
    panel.show_data(None)
    assert pause() == before and panel.train_region.isVisible()


def test_a_failed_export_says_failed_never_done(window: MainWindow, qtbot, tmp_path: Path) -> None:  # noqa: ANN001
    # (once TensorFlow has loaded: importing the model package from two threads at once can fail, model/io.py)
    qtbot.waitUntil(lambda: "loading" not in window.panel.device.currentText(), timeout=60_000)
    window.open_slide(CMU)
    model = tmp_path / "run" / "model.keras"
    model.parent.mkdir()
    model.write_bytes(b"not a model: the export job fails loading it")
    window.session.set_model(model)
    assert window.export_mask(ExportChoice(tmp_path / "mask.tif", None, None, 1024, whole=True))
    wait_job(qtbot, window)
    assert "model.keras" in window.errors[-1] and "Nothing was changed" in window.error_box.informativeText()
    assert window.statusBar().currentMessage() == "Exporting mask: failed" and not (tmp_path / "mask.tif").exists()


def test_opening_a_project_shows_its_panel_and_its_changes_leave_the_panels_be(window: MainWindow,
                                                                              tmp_path: Path) -> None:
    window.open_slide(CMU)
    assert window.projects.create(tmp_path / "study")
    QApplication.processEvents()

    def shown(dock: int) -> bool:  # (a dock behind another's tab keeps isVisible(); nothing of it is on screen)
        return not window.docks[dock].visibleRegion().isEmpty()

    assert shown(6) and not shown(1), "the project opened shows its slides"
    window.docks[1].raise_()  # the user goes back to the annotations
    window.session.add_class("Tumor", (200, 0, 0))  # joins the project
    window.session.recolour_class(AnnotationClass("Tumor", (0, 0, 200)))
    QApplication.processEvents()
    assert shown(1) and not shown(6), "a class recoloured switched the panel to the project's"


def test_a_project_of_classes_opens_with_one_of_them_to_draw(window: MainWindow, tmp_path: Path) -> None:
    """Not Tissue, whose labels a model of the project's classes refuses at Start."""
    from gigapath_desktop.annotations import BACKGROUND
    from gigapath_desktop.project import Project

    Project.create(tmp_path / "study", [BACKGROUND, AnnotationClass("Tumor", (200, 0, 0)),
                                        AnnotationClass("Stroma", (0, 0, 200))])
    assert window.menus.class_box.currentText() == "Tissue"
    assert window.projects.open(tmp_path / "study")
    assert window.menus.class_box.currentText() == "Tumor" and window.viewer.current_class.name == "Tumor"
    window.menus.class_box.setCurrentIndex(window.menus.class_box.findText("Stroma"))
    assert window.projects.open(tmp_path / "study")
    assert window.menus.class_box.currentText() == "Stroma", "a class of the project stays chosen"


def test_a_wheel_over_the_training_plots_leaves_their_ranges(window: MainWindow) -> None:
    """It zoomed the loss curve away (axes -5 to 40), with no way back in sight."""
    from PySide6.QtGui import QWheelEvent

    panel = window.panel
    window.docks[4].raise_()
    QApplication.processEvents()
    before = panel.quality.viewRange()
    viewport = panel.plots.viewport()
    centre = panel.plots.mapFromScene(panel.quality.sceneBoundingRect().center())
    for delta in (120, -360):
        wheel = QWheelEvent(QPointF(centre), QPointF(viewport.mapToGlobal(centre)), QPoint(0, 0), QPoint(0, delta),
                            Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
        QApplication.sendEvent(viewport, wheel)
    QApplication.processEvents()
    assert panel.quality.viewRange() == before


def test_a_task_stops_from_the_status_bar_at_once_and_without_a_dialog(window: MainWindow, qtbot) -> None:  # noqa: ANN001
    """An export writing contours for minutes could only be stopped by quitting (which then waited for it)."""
    from gigapath_desktop.errors import Cancelled

    def work(progress, cancel) -> None:  # noqa: ANN001
        while not cancel():
            time.sleep(0.01)
        raise Cancelled("contour tracing was stopped")

    said = len(window.errors)
    assert window.jobs.run("Exporting mask", work, lambda _: None)
    assert not window.jobs.stop_button.isHidden()
    qtbot.mouseClick(window.jobs.stop_button, Qt.MouseButton.LeftButton)
    assert window.statusBar().currentMessage() == "Exporting mask: stopping…"
    assert not window.jobs.stop_button.isEnabled()
    wait_job(qtbot, window)
    assert window.statusBar().currentMessage() == "Exporting mask: stopped" and len(window.errors) == said
    assert window.jobs.stop_button.isHidden() and not window.jobs.running()


def test_the_overlay_has_a_key_that_goes_with_it(window: MainWindow, tmp_path: Path) -> None:
    """A K-class prediction's colours are named, with each class's share of the area; another slide clears the
    key and the previous slide's export line."""
    import numpy as np

    from gigapath_desktop.annotations import AnnotationClass, ClassMap

    window.open_slide(CMU)
    classes = ClassMap.named(["Background", "Tumor", "Stroma"],
                             [AnnotationClass("Tumor", (200, 0, 0)), AnnotationClass("Stroma", (0, 0, 180))])
    probability = np.zeros((10, 20, 3), np.float32)
    probability[..., 0] = 1
    probability[:5, :8, 1] = 2  # 40 of 200 pixels Tumor
    probability[5:, :, 2] = 2  # 100 Stroma
    window.prediction.show(0, 0, 16.0, probability, classes)
    key = window.results.legend.text()
    assert "Background: 30.0%" in key and "Tumor: 20.0%" in key and "Stroma: 50.0%" in key
    assert "rgb(200, 0, 0)" in key and "rgb(0, 0, 180)" in key
    window.results.show_export(tmp_path / "cmu.tif")
    window.open_slide(TCGA)
    assert window.results.legend.text() == "" and window.results.export_label.text() == ""
    assert window.viewer.overlay is None or not window.viewer.overlay.isVisible()


def test_the_batch_bar_fills_a_slides_share_only_once_its_outputs_are_written(window: MainWindow) -> None:
    """Its tiles predicted, a slide's contours can take minutes more: the bar said 50 % for two slides, and 100 %
    after a stop with one slide done."""
    from gigapath_desktop.inference.batch import BatchRow

    panel = window.projects.batch_panel
    panel.begin(2)
    panel.show_progress(100 * 0 + 80, 200)  # slide 1: every tile predicted, its outputs still being written
    assert panel.progress.value() / panel.progress.maximum() == 0.4
    panel.add_row(BatchRow(CMU, "ok"))
    assert panel.progress.value() / panel.progress.maximum() == 0.5
    panel.show_progress(100 + 80, 200)
    assert panel.progress.value() < panel.progress.maximum(), "not full before the last slide's row"


def test_a_project_slide_without_a_resolution_is_given_one_that_training_reads(
        window: MainWindow, qtbot, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """Tools > Slide resolution…: refused outside a project; on a project slide kept in the project, shown in the
    properties and the scale bar, read by the training plan, and back when the slide is opened again."""
    from gigapath_desktop.project import Project

    answers = iter([(0.5, True), (0.5, True), (0.0, True)])
    monkeypatch.setattr(QInputDialog, "getDouble", lambda *args: next(answers))
    window.open_slide(TCGA)
    (menu_item,) = [a for a in window.menus.actions if a.text() == "Slide resolution…"]
    assert not menu_item.isEnabled(), "offered only where it can be kept"
    window.slide_mpp_dialog()
    assert "only a project slide" in window.errors[-1] and window.session.slide.mpp is None
    assert window.projects.create(tmp_path / "study") and window.projects.add([TCGA])
    wait_job(qtbot, window)
    entry = window.session.project.slides[0]
    assert window.projects.open_slide(entry.id) and menu_item.isEnabled()
    window.session.apply("region", [], [Annotation.rectangle(0, 0, 4096, 3072)])
    window.session.set_training(on_project=True, mpp=2.0)
    before = window.session.training_data(True).plan_text(window.session.training)
    assert "TCGA-CR-7395-01A-01-TS1-crop.svs records no µm/px: read at its own pixels" in before, "said before Start"
    window.slide_mpp_dialog()
    assert window.session.slide.mpp == (0.5, 0.5) and Project.open(tmp_path / "study").slides[0].given_mpp == 0.5
    properties = {window.properties.item(i, 0).text(): window.properties.item(i, 1).text()
                  for i in range(window.properties.rowCount())}
    assert properties["microns per pixel"] == "0.5000 (given)" and window.viewer.scale_bar.isVisible()
    after = window.session.training_data(True).plan_text(window.session.training)
    assert "1024 x 768" in after and "records no" not in after, "read at 2 µm/px: a quarter of the region's side"
    assert "px" not in window.annotation_list.item(0, 3).text(), "the list's areas follow the new µm/px"
    window.open_slide(CMU)
    window.open_slide(TCGA)  # by its file: the project's slide, with the project's word on its µm/px
    assert window.session.slide.mpp == (0.5, 0.5)
    window.slide_mpp_dialog()
    assert window.session.slide.mpp is None and Project.open(tmp_path / "study").slides[0].given_mpp is None
