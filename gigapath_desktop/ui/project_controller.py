"""Projects from the window: create, open, add slides, relink, open a project slide with its own annotations, and
show a batch result over its slide. The project itself is the Qt-free `Project` the session holds."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtWidgets import QFileDialog, QWidget

from gigapath_desktop.annotations import BACKGROUND, DEFAULT_CLASSES
from gigapath_desktop.errors import GigaPathError, os_error_text
from gigapath_desktop.project import Project, Session
from gigapath_desktop.project.manifest import AddReport
from gigapath_desktop.ui.batch_panel import BatchController, BatchPanel
from gigapath_desktop.ui.dialogs import SLIDE_FILES
from gigapath_desktop.ui.jobs import JobRunner, Report
from gigapath_desktop.ui.prediction import OVERLAY_MAX_SIDE, Prediction
from gigapath_desktop.ui.project_panel import ProjectPanel
from gigapath_desktop.ui.slide_opener import SlideOpener
from gigapath_desktop.ui.workers import load_engine

if TYPE_CHECKING:
    from gigapath_desktop.inference.batch import BatchRow

class ProjectController:
    def __init__(self, parent: QWidget, session: Session, opener: SlideOpener, prediction: Prediction,
                 jobs: JobRunner, report: Report) -> None:
        self.parent, self.session, self.opener, self.prediction = parent, session, opener, prediction
        self.jobs, self.report = jobs, report
        self.panel = ProjectPanel(session)
        self.batch_panel = BatchPanel()
        self.batch = BatchController(session, self.batch_panel, report)
        self.panel.slide_chosen.connect(self.open_slide)
        self.panel.add_clicked.connect(self.add_dialog)
        self.panel.add_folder_clicked.connect(self.add_folder_dialog)
        self.batch_panel.row_activated.connect(self.show_result)

    # --- plain methods (menus call them after asking; tests call them directly) ---------------------------------------
    def create(self, folder: str | Path) -> bool:
        """A new project with the classes the user added (after Background, what unlabelled area is)."""
        added = [c for c in self.session.classes if c not in DEFAULT_CLASSES]
        return self._use(lambda: Project.create(folder, [BACKGROUND, *added] if added else []),
                         "Choose an empty or new folder.")

    def open(self, folder: str | Path) -> bool:
        return self._use(lambda: Project.open(folder), "Choose a folder made with File > New project… (it holds "
                         "project.json); nothing was changed.")

    def reopen(self, folder: str | Path) -> None:
        """The project open when the app last closed; one that is gone or unreadable is said in the status bar."""
        try:
            self.session.use_project(Project.open(folder))
        except (GigaPathError, OSError) as exc:
            self.parent.statusBar().showMessage(f"the last project was not reopened: {exc}", 10000)

    def add(self, paths: list[str | Path]) -> bool:
        """Add slides (and folders' slides) in the background, with progress; a stop adds none."""
        project = self.session.project
        if not self._has_project():
            return False

        def added(report: AddReport) -> None:
            self.session.events.project.emit(project)
            if report.skipped:
                self.report("some files were not added:\n" + "\n".join(f"{p.name}: {why}" for p, why in report.skipped),
                            "The other slides were added.")

        return self.jobs.run("Adding slides", lambda progress, cancel: _checked(project.add, paths, progress, cancel),
                             added)

    def relink(self, folder: str | Path) -> bool:
        """Find the project's missing slides (the same content) in `folder` and below, in the background."""
        project = self.session.project
        if project is None:
            return False

        def relinked(_: object) -> None:
            self.session.events.project.emit(project)
            still = project.missing()
            if still:
                self.report(f"still missing: {', '.join(s.name for s in still)}", "Relink from the folder that holds "
                            "them.")

        return self.jobs.run("Relinking slides", lambda progress, cancel: _checked(project.relink_from, folder),
                             relinked)

    def open_slide(self, slide_id: str) -> bool:
        """Open a project slide with its own annotations (kept in the project)."""
        project = self.session.project
        entry = project.slide(slide_id) if project else None
        if entry is None:
            return False
        if not entry.path.is_file():
            self.report(f"{entry.name} is not at {entry.path} any more", "File > Relink project slides… and choose "
                        "the folder it moved to.")
            return False
        return self.opener.open(entry.path, folder=project.slide_folder(entry.id))

    def show_result(self, row: BatchRow) -> bool:
        """Open a batch result's slide, then overlay its mask (read in the background)."""
        if not row.outputs or not row.outputs[0].is_file():
            self.report(f"{row.slide.name}: no mask ({row.status}: {row.message})", "Run the batch again.")
            return False
        entry = self.session.project.slide_at(row.slide) if self.session.project else None
        if not (self.open_slide(entry.id) if entry else self.opener.open(row.slide)):
            return False

        def work(progress: Callable[[int, int], None], cancel: Callable[[], bool]) -> tuple:
            load_engine()
            from gigapath_desktop.inference.batch import mask_overview

            return mask_overview(row.outputs[0], OVERLAY_MAX_SIDE)

        def show(result: tuple) -> None:
            downsample, values, classes = result
            self.prediction.show(0, 0, downsample, values, classes if values.ndim == 3 else None)

        return self.jobs.run("Reading the mask", work, self.jobs.for_slide(self.session.slide.path, show))

    # --- dialogs ------------------------------------------------------------------------------------------------------
    def create_dialog(self) -> None:
        self.parent.with_folder("New project: choose an empty folder", self.create)

    def open_dialog(self) -> None:
        self.parent.with_folder("Open project folder", self.open)

    def _has_project(self) -> bool:
        if self.session.project is None:
            self.report("no project is open", "Open or create a project first (File menu).")
        return self.session.project is not None

    def add_dialog(self) -> None:
        if not self._has_project():  # said before any file is chosen for nothing
            return
        paths = QFileDialog.getOpenFileNames(self.parent, "Add slides to the project", self.parent.open_start(),
                                             SLIDE_FILES)[0]
        if paths:
            self.add(paths)

    def add_folder_dialog(self) -> None:
        if not self._has_project():
            return
        self.parent.with_folder("Add the slides of a folder to the project", lambda folder: self.add([folder]))

    def relink_dialog(self) -> None:
        self.parent.with_folder("Relink: the folder the missing slides moved to", self.relink)

    def _use(self, make: Callable[[], Project], what_next: str) -> bool:
        try:
            project = make()
        except (GigaPathError, OSError) as exc:
            self.report(str(exc), what_next)
            return False
        self.session.use_project(project)
        slide = self.session.slide
        entry = project.slide(slide.fingerprint) if slide is not None and not self.session.on_project_slide() else None
        if entry is not None:  # the open slide is one of the project's: its annotations are the project's
            self.open_slide(entry.id)
        return True


def _checked(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` on a worker, a file system refusal (permissions, a vanished share) said as a GigaPathError."""
    try:
        return fn(*args)
    except OSError as exc:
        raise GigaPathError(os_error_text(exc)) from None
