"""The annotation list, as in QuPath: name, class, role, area and vertices of every annotation. A click selects
(and the window centres on it), a double-click edits name, class and role; Edit > Delete removes every selected row.

It only shows the session model and calls its methods; edits come back to it as model events like any other.
"""
from __future__ import annotations

import shapely
from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QColor, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHeaderView,
    QLineEdit,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from gigapath_desktop.annotations import Annotation, Role
from gigapath_desktop.project import Session

COLUMNS = ("Name", "Class", "Role", "Area", "Vertices")


def area_text(annotation: Annotation, mpp: tuple[float, float] | None) -> str:
    area = annotation.geometry.area
    if mpp is None:
        return f"{area:,.0f} px²"
    um2 = area * mpp[0] * mpp[1]
    return f"{um2 / 1e6:,.3f} mm²" if um2 >= 1e6 else f"{um2:,.0f} µm²"


class AnnotationList(QTableWidget):
    activated = Signal(object)  # the Annotation clicked: the window centres on it

    def __init__(self, session: Session) -> None:
        super().__init__(0, len(COLUMNS))
        self.session = session
        self.setHorizontalHeaderLabels(COLUMNS)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setStretchLastSection(True)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().hide()
        self._ids: list[str] = []
        self._syncing = False
        self._refresh = QTimer(self, singleShot=True, interval=0, timeout=self.refresh)  # one rebuild per burst
        session.annotations.subscribe(lambda what, annotation: self._refresh.start())
        session.events.selection.connect(self._show_selection)
        self.itemSelectionChanged.connect(self._on_rows_selected)
        self.cellClicked.connect(lambda row, _: self.activated.emit(self.session.annotations.find(self._ids[row])))
        self.cellDoubleClicked.connect(lambda row, _: self.edit_annotation(self._ids[row]))

    def refresh(self) -> None:
        annotations = list(self.session.annotations)
        mpp = self.session.slide.mpp if self.session.slide is not None else None
        self._syncing = True
        self.setRowCount(len(annotations))
        self._ids = [a.id for a in annotations]
        titles = self.session.annotations.region_titles()
        for row, a in enumerate(annotations):
            swatch = QPixmap(10, 10)
            swatch.fill(QColor(*a.cls.color))
            cells = [QTableWidgetItem(titles.get(a.id) or a.name or "—"), QTableWidgetItem(swatch, a.cls.name), QTableWidgetItem(a.role.title),
                     QTableWidgetItem(area_text(a, mpp)), QTableWidgetItem(str(shapely.get_num_coordinates(a.geometry)))]
            for col, cell in enumerate(cells):
                self.setItem(row, col, cell)
        self._syncing = False
        self._show_selection(self.session.selection)

    def edit_annotation(self, annotation_id: str) -> None:
        annotation = self.session.annotations.find(annotation_id)
        if annotation is None:
            return
        classes = {c.name: c for c in [*self.session.classes, *self.session.annotations.classes]}  # (imported ones too)
        dialog = EditDialog(self, annotation, list(classes))
        if dialog.exec() == QDialog.DialogCode.Accepted:
            name, cls_name, role = dialog.values()
            cls = annotation.cls if cls_name == annotation.cls.name else classes[cls_name]
            if (name, cls, role) != (annotation.name, annotation.cls, annotation.role):
                self.session.change(annotation, name=name, cls=cls, role=role)

    def _show_selection(self, ids: tuple[str, ...]) -> None:
        if self._selected_ids() == list(ids):
            return  # (the change came from here: never touch a selection inside its own signal)
        self._syncing = True
        self.clearSelection()
        wanted = set(ids)
        for row, key in enumerate(self._ids):
            for col in range(self.columnCount() if key in wanted else 0):
                self.item(row, col).setSelected(True)
        self._syncing = False

    def _selected_ids(self) -> list[str]:
        return [self._ids[r] for r in sorted({index.row() for index in self.selectedIndexes()})]

    def _on_rows_selected(self) -> None:
        if not self._syncing:
            self.session.select(self._selected_ids())


class EditDialog(QDialog):
    """Rename, reclassify, or change the role of one annotation."""

    def __init__(self, parent: QWidget, annotation: Annotation, classes: list[str]) -> None:
        super().__init__(parent)
        self.setWindowTitle("Edit annotation")
        self.name = QLineEdit(annotation.name)
        self.cls = QComboBox()
        self.cls.addItems(classes)
        self.cls.setCurrentText(annotation.cls.name)
        self.role = QComboBox()
        for role in Role:
            self.role.addItem(role.title, role)
        self.role.setCurrentIndex(self.role.findData(annotation.role))
        form = QFormLayout(self)
        form.addRow("Name", self.name)
        form.addRow("Class", self.cls)
        form.addRow("Role", self.role)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def values(self) -> tuple[str, str, Role]:
        return self.name.text().strip(), self.cls.currentText(), Role(self.role.currentData())
