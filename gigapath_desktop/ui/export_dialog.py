"""Export mask: where to write the pyramidal TIFF, the PNG preview (and how large) and the GeoJSON contours, and the
tissue mask's clean-up (holes filled and specks removed under an area)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDoubleSpinBox,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QWidget,
)

from gigapath_desktop.annotations.tissue import MIN_AREA_UM2
from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.outputs import check_output

PREVIEW_SIDE = 4096  # px on the long side: enough to judge a mask at a glance, small enough to open anywhere


@dataclass
class ExportChoice:
    tiff: Path
    png: Path | None
    geojson: Path | None
    preview_side: int
    whole: bool
    min_hole_um2: float = MIN_AREA_UM2
    min_object_um2: float = 0.0

    @property
    def outputs(self) -> list[Path]:
        return [path for path in (self.tiff, self.png, self.geojson) if path is not None]

    def check(self, inputs: tuple[Path, ...] = ()) -> None:
        """GigaPathError unless every output can be written and is none of `inputs` (a typed folder that does not
        exist is refused, never made)."""
        for path in self.outputs:
            check_output(path, inputs)


class ExportDialog(QDialog):
    def __init__(self, parent: QWidget, folder: Path, stem: str, slide_side: int, whole: bool = False,
                 no_cleanup: str = "") -> None:
        """`slide_side`: the slide's longer side, px (a preview is never offered larger than the slide); `whole`:
        the whole slide by default; `no_cleanup`: why holes and specks are not cleaned up (their boxes are off)."""
        super().__init__(parent)
        self.setWindowTitle("Export mask")
        self.setMinimumWidth(780)
        self.tiff = self._path(folder / f"{stem}.mask.tif")
        self.png = self._path(folder / f"{stem}.preview.png")
        self.geojson = self._path(folder / f"{stem}.contours.geojson")
        self.with_png, self.with_geojson = QCheckBox(toolTip="Write a PNG preview"), QCheckBox(toolTip="Write GeoJSON contours")
        self.with_png.setChecked(True)
        self.with_geojson.setChecked(True)
        self.preview_side = QSpinBox(minimum=256, maximum=32768, singleStep=512,
                                      value=min(PREVIEW_SIDE, slide_side), suffix=" px")
        self.preview_side.setToolTip("Long side of the PNG preview")
        self.whole = QCheckBox("whole slide (else the selected / training region)")
        self.min_hole, self.min_object = (QDoubleSpinBox(maximum=1e7, decimals=0, singleStep=500, value=v, suffix=" µm²")
                                          for v in (MIN_AREA_UM2, 0.0))
        self.min_hole.setToolTip("Tissue models: gaps inside tissue smaller than this become tissue, as tissue "
                                 "labels are drawn (0: every hole kept; needs the slide's µm/px)")
        self.min_object.setToolTip("Tissue models: specks smaller than this become background (0: all kept)")
        self.whole.setChecked(whole)
        for box in (self.min_hole, self.min_object) if no_cleanup else ():
            box.setEnabled(False)
            box.setToolTip(f"Not for this export: {no_cleanup}")
        form = QFormLayout(self)
        form.addRow("Pyramidal TIFF", self._with_browse(self.tiff, "TIFF (*.tif *.tiff)"))
        form.addRow("PNG preview", self._with_browse(self.png, "PNG (*.png)", self.with_png))
        form.addRow("Preview size", self.preview_side)
        form.addRow("GeoJSON contours", self._with_browse(self.geojson, "GeoJSON (*.geojson)", self.with_geojson))
        form.addRow("Fill holes under", self.min_hole)
        form.addRow("Remove specks under", self.min_object)
        form.addRow(self.whole)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def accept(self) -> None:
        """A path that cannot be written is said over the dialog, which stays open with what was typed; files that
        exist are replaced only when the user says so."""
        choice = self.choice()
        try:
            choice.check()
        except GigaPathError as exc:
            QMessageBox.warning(self, "Export mask", f"{exc}\n\nChoose an existing, writable folder (Browse…).")
            return
        there = [path.name for path in choice.outputs if path.exists()]
        if there and QMessageBox.question(self, "Export mask", f"Replace {', '.join(there)}?\n\nThey exist in "
                                          f"{choice.tiff.parent} already.") != QMessageBox.StandardButton.Yes:
            return
        super().accept()

    def choice(self) -> ExportChoice:
        return ExportChoice(Path(self.tiff.text()), Path(self.png.text()) if self.with_png.isChecked() else None,
                            Path(self.geojson.text()) if self.with_geojson.isChecked() else None,
                            self.preview_side.value(), self.whole.isChecked(), self.min_hole.value(),
                            self.min_object.value())

    def _path(self, path: Path) -> QLineEdit:
        field = QLineEdit(str(path))
        field.setMinimumWidth(440)
        field.setCursorPosition(0)
        return field

    def _with_browse(self, field: QLineEdit, filters: str, toggle: QCheckBox | None = None) -> QWidget:
        row = QWidget()
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        if toggle is not None:
            layout.addWidget(toggle)
            toggle.toggled.connect(field.setEnabled)
        layout.addWidget(field, stretch=1)
        browse = QPushButton("Browse…")
        browse.clicked.connect(lambda: self._browse(field, filters))
        layout.addWidget(browse)
        return row

    def _browse(self, field: QLineEdit, filters: str) -> None:
        path = QFileDialog.getSaveFileName(self, "Export to", field.text(), filters)[0]
        if path:
            field.setText(path)
