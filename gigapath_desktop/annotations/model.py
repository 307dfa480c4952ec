"""Annotations: shapes in level-0 pixel coordinates, each with a class and a role (training region or label).

Brush strokes are stored as the polygons they paint, so every annotation is an area (Polygon or MultiPolygon).
"""
from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

from gigapath_desktop.errors import AnnotationError

Area = Polygon | MultiPolygon
MAX_COORDINATE = 1e9  # level-0 pixels: far beyond any slide, far below where float64 pixel arithmetic breaks down


@dataclass(frozen=True)
class AnnotationClass:
    """A named class with a display colour (RGB 0-255), as in QuPath."""

    name: str
    color: tuple[int, int, int]

    def __post_init__(self) -> None:
        if not self.name:
            raise AnnotationError("an annotation class needs a name")
        if len(self.color) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in self.color):
            raise AnnotationError(f"class {self.name!r}: colour must be three integers 0-255, got {self.color!r}")


TISSUE = AnnotationClass("Tissue", (64, 160, 64))
BACKGROUND = AnnotationClass("Background", (160, 160, 160))
REGION = AnnotationClass("Region", (0, 120, 255))
DEFAULT_CLASSES = (TISSUE, BACKGROUND, REGION)


class Role(str, enum.Enum):
    """What an annotation is for: an area to train on, an area to validate on, or a label painted inside them.

    ("region" is the training role's value in files written before validation regions had a role of their own.)"""

    REGION = "region"
    VALIDATION = "validation"
    LABEL = "label"

    @property
    def is_area(self) -> bool:
        """A rectangle the engine reads (train or validation), not a label."""
        return self is not Role.LABEL

    @property
    def title(self) -> str:
        return {"region": "Train", "validation": "Validation", "label": "Label"}[self.value]


class Kind(str, enum.Enum):
    """How the annotation was drawn; kept so tools can edit it the way it was made."""

    RECTANGLE = "rectangle"
    POLYGON = "polygon"
    BRUSH = "brush"


@dataclass
class Annotation:
    """One area with its class, role and drawing kind. `geometry` is validated (and repaired) on creation."""

    geometry: Area
    cls: AnnotationClass = TISSUE
    role: Role = Role.LABEL
    kind: Kind = Kind.POLYGON
    name: str = ""
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        self.geometry = as_area(self.geometry)
        self.role = Role(self.role)
        self.kind = Kind(self.kind)

    @classmethod
    def rectangle(cls, x: float, y: float, width: float, height: float, **kwargs: object) -> "Annotation":
        """An axis-aligned rectangle; by default a training region."""
        kwargs.setdefault("role", Role.REGION)
        kwargs.setdefault("cls", REGION)
        return cls(box(x, y, x + width, y + height), kind=Kind.RECTANGLE, **kwargs)  # type: ignore[arg-type]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(min x, min y, max x, max y) in level-0 pixels."""
        return self.geometry.bounds


def as_area(geometry: BaseGeometry) -> Area:
    """Return `geometry` as a valid, non-empty Polygon/MultiPolygon, repairing self-intersections; else raise."""
    if not isinstance(geometry, (Polygon, MultiPolygon)):
        raise AnnotationError(f"annotations must be polygons, got {geometry.geom_type}")
    if geometry.is_empty:
        raise AnnotationError("annotation geometry is empty")
    coords = shapely.get_coordinates(geometry)
    if not np.isfinite(coords).all() or np.abs(coords).max() > MAX_COORDINATE:
        raise AnnotationError(f"annotation coordinates must be finite pixel positions within +-{MAX_COORDINATE:.0e}")
    if not shapely.is_valid(geometry):
        repaired = shapely.make_valid(geometry)
        polygons = [g for g in getattr(repaired, "geoms", [repaired]) if isinstance(g, (Polygon, MultiPolygon))]
        if not polygons:
            raise AnnotationError(f"annotation geometry is invalid and cannot be repaired: {shapely.is_valid_reason(geometry)}")
        geometry = shapely.unary_union(polygons)
    return geometry


Listener = Callable[[str, Annotation], None]


class AnnotationSet:
    """An ordered collection of annotations (later ones paint over earlier ones) that tells listeners of changes.

    Listeners get ("added" | "removed" | "changed", annotation); the UI subscribes, the model never imports Qt.
    Ids are unique within a set: an annotation added with an id already in use (the same file imported twice) gets
    a fresh one.
    """

    def __init__(self, annotations: Iterable[Annotation] = ()) -> None:
        self._items: list[Annotation] = []
        self._ids: set[str] = set()
        self._listeners: list[Listener] = []
        for annotation in annotations:
            self._insert(len(self._items), annotation)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def add(self, annotation: Annotation, index: int | None = None) -> None:
        """Append `annotation` (paint it last), or put it at `index` (undoing a removal puts it back in its place)."""
        self._insert(len(self._items) if index is None else index, annotation)
        self._emit("added", annotation)

    def index(self, annotation: Annotation) -> int:
        return self._items.index(annotation)

    def extend(self, annotations: Iterable[Annotation]) -> None:
        for annotation in annotations:
            self.add(annotation)

    def remove(self, annotation: Annotation) -> None:
        self._items.remove(annotation)
        self._ids.discard(annotation.id)
        self._emit("removed", annotation)

    def replace(self, old: Annotation, new: Annotation) -> None:
        """Put `new` where `old` was (same paint order)."""
        index = self._items.index(old)
        del self._items[index]
        self._ids.discard(old.id)
        self._insert(index, new)
        self._emit("changed", new)

    def _insert(self, index: int, annotation: Annotation) -> None:
        if annotation.id in self._ids:
            annotation.id = str(uuid.uuid4())
        self._items.insert(index, annotation)
        self._ids.add(annotation.id)

    def clear(self) -> None:
        for annotation in list(self._items):
            self.remove(annotation)

    def regions(self, role: Role | None = None) -> list[Annotation]:
        """Training and validation regions (or those of one `role`), in drawing order."""
        return [a for a in self._items if a.role.is_area and role in (None, a.role)]

    def region_titles(self) -> dict[str, str]:
        """id -> each region's name, else its role and number among that role's regions ("Train 2"): the list and
        the region choices call a region the same."""
        return {a.id: a.name or f"{a.role.title} {i}" for role in (Role.REGION, Role.VALIDATION)
                for i, a in enumerate(self.regions(role), start=1)}

    def find(self, annotation_id: str | None) -> Annotation | None:
        return next((a for a in self._items if a.id == annotation_id), None)

    def labels(self) -> list[Annotation]:
        return [a for a in self._items if a.role is Role.LABEL]

    @property
    def classes(self) -> list[AnnotationClass]:
        """The default classes plus every class in use, without repeats, in first-seen order."""
        seen: dict[str, AnnotationClass] = {c.name: c for c in DEFAULT_CLASSES}
        for annotation in self._items:
            seen.setdefault(annotation.cls.name, annotation.cls)
        return list(seen.values())

    def __iter__(self) -> Iterator[Annotation]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Annotation:
        return self._items[index]

    def _emit(self, what: str, annotation: Annotation) -> None:
        for listener in list(self._listeners):
            listener(what, annotation)
