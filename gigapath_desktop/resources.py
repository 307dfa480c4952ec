"""Files shipped with the app (the demo slide), found next to the package in a checkout or an install."""
from __future__ import annotations

from pathlib import Path

from gigapath_desktop.errors import GigaPathError

ROOT = Path(__file__).resolve().parent.parent / "resources"


def demo_slide() -> Path:
    """The bundled demo slide, CMU-1-Small-Region.svs (CC0, OpenSlide test data)."""
    path = ROOT / "demo" / "CMU-1-Small-Region.svs"
    if not path.is_file():
        raise GigaPathError(f"the demo slide is missing ({path}); reinstall the app")
    return path
