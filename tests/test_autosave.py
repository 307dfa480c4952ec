"""The Qt-free autosave: bursts coalesced into one write off the caller's thread, unreadable files kept aside."""
from __future__ import annotations

import json
from pathlib import Path

from shapely.geometry import box

from gigapath_desktop.annotations import Annotation, AnnotationSet, read_geojson
from gigapath_desktop.annotations.autosave import Autosave


def _squares(n: int) -> list[Annotation]:
    return [Annotation(box(i, 0, i + 1, 1)) for i in range(n)]


def test_a_burst_of_changes_is_one_write_and_flush_waits_for_it(tmp_path: Path) -> None:
    annotations = AnnotationSet()
    autosave = Autosave(annotations, delay=0.2)
    assert autosave.attach(tmp_path / "a.geojson") is None
    annotations.extend(_squares(500))
    assert autosave.writes == 0, "nothing is written while changes keep coming"
    autosave.flush()
    assert autosave.writes == 1 and len(read_geojson(tmp_path / "a.geojson")) == 500
    annotations.add(_squares(1)[0])
    autosave.attach(tmp_path / "b.geojson")  # pending changes go to the previous file first
    assert len(read_geojson(tmp_path / "a.geojson")) == 501 and len(annotations) == 0
    autosave.close()


def test_an_unreadable_file_is_kept_aside_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "a.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature"}]}))
    damaged = path.read_text()
    annotations = AnnotationSet()
    autosave = Autosave(annotations, delay=0.01)
    note = autosave.attach(path)
    (aside,) = tmp_path.glob("a.unreadable-*.geojson")
    assert note is not None and str(aside) in note and len(annotations) == 0
    annotations.add(_squares(1)[0])
    autosave.close()
    assert aside.read_text() == damaged and len(read_geojson(path)) == 1


def test_a_failed_write_is_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    problems: list[str] = []
    annotations = AnnotationSet()
    autosave = Autosave(annotations, delay=0.01, on_error=problems.append)
    autosave.attach(tmp_path / "file" / "a.geojson")  # its folder is a file
    annotations.add(_squares(1)[0])
    autosave.close()
    assert len(problems) == 1 and problems[0].startswith("autosave failed")
