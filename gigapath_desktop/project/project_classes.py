"""A project's class list: add, recolour, rename (on every slide's labels) and remove classes. A part of `Project`,
kept apart as its own concern."""
from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from gigapath_desktop.annotations import BACKGROUND, Annotation, AnnotationClass, Role, write_geojson
from gigapath_desktop.locks import FolderLock

if TYPE_CHECKING:
    from gigapath_desktop.project.project_slides import ProjectSlide


class ProjectClasses:
    """Mixed into `Project`, whose manifest these methods change under its lock (`_changing`)."""

    classes: list[AnnotationClass]
    slides: list["ProjectSlide"]
    _changing: Callable[[], AbstractContextManager[None]]
    annotations: Callable[[str], list[Annotation]]
    annotations_path: Callable[[str], Path]
    slide_folder: Callable[[str], Path]

    def add_class(self, cls: AnnotationClass) -> None:
        with self._changing():
            self._add_class(cls)

    def recolour_class(self, cls: AnnotationClass) -> None:
        """The project's class of that name takes `cls`'s colour (what its trainings' models paint)."""
        with self._changing():
            self.classes = [cls if c.name == cls.name else c for c in self.classes]

    def rename_class(self, old: str, new: str, skip: str | None = None) -> None:
        """The class `old` is called `new`: in the class list and on the labels of every slide but `skip` (the one
        open in the app, whose labels it renames itself)."""
        with self._changing():
            self.classes = [AnnotationClass(new, c.color) if c.name == old else c for c in self.classes]
            for entry in self.slides:
                if entry.id != skip:
                    self._rename_labels(entry.id, old, new)

    def _rename_labels(self, slide_id: str, old: str, new: str) -> None:
        with FolderLock(self.slide_folder(slide_id)):
            current = self.annotations(slide_id)
            if any(a.role is Role.LABEL and a.cls.name == old for a in current):
                write_geojson([replace(a, cls=AnnotationClass(new, a.cls.color))
                               if a.role is Role.LABEL and a.cls.name == old else a for a in current],
                              self.annotations_path(slide_id))

    def labelled_with(self, name: str, skip: str | None = None) -> list[str]:
        """The names of the slides (but `skip`) with labels of the class `name`."""
        return [entry.name for entry in self.slides if entry.id != skip
                and any(a.role is Role.LABEL and a.cls.name == name for a in self.annotations(entry.id))]

    def remove_class(self, name: str) -> None:
        with self._changing():
            self.classes = [c for c in self.classes if c.name != name]

    def _add_class(self, cls: AnnotationClass) -> None:
        """A new class joins the list; the first one brings Background before it (a K-class model's first class is
        what unlabelled area is in dense mode)."""
        if not self.classes and cls.name != BACKGROUND.name:
            self.classes.append(BACKGROUND)
        if cls.name not in {c.name for c in self.classes}:
            self.classes.append(cls)
