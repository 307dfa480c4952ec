"""Small dialogs: the keyboard shortcuts, About with the licences of the bundled slides, a new class; the file
filters of slide dialogs."""
from __future__ import annotations

from typing import Iterable

from PySide6.QtGui import QAction, QColor
from PySide6.QtWidgets import QColorDialog, QInputDialog, QMessageBox, QTableWidget, QTableWidgetItem, QVBoxLayout, QDialog, QWidget

from gigapath_desktop import __version__
from gigapath_desktop.annotations.classes import unused_colour
from gigapath_desktop.resources import ROOT
from gigapath_desktop.slides.slide import PLAIN_IMAGE_SUFFIXES, SLIDE_SUFFIXES

SLIDE_FILES = "Slides ({});;All files (*)".format(" ".join(f"*{s}" for s in sorted(SLIDE_SUFFIXES)))
SLIDE_OR_IMAGE_FILES = "Slides and images ({});;All files (*)".format(
    " ".join(f"*{s}" for s in sorted(SLIDE_SUFFIXES | PLAIN_IMAGE_SUFFIXES)))
EXTRA_SHORTCUTS = [("Pan while drawing", "hold Space"), ("Finish polygon", "Enter or double-click"),
                   ("Cancel drawing", "Esc"), ("Zoom", "mouse wheel")]


class ShortcutsDialog(QDialog):
    """Every action with a shortcut, read from the actions themselves (so the list cannot go stale)."""

    def __init__(self, parent: QWidget, actions: list[QAction]) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        rows = [(a.text().replace("&", "").rstrip("…"), a.shortcut().toString()) for a in actions
                if not a.shortcut().isEmpty()] + EXTRA_SHORTCUTS
        self.table = QTableWidget(len(rows), 2)
        self.table.setHorizontalHeaderLabels(["action", "shortcut"])
        for i, (name, keys) in enumerate(rows):
            self.table.setItem(i, 0, QTableWidgetItem(name))
            self.table.setItem(i, 1, QTableWidgetItem(keys))
        self.table.resizeColumnsToContents()
        QVBoxLayout(self).addWidget(self.table)
        self.resize(420, 520)


def show_about(parent: QWidget) -> None:
    credits = (ROOT / "demo" / "CREDITS.md").read_text(errors="replace") if (ROOT / "demo" / "CREDITS.md").exists() else ""
    QMessageBox.about(parent, "About GigaPath Desktop",
                      f"<b>GigaPath Desktop {__version__}</b><p>Train segmentation models on whole gigapixel slide "
                      f"regions, no patching, and export the masks.</p><p><b>Bundled slides</b></p>"
                      f"<pre>{credits}</pre>")


def ask_new_class(parent: QWidget, used: Iterable[tuple[int, int, int]]) -> tuple[str, tuple[int, int, int]] | None:
    """A name and a colour; the picker offers a colour none of the `used` ones (the user may choose another)."""
    name, ok = QInputDialog.getText(parent, "New class", "Class name")
    if not (ok and name.strip()):
        return None
    color = ask_colour(parent, f"Colour of {name.strip()}", unused_colour(used))
    return (name.strip(), color) if color else None


def ask_colour(parent: QWidget, title: str, start: tuple[int, int, int]) -> tuple[int, int, int] | None:
    color = QColorDialog.getColor(QColor(*start), parent, title)
    return (color.red(), color.green(), color.blue()) if color.isValid() else None
