"""GeoJSON import/export compatible with QuPath 0.4+ (and QuPath 0.2/0.3 exports on import).

QuPath writes a FeatureCollection of Features in level-0 pixel coordinates, with `properties.objectType`
("annotation") and `properties.classification = {name, color: [r, g, b]}`. Older versions wrote a bare list of
Features, `object_type`, and `classification.colorRGB` as a signed ARGB integer. Our own role and drawing kind travel
in `properties.gigapath`, which QuPath keeps as an unknown property.

Import is all-or-nothing: every feature is checked before any annotation is returned.
"""
from __future__ import annotations

import json
import logging
import os
import uuid
import warnings
from pathlib import Path
from collections import Counter
from typing import Any, Callable, Iterable

import shapely.geometry
from shapely.errors import GEOSException

from gigapath_desktop.annotations.model import REGION, TISSUE, Annotation, AnnotationClass, Kind, Role
from gigapath_desktop.errors import AnnotationError
from gigapath_desktop.outputs import atomic_path

log = logging.getLogger(__name__)
AREA_TYPES = {"Polygon", "MultiPolygon"}
SKIPPED_TYPES = {"Point", "MultiPoint", "LineString", "MultiLineString"}
Report = Callable[[str], None]

# NaN coordinates make shapely warn before the shape is refused in one error line (a stray line before it)
warnings.filterwarnings("ignore", message="invalid value encountered in linearrings", category=RuntimeWarning)


def to_geojson(annotations: Iterable[Annotation]) -> dict[str, Any]:
    """A QuPath-compatible FeatureCollection."""
    return {"type": "FeatureCollection", "features": [_feature(a) for a in annotations]}


def write_geojson(annotations: Iterable[Annotation], path: str | os.PathLike[str]) -> Path:
    """Write atomically (temporary file, then rename), so a failed write never clobbers an existing file."""
    path = Path(path)
    text = json.dumps(to_geojson(annotations), separators=(',', ':'))  # compact: 2.5x smaller than indented
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def read_geojson(path: str | os.PathLike[str], report: Report | None = None) -> list[Annotation]:
    """Read a GeoJSON file written by this app or by QuPath; raises `AnnotationError` naming the file.

    What is left out (QuPath detections and cells, points and lines) is said through `report` (default: the log)."""
    path = Path(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))  # a byte-order mark is allowed
    except FileNotFoundError:
        raise AnnotationError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise AnnotationError(f"{path}: is a folder, not a GeoJSON file") from None
    except (OSError, ValueError) as exc:  # (UnicodeDecodeError, JSONDecodeError, an integer of 5000 digits)
        raise AnnotationError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise AnnotationError(f"{path}: nested too deeply to be GeoJSON") from None
    try:
        return from_geojson(data, report)
    except AnnotationError as exc:
        raise AnnotationError(f"{path}: {exc}") from None


def from_geojson(data: Any, report: Report | None = None) -> list[Annotation]:
    """Annotations from parsed GeoJSON: a FeatureCollection, a list of Features, or one Feature."""
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features")
    elif isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    else:
        features = data
    if not isinstance(features, list):
        raise AnnotationError("expected a GeoJSON FeatureCollection, a Feature, or a list of Features")
    annotations = []
    skipped: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    for index, feature in enumerate(features):
        try:
            annotation = _annotation(feature, skipped, _content_id(feature, seen))
        except AnnotationError as exc:
            raise AnnotationError(f"feature {index}: {exc}") from None
        if annotation is not None:
            annotations.append(annotation)
    if skipped:
        what = ", ".join(f"{n} {kind}" for kind, n in skipped.most_common())
        (report or log.warning)(f"imported {len(annotations)} annotation(s); skipped {what} "
                                f"(only areas of QuPath annotation objects become annotations)")
    return annotations


def _feature(annotation: Annotation) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "objectType": "annotation",
        "classification": {"name": annotation.cls.name, "color": list(annotation.cls.color)},
        "isLocked": False,
        "gigapath": {"role": annotation.role.value, "kind": annotation.kind.value},
    }
    if annotation.name:
        properties["name"] = annotation.name
    return {
        "type": "Feature",
        "id": annotation.id,
        "geometry": shapely.geometry.mapping(annotation.geometry),
        "properties": properties,
    }


def _content_id(feature: Any, seen: Counter[str]) -> str:
    """An id for a feature that has none, from its content (and how many identical ones came before it): the same
    file imported twice then adds nothing, as it does for features with ids."""
    if isinstance(feature, dict) and feature.get("id"):
        return ""
    try:
        content = json.dumps(feature, sort_keys=True, default=str)
    except (RecursionError, ValueError):  # (refused as a feature right after)
        return str(uuid.uuid4())
    seen[content] += 1
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"gigapath:{seen[content]}:{content}"))


def _annotation(feature: Any, skipped: Counter[str], content_id: str) -> Annotation | None:
    """One Feature as an Annotation; None (counted in `skipped`) for QuPath detections, cells and tiles and for
    points and lines, which are not areas a user drew to train on."""
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise AnnotationError("is not a GeoJSON Feature")
    geometry = feature.get("geometry")
    if not isinstance(geometry, dict) or not isinstance(geometry.get("type"), str):
        raise AnnotationError("has no geometry")
    properties = feature.get("properties") or {}
    if not isinstance(properties, dict):
        raise AnnotationError("properties must be an object")
    object_type = properties.get("objectType", properties.get("object_type", "annotation"))
    if str(object_type).lower() != "annotation":
        skipped[f"{object_type} object(s)"] += 1
        return None
    if geometry["type"] in SKIPPED_TYPES:
        skipped[f"{geometry['type']} feature(s)"] += 1
        return None
    if geometry["type"] not in AREA_TYPES:
        raise AnnotationError(f"geometry type {geometry['type']!r} is not supported (Polygon, MultiPolygon)")
    try:
        shape = shapely.geometry.shape(geometry)
    except (GEOSException, ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError) as exc:
        raise AnnotationError(f"has invalid coordinates ({exc})") from None
    cls = _classification(properties.get("classification"))
    ours = properties.get("gigapath") if isinstance(properties.get("gigapath"), dict) else {}
    role = ours.get("role") or _role_from_class(cls.name)
    kind = ours.get("kind", Kind.POLYGON.value)
    try:
        return Annotation(
            geometry=shape,  # type: ignore[arg-type]
            cls=cls,
            role=Role(role),
            kind=Kind(kind),
            name=str(properties.get("name", "")),
            id=str(feature.get("id") or content_id),
        )
    except ValueError as exc:
        raise AnnotationError(str(exc)) from None


def _classification(value: Any) -> AnnotationClass:
    """QuPath's classification in any of its versions' forms; unclassified areas count as Tissue."""
    if value is None:
        return TISSUE
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise AnnotationError(f"classification must be an object with a name, got {value!r}")
    if "color" in value:
        color = value["color"]
        if not (isinstance(color, list) and len(color) == 3 and all(_is_integer(c) for c in color)):
            raise AnnotationError(f"classification color must be [r, g, b] integers 0-255, got {color!r}")
        rgb = tuple(int(c) for c in color)
    elif "colorRGB" in value:
        if not _is_integer(value["colorRGB"]):
            raise AnnotationError(f"classification colorRGB must be an integer, got {value['colorRGB']!r}")
        packed = int(value["colorRGB"]) & 0xFFFFFF
        rgb = ((packed >> 16) & 255, (packed >> 8) & 255, packed & 255)
    else:
        rgb = REGION.color if value["name"].lower().startswith("region") else (128, 128, 128)
    return AnnotationClass(value["name"], rgb)  # type: ignore[arg-type]


def _is_integer(value: Any) -> bool:
    """JSON integers (3, or 3.0 as some writers put it); not bools, strings, nulls or NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or value.is_integer()


def _role_from_class(name: str) -> str:
    """QuPath files carry no role: a class named Region* trains, Validation* validates, anything else labels."""
    for prefix, role in (("region", Role.REGION), ("validation", Role.VALIDATION)):
        if name.lower().startswith(prefix):
            return role.value
    return Role.LABEL.value
