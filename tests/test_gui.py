"""The real main window under QT_QPA_PLATFORM=offscreen, driven with mouse events and its own actions."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import tifffile
from PySide6.QtCore import QPoint, QPointF, Qt, QTimer
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication, QMessageBox
from shapely.geometry import box

from conftest import CMU, DAPI, dispose_window
from gui_helpers import click, drag, wait_job
from gigapath_desktop.annotations import TISSUE, Annotation, Role, read_geojson
from gigapath_desktop.slides import open_slide
from gigapath_desktop.ui.export_dialog import ExportChoice
from gigapath_desktop.ui.main_window import MainWindow
from gigapath_desktop.ui.viewer import Tool


def test_open_zoom_pan_tiles_from_the_right_level(window: MainWindow, qtbot) -> None:  # noqa: ANN001
    qtbot.waitUntil(lambda: "loading" not in window.panel.device.currentText(), timeout=60_000)
    assert window.panel.device.currentText() in ("CPU",) or window.panel.device.currentText().startswith("GPU")
    assert window.open_slide(DAPI)
    viewer = window.viewer
    assert window.properties.rowCount() > 5 and window.overview.pixmap() is not None
    qtbot.waitUntil(lambda: len(viewer.shown_tiles) > 0, timeout=20_000)
    fit_level = viewer.level
    expected = viewer.slide.best_level_for_downsample(1 / viewer.scale_factor)
    assert fit_level == expected and fit_level >= 2, "fitted view reads a coarse level"
    assert {k.level for k in viewer.shown_tiles} == {fit_level}

    centre = viewer.viewport().rect().center()
    before = viewer.scale_factor
    for _ in range(8):
        wheel = QWheelEvent(QPointF(centre), QPointF(viewer.viewport().mapToGlobal(centre)), QPoint(), QPoint(0, 120),
                            Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
        QApplication.sendEvent(viewer.viewport(), wheel)
    assert viewer.scale_factor > before * 5
    qtbot.waitUntil(lambda: viewer.level < fit_level and any(k.level == viewer.level for k in viewer.shown_tiles),
                    timeout=20_000)
    assert viewer.level == viewer.slide.best_level_for_downsample(1 / viewer.scale_factor)

    rect = viewer.visible_rect()
    drag(viewer.viewport(), centre, centre + QPoint(-200, -150))
    moved = viewer.visible_rect()
    assert moved.x() > rect.x() + 10 and moved.y() > rect.y() + 10, "dragging left/up moves the view right/down"
    viewer.one_to_one()
    qtbot.waitUntil(lambda: viewer.level == 0 and any(k.level == 0 for k in viewer.shown_tiles), timeout=20_000)
    assert "zoom 100.0%" in window.zoom_label.text()


def test_draw_undo_redo_and_autosave(window: MainWindow, qtbot) -> None:  # noqa: ANN001
    window.open_slide(CMU)
    viewer, port = window.viewer, window.viewer.viewport()
    window.tool_actions[Tool.RECTANGLE].trigger()
    start, end = QPoint(200, 150), QPoint(450, 400)
    drag(port, start, end)
    assert len(window.session.annotations) == 1
    rect = window.session.annotations[0]
    assert rect.role is Role.REGION
    a, b = viewer.mapToScene(start), viewer.mapToScene(end)
    x0, y0, x1, y1 = rect.bounds
    assert abs(x0 - a.x()) < 2 and abs(y1 - b.y()) < 2

    window.tool_actions[Tool.POLYGON].trigger()
    points = [QPoint(300, 500), QPoint(500, 520), QPoint(420, 650)]
    for p in points[:-1]:
        click(port, p)
    click(port, points[-1], double=True)
    assert len(window.session.annotations) == 2
    polygon = window.session.annotations[1]
    assert polygon.role is Role.LABEL and polygon.cls.name == "Tissue"
    assert polygon.geometry.contains(polygon.geometry.centroid)

    window.session.history.undo()
    assert len(window.session.annotations) == 1
    window.session.history.redo()
    assert len(window.session.annotations) == 2 and window.session.annotations[1].id == polygon.id
    window.session.autosave.flush()
    saved = read_geojson(window.session.autosave_path())
    assert [s.id for s in saved] == [rect.id, polygon.id], "every change is autosaved"

    window.tool_actions[Tool.BRUSH].trigger()
    drag(port, QPoint(600, 300), QPoint(700, 330))
    assert window.session.annotations[2].kind.value == "brush"
    window.tool_actions[Tool.ERASER].trigger()
    area = window.session.annotations[2].geometry.area
    drag(port, QPoint(650, 280), QPoint(650, 360))
    assert window.session.annotations[2].geometry.area < area
    window.session.history.undo()
    assert window.session.annotations[2].geometry.area == pytest.approx(area)

    window.open_slide(CMU)  # reopening restores the autosaved annotations
    assert [a.id for a in window.session.annotations][:2] == [rect.id, polygon.id]


def test_invalid_geojson_shows_an_error_and_keeps_annotations(window: MainWindow, tmp_path: Path) -> None:
    window.open_slide(CMU)
    window.session.apply("add", [], [Annotation.rectangle(10, 10, 500, 500)])
    before = [a.id for a in window.session.annotations]
    window.session.autosave.flush()
    autosaved = window.session.autosave_path().read_text()
    bad = tmp_path / "bad.geojson"
    bad.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {"type": "Polygon"}}]}')
    assert not window.import_geojson(bad)
    assert isinstance(window.error_box, QMessageBox) and window.error_box.isVisible()
    assert "bad.geojson" in window.error_box.text() and "unchanged" in window.error_box.informativeText()
    assert [a.id for a in window.session.annotations] == before
    window.session.autosave.flush()
    assert window.session.autosave_path().read_text() == autosaved
    assert not window.open_slide(tmp_path / "bad.geojson"), "a non-slide is refused with a dialog"
    assert window.session.slide is not None and window.session.slide.path == CMU


def test_an_import_says_what_it_left_out_and_an_empty_file_adds_nothing(window: MainWindow, tmp_path: Path) -> None:
    window.open_slide(CMU)
    empty = tmp_path / "empty.geojson"
    empty.write_text('{"type": "FeatureCollection", "features": []}')
    assert not window.import_geojson(empty)
    assert "holds no annotations" in window.error_box.text() and window.session.history.undo_text is None
    mixed = tmp_path / "mixed.geojson"
    mixed.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 5]}, "properties": {}},
        {"type": "Feature", "geometry": box(100, 100, 300, 300).__geo_interface__,
         "properties": {"classification": {"name": "Tumor", "color": [200, 0, 0]}}}]}))
    assert window.import_geojson(mixed)
    assert "skipped 1 Point" in window.error_box.informativeText()
    assert "Tumor" in [window.menus.class_box.itemText(i) for i in range(window.menus.class_box.count())]


def test_detect_train_stop_predict_export(window: MainWindow, qtbot, tmp_path: Path) -> None:  # noqa: ANN001
    window.open_slide(CMU)
    window.detect_tissue()
    wait_job(qtbot, window)
    labels = window.session.annotations.labels()
    assert labels and all(a.cls.name == "Tissue" for a in labels)
    validation = Annotation.rectangle(0, 1800, 2220, 1100, role=Role.VALIDATION)
    window.session.apply("regions", [], [Annotation.rectangle(0, 0, 2220, 1800), validation])
    assert window.panel.train_region.count() == 1 and window.panel.val_region.currentData() == validation.id

    window.panel.steps.setValue(4)
    window.panel.tile.setValue(1024)
    gaps: list[float] = []
    last = [time.monotonic()]

    def tick() -> None:
        now = time.monotonic()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer(interval=20, timeout=tick)
    timer.start()
    assert window.start_training()
    qtbot.waitUntil(lambda: window.panel.progress.value() > 0, timeout=60_000)
    qtbot.waitUntil(lambda: window.training.isFinished(), timeout=180_000)
    timer.stop()
    qtbot.wait(50)
    counts = window.panel.point_counts()
    assert counts["loss"] == counts["dice"] == counts["val_dice"] == counts["mpix"] == 4
    assert counts["rss"] >= 1 and window.panel.progress.value() == 1000
    longest = max(gaps)
    print(f"longest UI stall while training: {longest * 1000:.0f} ms over {len(gaps)} ticks")
    assert longest < 2.0, f"the event loop stalled for {longest:.2f} s"
    assert window.session.model_path is not None and window.session.model_path.exists()

    window.panel.steps.setValue(500)
    assert window.start_training()
    qtbot.waitUntil(lambda: window.panel.point_counts()["loss"] >= 1, timeout=60_000)
    window.stop_training()
    qtbot.waitUntil(lambda: window.training.isFinished(), timeout=60_000)
    trainer = window.training.trainer
    assert trainer is not None and trainer.step < 500
    assert (window.training.job.out / "checkpoints" / "latest").exists()
    qtbot.waitUntil(lambda: window.panel.stop.isEnabled() is False)
    assert window.panel.eta.text() == f"stopped at step {trainer.step}/500", "no ETA once stopped"

    window.viewer.scene().clearSelection()
    assert window.predict("selection")
    wait_job(qtbot, window)
    assert window.viewer.overlay is not None and window.viewer.overlay.isVisible()
    window.results.overlay_toggle.setChecked(False)
    assert not window.viewer.overlay.isVisible()
    window.session.set_model(window.session.model_path)
    assert window.viewer.overlay is not None, "the same model keeps its overlay"

    typo = tmp_path / "exprots" / "mask.tif"
    assert not window.export_mask(ExportChoice(typo, None, None, 1024, whole=False))
    assert window.errors[-1] == f"{typo}: folder {typo.parent} does not exist" and not typo.parent.exists()
    window.errors.clear()
    out = tmp_path / "mask.tif"
    said: list[str] = []
    window.statusBar().messageChanged.connect(said.append)
    assert window.export_mask(ExportChoice(out, tmp_path / "mask.png", None, 1024, whole=False, min_hole_um2=2500))
    wait_job(qtbot, window)
    assert [m for m in said if m.startswith("Exporting mask: ")] == [
        "Exporting mask: predicting…", "Exporting mask: writing the pyramid…", "Exporting mask: drawing the preview…",
        "Exporting mask: done"], "each phase named (the bar sat at 100 % while the pyramid and contours were written)"
    assert window.errors == [] and window.results.export_label.text() == f"exported to {out}"
    with open_slide(out) as mask:
        assert mask.dimensions == (2220, 2967)
    with tifffile.TiffFile(out) as tif:
        assert json.loads(tif.pages[0].description)["min_hole_um2"] == 2500
    window.session.set_model(tmp_path / "another-run" / "model.keras")
    assert window.viewer.overlay is None, "another model's run opened: the previous prediction's overlay goes"


def test_closing_during_training_asks_then_stops_with_a_checkpoint(window: MainWindow, qtbot) -> None:  # noqa: ANN001
    window.open_slide(CMU)
    window.session.apply("region", [], [Annotation.rectangle(0, 0, 1500, 1500)])
    window.panel.steps.setValue(1000)
    window.panel.tile.setValue(512)
    assert window.start_training()
    qtbot.waitUntil(lambda: window.panel.point_counts()["loss"] >= 1, timeout=60_000)

    def answer_yes() -> None:
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox):
            box.button(QMessageBox.StandardButton.Yes).click()
        else:
            QTimer.singleShot(50, answer_yes)

    QTimer.singleShot(100, answer_yes)
    assert window.close()
    assert window.training.isFinished()
    run = window.training.job.out
    assert (run / "checkpoints" / "latest").exists() and window.training.trainer.step >= 1


def test_closing_while_a_task_runs_asks_first_and_no_keeps_it_running(window: MainWindow, qtbot) -> None:  # noqa: ANN001
    """Not only training: a batch prediction or an export running when the window closes is said, and No keeps
    the window and the task."""
    import time

    def until_cancelled(progress, cancel) -> None:  # noqa: ANN001
        while not cancel():
            time.sleep(0.01)

    assert window.jobs.run("Exporting mask", until_cancelled, lambda result: None)
    asked: list[str] = []

    def answer(button: QMessageBox.StandardButton) -> None:
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(50, lambda: answer(button))
            return
        asked.append(box.text())
        box.button(button).click()

    QTimer.singleShot(100, lambda: answer(QMessageBox.StandardButton.No))
    assert not window.close() and window.jobs.running()
    assert asked == ["Stop exporting mask (nothing is written) and quit?"]
    QTimer.singleShot(100, lambda: answer(QMessageBox.StandardButton.Yes))
    assert window.close() and not window.jobs.running()


def test_training_on_a_region_of_only_tissue_shows_a_warning_dialog(window: MainWindow, qtbot) -> None:  # noqa: ANN001
    window.open_slide(CMU)
    tissue = Annotation(box(600, 2400, 1800, 2900), cls=TISSUE, role=Role.LABEL)
    window.session.apply("regions", [], [Annotation.rectangle(700, 2500, 1000, 400), tissue])
    window.panel.steps.setValue(1)
    window.panel.tile.setValue(512)
    assert window.start_training()
    qtbot.waitUntil(lambda: window.training.isFinished(), timeout=120_000)
    qtbot.waitUntil(lambda: any("100.0 % tissue" in m for m in window.errors), timeout=5_000)
    assert window.error_box is not None and window.error_box.isVisible()
    assert "enlarge the region" in window.error_box.text()
    assert QApplication.activeModalWidget() is None, "the warning leaves Pause, Stop and Quit usable"


def test_a_damaged_autosave_is_kept_aside_and_never_overwritten(window: MainWindow, tmp_path: Path) -> None:
    import os
    import shutil

    slide = tmp_path / "copy.svs"
    shutil.copy(CMU, slide)
    window.open_slide(slide)
    window.session.apply("add", [], [Annotation.rectangle(10, 10, 500, 500)])
    path = window.session.autosave_path()
    os.utime(slide, (1, 1))  # a touch or a re-sync keeps the slide's annotations
    window.open_slide(slide)
    assert len(window.session.annotations) == 1 and window.session.autosave_path() == path
    damaged = path.read_text().replace('"coordinates":[', '"coordinates":[[[0,0],[NaN,1],[2,2],[0,0]],', 1)
    path.write_text(damaged)
    window.open_slide(slide)
    assert len(window.session.annotations) == 0 and window.error_box.isVisible()
    (aside,) = path.parent.glob("*.unreadable-*.geojson")
    assert aside.read_text() == damaged and str(aside) in window.error_box.text()
    window.session.apply("add", [], [Annotation.rectangle(0, 0, 50, 50)])  # the next edit autosaves afresh
    window.session.autosave.flush()
    assert aside.read_text() == damaged and len(read_geojson(path)) == 1


@pytest.mark.parametrize("content", ['{"tile": "big"}', '{"recent_slides": 5}', '{"learning_rate": null}',
                                     '{"steps": NaN}', "[1, 2", '"just a string"'])
def test_damaged_settings_start_the_app_with_defaults_and_say_so(qtbot, content: str) -> None:  # noqa: ANN001
    import os

    from gigapath_desktop.project.settings import AUTO, config_dir

    folder = config_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(content)
    win = MainWindow()
    assert win.settings.training.tile == AUTO and "could not be read" in win.error_box.text()
    (aside,) = folder.glob("settings.unreadable-*.json")
    assert aside.read_text() == content and not (folder / "settings.json").exists()
    win.settings.save()
    assert os.path.exists(folder / "settings.json") and aside.read_text() == content
    dispose_window(win)


def test_a_session_with_a_nameless_class_is_refused_without_changes(window: MainWindow, tmp_path: Path) -> None:
    import json

    window.open_slide(CMU)
    (tmp_path / "session.json").write_text(json.dumps({"slide": str(CMU), "classes": [{"color": [1, 2, 3]}]}))
    assert not window.open_session(tmp_path)
    assert "not a readable session" in window.error_box.text() and window.session.folder is None


def test_importing_a_thousand_polygons_autosaves_once_off_the_gui_thread(window: MainWindow, qtbot,  # noqa: ANN001
                                                                        tmp_path: Path) -> None:
    from gigapath_desktop.annotations import write_geojson

    window.open_slide(CMU)
    path = write_geojson([Annotation(box(x, y, x + 20, y + 20)) for x in range(0, 2000, 50) for y in range(0, 1250, 50)],
                         tmp_path / "many.geojson")
    before = window.session.autosave.writes
    assert window.import_geojson(path) and len(window.session.annotations) == 1000
    qtbot.waitUntil(lambda: window.session.autosave.writes == before + 1, timeout=10_000)
    window.session.autosave.flush()
    assert window.session.autosave.writes == before + 1, "1000 additions, one write"
    assert len(read_geojson(window.session.autosave_path())) == 1000


def test_opening_another_slide_while_tiles_and_a_job_read_the_first(window: MainWindow, qtbot) -> None:  # noqa: ANN001
    from conftest import TRITC

    for _ in range(3):
        window.open_slide(DAPI)
        window.viewer.zoom_to(1.0)  # 1:1: many full-resolution tile reads in flight
        window.detect_tissue()  # a background job reading the slide
        QApplication.processEvents()
        assert window.open_slide(TRITC)  # closes DAPI while its tiles and the job may still be reading it
        window.job.wait()
        QApplication.processEvents()
        assert len(window.session.annotations) == 0, "DAPI's detected tissue is not added to TRITC"
    assert window.session.slide is not None and window.session.slide.path == TRITC


def test_a_slide_is_opened_and_its_thumbnails_made_off_the_gui_thread(window: MainWindow,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from gigapath_desktop.slides.slide import Slide

    threads: list[str] = []
    thumbnail = Slide.thumbnail

    def recording(self: Slide, max_size: int = 1024):  # noqa: ANN202
        threads.append(threading.current_thread().name)
        return thumbnail(self, max_size)
    monkeypatch.setattr(Slide, "thumbnail", recording)
    assert window.open_slide(CMU)
    assert threads and all(name.startswith("open-slide") for name in threads), threads


def test_after_save_session_edits_go_to_the_session(window: MainWindow, tmp_path: Path) -> None:
    window.open_slide(CMU)
    window.session.apply("add", [], [Annotation.rectangle(10, 10, 500, 500)])
    assert window.save_session(tmp_path / "session")
    window.session.apply("add", [], [Annotation(box(600, 600, 700, 700))])
    window.session.autosave.flush()
    assert len(read_geojson(tmp_path / "session" / "annotations.geojson")) == 2
    assert window.open_session(tmp_path / "session") and len(window.session.annotations) == 2
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "session.json").write_text('{"slide": "/no/such/slide.svs"}')
    assert not window.open_session(tmp_path / "broken")
    assert window.session.folder == tmp_path / "session", "a session whose slide fails to open changes nothing"


def test_the_qt_binding_keeps_reference_counts(qapp) -> None:  # noqa: ANN001
    """PySide6 6.12.0 dropped a reference to None, True and False per emitted signal and per processEvents(): on
    CPython 3.11 the app died a few hundred training steps in ("deallocating None"). pyproject.toml excludes it."""
    from PySide6.QtCore import QObject, Signal

    class Emitter(QObject):
        event = Signal(object)

    received = []
    emitter = Emitter()
    emitter.event.connect(received.append)
    before = [sys.getrefcount(x) for x in (None, True, False)]
    for i in range(2000):
        emitter.event.emit(i)
        qapp.processEvents()
    after = [sys.getrefcount(x) for x in (None, True, False)]
    assert len(received) == 2000
    assert all(a - b > -200 for a, b in zip(after, before)), f"reference counts of None/True/False {before} -> {after}"
