"""The session's class list: add, recolour, rename and remove classes, on the open slide's labels (undoably) and in the
open project, its other slides' labels too. A part of `Session`, kept apart as its own concern."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from gigapath_desktop.annotations import DEFAULT_CLASSES, AnnotationClass, AnnotationSet, Role
from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.project.history import History
from gigapath_desktop.project.manifest import Project

if TYPE_CHECKING:
    from gigapath_desktop.project.session import SessionEvents

BUILT_IN = frozenset(c.name for c in DEFAULT_CLASSES)  # every session has them; they are not renamed or removed


class ClassEdits:
    """Mixed into `Session`, whose state these methods change and whose events they emit."""

    classes: list[AnnotationClass]
    annotations: AnnotationSet
    history: History
    project: Project | None
    folder: Path | None
    events: "SessionEvents"
    on_project_slide: Callable[[], bool]

    def add_class(self, name: str, color: tuple[int, int, int]) -> AnnotationClass:
        """A class to draw labels of (and, with a project open, one of the project's classes); a class of that name
        already here takes the colour instead (`recolour_class`). A name that differs from a class's only in case is
        refused (GigaPathError): it would be a class of its own, with no labels, in every model."""
        similar = next((c.name for c in self.classes if c.name != name and c.name.casefold() == name.casefold()), None)
        if similar is not None:
            raise GigaPathError(f"there is a class {similar!r} already: class names must differ by more than case")
        cls = AnnotationClass(name, color)
        if any(c.name == name for c in self.classes):
            self.recolour_class(cls)
        else:
            self.classes = [*self.classes, cls]
            self.events.classes.emit(self.classes)
        if self.project is not None and cls.name not in {c.name for c in self.project.classes}:
            try:
                self.project.add_class(cls)
            except (OSError, GigaPathError) as exc:
                self.events.problem.emit(f"the class {name} was not added to the project: {exc}")
            self.events.project.emit(self.project)
        return cls

    def recolour_class(self, cls: AnnotationClass) -> None:
        """Give the class of `cls.name` its colour: in the class list, on this slide's labels and in the open project
        (one undoable edit, where the slide has such labels), whose other slides' labels take it when opened."""
        old = next((c for c in self.classes if c.name == cls.name), cls)
        before = [a for a in self.annotations if a.role is Role.LABEL and a.cls.name == cls.name and a.cls != cls]
        if before:  # undone, the class takes its old colour back everywhere, not only on these labels
            self.history.push(f"colour of {cls.name}", before, [replace(a, cls=cls) for a in before],
                              also=lambda undo: self._class_colour(old if undo else cls))
        else:
            self._class_colour(cls)

    def _class_colour(self, cls: AnnotationClass) -> None:
        self.classes = [cls if c.name == cls.name else c for c in self.classes]
        self.events.classes.emit(self.classes)
        if self.project is not None and any(c.name == cls.name and c != cls for c in self.project.classes):
            try:
                self.project.recolour_class(cls)
            except (OSError, GigaPathError) as exc:
                self.events.problem.emit(f"the project keeps the old colour of {cls.name}: {exc}")
            self.events.project.emit(self.project)

    def rename_class(self, old: str, new: str) -> None:
        """Call the class `old` `new`: in the class list, on this slide's labels and in the open project, its other
        slides' labels too; one undoable edit (Undo renames it all back). GigaPathError for a built-in class, an
        empty name or one a class has already (but for case, `old` itself: "tumor" becomes "Tumor")."""
        new = new.strip()
        if new == old:
            return
        clash = next((c.name for c in self.classes if c.name != old and c.name.casefold() == new.casefold()), None)
        if old in BUILT_IN:
            raise GigaPathError(f"{old} is built in: it keeps its name (add a class of the name you want)")
        if not new or clash is not None:
            raise GigaPathError(f"there is a class {clash!r} already" if clash else "a class needs a name")
        color = next(c.color for c in self.classes if c.name == old)
        before = [a for a in self.annotations if a.role is Role.LABEL and a.cls.name == old]
        after = [replace(a, cls=AnnotationClass(new, color)) for a in before]
        self.history.push(f"name of class {old}", before, after,
                          also=lambda undo: self._class_name(new, old) if undo else self._class_name(old, new))

    def _class_name(self, old: str, new: str) -> None:
        self.classes = [AnnotationClass(new, c.color) if c.name == old else c for c in self.classes]
        self.events.classes.emit(self.classes)
        if self.project is not None and any(c.name == old for c in self.project.classes):
            try:
                self.project.rename_class(old, new, skip=self._open_project_slide())
            except (OSError, GigaPathError) as exc:
                self.events.problem.emit(f"the project's class {old} was not renamed {new} everywhere: {exc}")
            self.events.project.emit(self.project)

    def remove_class(self, name: str) -> None:
        """Take the class `name` off the class list (and the open project's); GigaPathError while labels are of it,
        here or on another project slide (delete them, or rename the class), or for a built-in class."""
        if name in BUILT_IN:
            raise GigaPathError(f"{name} is built in: it stays")
        used = ["this slide"] if any(a.role is Role.LABEL and a.cls.name == name for a in self.annotations) else []
        if self.project is not None:
            used += self.project.labelled_with(name, skip=self._open_project_slide())
        if used:
            raise GigaPathError(f"labels of {name} are on {', '.join(used)}: delete them first, or rename the class")
        self.classes = [c for c in self.classes if c.name != name]
        self.events.classes.emit(self.classes)
        if self.project is not None and any(c.name == name for c in self.project.classes):
            try:
                self.project.remove_class(name)
            except (OSError, GigaPathError) as exc:
                self.events.problem.emit(f"the project keeps the class {name}: {exc}")
            self.events.project.emit(self.project)

    def _open_project_slide(self) -> str | None:
        """The id of the open slide when it is one of the open project's (its labels are the session's)."""
        return self.folder.name if self.on_project_slide() else None

    def _adopt_colours(self) -> None:
        """Labels read back with an older colour of a class take the class's colour here (one colour per class)."""
        known = {c.name: c for c in self.classes}
        for a in list(self.annotations):
            cls = known.get(a.cls.name)
            if a.role is Role.LABEL and cls is not None and cls != a.cls:
                self.annotations.replace(a, replace(a, cls=cls))
