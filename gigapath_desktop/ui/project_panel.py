"""The Project dock: the open project's slides with their thumbnails and annotation counts, as QuPath lists them.
Activating a slide opens it with its own annotations; the list follows the session's project and slide events."""
from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget

from gigapath_desktop.annotations import Annotation
from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.project import Project, Session
from gigapath_desktop.slides import Slide

ID = Qt.ItemDataRole.UserRole


class ProjectPanel(QWidget):
    slide_chosen = Signal(str)  # the id of the project slide to open
    add_clicked = Signal()
    add_folder_clicked = Signal()

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self._current: QListWidgetItem | None = None  # the open slide's row
        self._current_for: Slide | None = None  # the slide that row was found for
        self.title = QLabel()
        self.title.setWordWrap(True)
        self.slides = QListWidget()
        self.slides.setIconSize(QSize(72, 72))
        self.slides.itemActivated.connect(lambda item: self.slide_chosen.emit(item.data(ID)))
        self.slides.itemDoubleClicked.connect(lambda item: self.slide_chosen.emit(item.data(ID)))
        self.add_button = QPushButton("Add slides…", toolTip="Add slide files to the project")
        self.add_button.clicked.connect(self.add_clicked)
        self.add_folder_button = QPushButton("Add folder…", toolTip="Add every slide file of a folder")
        self.add_folder_button.clicked.connect(self.add_folder_clicked)
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.add_folder_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.slides)
        layout.addLayout(buttons)
        session.events.project.connect(self.refill)
        session.events.slide.connect(self._on_slide)
        session.annotations.subscribe(self._on_annotation)
        self.refill(None)

    def refill(self, project: Project | None) -> None:
        """One row per slide: thumbnail, name, annotation count (or that its file is missing)."""
        self._current = None
        self.slides.clear()
        self.add_button.setEnabled(project is not None)
        self.add_folder_button.setEnabled(project is not None)
        if project is None:
            self.title.setText("No project open: File > New project… or Open project…")
            return
        self.title.setText(f"{project.folder.name}: {len(project.slides)} slides; classes: {project.classes_text()}")
        for entry in project.slides:
            item = QListWidgetItem(QIcon(QPixmap(str(project.thumbnail_path(entry.id)))), "")
            item.setData(ID, entry.id)
            item.setToolTip(str(entry.path))
            self.slides.addItem(item)
            self._describe(item, self._count(project, entry.id))
        self._mark_current()

    def count(self, slide_id: str) -> int | None:
        """The annotation count the list shows for a slide (None if it is not listed)."""
        item = self._item(slide_id)
        return None if item is None else item.data(ID + 1)

    def _describe(self, item: QListWidgetItem, count: int | None) -> None:
        project = self.session.project
        entry = project.slide(item.data(ID)) if project else None
        if entry is None:
            return
        state = "file missing: File > Relink project slides…" if not entry.path.is_file() else (
            "annotations unreadable" if count is None else f"{count} annotations")
        item.setData(ID + 1, count)
        item.setText(f"{entry.name}\n{entry.dimensions[0]} x {entry.dimensions[1]}  ·  {state}")

    def _count(self, project: Project, slide_id: str) -> int | None:
        try:
            return len(project.annotations(slide_id))
        except GigaPathError:
            return None

    def _item(self, slide_id: str) -> QListWidgetItem | None:
        for row in range(self.slides.count()):
            if self.slides.item(row).data(ID) == slide_id:
                return self.slides.item(row)
        return None

    def _current_id(self) -> str | None:
        slide, project = self.session.slide, self.session.project
        entry = project.slide(slide.fingerprint) if slide is not None and project is not None else None
        return entry.id if entry else None

    def _mark_current(self) -> None:
        self._current, self._current_for = self._item(self._current_id() or ""), self.session.slide
        self.slides.setCurrentItem(self._current) if self._current else self.slides.clearSelection()

    def _on_slide(self, slide: Slide) -> None:
        self._mark_current()

    def _on_annotation(self, what: str, annotation: Annotation) -> None:
        if self._current_for is not self.session.slide:  # a new slide's annotations load before its `slide` event
            self._mark_current()
        if self._current is not None:  # the open slide's count follows its edits
            self._describe(self._current, len(self.session.annotations))
