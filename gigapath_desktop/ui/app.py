"""Start the desktop app: one QApplication, the main window, a slide (the demo slide when none is given)."""
from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QEvent
from PySide6.QtGui import QFileOpenEvent
from PySide6.QtWidgets import QApplication

from gigapath_desktop.resources import demo_slide
from gigapath_desktop.ui.main_window import MainWindow


class App(QApplication):
    """Opens the files macOS hands over (a slide double-clicked in Finder or dropped on the Dock icon)."""

    def __init__(self, argv: list[str]) -> None:
        super().__init__(argv)
        self.window: MainWindow | None = None
        self.pending: list[str] = []

    def event(self, event: QEvent) -> bool:
        if isinstance(event, QFileOpenEvent):
            if self.window is not None:
                self.window.open_slide(event.file())
            else:
                self.pending.append(event.file())  # (it can arrive before the window exists)
            return True
        return super().event(event)


def run_app(slide: str | Path | None = None) -> int:
    app = QApplication.instance() or App(sys.argv[:1])
    app.setApplicationName("GigaPath Desktop")
    window = MainWindow()
    window.show()
    handed = app.pending if isinstance(app, App) else []
    last = next((path for path in window.settings.recent_slides[:1] if Path(path).is_file()), None)
    window.open_slide(slide if slide is not None else handed[-1] if handed else last or demo_slide())
    if isinstance(app, App):
        app.window = window
    return app.exec()
