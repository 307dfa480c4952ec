"""The main window: the composition of the session model, the viewer, the docks and the controllers.

State lives in the Qt-free `Session` (project/session.py); the widgets subscribe to its events and call its methods.
Every action has a plain method (open_slide, import_geojson, start_training, predict, export_mask ...) that the
menus call after asking for paths and that tests call directly; every error becomes a dialog saying what to do next.
"""
from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QByteArray, Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (QAbstractScrollArea, QDockWidget, QFrame, QLabel, QMainWindow, QMessageBox, QScrollArea,
                               QTableWidget, QTableWidgetItem, QWidget)

from gigapath_desktop.annotations import BACKGROUND, Annotation, read_geojson, write_geojson
from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.project import Project, SavedSession, Session
from gigapath_desktop.project.settings import Settings
from gigapath_desktop.slides import Slide
from gigapath_desktop.training.spec import is_tissue_model
from gigapath_desktop.ui.annotation_list import AnnotationList
from gigapath_desktop.ui.export_dialog import ExportChoice
from gigapath_desktop.ui.file_dialogs import FileDialogs
from gigapath_desktop.ui.jobs import JobRunner
from gigapath_desktop.ui.menus import build_menus, fill_classes
from gigapath_desktop.ui.overview import Overview
from gigapath_desktop.ui.prediction import Prediction
from gigapath_desktop.ui.project_controller import ProjectController
from gigapath_desktop.ui.remote_panel import RemotePanel
from gigapath_desktop.ui.results_panel import ResultsPanel
from gigapath_desktop.ui.slide_opener import SlideOpener
from gigapath_desktop.ui.training_controller import TrainingController
from gigapath_desktop.ui.training_panel import TrainingPanel
from gigapath_desktop.ui.viewer import SlideViewer
from gigapath_desktop.ui.workers import TrainingWorker, Worker, load_engine


class MainWindow(FileDialogs, QMainWindow):
    autosave_failed = Signal(str)  # from the autosave thread to the status bar
    engine_ready = Signal(str)  # TensorFlow loaded (in the background, so the window opens at once): the device

    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("GigaPath Desktop")
        self._fit_to_screen(1500, 950)
        self.setAcceptDrops(True)
        self.errors: list[str] = []
        self.error_box: QMessageBox | None = None
        self._project_shown: Project | None = None  # the project whose panel was shown when it opened
        self.settings, settings_problem = Settings.load()
        self.session = session = Session(self.settings.training)
        self.viewer = SlideViewer(session.annotations)
        self.setCentralWidget(self.viewer)
        self.annotation_list = AnnotationList(session)
        self.overview = Overview(self.viewer)
        self.properties = QTableWidget(0, 2)
        self.properties.setHorizontalHeaderLabels(["property", "value"])
        self.panel, self.results = TrainingPanel(), ResultsPanel()
        self.opener = SlideOpener(session, self.show_error)
        self.jobs = JobRunner(session, self.statusBar(), self.show_error)
        self.trainer = TrainingController(session, self.panel, self.show_error)
        self.prediction = Prediction(session, self.viewer, self.results, self.jobs, self.show_error,
                                     self.panel.train_region.currentData)
        self.remote = RemotePanel(session, self.settings, self.panel, self.show_error,
                                  self.panel.train_region.currentData, self.panel.val_region.currentData,
                                  self.prediction.show)
        self.projects = ProjectController(self, session, self.opener, self.prediction, self.jobs, self.show_error)
        self.docks = [self._dock("Overview", self.overview, Qt.DockWidgetArea.LeftDockWidgetArea),
                      self._dock("Annotations", self.annotation_list, Qt.DockWidgetArea.LeftDockWidgetArea),
                      self._dock("Properties", self.properties, Qt.DockWidgetArea.LeftDockWidgetArea),
                      self._dock("Results", self.results, Qt.DockWidgetArea.LeftDockWidgetArea),
                      self._dock("Training", self.panel, Qt.DockWidgetArea.RightDockWidgetArea),
                      self._dock("Remote", self.remote, Qt.DockWidgetArea.LeftDockWidgetArea),
                      self._dock("Project", self.projects.panel, Qt.DockWidgetArea.LeftDockWidgetArea),
                      self._dock("Batch", self.projects.batch_panel, Qt.DockWidgetArea.RightDockWidgetArea)]
        self.tabifyDockWidget(self.docks[2], self.docks[3])  # properties, results, remote share a tab: the viewer
        self.tabifyDockWidget(self.docks[3], self.docks[5])  # gets the room
        self.tabifyDockWidget(self.docks[1], self.docks[6])  # annotations and the project's slides
        self.tabifyDockWidget(self.docks[4], self.docks[7])  # training and batch prediction
        for dock in (self.docks[1], self.docks[3], self.docks[4]):
            dock.raise_()
        self.resizeDocks([self.docks[0], self.docks[4]], [260, 340], Qt.Orientation.Horizontal)
        self.menus = build_menus(self)
        self.restoreState(QByteArray.fromBase64(self.settings.window_state.encode()))  # ('' or damaged: as built)
        self.cursor_label, self.zoom_label = QLabel(), QLabel()
        for widget in (self.cursor_label, self.zoom_label):
            self.statusBar().addPermanentWidget(widget)
        self._connect()
        self._fill_recent()
        fill_classes(self.menus.class_box, session.classes)
        self.panel.device.addItem("loading TensorFlow ...")
        threading.Thread(target=self._load_engine, name="load-engine", daemon=True).start()
        if settings_problem:
            self.show_error(settings_problem, "Your settings (recent slides, training defaults) start afresh.")
        elif self.settings.last_project:
            self.projects.reopen(self.settings.last_project)

    def _fit_to_screen(self, width: int, height: int) -> None:
        """Open at `width` x `height`, or smaller where the screen's free area is (a 1280 x 800 laptop)."""
        screen = QGuiApplication.primaryScreen()
        free = screen.availableGeometry() if screen is not None else None
        if free is not None and free.width() > 0 and free.height() > 0:
            width, height = min(width, free.width()), min(height, free.height() - 40)  # the title bar
        self.resize(width, height)

    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title)
        if isinstance(widget, (QAbstractScrollArea, Overview)):  # (they scroll or scale themselves)
            dock.setWidget(widget)
        else:  # a panel taller than a laptop screen scrolls instead of holding the window up
            scroll = QScrollArea()
            scroll.setWidgetResizable(True)
            scroll.setFrameShape(QFrame.Shape.NoFrame)
            scroll.setWidget(widget)
            dock.setWidget(scroll)
        self.addDockWidget(area, dock)
        return dock

    def _connect(self) -> None:
        """Viewer and list gestures become session edits; session events update the widgets."""
        s, v = self.session, self.viewer
        v.shape_drawn.connect(lambda a: s.apply(f"draw {a.kind.value}", [], [a]))
        v.erased.connect(s.erase)
        v.moved.connect(s.move)
        v.selection_changed.connect(s.select)
        v.cursor_moved.connect(lambda x, y: self.cursor_label.setText(f"x {x:.0f}  y {y:.0f}"))
        v.view_changed.connect(self._on_view_changed)
        v.error.connect(self._show_status)
        self.annotation_list.activated.connect(self._centre_on)
        self.menus.class_box.currentIndexChanged.connect(self._on_class_chosen)
        self.results.export_clicked.connect(self.export_mask_dialog)
        s.events.selection.connect(v.select_ids)
        s.events.project.connect(self._on_project)
        s.events.slide.connect(self._on_slide)
        s.events.slide_mpp.connect(self._on_slide_mpp)
        s.events.classes.connect(self._on_classes)
        s.events.problem.connect(lambda m: self.show_error(m, "Nothing is lost: files that could not be read stay "
                                                              "where this message says."))
        s.events.autosave_failed.connect(self.autosave_failed.emit)  # (hops to the GUI thread)
        self.autosave_failed.connect(self._show_status)
        self.engine_ready.connect(self._on_engine_ready)

    # --- what tests and scripts reach for ---------------------------------------------------------------------------
    @property
    def training(self) -> TrainingWorker | None:
        return self.trainer.worker

    @property
    def job(self) -> Worker | None:
        return self.jobs.worker

    @property
    def tool_actions(self) -> dict:
        return self.menus.tool_actions

    # --- slides -------------------------------------------------------------------------------------------------------
    def open_slide(self, path: str | Path, restore_autosave: bool = True) -> bool:
        """Open `path` (a slide of the open project as the project's: `Session.set_slide`); keeps the current slide
        (and annotations) if it cannot be read."""
        return self.opener.open(path, restore_autosave)

    def _on_slide(self, slide: Slide) -> None:
        self.viewer.set_slide(slide, self.opener.backdrop)  # stops the previous slide's tile readers (it closes next)
        if self.opener.thumbnail is not None:
            self.overview.set_thumbnail(self.opener.thumbnail, slide.dimensions[0])
        self._fill_properties(slide)
        self.prediction.clear()
        self.results.show_export(None)  # (another slide's)
        self.settings.remember_slide(slide.path)
        self._save_settings()
        self._fill_recent()
        self.setWindowTitle(f"GigaPath Desktop — {slide.path.name}")

    def _on_slide_mpp(self, slide: Slide) -> None:
        self._fill_properties(slide)
        self.viewer.refresh_scale()
        self._on_view_changed()  # (the magnification)
        self.annotation_list.refresh()  # (the areas in µm²)
        self._show_status(f"{slide.path.name}: {slide.mpp[0]:g} µm/px" if slide.mpp else
                          f"{slide.path.name}: µm/px not recorded")

    def _fill_properties(self, s: Slide) -> None:
        given = " (given)" if s.given_mpp is not None else ""
        rows = [("file", str(s.path)), ("format", s.vendor), ("dimensions", f"{s.dimensions[0]} x {s.dimensions[1]}"),
                ("levels", ", ".join(f"{w}x{h}" for w, h in s.level_dimensions)),
                ("microns per pixel", f"{s.mpp[0]:.4f}{given}" if s.mpp else "not recorded")]
        rows += sorted(s.properties.items())
        self.properties.setRowCount(len(rows))
        for i, (k, v) in enumerate(rows):
            self.properties.setItem(i, 0, QTableWidgetItem(k))
            self.properties.setItem(i, 1, QTableWidgetItem(v))

    def _fill_recent(self) -> None:
        self.menus.recent.clear()
        for path in self.settings.recent_slides:
            act = self.menus.recent.addAction(path)
            act.triggered.connect(lambda _=False, p=path: self.open_slide(p))

    # --- annotations --------------------------------------------------------------------------------------------------
    def import_geojson(self, path: str | Path) -> bool:
        """Import all annotations of a GeoJSON file, or none (with an error dialog) if any is invalid; say what was
        left out (points, lines, detections) and what lies outside the slide."""
        notes: list[str] = []
        try:
            imported = read_geojson(path, report=notes.append)
        except GigaPathError as exc:
            self.show_error(str(exc), "Nothing was imported and your annotations are unchanged. Fix the file or "
                            "export it again from QuPath (File > Export objects as GeoJSON).")
            return False
        if not imported:
            self.show_error(f"{Path(path).name} holds no annotations to import", " ".join(
                notes or ["Only areas (polygons) of QuPath annotation objects become annotations."]))
            return False
        notes += self.session.import_annotations(f"import {Path(path).name}", imported)
        if notes:
            self.show_error(f"imported {len(imported)} annotation(s) from {Path(path).name}", "\n".join(notes))
        return True

    def export_geojson(self, path: str | Path) -> bool:
        try:
            write_geojson(self.session.annotations, Path(path))
        except (OSError, GigaPathError) as exc:
            self.show_error(f"cannot write {path}: {exc}", "Choose a writable folder with free space.")
            return False
        return True

    def detect_tissue(self) -> None:
        if self.session.slide is None:
            self.show_error("no slide is open", "Open a slide first (File > Open slide).")
            return
        from gigapath_desktop.annotations import detect_tissue

        slide = self.session.slide
        path = slide.path

        def work(progress: Callable[[int, int], None], cancel: Callable[[], bool]) -> list[Annotation]:
            with slide.reopen() as own:  # a handle of its own: the window may open another slide meanwhile
                return detect_tissue(own)

        self.jobs.run("Detecting tissue", work,
                      self.jobs.for_slide(path, lambda found: self.session.apply("detect tissue", [], found)))

    def _centre_on(self, annotation: Annotation | None) -> None:
        if annotation is not None:
            self.viewer.centre_on(*annotation.geometry.centroid.coords[0])

    def _on_classes(self, classes: list) -> None:
        fill_classes(self.menus.class_box, classes)
        self._on_class_chosen(self.menus.class_box.currentIndex())  # (the box kept its choice by name, silently)

    def _on_class_chosen(self, index: int) -> None:
        if 0 <= index < len(self.session.classes):
            self.viewer.current_class = self.session.classes[index]

    # --- training, prediction, export -------------------------------------------------------------------------------
    def start_training(self) -> bool:
        return self.trainer.start()

    def stop_training(self) -> None:
        self.trainer.stop()

    def open_run(self, folder: str | Path) -> bool:
        return self.trainer.open_run(Path(folder))

    def predict(self, kind: str = "selection") -> bool:
        return self.prediction.predict(kind)

    def export_mask(self, choice: ExportChoice) -> bool:
        return self.prediction.export(choice)

    # --- sessions -----------------------------------------------------------------------------------------------------
    def save_session(self, folder: str | Path) -> bool:
        try:
            self.session.save(Path(folder))
        except (OSError, GigaPathError) as exc:
            self.show_error(f"cannot save the session in {folder}: {exc}", "Choose a writable folder with free space.")
            return False
        return True

    def open_session(self, folder: str | Path) -> bool:
        """Open a saved session; a damaged session.json is refused as a whole (nothing changes, nothing is written)."""
        folder = Path(folder)
        try:
            saved = SavedSession.read(folder)
        except GigaPathError as exc:
            self.show_error(str(exc), "Choose a folder saved with File > Save session; nothing was changed.")
            return False
        if saved.slide and not self.opener.open(saved.slide, folder=folder):  # with the session's annotations
            return False  # (nothing changed)
        self.session.use_folder(folder, saved)
        if saved.model and Path(saved.model).exists():
            self.session.set_model(Path(saved.model))
        return True

    # --- errors and status --------------------------------------------------------------------------------------------
    def _on_project(self, project: Project | None) -> None:
        """A project opened shows its panel, and the toolbar a class of it to draw (the first after Background, unless
        the class chosen is one of its: Tissue labels are refused by a model of its classes); its changes (a class
        recoloured, slides added) leave both be."""
        if project is not None and project is not self._project_shown:
            self.docks[6].raise_()
            names = [c.name for c in project.classes]
            if not is_tissue_model(names) and self.menus.class_box.currentText() not in names:
                first = next(name for name in names if name != BACKGROUND.name)
                self.menus.class_box.setCurrentIndex(self.menus.class_box.findText(first))
        self._project_shown = project

    def show_error(self, message: str, what_next: str = "") -> None:
        """A dialog saying what went wrong and what to do next. Modeless: work in progress goes on and its controls
        stay usable (a training warning says "stop it (Stop)": the Stop button must answer while it shows)."""
        self.errors.append(message)
        self.error_box = QMessageBox(QMessageBox.Icon.Warning, "GigaPath Desktop", message, parent=self)
        self.error_box.setInformativeText(what_next)
        self.error_box.setWindowModality(Qt.WindowModality.NonModal)
        self.error_box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)  # (closed ones do not pile up)
        self.error_box.show()
        self.error_box.activateWindow()  # Return or Esc closes it, as a modal one's

    def _show_status(self, message: str) -> None:
        self.statusBar().showMessage(message, 10000)

    def _save_settings(self) -> None:
        """Settings are a convenience: failing to save them is said in the status bar, never fatal."""
        self.settings.training = self.session.training
        self.settings.window_state = bytes(self.saveState().toBase64().data()).decode()
        project = self.session.project
        self.settings.last_project = str(project.folder) if project is not None else ""
        try:
            self.settings.save()
        except (OSError, GigaPathError) as exc:
            self._show_status(f"settings not saved: {exc}")

    def _on_view_changed(self) -> None:
        scale, slide = self.viewer.scale_factor, self.session.slide
        text = f"zoom {scale * 100:.1f}%"
        if slide is not None and slide.mpp:
            objective = float(slide.properties.get("openslide.objective-power") or 10.0 / slide.mpp[0])
            text += f"  {objective * scale:.1f}x"
        self.zoom_label.setText(text)
        self.overview.update_rect()

    def _on_engine_ready(self, device: str) -> None:
        self.panel.device.clear()
        self.panel.device.addItem(device)
        if device == "CPU" and sys.platform == "darwin":  # the Metal plugin did not load: say so, visibly
            self.statusBar().showMessage("running on CPU: no Metal GPU visible to TensorFlow (see Help > About)")

    def _load_engine(self) -> None:
        load_engine()
        from gigapath_desktop.training.trainer import device_name

        device = device_name()
        try:
            self.engine_ready.emit(device)
        except RuntimeError:  # the window closed while TensorFlow loaded
            pass

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
        busy = [what for what, running in (("training (a checkpoint is saved)", self.trainer.running()),
                                            ("the batch prediction (the slides done are kept)",
                                             self.projects.batch.running()),
                                            (f"{self.jobs.title.lower()} (nothing is written)", self.jobs.running()))
                if running]
        if busy and QMessageBox.question(self, "Still working", f"Stop {' and '.join(busy)} and quit?") != \
                QMessageBox.StandardButton.Yes:
            event.ignore()
            return
        if self.trainer.running():
            self.trainer.worker.stop()
            self.trainer.worker.wait()
        self.jobs.cancel_and_wait()
        self.projects.batch.cancel_and_wait()
        self.remote.close_down()
        if self.viewer.loader is not None:
            self.viewer.loader.close()
        self.session.close()
        self.opener.close()
        self._save_settings()
        event.accept()
