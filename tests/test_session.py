"""The Qt-free session model: what the app holds and the events it emits, on real slides.

The last test runs this whole file again in a fresh interpreter with PySide6 and pyqtgraph made unimportable."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from shapely.geometry import box

from conftest import BLOCK_QT, CMU, TCGA
from gigapath_desktop.annotations import Annotation, Role, read_geojson
from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.project import SavedSession, Session, TrainingChoice
from gigapath_desktop.slides import open_slide


@pytest.fixture
def session():  # noqa: ANN201
    s = Session(autosave_delay=0.01)
    yield s
    s.close()


def record(session: Session) -> list[tuple]:
    seen: list[tuple] = []
    for name in ("slide", "model", "classes", "selection", "training", "folder", "problem"):
        getattr(session.events, name).connect(lambda *args, n=name: seen.append((n, *args)))
    return seen


def test_a_slide_switch_tells_listeners_before_the_previous_slide_closes(session: Session) -> None:
    first, second = open_slide(CMU), open_slide(TCGA)
    told: list[tuple] = []
    session.events.slide.connect(lambda slide: told.append(first.level_dimensions[0]))  # raises once it is closed
    session.set_slide(first)
    session.set_slide(second)
    assert told == [(2220, 2967)] * 2, "listeners switch over while the previous slide is still open"
    with pytest.raises(Exception):
        first.level_dimensions  # noqa: B018
    assert session.slide is second


def test_edits_undo_redo_and_the_selection_follows_removals(session: Session) -> None:
    session.set_slide(open_slide(CMU))
    seen = record(session)
    small, large = Annotation(box(10, 10, 20, 20)), Annotation(box(0, 0, 1000, 1000))
    session.apply("draw", [], [small, large])
    session.select([small.id, "no-such-id"])
    assert session.selection == (small.id,) and ("selection", (small.id,)) in seen
    session.delete(session.selected())
    assert session.selection == () and len(session.annotations) == 1
    session.history.undo()
    assert [a.id for a in session.annotations] == [small.id, large.id], "back in its place (paint order)"
    assert session.history.undo_text == "draw" and session.history.redo_text == "delete"
    session.history.redo()
    assert len(session.annotations) == 1


def test_undoing_a_delete_keeps_the_regions_numbers(session: Session) -> None:
    session.set_slide(open_slide(CMU))
    regions = [Annotation.rectangle(x, 0, 200, 200) for x in (0, 300, 600)]
    session.apply("draw", [], regions)
    titles = session.annotations.region_titles()
    session.delete([regions[0], regions[2]])
    assert session.annotations.region_titles() == {regions[1].id: "Train 1"}
    session.history.undo()
    assert session.annotations.region_titles() == titles == {r.id: f"Train {i}" for i, r in enumerate(regions, 1)}


def test_a_move_stops_at_the_slide_edge(session: Session) -> None:
    session.set_slide(open_slide(CMU))  # 2220 x 2967
    shape = Annotation(box(100, 100, 300, 300))
    session.apply("draw", [], [shape])
    session.move(shape, -5000, 10_000)
    x0, y0, x1, y1 = session.annotations[0].bounds
    assert (x0, y1) == (0, 2967) and (x1 - x0, y1 - y0) == (200, 200)


def test_roles_choose_train_and_validation_regions(session: Session) -> None:
    session.set_slide(open_slide(CMU))
    first, second = Annotation.rectangle(0, 0, 500, 500), Annotation.rectangle(600, 0, 500, 500)
    session.apply("draw", [], [first, second])
    assert session.annotations.regions(Role.VALIDATION) == [], "a second rectangle trains too, until told otherwise"
    changed = session.change(second, role=Role.VALIDATION, name="held out")
    assert session.annotations.regions(Role.VALIDATION) == [changed] and changed.id == second.id
    assert session.history.undo_text == "role and name of Train", "what changed, not 'change Train'"
    session.change(changed, name="kept out", cls=changed.cls, role=changed.role)  # as the edit dialog sends them
    assert session.history.undo_text == "name of held out", "only what changed is named"
    assert session.change(session.annotations.find(changed.id), name="kept out").name == "kept out"
    assert session.history.undo_text == "name of held out", "no edit when nothing changes"
    session.history.undo()
    assert session.region(session.annotations.regions(Role.REGION)[0]).width == 500
    assert session.selected_region(first.id).x == 0, "nothing selected: the chosen Train region"
    session.select([changed.id])
    assert session.selected_region(first.id).x == 600, "else the selected region"
    session.history.undo()
    assert session.annotations.regions(Role.VALIDATION) == []
    assert session.region(Annotation.rectangle(5000, 5000, 10, 10)) is None, "off the slide: no region"


def test_annotations_roles_and_model_come_back_with_the_slide(session: Session, tmp_path: Path) -> None:
    session.set_slide(open_slide(CMU))
    session.apply("draw", [], [Annotation.rectangle(0, 0, 500, 500, role=Role.VALIDATION)])
    model = tmp_path / "model.keras"
    model.write_bytes(b"weights")
    session.set_model(model)
    session.autosave.flush()

    relaunched = Session()
    seen = record(relaunched)
    relaunched.set_slide(open_slide(CMU))
    assert relaunched.model_path == model and ("model", model) in seen
    assert [a.role for a in relaunched.annotations] == [Role.VALIDATION]
    model.unlink()
    relaunched.set_slide(open_slide(CMU))
    assert relaunched.model_path is None, "a model that is gone is not offered"
    relaunched.close()


def test_a_saved_session_reads_back_and_bad_ones_are_refused(session: Session, tmp_path: Path) -> None:
    session.set_slide(open_slide(CMU))
    session.add_class("Tumour", (200, 0, 0))
    session.set_training(steps=42, sparse=True, on_project=True)
    session.apply("draw", [], [Annotation(box(5, 5, 50, 50))])
    session.save(tmp_path / "s")
    saved = SavedSession.read(tmp_path / "s")
    assert saved.slide == str(CMU.resolve()) and saved.training == TrainingChoice(steps=42, on_project=True, sparse=True)
    assert [c.name for c in saved.classes][-1] == "Tumour"
    assert len(read_geojson(tmp_path / "s" / "annotations.geojson")) == 1
    for bad in ('{"settings": {"steps": -1}}', '{"classes": [{"name": ""}]}', '{"slide": 5}', "[", '"x"'):
        (tmp_path / "s" / "session.json").write_text(bad)
        with pytest.raises(GigaPathError, match="not a readable session"):
            SavedSession.read(tmp_path / "s")


def test_a_class_named_as_another_but_for_case_is_refused(session: Session) -> None:
    session.add_class("Tumor", (200, 0, 0))
    seen = record(session)
    with pytest.raises(GigaPathError, match="'Tumor' already"):
        session.add_class("tumor", (0, 0, 200))
    assert seen == [] and [c.name for c in session.classes].count("Tumor") == 1
    assert "tumor" not in [c.name for c in session.classes]


def test_bad_training_values_are_refused_without_a_change(session: Session) -> None:
    seen = record(session)
    for bad in ({"steps": 0}, {"learning_rate": float("nan")}, {"tile": 10}, {"steps": True},
                {"memory_budget": float("inf")}, {"memory_budget": 0.1}, {"sparse": 1}, {"on_project": "yes"},
                {"mpp": 0.0}, {"mpp": float("nan")}, {"mpp": True}):
        with pytest.raises(GigaPathError):
            session.set_training(**bad)
    assert session.training == TrainingChoice() and seen == []
    session.set_training(tile=1024)
    assert seen == [("training", TrainingChoice(tile=1024))]


def test_the_apps_settings_keep_the_training_choices_also_from_a_file_of_the_older_flat_format(tmp_path: Path) -> None:
    from gigapath_desktop.project.settings import Settings, config_dir

    config_dir().mkdir(parents=True, exist_ok=True)
    (config_dir() / "settings.json").write_text(json.dumps({"steps": 42, "sparse": True, "last_project": "/p"}))
    settings, problem = Settings.load()
    assert problem is None and settings.training == TrainingChoice(steps=42, sparse=True)
    settings.training = TrainingChoice(tile=1024, on_project=True)
    settings.save()
    saved = json.loads((config_dir() / "settings.json").read_text())
    assert saved["training"]["tile"] == 1024 and "tile" not in saved
    assert Settings.load() == (Settings(training=TrainingChoice(tile=1024, on_project=True), last_project="/p"), None)


def test_an_unreadable_autosave_is_a_problem_event_not_an_exception(session: Session, tmp_path: Path) -> None:
    session.set_slide(open_slide(CMU))
    path = session.autosave_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature"}]}))
    seen = record(session)
    session.set_slide(open_slide(CMU))
    (problem,) = [e for e in seen if e[0] == "problem"]
    assert "kept as" in problem[1] and len(session.annotations) == 0


BLOCKED = BLOCK_QT + """
import pytest
sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-p', 'no:pytest-qt', sys.argv[1], '-k', 'not without_qt']))
"""


def test_these_tests_pass_without_qt() -> None:
    result = subprocess.run([sys.executable, "-c", BLOCKED, __file__], capture_output=True, text=True,
                            cwd=Path(__file__).parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_imported_classes_join_the_session_with_one_colour_and_far_shapes_are_named(session: Session,
                                                                                    tmp_path: Path) -> None:
    session.set_slide(open_slide(CMU))  # 2220 x 2967
    path = tmp_path / "qupath.geojson"
    features = [
        {"type": "Feature", "geometry": box(100, 100, 300, 300).__geo_interface__,
         "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "color": [200, 0, 0]}}},
        {"type": "Feature", "geometry": box(400, 400, 600, 600).__geo_interface__,
         "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}}},
        {"type": "Feature", "geometry": box(50000, 50000, 60000, 60000).__geo_interface__,
         "properties": {"objectType": "annotation", "name": "far away", "classification": {"name": "Stroma"}}},
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    notes = session.import_annotations("import", read_geojson(path))
    classes = {c.name: c.color for c in session.classes}
    assert classes["Tumor"] == (200, 0, 0) and "Stroma" in classes
    assert {a.cls.color for a in session.annotations if a.cls.name == "Tumor"} == {(200, 0, 0)}
    assert len(notes) == 1 and "1 of the 3" in notes[0] and "far away" in notes[0]
    session.history.undo()
    assert len(session.annotations) == 0, "one undoable edit"


def test_a_slide_trains_the_classes_a_project_would(session: Session, tmp_path: Path) -> None:
    """With no class beyond Background and Tissue the slide trains the tissue model; classes added (or used by its
    labels) make a K-class model, Background first; on a project's slide, the project's classes, whatever the
    session holds."""
    from gigapath_desktop.project.manifest import Project

    session.set_slide(open_slide(CMU))
    session.apply("tissue", [], [Annotation(box(0, 0, 100, 100))])  # a Tissue label, as Detect tissue makes
    assert session.model_classes() is None, "the tissue model"
    tumor = session.add_class("Tumor", (200, 0, 0))
    session.add_class("Stroma", (0, 150, 0))
    assert [c.name for c in session.model_classes()] == ["Background", "Tissue", "Tumor", "Stroma"]
    session.apply("delete", list(session.annotations), [Annotation(box(0, 0, 100, 100), cls=tumor)])
    assert [c.name for c in session.model_classes()] == ["Background", "Tumor", "Stroma"]
    assert session.model_classes()[1].color == (200, 0, 0)

    project = Project.create(tmp_path / "study")
    project.add([TCGA])
    session.use_project(project)
    assert [c.name for c in session.model_classes()] == ["Background", "Tumor", "Stroma"], "not a project slide"
    project.add_class(tumor)
    session.set_slide(open_slide(TCGA))
    assert session.on_project_slide() and [c.name for c in session.model_classes()] == ["Background", "Tumor"]


def test_a_class_takes_another_colour_on_its_labels_in_the_project_and_on_its_other_slides(session: Session,
                                                                                           tmp_path: Path) -> None:
    """One colour per class: recolouring changes the slide's labels (one undoable edit) and the project's class;
    the project's other slides' labels take it when opened; New class of a known name recolours it."""
    from gigapath_desktop.annotations import AnnotationClass
    from gigapath_desktop.project.manifest import Project

    project = Project.create(tmp_path / "study")
    project.add([CMU, TCGA])
    session.use_project(project)
    tumor = session.add_class("Tumor", (150, 200, 150))
    session.set_slide(open_slide(TCGA))
    session.apply("draw", [], [Annotation(box(0, 0, 50, 50), cls=tumor), Annotation.rectangle(0, 0, 99, 99)])
    session.set_slide(open_slide(CMU))
    session.apply("draw", [], [Annotation(box(0, 0, 50, 50), cls=tumor), Annotation(box(60, 0, 90, 50))])

    session.recolour_class(AnnotationClass("Tumor", (200, 0, 0)))
    assert [a.cls.color for a in session.annotations] == [(200, 0, 0), (64, 160, 64)], "Tissue keeps its colour"
    assert session.history.undo_text == "colour of Tumor"
    session.history.undo()  # the whole recolouring, class and project too: never one class in two colours
    assert [c.color for c in session.classes if c.name == "Tumor"] == [(150, 200, 150)]
    assert Project.open(project.folder).classes[-1].color == (150, 200, 150)
    assert [a.cls.color for a in session.annotations][0] == (150, 200, 150)
    session.history.redo()
    assert Project.open(project.folder).classes[-1] == AnnotationClass("Tumor", (200, 0, 0))
    assert [c.color for c in session.classes if c.name == "Tumor"] == [(200, 0, 0)]
    session.set_slide(open_slide(TCGA))
    assert [a.cls.color for a in session.annotations if a.role is Role.LABEL] == [(200, 0, 0)]

    session.add_class("Tumor", (0, 0, 180))  # New class… with a name the session knows
    assert [c.color for c in session.classes if c.name == "Tumor"] == [(0, 0, 180)]
    assert [a.cls.color for a in session.annotations if a.role is Role.LABEL] == [(0, 0, 180)]


def test_a_class_is_renamed_on_every_slide_undoably_and_removed_only_when_no_label_is_of_it(session: Session,
                                                                                            tmp_path: Path) -> None:
    """A typo ("Tumour", or "tumor" beside Tumor) no longer stays a class of every later model."""
    from gigapath_desktop.project.manifest import Project

    project = Project.create(tmp_path / "study")
    project.add([CMU, TCGA])
    session.use_project(project)
    tumour, typo = session.add_class("Tumour", (200, 0, 0)), session.add_class("Strma", (0, 0, 200))
    session.set_slide(open_slide(TCGA))
    tcga = session.folder.name
    session.apply("draw", [], [Annotation(box(0, 0, 50, 50), cls=tumour), Annotation(box(60, 0, 90, 50), cls=typo)])
    session.set_slide(open_slide(CMU))
    session.apply("draw", [], [Annotation(box(0, 0, 50, 50), cls=tumour)])

    def names(labels: list[Annotation]) -> list[str]:
        return [a.cls.name for a in labels if a.role is Role.LABEL]

    session.rename_class("Tumour", "Tumor")
    assert names(session.annotations) == ["Tumor"] and names(project.annotations(tcga)) == ["Tumor", "Strma"]
    assert "Tumor" in [c.name for c in Project.open(project.folder).classes] and session.classes[-2].name == "Tumor"
    session.history.undo()  # the whole renaming: this slide's labels, the class, the project and its other slides
    assert names(session.annotations) == ["Tumour"] and names(project.annotations(tcga)) == ["Tumour", "Strma"]
    assert "Tumour" in [c.name for c in Project.open(project.folder).classes]
    session.history.redo()
    assert names(project.annotations(tcga)) == ["Tumor", "Strma"]
    for old, new, said in (("Tumor", "strma", "'Strma' already"), ("Tissue", "Tumour", "built in"),
                           ("Tumor", " ", "needs a name")):
        with pytest.raises(GigaPathError, match=said):
            session.rename_class(old, new)
    with pytest.raises(GigaPathError, match=f"labels of Strma are on {TCGA.name}: delete them first"):
        session.remove_class("Strma")
    session.rename_class("Strma", "Stroma")
    session.add_class("Necrosis", (90, 90, 90))  # no label of it anywhere: it goes
    session.remove_class("Necrosis")
    assert "Necrosis" not in [c.name for c in session.classes + Project.open(project.folder).classes]
    with pytest.raises(GigaPathError, match="this slide"):
        session.remove_class("Tumor")


def test_a_project_slide_opens_with_the_newest_of_its_own_model_and_the_projects(session: Session,
                                                                                tmp_path: Path) -> None:
    """A project training's model is every project slide's, not only the one open when it finished; a model
    opened later on a slide (newer) stays that slide's."""
    import os

    from gigapath_desktop.project.manifest import Project

    project = Project.create(tmp_path / "study")
    project.add([CMU, TCGA])
    session.use_project(project)
    old, new, later = (tmp_path / name / "model.keras" for name in ("old", "project-run", "later"))
    for age, model in enumerate((old, new, later)):
        model.parent.mkdir()
        model.write_bytes(b"a model")
        os.utime(model, (1e9 + age, 1e9 + age))
    session.set_slide(open_slide(CMU))
    session.set_model(old)
    project.add_run(new.parent, status="finished")
    session.set_slide(open_slide(TCGA))
    assert session.model_path == new, "a slide with no model of its own: the project's"
    session.set_model(later)
    session.set_slide(open_slide(CMU))
    assert session.model_path == new, "the project's newer model over the slide's older one"
    session.set_slide(open_slide(TCGA))
    assert session.model_path == later, "a model opened on the slide after the project's stays"
