"""A project's slides: their manifest entries, found by id, name or file; relinked when moved; given a µm/px. A
part of `Project`, kept apart as its own concern."""
from __future__ import annotations

import os
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from PIL import Image

from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.mpp import MPP_TEXT, is_mpp
from gigapath_desktop.slides import SLIDE_SUFFIXES, identity, open_slide

THUMBNAIL_SIZE = 256


@dataclass(frozen=True)
class ProjectSlide:
    id: str  # content fingerprint
    path: Path
    name: str
    dimensions: tuple[int, int]
    size: int  # bytes: a cheap first test when looking for a moved slide
    mpp: float | None = None  # what the file records
    given_mpp: float | None = None  # the user's word, over what the file records or lacks (`Project.set_mpp`)

    @property
    def resolution(self) -> float | None:
        """The slide's µm per level-0 pixel as trainings and predictions read it (None: unknown)."""
        return self.given_mpp if self.given_mpp is not None else self.mpp

    def as_json(self, base: Path) -> dict[str, Any]:
        return {"id": self.id, "path": str(self.path), "relative": os.path.relpath(self.path, base), "name": self.name,
                "dimensions": list(self.dimensions), "size": self.size, "mpp": self.mpp, "given_mpp": self.given_mpp}


class ProjectSlides:
    """Mixed into `Project`, whose manifest these methods change under its lock (`_changing`)."""

    slides: list[ProjectSlide]
    _changing: Callable[[], AbstractContextManager[None]]
    _need: Callable[[str], ProjectSlide]
    _replace: Callable[[ProjectSlide, ProjectSlide], ProjectSlide]

    def slide(self, key: str) -> ProjectSlide | None:
        """The slide with this id, file name or name stem; GigaPathError when several slides have that name."""
        found = [s for s in self.slides if s.id == key] or [
            s for s in self.slides if key in (s.name, s.path.name, s.path.stem)]
        if len(found) > 1:
            raise GigaPathError(f"several slides of the project are named {key!r}: "
                                f"{', '.join(str(s.path) for s in found)}; name one by its id ({found[0].id} ...)")
        return found[0] if found else None

    def slide_at(self, path: str | os.PathLike[str]) -> ProjectSlide | None:
        """The slide whose file is `path`."""
        path = Path(path).resolve()
        return next((s for s in self.slides if s.path == path), None)

    def missing(self) -> list[ProjectSlide]:
        return [s for s in self.slides if not s.path.is_file()]

    def changed(self, among: Iterable[Path] | None = None) -> list[ProjectSlide]:
        """The slides (of those at the paths `among`; None: all) whose file now holds other content (another slide
        copied over it): their annotations are not its; they are relinked to where the slide went, or the file put
        back."""
        paths = None if among is None else set(among)
        return [s for s in self.slides if (paths is None or s.path in paths) and s.path.is_file()
                and identity(s.path) != s.id]

    def relink(self, key: str, path: str | os.PathLike[str]) -> ProjectSlide:
        """Point slide `key` at `path`, which must hold the same slide (the same content fingerprint)."""
        with self._changing():
            entry = self._need(key)
            found, _ = describe(Path(path))
            if found.id != entry.id:
                raise GigaPathError(f"{path}: is not the slide {entry.name} (its content differs)")
            return self._replace(entry, replace(entry, path=found.path))

    def set_mpp(self, key: str, mpp: float | None) -> ProjectSlide:
        """Give slide `key` its µm per level-0 pixel (None: back to what its file records), for a slide whose file
        records none, or a wrong one: trainings at a chosen µm/px and predictions then read it at that scale."""
        if mpp is not None and not is_mpp(mpp):
            raise GigaPathError(f"a slide's µm/px must be {MPP_TEXT}, got {mpp}")
        with self._changing():
            entry = self._need(key)
            return self._replace(entry, replace(entry, given_mpp=None if mpp is None else float(mpp)))

    def resolutions(self) -> dict[Path, float]:
        """The µm/px the user gave each slide that has one (as `open_slide`'s and a spec's `slide_mpp`)."""
        return {s.path: s.given_mpp for s in self.slides if s.given_mpp is not None}

    def relink_from(self, folder: str | os.PathLike[str]) -> list[ProjectSlide]:
        """Relink every missing slide whose file (same content) lies in `folder` or below it."""
        if not Path(folder).is_dir():
            raise GigaPathError(f"{folder}: no such folder to look for the missing slides in")
        relinked = []
        with self._changing():
            wanted = {s.id: s for s in self.missing()}
            sizes = {s.size for s in wanted.values()}
            for path in sorted(Path(folder).rglob("*")):
                if not wanted:
                    break
                if path.suffix.lower() not in SLIDE_SUFFIXES or not path.is_file() or path.stat().st_size not in sizes:
                    continue
                try:
                    found, _ = describe(path)
                except GigaPathError:
                    continue
                entry = wanted.pop(found.id, None)
                if entry is not None:
                    relinked.append(self._replace(entry, replace(entry, path=found.path)))
        return relinked


def describe(path: Path) -> tuple[ProjectSlide, Image.Image]:
    """The manifest entry of the slide at `path` and its thumbnail; GigaPathError if it is not a readable slide."""
    with open_slide(path) as slide:
        mpp = slide.mpp[0] if slide.mpp else None
        thumbnail = Image.fromarray(slide.thumbnail(THUMBNAIL_SIZE))
        entry = ProjectSlide(slide.fingerprint, path.resolve(), path.name, slide.dimensions, path.stat().st_size, mpp)
        return entry, thumbnail
