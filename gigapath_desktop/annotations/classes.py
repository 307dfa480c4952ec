"""The class map: which label value each annotation class paints, as a model and its run know it.

The tissue model knows two classes, Background (0) and Tissue (1), and counts any other label class as tissue (a
QuPath "Tumor" area is tissue). A K-class model knows exactly its K classes, in order (label value = position), and
a label annotation of any other class is an error naming it, never silently background.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from gigapath_desktop.annotations.model import BACKGROUND, TISSUE, Annotation, AnnotationClass, Role
from gigapath_desktop.errors import AnnotationError

MAX_CLASSES = 254  # label values 0..253; 255 is "unlabelled"


@dataclass(frozen=True)
class ClassMap:
    """Classes in label-value order; the first is what `dense` labels paint where no annotation lies."""

    classes: tuple[AnnotationClass, ...]
    lenient: bool = False  # the tissue model's rule: every label class but Background paints tissue

    def __post_init__(self) -> None:
        names = [c.name for c in self.classes]
        if not 2 <= len(names) <= MAX_CLASSES:
            raise AnnotationError(f"a model needs 2 to {MAX_CLASSES} classes, got {len(names)}")
        if len({name.casefold() for name in names}) != len(names):  # ("tumor" beside "Tumor": a typo, never labelled)
            raise AnnotationError(f"class names repeat (case aside): {', '.join(names)}")

    @classmethod
    def tissue(cls) -> "ClassMap":
        return cls((BACKGROUND, TISSUE), lenient=True)

    @classmethod
    def named(cls, names: Sequence[str], known: Iterable[AnnotationClass] = ()) -> "ClassMap":
        """Classes by name, with the colours of `known` classes (e.g. the labels' own) where the names match."""
        colours = {c.name: c for c in (BACKGROUND, TISSUE, *known)}
        return cls(tuple(colours.get(name) or AnnotationClass(name, _colour(i)) for i, name in enumerate(names)))

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def values(self, annotations: Iterable[Annotation]) -> dict[str, int]:
        """The label value each label annotation's class paints; a class this map does not know is an error."""
        names = {a.cls.name for a in annotations if a.role is Role.LABEL}
        if self.lenient:
            return {name: int(name != BACKGROUND.name) for name in names}
        unknown = sorted(names - set(self.names))
        if unknown:
            raise AnnotationError(f"label class(es) {', '.join(map(repr, unknown))} are not among the model's "
                                  f"classes ({', '.join(self.names)})")
        return {name: self.names.index(name) for name in names}

    def __eq__(self, other: object) -> bool:
        """Two maps are the same classes (names and colours), whichever rule made them."""
        return isinstance(other, ClassMap) and self.classes == other.classes

    def __hash__(self) -> int:
        return hash(self.classes)

    def as_json(self) -> list[dict[str, Any]]:
        return [{"name": c.name, "color": list(c.color)} for c in self.classes]

    @classmethod
    def from_json(cls, data: Any) -> "ClassMap":
        try:
            return cls(tuple(AnnotationClass(str(c["name"]), tuple(int(v) for v in c["color"])) for c in data))
        except (TypeError, KeyError, ValueError, OverflowError) as exc:  # OverflowError: an infinite colour
            raise AnnotationError(f"a class list must be [{{'name': ..., 'color': [r, g, b]}}, ...] ({exc})") from None


# display colours of classes that come without one (QuPath-like hues)
PALETTE = ((160, 160, 160), (200, 0, 0), (150, 200, 150), (0, 0, 180), (255, 200, 0), (160, 32, 240),
           (0, 200, 200), (255, 128, 0), (100, 60, 20), (250, 120, 200))


def _colour(index: int) -> tuple[int, int, int]:
    """A distinct display colour for the index-th class that came without one."""
    return PALETTE[index % len(PALETTE)]


def unused_colour(used: Iterable[tuple[int, int, int]]) -> tuple[int, int, int]:
    """The first palette colour no class has, so that a new class's strokes and overlay are told apart from the
    others'; once all are taken, they repeat in order."""
    taken = set(used)
    return next((c for c in PALETTE if c not in taken), PALETTE[len(taken) % len(PALETTE)])
