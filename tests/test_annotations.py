"""Annotation model, QuPath GeoJSON round trips, rasterization rule, and mask tracing."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import MultiPolygon, Point, Polygon, box

from gigapath_desktop import AnnotationError
from gigapath_desktop.annotations import (
    BACKGROUND,
    TISSUE,
    Annotation,
    AnnotationClass,
    AnnotationSet,
    Kind,
    Role,
    mask_to_polygons,
    rasterize,
    read_geojson,
    write_geojson,
)

TUMOR = AnnotationClass("Tumor", (200, 0, 0))


def _sample_annotations() -> list[Annotation]:
    donut = Point(500.25, 400.125).buffer(200.0).difference(Point(510.5, 390.0).buffer(60.0))
    return [
        Annotation.rectangle(10, 20, 3000, 2000, name="train area"),
        Annotation(donut, cls=TISSUE, kind=Kind.BRUSH),
        Annotation(MultiPolygon([box(0, 0, 10.5, 10.5), box(20, 20, 30.75, 31)]), cls=TUMOR, name="two parts"),
        Annotation(Polygon([(1, 1), (50, 3), (25, 60.3333333333)]), cls=BACKGROUND),
    ]


def test_geojson_round_trip_is_lossless(tmp_path: Path) -> None:
    original = _sample_annotations()
    path = write_geojson(original, tmp_path / "a.geojson")
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection"
    assert data["features"][2]["properties"]["classification"] == {"name": "Tumor", "color": [200, 0, 0]}
    assert data["features"][0]["properties"]["objectType"] == "annotation"
    restored = read_geojson(path)
    assert len(restored) == len(original)
    for a, b in zip(original, restored):
        assert shapely.equals_exact(a.geometry, b.geometry, tolerance=0.0)
        assert (a.cls, a.role, a.kind, a.name, a.id) == (b.cls, b.role, b.kind, b.name, b.id)


QUPATH_04 = """{"type": "FeatureCollection", "features": [
 {"type": "Feature", "id": "0b2c4b1e-7c9f-4b47-9a8e-3f1f0e6c2d11",
  "geometry": {"type": "Polygon", "coordinates": [[[100, 100], [400, 100], [400, 300], [100, 300], [100, 100]]]},
  "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "color": [200, 0, 0]}}},
 {"type": "Feature", "id": "d4c1a2b3-0000-4000-8000-000000000001",
  "geometry": {"type": "MultiPolygon", "coordinates": [[[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]],
                                                       [[[20, 20], [30, 20], [30, 30], [20, 30], [20, 20]]]]},
  "properties": {"objectType": "annotation", "name": "islands"}},
 {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 5]},
  "properties": {"objectType": "annotation"}}
]}"""

QUPATH_02 = """[{"type": "Feature", "id": "PathAnnotationObject",
  "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [50, 0], [50, 50], [0, 50], [0, 0]]]},
  "properties": {"object_type": "annotation", "isLocked": false,
                 "classification": {"name": "Region*", "colorRGB": -16776961}}}]"""


def test_qupath_files_import(tmp_path: Path) -> None:
    new = tmp_path / "qupath04.geojson"
    new.write_text(QUPATH_04)
    annotations = read_geojson(new)
    assert len(annotations) == 2, "the point carries no area and is skipped"
    tumor, islands = annotations
    assert tumor.cls == TUMOR and tumor.role is Role.LABEL and tumor.geometry.area == 300 * 200
    assert islands.cls == TISSUE and islands.name == "islands" and islands.geometry.area == 200
    old = tmp_path / "qupath02.geojson"
    old.write_text(QUPATH_02)
    (region,) = read_geojson(old)
    assert region.role is Role.REGION and region.cls.color == (0, 0, 255)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not valid JSON"),
        ('{"type": "Topology"}', "expected a GeoJSON FeatureCollection"),
        ('[{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1]]]}}]', "feature 0"),
        (json.dumps({"type": "FeatureCollection", "features": json.loads(QUPATH_04)["features"] + [{"type": "Feature"}]}),
         "feature 3"),
        ('[{"type": "Feature", "geometry": {"type": "GeometryCollection", "geometries": []}}]', "not supported"),
    ],
)
def test_invalid_geojson_raises_and_imports_nothing(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.geojson"
    path.write_text(text)
    existing = AnnotationSet(_sample_annotations())
    with pytest.raises(AnnotationError, match=message):
        existing.extend(read_geojson(path))
    assert len(existing) == 4


def test_self_intersecting_polygon_is_repaired() -> None:
    bowtie = Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])
    assert not bowtie.is_valid
    annotation = Annotation(bowtie)
    assert annotation.geometry.is_valid and annotation.geometry.area == pytest.approx(50)


@pytest.mark.parametrize("downsample", [1.0, 4.0])
def test_rasterized_circle_matches_its_area(downsample: float) -> None:
    r = 700.0
    circle = Point(1500.3, 1400.7).buffer(r, quad_segs=256)
    shape = (int(3000 / downsample), int(3000 / downsample))
    mask = rasterize([Annotation(circle)], (0.0, 0.0), downsample, shape)
    expected = math.pi * r**2 / downsample**2
    assert abs(mask.sum() - expected) / expected < 0.005


def test_rasterization_rule_pixel_centres_and_paint_order() -> None:
    # A 10 x 10 square on pixel edges covers exactly 100 pixel centres; shifted by 0.4 px still 100.
    assert rasterize([Annotation(box(2, 3, 12, 13))], (0, 0), 1.0, (20, 20)).sum() == 100
    assert rasterize([Annotation(box(2.4, 3.4, 12.4, 13.4))], (0, 0), 1.0, (20, 20)).sum() == 100
    # Region origin shifts coordinates; later Background paints 0 over earlier Tissue; regions are not painted.
    layers = [Annotation(box(100, 100, 120, 120)), Annotation(box(110, 110, 130, 130), cls=BACKGROUND),
              Annotation.rectangle(100, 100, 50, 50)]
    mask = rasterize(layers, (100, 100), 1.0, (40, 40))
    assert mask.sum() == 400 - 100 and mask[0, 0] == 1 and mask[15, 15] == 0
    multi = rasterize(layers[:1] + [Annotation(box(0, 0, 10, 10), cls=TUMOR)], (0, 0), 1.0, (130, 130),
                      values={"Tissue": 1, "Tumor": 2})
    assert set(np.unique(multi)) == {0, 1, 2} and (multi == 2).sum() == 100


def test_rasterize_into_a_memmap_strip_by_strip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gigapath_desktop.annotations import raster

    circle = Annotation(Point(300, 2500).buffer(250))
    whole = rasterize([circle], (0, 0), 1.0, (3000, 600))
    monkeypatch.setattr(raster, "STRIP_PIXELS", 97 * 600)  # strips of 97 rows
    out = np.lib.format.open_memmap(tmp_path / "m.npy", mode="w+", dtype=np.uint8, shape=(3000, 600))
    rasterize([circle], (0, 0), 1.0, (3000, 600), out=out)
    assert np.array_equal(np.asarray(out), whole)


def test_a_64000_px_wide_strip_rasterizes_in_bounded_memory() -> None:
    import tracemalloc

    hole = Point(32000, 500).buffer(300)
    tracemalloc.start()
    mask = rasterize([Annotation(box(0, 10, 64000, 990).difference(hole))], (0, 0), 1.0, (1000, 64000))
    peak = tracemalloc.get_traced_memory()[1] - mask.nbytes
    tracemalloc.stop()
    assert abs(mask.sum() - (64000 * 980 - hole.area)) < 2000
    assert peak < 128 * 2**20, f"{peak / 2**20:.0f} MiB beyond the mask itself (was ~600 MiB)"


@pytest.mark.parametrize("density", [0.2, 0.5, 0.8])
def test_noise_masks_trace_into_valid_polygons_that_rasterize_back_exactly(density: float) -> None:
    rng = np.random.default_rng(int(density * 10))
    for _ in range(30):  # pixels touching at corners everywhere: the hard case for valid rings
        mask = (rng.random(tuple(rng.integers(3, 50, 2))) < density).astype(np.uint8)
        polygons = mask_to_polygons(mask)
        assert all(p.is_valid for p in polygons)
        assert np.array_equal(rasterize([Annotation(p) for p in polygons], (0, 0), 1.0, mask.shape), mask)


def test_simplified_contours_of_speckled_masks_are_valid_at_most_one_polygon_a_component() -> None:
    """Where simplifying makes rings cross, the component's traced rings are kept instead (no make_valid, which took
    minutes on one big component of an export, out of its Stop's reach)."""
    from scipy import ndimage

    rng = np.random.default_rng(3)
    for density in (0.3, 0.5, 0.7):
        mask = (rng.random((120, 160)) < density).astype(np.uint8)
        polygons = mask_to_polygons(mask, simplify=2.0)
        assert all(p.is_valid and isinstance(p, Polygon) for p in polygons)
        assert len(polygons) <= ndimage.label(mask, np.ones((3, 3)))[1]  # (make_valid split them: 121 of 91)


def test_features_without_ids_get_the_same_ids_each_time_they_are_read() -> None:
    """So importing the same id-less export twice (older QuPath) adds nothing the second time."""
    from gigapath_desktop.annotations.geojson import from_geojson

    square = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [9, 0], [9, 9], [0, 0]]]},
              "properties": {"objectType": "annotation"}}
    data = {"type": "FeatureCollection", "features": [square, square, {**square, "id": "given"}]}
    first, again = ([a.id for a in from_geojson(data)] for _ in range(2))
    assert first == again and first[2] == "given" and first[0] != first[1], "two identical shapes stay two"


def test_traced_polygons_rasterize_back_to_the_same_mask() -> None:
    rng = np.random.default_rng(1)
    from scipy import ndimage

    noise = ndimage.gaussian_filter(rng.standard_normal((300, 400)), 6)
    mask = (noise > 0.02).astype(np.uint8)
    mask[150:160, 200:210] = 0  # a hole
    mask[5, 5] = 1  # a lone pixel
    polygons = mask_to_polygons(mask, origin=(1000.0, 2000.0), downsample=2.0)
    assert any(len(p.interiors) for p in polygons), "holes are kept"
    back = rasterize([Annotation(p) for p in polygons], (1000.0, 2000.0), 2.0, mask.shape)
    assert np.array_equal(back, mask)


def test_annotation_set_notifies_listeners() -> None:
    seen: list[tuple[str, str]] = []
    annotations = AnnotationSet()
    annotations.subscribe(lambda what, a: seen.append((what, a.name)))
    first = Annotation(box(0, 0, 5, 5), name="a")
    annotations.add(first)
    annotations.replace(first, Annotation(box(0, 0, 6, 6), name="b"))
    annotations.remove(annotations[0])
    assert seen == [("added", "a"), ("changed", "b"), ("removed", "b")]
    assert [c.name for c in annotations.classes][:3] == ["Tissue", "Background", "Region"]


def test_qupath_detections_and_cells_are_skipped_and_counted(tmp_path: Path) -> None:
    def feature(object_type: str, name: str = "Tissue") -> dict:
        return {"type": "Feature", "geometry": shapely.geometry.mapping(box(0, 0, 10, 10)),
                "properties": {"objectType": object_type, "classification": {"name": name, "color": [1, 2, 3]}}}

    path = tmp_path / "qupath.geojson"
    path.write_text(json.dumps([feature("annotation"), feature("detection"), feature("cell"), feature("cell"),
                                feature("annotation", "Tumor")]))
    notes: list[str] = []
    imported = read_geojson(path, report=notes.append)
    assert [a.cls.name for a in imported] == ["Tissue", "Tumor"]
    (note,) = notes
    assert "skipped 2 cell object(s), 1 detection object(s)" in note


def test_classes_other_than_background_paint_tissue_and_are_named() -> None:
    from gigapath_desktop.annotations import other_classes

    labels = [Annotation(box(0, 0, 10, 10), cls=TUMOR), Annotation(box(10, 0, 20, 10), cls=BACKGROUND),
              Annotation(box(20, 0, 30, 10)), Annotation.rectangle(0, 0, 30, 10)]
    mask = rasterize(labels, (0.0, 0.0), 1.0, (10, 30))
    assert mask[:, :10].all() and not mask[:, 10:20].any() and mask[:, 20:].all()
    assert other_classes(labels) == ["Tumor"]


def test_ids_stay_unique_when_the_same_file_is_imported_twice(tmp_path: Path) -> None:
    path = write_geojson(_sample_annotations(), tmp_path / "a.geojson")
    annotations = AnnotationSet()
    annotations.extend(read_geojson(path))
    annotations.extend(read_geojson(path))
    ids = [a.id for a in annotations]
    assert len(ids) == 2 * len(_sample_annotations()) and len(set(ids)) == len(ids)
    second = annotations[len(ids) - 1]
    annotations.remove(second)
    assert second not in list(annotations) and len(annotations) == len(ids) - 1


@pytest.mark.parametrize("bad", [math.nan, math.inf, 1e300])
def test_coordinates_must_be_finite_pixel_positions(bad: float) -> None:
    with pytest.raises(AnnotationError, match="finite pixel positions"):
        Annotation(Polygon([(0, 0), (bad, 0), (bad, bad)]))


def test_a_speckled_mask_with_tens_of_thousands_of_holes_traces_exactly_and_can_be_stopped() -> None:
    from gigapath_desktop import Cancelled

    rng = np.random.default_rng(0)
    mask = np.ones((600, 800), np.uint8)
    mask[1:-1:4, 1:-1:4] = 0  # ~30k one-pixel holes in one component
    mask[rng.integers(0, 600, 2000), rng.integers(0, 800, 2000)] = 0  # and random specks, some touching them
    (polygon,) = mask_to_polygons(mask)
    assert len(polygon.interiors) > 30_000 and polygon.is_valid
    assert np.array_equal(rasterize([Annotation(polygon)], (0, 0), 1.0, mask.shape), mask)
    (filled,) = mask_to_polygons(mask, min_area=4)
    assert len(filled.interiors) < 100 and filled.area > 0.99 * mask.size
    with pytest.raises(Cancelled):
        mask_to_polygons(mask, cancel=lambda: True)
