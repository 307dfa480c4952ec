"""Annotations kept on disk as they change: coalesced, written off the caller's thread, atomically.

A burst of changes (importing thousands of polygons) becomes one write once changes pause for `delay` seconds; the
write happens on the autosave thread, so the app never waits for the disk. A file that cannot be read is renamed
aside (never overwritten, never deleted) and the annotations start empty. Qt-free: the app subscribes; a script or
a server can use it the same way.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

from gigapath_desktop.annotations.geojson import read_geojson, write_geojson
from gigapath_desktop.annotations.model import Annotation, AnnotationSet
from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.outputs import keep_aside

log = logging.getLogger(__name__)


class Autosave:
    """Keep `annotations` saved in the file given to `attach`; problems go to `on_error` (from the autosave thread)."""

    def __init__(self, annotations: AnnotationSet, delay: float = 0.3,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.annotations = annotations
        self.delay = delay
        self.on_error = on_error or log.warning
        self.path: Path | None = None  # None: not saving (nothing attached, or an unreadable file stayed in place)
        self.writes = 0
        self._cond = threading.Condition()
        self._due: float | None = None  # monotonic time the pending write is due
        self._writing = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="autosave", daemon=True)
        self._thread.start()
        annotations.subscribe(self._changed)

    def attach(self, path: Path | None) -> str | None:
        """Save into `path` from now on, after replacing the annotations with what it holds (pending changes go to
        the previous file first). Returns what to tell the user when the file was unreadable, else None."""
        self.flush()
        with self._cond:
            self.path = None  # restoring is not a change to save
        self.annotations.clear()
        note = None
        if path is not None and path.exists():
            try:
                self.annotations.extend(read_geojson(path))
            except GigaPathError as exc:
                self.annotations.clear()
                try:
                    note = f"{exc}; starting with no annotations, the file was kept as {keep_aside(path)}"
                except (OSError, GigaPathError) as move:
                    note = f"{exc}; it could not be moved aside ({move}), so autosave is off for this slide"
                    path = None
        with self._cond:
            self.path = path
        return note

    def move_to(self, path: Path) -> None:
        """Save into `path` from now on, starting with the annotations as they are (a session saved elsewhere)."""
        self.flush()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_geojson(list(self.annotations), path)
        with self._cond:
            self.path = path

    def flush(self) -> None:
        """Write pending changes now and wait until they are on disk."""
        with self._cond:
            if self._due is not None:
                self._due = 0.0
                self._cond.notify_all()
            while self._due is not None or self._writing:
                self._cond.wait()

    def close(self) -> None:
        self.flush()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _changed(self, what: str, annotation: Annotation) -> None:
        with self._cond:
            if self.path is not None and not self._closed:
                self._due = time.monotonic() + self.delay
                self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (self._due is None or self._due > time.monotonic()):
                    self._cond.wait(None if self._due is None else max(0.0, self._due - time.monotonic()))
                if self._due is None:
                    return  # closed with nothing pending
                path, self._due, self._writing = self.path, None, True
                snapshot = list(self.annotations)  # a list copy is atomic under the GIL
            try:
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_geojson(snapshot, path)
                    self.writes += 1
            except Exception as exc:  # noqa: BLE001  (the writer must live on, or flush() would wait forever)
                self.on_error(f"autosave failed: {exc}")
            finally:
                with self._cond:
                    self._writing = False
                    self._cond.notify_all()
