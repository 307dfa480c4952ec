"""Undo and redo of annotation edits, without Qt: every edit replaces a list of annotations by another."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from gigapath_desktop.annotations import Annotation, AnnotationSet
from gigapath_desktop.project.events import Emitter


@dataclass
class Edit:
    """add: [] -> [a]; remove: [a] -> []; change: [a] -> [b] (before[i] is replaced in place by after[i])."""

    text: str
    before: list[Annotation]
    after: list[Annotation]
    places: list[int] = field(default_factory=list)  # where the removed ones were: undo puts them back there
    also: Callable[[bool], None] | None = None  # what else the edit changes, done (False) or undone (True) with it

    def apply(self, annotations: AnnotationSet, undo: bool = False) -> None:
        """Redo or undo the edit; an undone removal restores the paint order and the regions' numbering ("Train 1")."""
        if self.also is not None:
            self.also(undo)
        old, new = (self.after, self.before) if undo else (self.before, self.after)
        pairs = min(len(old), len(new))
        for a, b in zip(old[:pairs], new[:pairs]):
            annotations.replace(a, b)
        if not undo:
            self.places = [annotations.index(a) for a in old[pairs:]]
        for a in old[pairs:]:
            annotations.remove(a)
        if undo and self.places:
            for place, a in sorted(zip(self.places, new[pairs:]), key=lambda pair: pair[0]):
                annotations.add(a, place)
        else:
            annotations.extend(new[pairs:])


class History:
    """The edits applied to `annotations`, undoable in order; `changed` fires after every push, undo, redo, clear."""

    def __init__(self, annotations: AnnotationSet, limit: int = 500) -> None:
        self.annotations = annotations
        self.limit = limit
        self.changed = Emitter()
        self._done: list[Edit] = []
        self._undone: list[Edit] = []

    def push(self, text: str, before: list[Annotation], after: list[Annotation],
             also: Callable[[bool], None] | None = None) -> None:
        edit = Edit(text, list(before), list(after), also=also)
        edit.apply(self.annotations)
        self._done = (self._done + [edit])[-self.limit:]
        self._undone.clear()
        self.changed.emit()

    def undo(self) -> None:
        if self._done:
            edit = self._done.pop()
            edit.apply(self.annotations, undo=True)
            self._undone.append(edit)
            self.changed.emit()

    def redo(self) -> None:
        if self._undone:
            edit = self._undone.pop()
            edit.apply(self.annotations)
            self._done.append(edit)
            self.changed.emit()

    def clear(self) -> None:
        self._done.clear()
        self._undone.clear()
        self.changed.emit()

    @property
    def undo_text(self) -> str | None:
        return self._done[-1].text if self._done else None

    @property
    def redo_text(self) -> str | None:
        return self._undone[-1].text if self._undone else None
