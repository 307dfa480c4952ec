"""The main window's dialogs: thin wrappers that ask (a file, a folder, export settings), then call the window's
plain method (open_slide, import_geojson, export_mask ...), which tests and scripts call directly."""
from __future__ import annotations

import shutil
import zipfile
from pathlib import Path
from typing import Any, Callable

from PySide6.QtWidgets import QDialog, QFileDialog, QInputDialog

from gigapath_desktop.annotations import AnnotationClass
from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.model.info import read_info
from gigapath_desktop.mpp import MPP_RANGE
from gigapath_desktop.outputs import atomic_path
from gigapath_desktop.project.settings import documents_dir, exports_dir
from gigapath_desktop.resources import ROOT as RESOURCES
from gigapath_desktop.ui.dialogs import SLIDE_OR_IMAGE_FILES, ask_colour, ask_new_class
from gigapath_desktop.ui.export_dialog import ExportDialog


class FileDialogs:
    """Mixed into MainWindow (its settings, session, menus, trainer and plain methods)."""

    def open_slide_dialog(self) -> None:
        path = QFileDialog.getOpenFileName(self, "Open slide", self.open_start(), SLIDE_OR_IMAGE_FILES)[0]
        if path:
            self.open_slide(path)

    def import_dialog(self) -> None:
        path = QFileDialog.getOpenFileName(self, "Import GeoJSON", self.open_start(), "GeoJSON (*.geojson *.json)")[0]
        if path:
            self.import_geojson(path)

    def export_geojson_dialog(self) -> None:
        path = QFileDialog.getSaveFileName(self, "Export GeoJSON", str(self._exports() / "annotations.geojson"),
                                           "GeoJSON (*.geojson)")[0]
        if path:
            self.export_geojson(path)

    def with_folder(self, title: str, then: Callable[[str], Any], start: str | None = None) -> None:
        folder = QFileDialog.getExistingDirectory(self, title, start or self.open_start())
        if folder:
            then(folder)

    def save_start(self) -> str:
        """Where a save dialog starts: the session's own folder, else the user's GigaPath Desktop documents folder."""
        return str(_made(self.session.folder or documents_dir()))

    def open_start(self) -> str:
        """Where an open dialog starts: the folder of the last slide opened, unless that lies inside the app (the
        bundled demo slide's), else the user's GigaPath Desktop documents folder."""
        last = Path(self.settings.last_folder) if self.settings.last_folder else None
        inside_app = last is not None and last.resolve().is_relative_to(RESOURCES.resolve())
        return str(last) if last is not None and last.is_dir() and not inside_app else str(_made(documents_dir()))

    def open_run_dialog(self) -> None:
        self.with_folder("Open training run", self.open_run, str(self.trainer.runs_dir()))

    def export_dialog(self) -> ExportDialog | None:
        slide = self.session.slide
        if slide is None:
            self.show_error("no slide is open", "Open a slide first.")
            return None
        whole = self.prediction.shows_whole_slide() or self.prediction.region("selection") is None
        return ExportDialog(self, self._exports(), slide.path.stem, max(slide.dimensions), whole,
                            self._no_cleanup())

    def _no_cleanup(self) -> str:
        """Why the tissue mask's clean-up does not apply to this export ('' when it does)."""
        model = self.session.model_path
        try:
            info = read_info(model) if model is not None and model.is_file() else None
        except (OSError, zipfile.BadZipFile, GigaPathError):
            info = None  # (the export itself says what is wrong with the model)
        if info is not None and len(info.classes.classes) > 2:
            return "the model tells classes apart: its mask holds class indices, no holes or specks are cleaned"
        if self.session.slide is not None and self.session.slide.mpp is None:
            return "the slide records no µm/px, so areas in µm² cannot be measured on it"
        return ""

    def export_mask_dialog(self) -> None:
        if self.session.slide is not None and self.session.model_path is None:
            self.show_error("no model yet", "Train a model (Training panel) or open a run (File > Open run…) first.")
            return
        dialog = self.export_dialog()
        if dialog is not None and dialog.exec() == QDialog.DialogCode.Accepted:
            self.export_mask(dialog.choice())

    def export_model_dialog(self) -> None:
        if self.session.model_path is None:
            self.show_error("no model yet", "Train a model or open a run first.")
            return
        path = QFileDialog.getSaveFileName(self, "Export model", str(self._exports() / "model.keras"),
                                           "Keras model (*.keras)")[0]
        if path:
            try:
                with atomic_path(path) as tmp:  # a failed copy never leaves half a model under the name
                    shutil.copyfile(self.session.model_path, tmp)
            except (OSError, GigaPathError) as exc:
                self.show_error(f"cannot write {path}: {exc}", "Choose a writable folder.")

    def new_class_dialog(self) -> None:
        answer = ask_new_class(self, [c.color for c in self.session.classes])
        if answer:
            name = answer[0]
            existed = any(c.name == name for c in self.session.classes)
            added = self._class_edit(lambda: self.session.add_class(*answer), name,
                                     "Choose that class in the toolbar, or give the new class another name.")
            if added and existed:
                self._show_status(f"the class {name} exists already: it takes the colour chosen")

    def class_colour_dialog(self) -> None:
        """Another colour for the class chosen in the toolbar: its labels here, in the project, in later models."""
        cls = self.viewer.current_class
        color = ask_colour(self, f"Colour of {cls.name}", cls.color) if cls else None
        if color:
            self.session.recolour_class(AnnotationClass(cls.name, color))

    def rename_class_dialog(self) -> None:
        """Another name for the class chosen in the toolbar: its labels here and on the project's other slides."""
        cls = self.viewer.current_class
        if cls is None:
            return
        name, ok = QInputDialog.getText(self, "Rename class", f"New name of {cls.name}", text=cls.name)
        if ok:
            self._class_edit(lambda: self.session.rename_class(cls.name, name), name.strip())

    def remove_class(self) -> None:
        """Take the class chosen in the toolbar off the list (refused while labels are of it)."""
        cls = self.viewer.current_class
        if cls is not None:
            self._class_edit(lambda: self.session.remove_class(cls.name), None)

    def slide_mpp_dialog(self) -> None:
        """The open project slide's µm per pixel, for a slide whose file records none (or a wrong one)."""
        slide = self.session.slide
        if slide is None:
            return
        recorded = f"{slide.recorded_mpp[0]:g}" if slide.recorded_mpp else "none"
        mpp, ok = QInputDialog.getDouble(
            self, "Slide resolution", f"µm per pixel of {slide.path.name} (0: what the file records, {recorded}):",
            slide.given_mpp or 0.0, 0.0, MPP_RANGE[1], 4)
        if ok:
            self.set_slide_mpp(mpp or None)

    def set_slide_mpp(self, mpp: float | None) -> bool:
        """Give the open project slide its µm/px (None: what its file records); a refusal is said in a dialog."""
        try:
            self.session.set_slide_mpp(mpp)
        except GigaPathError as exc:
            self.show_error(str(exc), "Nothing was changed.")
            return False
        return True

    def _class_edit(self, change: Callable[[], object], chosen: str | None,
                    what_next: str = "Nothing was changed.") -> bool:
        """Make a change to the class list; a refusal is said in a dialog. `chosen`: the class the toolbar shows
        after it (None: as it is)."""
        try:
            change()
        except GigaPathError as exc:
            self.show_error(str(exc), what_next)
            return False
        if chosen is not None:
            self.menus.class_box.setCurrentIndex(self.menus.class_box.findText(chosen))
        return True

    def _exports(self) -> Path:
        """The slide's exports folder (made now, or a dialog would start in the working directory)."""
        slide = self.session.slide
        if slide is None:
            return _made(documents_dir())
        if self.session.on_project_slide():  # the project's, by the slide's name (not in its hidden per-slide folder)
            return _made(self.session.project.folder / "exports" / slide.path.stem)
        return _made(exports_dir(slide.path, self.session.folder))


def _made(folder: Path) -> Path:
    """`folder`, made if it can be (else the dialog starts where Qt chooses; the user picks a folder anyway)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass
    return folder
