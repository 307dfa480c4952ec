"""Core code never imports Qt: import every core module with PySide6 and pyqtgraph made unimportable."""
from __future__ import annotations

import subprocess
import sys

from conftest import BLOCK_QT

CORE = [
    "gigapath_desktop.slides",
    "gigapath_desktop.slides.synthetic",
    "gigapath_desktop.slides.strokes",
    "gigapath_desktop.annotations",
    "gigapath_desktop.annotations.autosave",
    "gigapath_desktop.outputs",
    "gigapath_desktop.locks",
    "gigapath_desktop.training.job",
    "gigapath_desktop.inference",
    "gigapath_desktop.project",
    "gigapath_desktop.cli",
]

BLOCKER = BLOCK_QT + """
import importlib
for module in sys.argv[1:]:
    importlib.import_module(module)
print('ok')
"""


def test_core_imports_without_qt() -> None:
    result = subprocess.run([sys.executable, "-c", BLOCKER, *CORE], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
