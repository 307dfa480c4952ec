"""Can the app open a window here? Checked before Qt starts, because Qt's own answer on Linux is a bare "Aborted".

Qt's X11 (xcb) platform plugin loads a few system libraries that minimal Linux installs lack; without a display it
cannot start at all. Either ends in one sentence saying what to install or set.
"""
from __future__ import annotations

import ctypes.util
import os
import sys
from typing import Mapping

# library name (as ctypes.util.find_library takes it) -> the Debian/Ubuntu package that provides it
XCB_LIBRARIES = {
    "xcb-cursor": "libxcb-cursor0",
    "xcb-icccm": "libxcb-icccm4",
    "xcb-keysyms": "libxcb-keysyms1",
    "xcb-image": "libxcb-image0",
    "xcb-render-util": "libxcb-render-util0",
    "xcb-shape": "libxcb-shape0",
    "xcb-randr": "libxcb-randr0",
    "xcb-xkb": "libxcb-xkb1",
    "xkbcommon-x11": "libxkbcommon-x11-0",
}


def display_problem(env: Mapping[str, str] = os.environ) -> str | None:
    """Why a window cannot open (no display, missing xcb libraries), or None when it can."""
    if sys.platform != "linux":
        return None
    platform = env.get("QT_QPA_PLATFORM", "")
    if platform and not platform.startswith("xcb"):
        return None  # offscreen, wayland, vnc ...: Qt reports on its own
    if not platform and env.get("WAYLAND_DISPLAY"):
        return None
    if not env.get("DISPLAY"):
        return ("no display found (DISPLAY is not set): start the app from a desktop session, or use the command "
                "line (gigapath-desktop --help) on a headless machine")
    missing = [package for library, package in XCB_LIBRARIES.items() if ctypes.util.find_library(library) is None]
    if missing:
        return (f"Qt's X11 plugin needs system libraries that are missing here; install them with: "
                f"sudo apt install {' '.join(missing)}")
    return None
