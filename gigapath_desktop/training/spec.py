"""Training specs: which regions of which slides to train and validate on, with which labels and classes.

A spec is what a project writes and `gigapath-desktop train --spec SPEC.json` reads:

    {"classes": ["Background", "Tumor", "Stroma"],      (omit for the tissue model)
     "mpp": 1.0,                                         (µm/px to train at; omit to train at each region's level)
     "train": [{"slide": "a.svs", "labels": "a.geojson", "mode": "sparse", "regions": [[x, y, w, h], ...]}, ...],
     "validation": [{"slide": "c.svs", "labels": "c.geojson"}]}

Paths are relative to the spec's folder. Regions are level-0 [x, y, w, h] (a fifth number picks a pyramid level);
without "regions" an item uses its labels file's own Train (or, for validation items, Validation) rectangles.
"mode" is "dense" (pixels no label covers are the first class) or "sparse" (they are ignored). Without "labels"
an item is labelled by tissue detection (tissue model only).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from gigapath_desktop.annotations import BACKGROUND, TISSUE, AnnotationClass
from gigapath_desktop.errors import AnnotationError, GigaPathError
from gigapath_desktop.mpp import MPP_TEXT, is_mpp
from gigapath_desktop.slides import Region

MODES = ("dense", "sparse")


def is_tissue_model(names: Iterable[str]) -> bool:
    """Classes no more than Background and Tissue train the tissue model (a spec's "classes" left out), as
    `project train` and the app's training choose it."""
    return set(names) <= {BACKGROUND.name, TISSUE.name}


def unknown_classes(labelled: Iterable[tuple[Path, Iterable[str]]], classes: Iterable[str]) -> dict[str, list[Path]]:
    """Each label class not among a K-class model's `classes`, with the slides whose labels are of it (each slide
    given with its label classes): what to name when such labels are refused."""
    known, unknown = set(classes), dict[str, list[Path]]()
    for slide, used in labelled:
        for name in sorted(set(used) - known):
            slides = unknown.setdefault(name, [])
            if slide not in slides:  # (a slide that trains and validates comes twice)
                slides.append(slide)
    return unknown


def where_text(unknown: dict[str, list[Path]]) -> str:
    """`unknown_classes` as said to a user: "'Tissue' on a.svs, b.svs; 'Fat' on c.svs"."""
    return "; ".join(f"{name!r} on {', '.join(s.name for s in slides)}" for name, slides in unknown.items())


@dataclass(frozen=True)
class SpecItem:
    slide: Path
    regions: tuple[Region, ...] = ()  # empty: the labels file's own Train / Validation rectangles
    labels: Path | None = None  # GeoJSON; None: automatic tissue detection
    sparse: bool = False
    slide_mpp: float | None = None  # the slide's own µm/px, for a slide that records none

    def as_json(self) -> dict[str, Any]:
        return {"slide": str(self.slide), "labels": None if self.labels is None else str(self.labels),
                "mode": MODES[self.sparse], "regions": [[*r.as_tuple(), r.level] for r in self.regions],
                **({} if self.slide_mpp is None else {"slide_mpp": self.slide_mpp})}


@dataclass(frozen=True)
class TrainSpec:
    train: tuple[SpecItem, ...]
    validation: tuple[SpecItem, ...] = ()
    classes: tuple[str, ...] | None = None  # class names in label order; None: the tissue model
    mpp: float | None = None
    colours: tuple[tuple[str, tuple[int, int, int]], ...] = ()  # (class, colour) a project gives, over the labels'

    @classmethod
    def one_slide(cls, slide: Path, regions: tuple[Region, ...], labels: Path | None = None,
                  val_region: Region | None = None, classes: tuple[str, ...] | None = None,
                  sparse: bool = False, mpp: float | None = None, slide_mpp: float | None = None,
                  colours: tuple[tuple[str, tuple[int, int, int]], ...] = ()) -> "TrainSpec":
        """`train SLIDE --region R [--region R2 ...] [--val-region V]`: one slide, one labels file."""
        validation = (SpecItem(slide, (val_region,), labels, sparse, slide_mpp),) if val_region is not None else ()
        spec = cls((SpecItem(slide, tuple(regions), labels, sparse, slide_mpp),), validation, classes, mpp, colours)
        try:
            return cls._parse(spec.as_json(), Path("."))  # the same checks as a spec file's
        except (TypeError, KeyError, ValueError) as exc:
            raise GigaPathError(f"training settings: {exc}") from None

    def as_json(self) -> dict[str, Any]:
        colours = dict(self.colours)
        classes = None if self.classes is None else [{"name": n, "color": list(colours[n])} if n in colours else n
                                                     for n in self.classes]
        return {"classes": classes, "mpp": self.mpp,
                "train": [i.as_json() for i in self.train], "validation": [i.as_json() for i in self.validation]}

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> "TrainSpec":
        """Read and check a spec file; every problem is one GigaPathError naming the file and the entry."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise GigaPathError(f"{path}: cannot read the training spec ({exc.strerror})") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise GigaPathError(f"{path}: not a JSON training spec ({exc})") from None
        except RecursionError:
            raise GigaPathError(f"{path}: nested too deeply to be a training spec") from None
        try:
            return cls._parse(data, path.parent)
        except (TypeError, KeyError, ValueError) as exc:
            raise GigaPathError(f"{path}: {exc}") from None

    @classmethod
    def _parse(cls, data: Any, base: Path) -> "TrainSpec":
        if not isinstance(data, dict):
            raise ValueError("a training spec is a JSON object with a 'train' list")
        _known_only(data, ("classes", "mpp", "train", "validation"), "")
        classes, colours = data.get("classes"), ()
        if classes is not None:
            names = [c.get("name") if isinstance(c, dict) else c for c in classes] if isinstance(classes, list) else []
            if not names or not all(isinstance(n, str) and n.strip() for n in names):
                raise ValueError("'classes' must be a list of class names (or of {\"name\": ...} objects)")
            colours = tuple(_colour(c) for c in classes if isinstance(c, dict) and "color" in c)
            classes = tuple(names)
        mpp = _mpp(data, "mpp", "")
        train = tuple(_item(entry, base, f"train[{i}]") for i, entry in enumerate(_list(data, "train")))
        if not train:
            raise ValueError("'train' lists no item")
        validation = tuple(_item(entry, base, f"validation[{i}]") for i, entry in enumerate(_list(data, "validation")))
        said: dict[Path, float | None] = {}
        for item in (*train, *validation):  # one slide, one resolution: two would scale its regions differently
            first = said.setdefault(item.slide.resolve(), item.slide_mpp)
            if first != item.slide_mpp:
                raise ValueError(f"{item.slide}: its items give it two µm/px ('slide_mpp' {first} and "
                                 f"{item.slide_mpp}); give one")
        return cls(train, validation, classes, mpp, colours)

    def repeats(self) -> list[str]:
        """What the spec says twice: a training item listed again (its regions train twice as often), a validation
        item with the regions of a training one (validated on what it trains on; items without regions take the
        Train and the Validation rectangles of their labels, which differ)."""
        said = [f"train[{i}] repeats train[{self.train.index(item)}]" for i, item in enumerate(self.train)
                if self.train.index(item) != i]
        return said + [f"validation[{i}] is train[{self.train.index(item)}]: it validates on what it trains on"
                       for i, item in enumerate(self.validation) if item.regions and item in self.train]


def _list(data: dict, key: str) -> list:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"'{key}' must be a list of items")
    return value


def _item(entry: Any, base: Path, where: str) -> SpecItem:
    if not isinstance(entry, dict) or not isinstance(entry.get("slide"), str):
        raise ValueError(f"{where}: an item is an object with at least a 'slide' path")
    _known_only(entry, ("slide", "labels", "mode", "regions", "slide_mpp"), f"{where}: ")
    mode = entry.get("mode", "dense")
    if mode not in MODES:
        raise ValueError(f"{where}: 'mode' must be 'dense' or 'sparse', got {mode!r}")
    labels = entry.get("labels")
    if labels is not None and not isinstance(labels, str):
        raise ValueError(f"{where}: 'labels' must be a path")
    regions = entry.get("regions", [])
    if not isinstance(regions, list) or not all(_is_rect(r) for r in regions):
        raise ValueError(f"{where}: 'regions' must be a list of [x, y, width, height] (and optionally a level)")
    return SpecItem(base / entry["slide"], tuple(Region(*r) for r in regions),
                    None if labels is None else base / labels, mode == "sparse", _mpp(entry, "slide_mpp", f"{where}: "))


def _colour(entry: dict) -> tuple[str, tuple[int, int, int]]:
    """(name, colour) of a {"name": ..., "color": [r, g, b]} class entry, checked as the labels' classes are."""
    try:
        cls = AnnotationClass(entry["name"], tuple(entry["color"]))
    except (TypeError, AnnotationError) as exc:
        raise ValueError(f"class {entry['name']!r}: {exc}") from None
    return cls.name, cls.color


def _known_only(data: dict, known: tuple[str, ...], where: str) -> None:
    """Refuse entries a spec does not know: a misspelt one ("mod" for "mode") would silently be its default."""
    unknown = set(data) - set(known)
    if unknown:
        raise ValueError(f"{where}unknown entries {sorted(unknown)} (known: {', '.join(known)})")


def _mpp(data: dict, key: str, where: str) -> float | None:
    value = data.get(key)
    if value is not None and not is_mpp(value):
        raise ValueError(f"{where}'{key}' must be {MPP_TEXT}, got {value!r}")
    return None if value is None else float(value)


def _is_rect(value: Any) -> bool:
    return (isinstance(value, list) and len(value) in (4, 5)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value))
