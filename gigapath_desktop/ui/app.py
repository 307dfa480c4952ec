"""Start the desktop app: one QApplication, the main window, a slide (the demo slide when none is given)."""
from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtWidgets import QApplication

from gigapath_desktop.resources import demo_slide
from gigapath_desktop.ui.main_window import MainWindow


def run_app(slide: str | Path | None = None) -> int:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("GigaPath Desktop")
    window = MainWindow()
    window.show()
    window.open_slide(slide if slide is not None else demo_slide())
    return app.exec()
