"""The main window: viewer in the middle; overview, properties, annotations, training and results docks.

Every action has a plain method (open_slide, import_geojson, start_training, predict, export_mask ...) that the
menus call after asking for paths, and that tests call directly. Every error becomes a dialog saying what to do
next; annotations are autosaved after every change, so a crash or a failed import never loses them.
"""
from __future__ import annotations

import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PySide6.QtCore import QEventLoop, QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QColor, QImage, QKeySequence, QPainter, QPen, QPixmap, QUndoCommand, QUndoStack
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDockWidget,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
    QColorDialog,
)
from shapely.affinity import translate

from gigapath_desktop.annotations import (
    DEFAULT_CLASSES,
    Annotation,
    AnnotationClass,
    AnnotationSet,
    Role,
    read_geojson,
    write_geojson,
)
from gigapath_desktop.annotations.autosave import Autosave
from gigapath_desktop.annotations.model import as_area
from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.outputs import atomic_path
from gigapath_desktop.slides import Region, Slide, SlideSource, open_slide
from gigapath_desktop.training.events import WarningEvent
from gigapath_desktop.training.metrics import read_metrics
from gigapath_desktop.ui.settings import Settings, data_dir
from gigapath_desktop.ui.tiles import to_qimage
from gigapath_desktop.ui.training_panel import TrainingPanel
from gigapath_desktop.ui.viewer import SlideViewer, Tool
from gigapath_desktop.ui.workers import TrainingWorker, Worker

OVERLAY_MAX_SIDE = 4096


# --- undoable edits of the annotation model ----------------------------------------------------------------------
class Edit(QUndoCommand):
    """Replace a list of annotations by another (add: [] -> [a]; remove: [a] -> []; change: [a] -> [b])."""

    def __init__(self, annotations: AnnotationSet, text: str, before: list[Annotation], after: list[Annotation]) -> None:
        super().__init__(text)
        self.annotations, self.before, self.after = annotations, before, after

    def redo(self) -> None:
        self._swap(self.before, self.after)

    def undo(self) -> None:
        self._swap(self.after, self.before)

    def _swap(self, old: list[Annotation], new: list[Annotation]) -> None:
        pairs = min(len(old), len(new))
        for a, b in zip(old[:pairs], new[:pairs]):
            self.annotations.replace(a, b)
        for a in old[pairs:]:
            self.annotations.remove(a)
        self.annotations.extend(new[pairs:])


class Overview(QLabel):
    """The slide thumbnail with the visible rectangle; a click centres the viewer there."""

    def __init__(self, viewer: SlideViewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.setMinimumSize(200, 160)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._pixmap: QPixmap | None = None
        self._scale = 1.0

    def set_thumbnail(self, rgb: np.ndarray, slide_width: int) -> None:
        self._pixmap = QPixmap.fromImage(to_qimage(rgb))
        self._scale = rgb.shape[1] / slide_width
        self.update_rect()

    def update_rect(self) -> None:
        if self._pixmap is None:
            return
        canvas = self._pixmap.copy()
        r = self.viewer.visible_rect()
        painter = QPainter(canvas)
        painter.setPen(QPen(QColor(255, 60, 60), 2))
        painter.drawRect(QRectF(r.x() * self._scale, r.y() * self._scale, r.width() * self._scale, r.height() * self._scale))
        painter.end()
        self.setPixmap(canvas)

    def mousePressEvent(self, event) -> None:  # noqa: ANN001
        if self._pixmap is None:
            return
        offset = QPointF((self.width() - self._pixmap.width()) / 2, (self.height() - self._pixmap.height()) / 2)
        p = event.position() - offset
        self.viewer.centre_on(p.x() / self._scale, p.y() / self._scale)


class ExportDialog(QDialog):
    """Where to write the mask TIFF, and optionally a PNG preview and GeoJSON contours."""

    def __init__(self, parent: QWidget, stem: Path) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export mask")
        self.tiff = QLineEdit(str(stem.with_suffix(".mask.tif")))
        self.png = QLineEdit(str(stem.with_suffix(".preview.png")))
        self.geojson = QLineEdit(str(stem.with_suffix(".contours.geojson")))
        self.with_png, self.with_geojson = QCheckBox("PNG preview"), QCheckBox("GeoJSON contours")
        self.with_png.setChecked(True)
        self.with_geojson.setChecked(True)
        self.whole = QCheckBox("whole slide (else the selected / training region)")
        form = QFormLayout(self)
        form.addRow("Pyramidal TIFF", self.tiff)
        form.addRow(self.with_png, self.png)
        form.addRow(self.with_geojson, self.geojson)
        form.addRow(self.whole)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)


class MainWindow(QMainWindow):
    autosave_failed = Signal(str)  # from the autosave thread to the status bar
    engine_ready = Signal(str)  # TensorFlow loaded (in the background, so the window opens at once): the device

    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("GigaPath Desktop")
        self.resize(1500, 950)
        self.setAcceptDrops(True)
        self.settings, settings_problem = Settings.load()
        self.annotations = AnnotationSet()
        self.annotations.subscribe(self._on_annotations_changed)
        self.undo_stack = QUndoStack(self)
        self.slide: Slide | None = None
        self.session_dir: Path | None = None
        self.model_path: Path | None = None
        self.errors: list[str] = []
        self.error_box: QMessageBox | None = None
        self.training: TrainingWorker | None = None
        self.job: Worker | None = None
        self.classes: list[AnnotationClass] = list(DEFAULT_CLASSES)
        self.autosave = Autosave(self.annotations, on_error=self.autosave_failed.emit)
        self.autosave_failed.connect(self._show_status)
        self._opening = False
        self._background = ThreadPoolExecutor(1, thread_name_prefix="open-slide")

        self.viewer = SlideViewer(self.annotations)
        self.setCentralWidget(self.viewer)
        self.viewer.shape_drawn.connect(lambda a: self.apply_edit(f"draw {a.kind.value}", [], [a]))
        self.viewer.erased.connect(self.erase)
        self.viewer.moved.connect(self.move_annotation)
        self.viewer.cursor_moved.connect(self._show_cursor)
        self.viewer.view_changed.connect(self._on_view_changed)
        self.viewer.error.connect(lambda m: self.statusBar().showMessage(m, 5000))

        self.overview = Overview(self.viewer)
        self.properties = QTableWidget(0, 2)
        self.properties.setHorizontalHeaderLabels(["property", "value"])
        self.panel = TrainingPanel()
        self.panel.start_clicked.connect(self.start_training)
        self.panel.pause_clicked.connect(self.toggle_pause)
        self.panel.stop_clicked.connect(self.stop_training)
        self.panel.tile.setValue(self.settings.tile)
        self.panel.learning_rate.setValue(self.settings.learning_rate)
        self.panel.steps.setValue(self.settings.steps)
        self.panel.device.addItem("loading TensorFlow ...")
        self.engine_ready.connect(self._on_engine_ready)
        threading.Thread(target=self._load_engine, name="load-engine", daemon=True).start()
        self._dock("Overview", self.overview, Qt.DockWidgetArea.LeftDockWidgetArea)
        self._dock("Properties", self.properties, Qt.DockWidgetArea.LeftDockWidgetArea)
        self._dock("Results", self._results_widget(), Qt.DockWidgetArea.LeftDockWidgetArea)
        self._dock("Training", self.panel, Qt.DockWidgetArea.RightDockWidgetArea)
        self._build_actions()
        self.cursor_label, self.zoom_label = QLabel(), QLabel()
        self.job_progress = QProgressBar(maximumWidth=200, visible=False)
        for widget in (self.cursor_label, self.zoom_label, self.job_progress):
            self.statusBar().addPermanentWidget(widget)
        if settings_problem:
            self.show_error(settings_problem, "Your settings (recent slides, training defaults) start afresh.")

    # --- building -------------------------------------------------------------------------------------------------------
    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title)
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _results_widget(self) -> QWidget:
        widget = QWidget()
        layout = QVBoxLayout(widget)
        self.predict_buttons = {}
        for kind, label in (("selection", "Predict selected region"), ("visible", "Predict visible area"),
                            ("slide", "Predict whole slide")):
            button = QPushButton(label)
            button.clicked.connect(lambda _=False, k=kind: self.predict(k))
            layout.addWidget(button)
            self.predict_buttons[kind] = button
        self.overlay_toggle = QCheckBox("Show mask overlay")
        self.overlay_toggle.setChecked(True)
        self.overlay_toggle.toggled.connect(lambda on: self.viewer.overlay and self.viewer.overlay.setVisible(on))
        self.opacity = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=100, value=60)
        self.opacity.valueChanged.connect(lambda v: self.viewer.overlay and self.viewer.overlay.setOpacity(v / 100))
        export = QPushButton("Export mask…")
        export.clicked.connect(self._export_mask_dialog)
        self.model_label = QLabel("model: none (train or open a run)")
        self.model_label.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(QLabel("Opacity"))
        row.addWidget(self.opacity)
        layout.addWidget(self.overlay_toggle)
        layout.addLayout(row)
        layout.addWidget(export)
        layout.addWidget(self.model_label)
        layout.addStretch()
        return widget

    def _build_actions(self) -> None:
        def action(menu: Any, text: str, slot: Callable[[], Any], shortcut: Any = None) -> QAction:
            act = QAction(text, self)
            act.triggered.connect(lambda _=False: slot())
            if shortcut is not None:
                act.setShortcut(QKeySequence(shortcut))
            menu.addAction(act)
            return act

        file = self.menuBar().addMenu("&File")
        action(file, "Open slide…", self._open_slide_dialog, QKeySequence.StandardKey.Open)
        self.recent_menu = file.addMenu("Open recent")
        self._fill_recent()
        action(file, "Open session…", lambda: self._with_folder("Open session", self.open_session))
        action(file, "Save session…", lambda: self._with_folder("Save session in folder", self.save_session),
               QKeySequence.StandardKey.Save)
        file.addSeparator()
        action(file, "Import GeoJSON…", self._import_dialog)
        action(file, "Export GeoJSON…", self._export_geojson_dialog)
        action(file, "Open run…", lambda: self._with_folder("Open training run", self.open_run))
        action(file, "Export mask…", self._export_mask_dialog)
        action(file, "Export model…", self._export_model_dialog)
        file.addSeparator()
        action(file, "Quit", self.close, QKeySequence.StandardKey.Quit)

        edit = self.menuBar().addMenu("&Edit")
        undo = self.undo_stack.createUndoAction(self, "Undo")
        undo.setShortcut(QKeySequence.StandardKey.Undo)
        redo = self.undo_stack.createRedoAction(self, "Redo")
        redo.setShortcut(QKeySequence.StandardKey.Redo)
        edit.addActions([undo, redo])
        action(edit, "Delete selected", self.delete_selected, QKeySequence.StandardKey.Delete)
        action(edit, "New class…", self._new_class_dialog)

        view = self.menuBar().addMenu("&View")
        action(view, "Fit to window", self.viewer.fit, "Ctrl+0")
        action(view, "1:1", self.viewer.one_to_one, "Ctrl+1")

        tools = self.addToolBar("Tools")
        tools.setObjectName("tools")
        group = QActionGroup(self)
        self.tool_actions = {}
        for tool, key in ((Tool.PAN, "H"), (Tool.SELECT, "S"), (Tool.RECTANGLE, "R"), (Tool.POLYGON, "P"),
                          (Tool.BRUSH, "B"), (Tool.ERASER, "E")):
            act = QAction(tool.value.capitalize(), self, checkable=True)
            act.setShortcut(QKeySequence(key))
            act.triggered.connect(lambda _=False, t=tool: self.viewer.set_tool(t))
            group.addAction(act)
            tools.addAction(act)
            self.tool_actions[tool] = act
        self.tool_actions[Tool.PAN].setChecked(True)
        tools.addSeparator()
        self.class_box = QComboBox()
        self._fill_classes()
        self.class_box.currentIndexChanged.connect(self._on_class_chosen)
        tools.addWidget(QLabel(" Class "))
        tools.addWidget(self.class_box)
        tools.addSeparator()
        tools.addAction(undo)
        tools.addAction(redo)
        detect = action(self.menuBar().addMenu("&Tools"), "Detect tissue", self.detect_tissue, "Ctrl+D")
        tools.addAction(detect)

    # --- slides -----------------------------------------------------------------------------------------------------------
    def open_slide(self, path: str | Path, restore_autosave: bool = True) -> bool:
        """Open `path`; keeps the current slide (and annotations) if it cannot be read.

        The file is opened, checked and its thumbnails made on a background thread while the window keeps
        repainting (a slide on a slow network share takes seconds)."""
        if self._opening:
            self.show_error("a slide is still opening", "Wait for it, then open the next one.")
            return False
        self._opening = True
        try:
            slide, thumbnail, backdrop = self._off_gui_thread(lambda: _open_with_thumbnails(Path(path)))
        except GigaPathError as exc:
            self.show_error(str(exc), "Choose another file: OpenSlide formats (SVS, NDPI, MRXS, DICOM, tiled TIFF), PNG, JPEG or TIFF.")
            return False
        finally:
            self._opening = False
        previous, self.slide = self.slide, slide
        self.undo_stack.clear()
        problem = self.autosave.attach(self.autosave_path() if restore_autosave else None)
        if problem:
            self.show_error(f"the autosaved annotations could not be read: {problem}",
                            "Nothing is lost: the unreadable file stays where this message says.")
        self.viewer.set_slide(slide, backdrop)  # stops the previous slide's tile readers first ...
        if previous is not None:
            previous.close()  # ... so no read is in flight when it closes (background jobs hold their own handles)
        self.overview.set_thumbnail(thumbnail, slide.dimensions[0])
        self._fill_properties()
        self.viewer.set_overlay(None)
        self.settings.remember_slide(Path(path))
        self._save_settings()
        self._fill_recent()
        self.setWindowTitle(f"GigaPath Desktop — {slide.path.name}")
        self._refresh_regions()
        return True

    def _off_gui_thread(self, fn: Callable[[], Any]) -> Any:
        """fn() on a background thread; the GUI keeps handling events (repaints, not input) until it returns."""
        future = self._background.submit(fn)
        loop = QEventLoop()
        poll = QTimer(interval=20)
        poll.timeout.connect(lambda: future.done() and loop.quit())
        poll.start()
        if not future.done():
            loop.exec(QEventLoop.ProcessEventsFlag.ExcludeUserInputEvents)
        poll.stop()
        return future.result()

    def _fill_properties(self) -> None:
        assert self.slide is not None
        s = self.slide
        rows = [("file", str(s.path)), ("format", s.vendor), ("dimensions", f"{s.dimensions[0]} x {s.dimensions[1]}"),
                ("levels", ", ".join(f"{w}x{h}" for w, h in s.level_dimensions)),
                ("microns per pixel", f"{s.mpp[0]:.4f}" if s.mpp else "not recorded")]
        rows += sorted(s.properties.items())
        self.properties.setRowCount(len(rows))
        for i, (k, v) in enumerate(rows):
            self.properties.setItem(i, 0, QTableWidgetItem(k))
            self.properties.setItem(i, 1, QTableWidgetItem(v))

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for path in self.settings.recent_slides:
            act = self.recent_menu.addAction(path)
            act.triggered.connect(lambda _=False, p=path: self.open_slide(p))

    # --- annotations --------------------------------------------------------------------------------------------------
    def apply_edit(self, text: str, before: list[Annotation], after: list[Annotation]) -> None:
        self.undo_stack.push(Edit(self.annotations, text, before, after))

    def delete_selected(self) -> None:
        selected = self.viewer.selected_annotations()
        if selected:
            self.apply_edit("delete", selected, [])

    def move_annotation(self, annotation: Annotation, dx: float, dy: float) -> None:
        moved = Annotation(translate(annotation.geometry, dx, dy), annotation.cls, annotation.role, annotation.kind,
                           annotation.name, annotation.id)
        self.apply_edit("move", [annotation], [moved])

    def erase(self, stroke: Any) -> None:
        """Subtract a brush stroke from every label annotation it touches (one undo step)."""
        before, after = [], []
        for annotation in self.annotations.labels():
            if not annotation.geometry.intersects(stroke):
                continue
            rest = annotation.geometry.difference(stroke)
            before.append(annotation)
            if not rest.is_empty and rest.area > 0:
                try:
                    after.append(Annotation(as_area(rest), annotation.cls, annotation.role, annotation.kind,
                                            annotation.name, annotation.id))
                except GigaPathError:
                    pass
        if before:
            # Edit pairs before[i] with after[i]: trimmed ones first (replaced in place), erased-away ones last (removed)
            changed = {a.id for a in after}
            before.sort(key=lambda a: a.id not in changed)
            self.apply_edit("erase", before, after)

    def import_geojson(self, path: str | Path) -> bool:
        """Import all annotations of a GeoJSON file, or none (with an error dialog) if any is invalid."""
        try:
            imported = read_geojson(path)
        except GigaPathError as exc:
            self.show_error(str(exc), "Nothing was imported and your annotations are unchanged. Fix the file or "
                            "export it again from QuPath (File > Export objects as GeoJSON).")
            return False
        self.apply_edit(f"import {Path(path).name}", [], imported)
        return True

    def export_geojson(self, path: str | Path) -> bool:
        try:
            write_geojson(self.annotations, Path(path))
        except (OSError, GigaPathError) as exc:
            self.show_error(f"cannot write {path}: {exc}", "Choose a writable folder with free space.")
            return False
        return True

    def detect_tissue(self) -> None:
        if self.slide is None:
            self.show_error("no slide is open", "Open a slide first (File > Open slide).")
            return
        from gigapath_desktop.annotations import detect_tissue

        path = self.slide.path

        def work(progress: Callable[[int, int], None], cancel: Callable[[], bool]) -> list[Annotation]:
            with open_slide(path) as own:  # a handle of its own: the window may open another slide meanwhile
                return detect_tissue(own)

        self._run_job("Detecting tissue", work, self._for_slide(path, lambda found: self.apply_edit("detect tissue", [], found)))

    def autosave_path(self) -> Path:
        """Where this slide's annotations are kept: in the session, else under the slide's content fingerprint
        (which survives a touch, a re-sync or a move of the file)."""
        if self.session_dir is not None:
            return self.session_dir / "annotations.geojson"
        if self.slide is None:
            return data_dir() / "autosave" / "no-slide.geojson"
        path = data_dir() / "autosave" / f"{self.slide.fingerprint}.geojson"
        legacy = data_dir() / "autosave" / f"{self.slide.identity}.geojson"  # the key of earlier versions
        if not path.exists() and legacy.exists():
            legacy.replace(path)
        return path

    def _load_engine(self) -> None:
        from gigapath_desktop.training.trainer import device_name

        self.engine_ready.emit(device_name())

    def _on_engine_ready(self, device: str) -> None:
        self.panel.device.clear()
        self.panel.device.addItem(device)

    def _on_annotations_changed(self, what: str, annotation: Annotation) -> None:
        if annotation.role is Role.REGION:  # (saving is the Autosave's business)
            self._refresh_regions()

    def _for_slide(self, path: Path, then: Callable[[Any], None]) -> Callable[[Any], None]:
        """A job's result applies to the slide it was computed on: dropped (and said) if another slide is open."""
        def apply(result: Any) -> None:
            if self.slide is not None and self.slide.path == path:
                then(result)
            else:
                self._show_status(f"a result for {path.name} was dropped: another slide is open")
        return apply

    def _save_settings(self) -> None:
        """Settings are a convenience: failing to save them is said in the status bar, never fatal."""
        try:
            self.settings.save()
        except (OSError, GigaPathError) as exc:
            self._show_status(f"settings not saved: {exc}")

    def _show_status(self, message: str) -> None:
        self.statusBar().showMessage(message, 10000)

    def _fill_classes(self) -> None:
        self.class_box.clear()
        for cls in self.classes:
            pixmap = QPixmap(12, 12)
            pixmap.fill(QColor(*cls.color))
            self.class_box.addItem(pixmap, cls.name)

    def _on_class_chosen(self, index: int) -> None:
        if 0 <= index < len(self.classes):
            self.viewer.current_class = self.classes[index]

    def add_class(self, name: str, color: tuple[int, int, int]) -> None:
        self.classes.append(AnnotationClass(name, color))
        self._fill_classes()
        self.class_box.setCurrentIndex(len(self.classes) - 1)

    # --- training -----------------------------------------------------------------------------------------------------
    def _refresh_regions(self) -> None:
        """Keep the training/validation region choices in step with the region annotations."""
        regions = self.annotations.regions()
        for box, none_label in ((self.panel.train_region, None), (self.panel.val_region, "none")):
            current = box.currentData()
            box.blockSignals(True)
            box.clear()
            if none_label:
                box.addItem(none_label, None)
            for i, r in enumerate(regions, start=1):
                x0, y0, x1, y1 = (int(v) for v in r.bounds)
                box.addItem(f"{r.name or f'Region {i}'}  ({x0}, {y0}, {x1 - x0} x {y1 - y0})", r.id)
            box.setCurrentIndex(max(box.findData(current), 0))
            box.blockSignals(False)
        if self.panel.val_region.currentData() is None and len(regions) > 1:
            self.panel.val_region.setCurrentIndex(2)  # the second region validates by default

    def _region_of(self, annotation_id: str | None) -> Region | None:
        if annotation_id is None or self.slide is None:
            return None
        annotation = next((a for a in self.annotations if a.id == annotation_id), None)
        if annotation is None:
            return None
        w0, h0 = self.slide.dimensions
        x0, y0, x1, y1 = annotation.bounds
        x0, y0 = max(0, int(x0)), max(0, int(y0))
        x1, y1 = min(w0, int(np.ceil(x1))), min(h0, int(np.ceil(y1)))
        return Region(x0, y0, x1 - x0, y1 - y0)

    def start_training(self) -> bool:
        from gigapath_desktop.training.job import TrainJob
        from gigapath_desktop.training.config import TrainConfig

        if self.training is not None and self.training.isRunning():
            return False
        if self.slide is None:
            self.show_error("no slide is open", "Open a slide first (File > Open slide).")
            return False
        region = self._region_of(self.panel.train_region.currentData())
        if region is None:
            self.show_error("no training region", "Draw a rectangle (Rectangle tool, R) around the area to train on.")
            return False
        run_dir = (self.session_dir or data_dir()) / "runs" / time.strftime("%Y%m%d-%H%M%S")
        try:
            config = TrainConfig(steps=self.panel.steps.value(), learning_rate=self.panel.learning_rate.value(),
                                 tile=self.panel.tile.value(), checkpoint_every=10)
            run_dir.mkdir(parents=True, exist_ok=True)
            labels = self.annotations.labels()
            labels_path = write_geojson(labels, run_dir / "labels.geojson") if labels else None
        except (OSError, GigaPathError) as exc:
            self.show_error(f"cannot start training: {exc}", "Check the training settings and that the data folder "
                            "is writable, then start again.")
            return False
        job = TrainJob(self.slide.path, region, run_dir, config, labels_path,
                       self._region_of(self.panel.val_region.currentData()))
        self.settings.tile, self.settings.learning_rate, self.settings.steps = config.tile or 0, config.learning_rate, config.steps
        self._save_settings()
        self.training = TrainingWorker(job)
        self.training.event.connect(self.panel.on_event)
        self.training.event.connect(self._on_training_event)
        self.training.finished_training.connect(self._on_training_finished)
        self.training.failed.connect(lambda m: self.show_error(m, "Check the regions and labels, then start again."))
        self.training.finished.connect(lambda: self.panel.set_running(False))
        self.panel.begin(config.steps)
        self.panel.append_log(f"run folder {run_dir}; labels: {'drawn' if labels else 'automatic tissue detection'}")
        self.panel.set_running(True)
        self.training.start()
        return True

    def toggle_pause(self) -> None:
        trainer = self.training.trainer if self.training else None
        if trainer is None:
            return
        if trainer.paused:
            trainer.resume()
        else:
            trainer.pause()
        self.panel.set_running(True, paused=trainer.paused)
        self.panel.append_log("paused" if trainer.paused else "resumed")

    def stop_training(self) -> None:
        if self.training is not None:
            self.training.stop()
            self.panel.append_log("stopping after the current tile; a checkpoint is saved")

    def _on_training_event(self, event: object) -> None:
        if isinstance(event, WarningEvent):
            self.show_error(event.message, "Training goes on; stop it (Stop) to change the regions or labels.")

    def _on_training_finished(self, run_dir: Path) -> None:
        self.set_model(run_dir / "model.keras")
        self.panel.append_log(f"model saved to {run_dir / 'model.keras'}")

    def set_model(self, path: Path) -> None:
        self.model_path = Path(path)
        self.model_label.setText(f"model: {self.model_path}")

    def open_run(self, folder: str | Path) -> bool:
        folder = Path(folder)
        try:
            rows = read_metrics(folder / "metrics.csv")
        except (OSError, KeyError, ValueError) as exc:
            self.show_error(f"{folder}: not a training run ({exc})", "Choose a folder with metrics.csv and model.keras.")
            return False
        self.panel.load_metrics(rows)
        if (folder / "model.keras").exists():
            self.set_model(folder / "model.keras")
        return True

    # --- prediction and export ----------------------------------------------------------------------------------------
    def _prediction_region(self, kind: str) -> Region | None:
        assert self.slide is not None
        if kind == "slide":
            return Region(0, 0, *self.slide.dimensions)
        if kind == "visible":
            r = self.viewer.visible_rect().intersected(QRectF(0, 0, *self.slide.dimensions))
            return Region(int(r.x()), int(r.y()), max(1, int(r.width())), max(1, int(r.height())))
        selected = [a for a in self.viewer.selected_annotations() if a.role is Role.REGION]
        return self._region_of(selected[0].id if selected else self.panel.train_region.currentData())

    def predict(self, kind: str = "selection") -> bool:
        """Predict `kind` ('selection', 'visible', 'slide') in the background and show it as an overlay."""
        if self.slide is None or self.model_path is None:
            self.show_error("no slide or no model", "Open a slide, then train (Training panel) or open a run.")
            return False
        region = self._prediction_region(kind)
        if region is None:
            self.show_error("no region selected", "Select a region rectangle (Select tool) or draw one.")
            return False
        path, model_path = self.slide.path, self.model_path
        level = self.slide.best_level_for_downsample(max(region.width, region.height) / OVERLAY_MAX_SIDE)
        region = Region(region.x, region.y, region.width, region.height, level)

        def work(progress: Callable[[int, int], None], cancel: Callable[[], bool]) -> tuple[Region, np.ndarray]:
            from gigapath_desktop.inference import predict_array
            from gigapath_desktop.model import load_model

            with open_slide(path) as own:  # a handle of its own: the window may open another slide meanwhile
                return region, predict_array(load_model(model_path), SlideSource(own, region), 2048, progress, cancel)

        return self._run_job("Predicting", work, self._for_slide(path, self._show_prediction))

    def _show_prediction(self, result: tuple[Region, np.ndarray]) -> None:
        region, probability = result
        rgba = np.zeros((*probability.shape, 4), np.uint8)
        rgba[..., 0], rgba[..., 1] = 255, 210  # amber: distinct from every default class colour
        rgba[..., 3] = np.round(probability * 255).astype(np.uint8)
        h, w = probability.shape
        image = QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
        assert self.slide is not None  # (results for another slide are dropped before this)
        ds = self.slide.level_downsamples[region.level]  # pixel pitch, whatever clipping `level_rect` did at the edge
        self.viewer.set_overlay(image, region.x, region.y, ds)
        self.viewer.overlay.setOpacity(self.opacity.value() / 100)
        self.viewer.overlay.setVisible(self.overlay_toggle.isChecked())
        self.prediction = result

    def export_mask(self, tiff: Path, png: Path | None = None, geojson: Path | None = None, whole: bool = True) -> bool:
        """Predict and write the pyramidal TIFF (and PNG / GeoJSON) in the background."""
        if self.slide is None or self.model_path is None:
            self.show_error("no slide or no model", "Open a slide, then train (Training panel) or open a run.")
            return False
        from gigapath_desktop.inference import PredictJob, run_predict_job

        region = None if whole else self._prediction_region("selection")
        job = PredictJob(self.slide.path, self.model_path, Path(tiff), region=region, png=png, geojson=geojson)
        return self._run_job("Exporting mask", lambda progress, cancel: run_predict_job(job, progress, cancel),
                             lambda result: self.statusBar().showMessage(f"wrote {result.out}", 10000))

    # --- sessions -------------------------------------------------------------------------------------------------------
    def save_session(self, folder: str | Path) -> bool:
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            state = {"slide": str(self.slide.path.resolve()) if self.slide else None,
                     "model": str(self.model_path.resolve()) if self.model_path else None,
                     "settings": {"tile": self.panel.tile.value(), "learning_rate": self.panel.learning_rate.value(),
                                  "steps": self.panel.steps.value()},
                     "classes": [{"name": c.name, "color": list(c.color)} for c in self.classes]}
            self.autosave.move_to(folder / "annotations.geojson")  # from now on edits are saved in the session
            with atomic_path(folder / "session.json") as tmp:
                tmp.write_text(json.dumps(state, indent=1))
        except (OSError, GigaPathError) as exc:
            self.show_error(f"cannot save the session in {folder}: {exc}", "Choose a writable folder with free space.")
            return False
        self.session_dir = folder
        return True

    def open_session(self, folder: str | Path) -> bool:
        """Open a saved session; a damaged session.json is refused as a whole (nothing changes, nothing is written)."""
        folder = Path(folder)
        try:
            state = json.loads((folder / "session.json").read_text())
            classes = [AnnotationClass(str(c["name"]), tuple(c["color"])) for c in state.get("classes", [])]
            saved = {"steps": self.panel.steps.value(), "learning_rate": self.panel.learning_rate.value(),
                     "tile": self.panel.tile.value()}
            saved.update({k: v for k, v in dict(state.get("settings", {})).items() if k in saved})
            settings = Settings(**saved)  # checked like the settings file
            slide, model = state.get("slide"), state.get("model")
            if not all(v is None or isinstance(v, str) for v in (slide, model)):
                raise TypeError("slide and model must be paths")
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError, GigaPathError) as exc:
            self.show_error(f"{folder}: not a readable session ({type(exc).__name__}: {exc})",
                            "Choose a folder saved with File > Save session; nothing was changed.")
            return False
        previous, self.session_dir = self.session_dir, folder  # the slide opens with the session's annotations
        if slide and not self.open_slide(slide):
            self.session_dir = previous
            return False
        self.classes = list(DEFAULT_CLASSES) + [c for c in classes if c.name not in {d.name for d in DEFAULT_CLASSES}]
        self._fill_classes()
        self.panel.tile.setValue(settings.tile)
        self.panel.learning_rate.setValue(settings.learning_rate)
        self.panel.steps.setValue(settings.steps)
        if model and Path(model).exists():
            self.set_model(Path(model))
        return True

    # --- errors and background jobs -----------------------------------------------------------------------------------
    def show_error(self, message: str, what_next: str = "") -> None:
        """A dialog saying what went wrong and what to do next (non-blocking, so work in progress goes on)."""
        self.errors.append(message)
        self.error_box = QMessageBox(QMessageBox.Icon.Warning, "GigaPath Desktop", message, parent=self)
        self.error_box.setInformativeText(what_next)
        self.error_box.open()

    def _run_job(self, title: str, fn: Callable, on_success: Callable[[Any], None]) -> bool:
        if self.job is not None and self.job.isRunning():
            self.show_error("another task is still running", "Wait for it to finish.")
            return False
        self.job = Worker(fn)
        self.job_progress.setVisible(True)
        self.job_progress.setRange(0, 0)
        self.job.progressed.connect(lambda d, t: (self.job_progress.setRange(0, t), self.job_progress.setValue(d)))
        self.job.succeeded.connect(on_success)
        self.job.failed.connect(lambda m: self.show_error(f"{title}: {m}", "Nothing was changed."))
        self.job.finished.connect(lambda: self.job_progress.setVisible(False))
        self.job.finished.connect(lambda: self.statusBar().showMessage(f"{title}: done", 5000))
        self.statusBar().showMessage(f"{title}…")
        self.job.start()
        return True

    # --- status -----------------------------------------------------------------------------------------------------------
    def _show_cursor(self, x: float, y: float) -> None:
        self.cursor_label.setText(f"x {x:.0f}  y {y:.0f}")

    def _on_view_changed(self) -> None:
        scale = self.viewer.scale_factor
        text = f"zoom {scale * 100:.1f}%"
        if self.slide is not None and self.slide.mpp:
            objective = float(self.slide.properties.get("openslide.objective-power") or 10.0 / self.slide.mpp[0])
            text += f"  {objective * scale:.1f}x"
        self.zoom_label.setText(text)
        self.overview.update_rect()

    # --- dialogs (thin wrappers) ------------------------------------------------------------------------------------
    def _ask_open(self, title: str, filters: str) -> str:
        return QFileDialog.getOpenFileName(self, title, self.settings.last_folder, filters)[0]

    def _open_slide_dialog(self) -> None:
        path = self._ask_open("Open slide", "Slides (*.svs *.ndpi *.mrxs *.tif *.tiff *.scn *.vms *.vmu *.bif *.dcm "
                                            "*.svslide *.png *.jpg *.jpeg);;All files (*)")
        if path:
            self.open_slide(path)

    def _import_dialog(self) -> None:
        path = self._ask_open("Import GeoJSON", "GeoJSON (*.geojson *.json)")
        if path:
            self.import_geojson(path)

    def _export_geojson_dialog(self) -> None:
        path = QFileDialog.getSaveFileName(self, "Export GeoJSON", "annotations.geojson", "GeoJSON (*.geojson)")[0]
        if path:
            self.export_geojson(path)

    def _with_folder(self, title: str, then: Callable[[str], Any]) -> None:
        folder = QFileDialog.getExistingDirectory(self, title, self.settings.last_folder)
        if folder:
            then(folder)

    def _export_mask_dialog(self) -> None:
        if self.slide is None:
            self.show_error("no slide is open", "Open a slide first.")
            return
        dialog = ExportDialog(self, Path(self.settings.last_folder or ".") / self.slide.path.stem)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.export_mask(Path(dialog.tiff.text()), Path(dialog.png.text()) if dialog.with_png.isChecked() else None,
                             Path(dialog.geojson.text()) if dialog.with_geojson.isChecked() else None,
                             dialog.whole.isChecked())

    def _export_model_dialog(self) -> None:
        if self.model_path is None:
            self.show_error("no model yet", "Train a model or open a run first.")
            return
        path = QFileDialog.getSaveFileName(self, "Export model", "model.keras", "Keras model (*.keras)")[0]
        if path:
            try:
                shutil.copyfile(self.model_path, path)
            except OSError as exc:
                self.show_error(f"cannot write {path}: {exc}", "Choose a writable folder.")

    def _new_class_dialog(self) -> None:
        name, ok = QInputDialog.getText(self, "New class", "Class name")
        if ok and name:
            color = QColorDialog.getColor(QColor(200, 80, 80), self)
            if color.isValid():
                self.add_class(name, (color.red(), color.green(), color.blue()))

    # --- window ---------------------------------------------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:  # noqa: ANN001
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: ANN001
        for url in event.mimeData().urls():
            path = Path(url.toLocalFile())
            if path.suffix.lower() in (".geojson", ".json"):
                self.import_geojson(path)
            else:
                self.open_slide(path)

    def closeEvent(self, event) -> None:  # noqa: ANN001
        if self.training is not None and self.training.isRunning():
            answer = QMessageBox.question(self, "Training is running",
                                          "Stop training (a checkpoint is saved) and quit?")
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
            self.training.stop()
            self.training.wait()
        if self.job is not None and self.job.isRunning():
            self.job.cancel()
            self.job.wait()
        if self.viewer.loader is not None:
            self.viewer.loader.close()
        self.autosave.close()
        self._background.shutdown()
        self._save_settings()
        event.accept()


def _open_with_thumbnails(path: Path) -> tuple[Slide, np.ndarray, np.ndarray]:
    """The slide (checked readable), its overview thumbnail and the viewer's backdrop: the slow part of opening."""
    slide = open_slide(path)
    try:
        slide.fingerprint  # noqa: B018  (read here, off the GUI thread; cached on the slide)
        return slide, slide.thumbnail(240), slide.thumbnail(1024)
    except BaseException:
        slide.close()
        raise
