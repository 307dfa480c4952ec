"""The Results dock: predict the selected region, the visible area or the whole slide; the overlay's visibility and
opacity; export; which model is in use."""
from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QPushButton, QSlider, QVBoxLayout, QWidget


class ResultsPanel(QWidget):
    predict_clicked = Signal(str)  # "selection" | "visible" | "slide"
    export_clicked = Signal()

    def __init__(self) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        self.predict_buttons = {}
        for kind, label, tip in (("selection", "Predict selected region", "The selected region, else the Train region"),
                                 ("visible", "Predict visible area", "What the viewer shows now"),
                                 ("slide", "Predict whole slide", "Every pixel of the slide")):
            button = QPushButton(label, toolTip=tip)
            button.clicked.connect(lambda _=False, k=kind: self.predict_clicked.emit(k))
            layout.addWidget(button)
            self.predict_buttons[kind] = button
        self.overlay_toggle = QCheckBox("Show mask overlay")
        self.overlay_toggle.setChecked(True)
        self.opacity = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=100, value=60)
        export = QPushButton("Export mask…")
        export.clicked.connect(self.export_clicked)
        self.model_label, self.export_label, self.legend = QLabel(), QLabel(), QLabel()
        for label in (self.model_label, self.export_label):
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.show_model(None)
        self.show_classes([])
        row = QHBoxLayout()
        row.addWidget(QLabel("Opacity"))
        row.addWidget(self.opacity)
        layout.addWidget(self.overlay_toggle)
        layout.addLayout(row)
        layout.addWidget(self.legend)
        layout.addWidget(export)
        layout.addWidget(self.export_label)
        layout.addWidget(self.model_label)
        layout.addStretch()

    def show_export(self, path: Path | None) -> None:
        """Where the last export went, kept in view (a status-bar message is gone in seconds); None: forget it."""
        self.export_label.setText(f"exported to {path}" if path else "")

    def show_classes(self, rows: list[tuple[str, tuple[int, int, int], float]]) -> None:
        """The overlay's key: each class's colour, name and share of the predicted area ([]: no overlay)."""
        self.legend.setText("<br>".join(
            f"<span style='background-color: rgb{tuple(colour)}'>&nbsp;&nbsp;&nbsp;&nbsp;</span>&nbsp;"
            f"{html.escape(name)}: {share:.1%}" for name, colour, share in rows))
        self.legend.setVisible(bool(rows))

    def show_model(self, path: Path | None) -> None:
        self.model_label.setText(f"model: {path}" if path else "model: none (train or open a run)")
