"""The session model: one open slide, its annotations (undoable, autosaved), classes, the model, training settings,
the selection, the session folder and the open project.

Setters check, change state, then emit an event (napari's way); Qt widgets subscribe and never hold state of their
own. What a relaunch needs comes back with the slide: its annotations (with their train / validation roles) from the
autosave, and the last model from a small state file beside it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from shapely.affinity import translate
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from gigapath_desktop.annotations import BACKGROUND, DEFAULT_CLASSES, Annotation, AnnotationClass, AnnotationSet, Role
from gigapath_desktop.annotations.autosave import Autosave
from gigapath_desktop.annotations.model import as_area
from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.locks import FolderLock
from gigapath_desktop.outputs import atomic_path
from gigapath_desktop.project.class_edits import BUILT_IN, ClassEdits
from gigapath_desktop.project.events import Emitter
from gigapath_desktop.project.history import History
from gigapath_desktop.project.manifest import Project, ProjectSlide
from gigapath_desktop.project.settings import TrainingChoice, data_dir
from gigapath_desktop.project.training_data import TrainingData
from gigapath_desktop.slides import Region, Slide
from gigapath_desktop.training.spec import is_tissue_model


@dataclass
class SavedSession:
    """What session.json holds, checked as a whole before anything changes."""

    slide: str | None = None
    model: str | None = None
    training: TrainingChoice = field(default_factory=TrainingChoice)
    classes: list[AnnotationClass] = field(default_factory=list)

    @classmethod
    def read(cls, folder: Path) -> "SavedSession":
        """Raises GigaPathError saying why a folder holds no readable session."""
        try:
            state = json.loads((folder / "session.json").read_text())
            classes = [AnnotationClass(str(c["name"]), tuple(c["color"])) for c in state.get("classes", [])]
            training = TrainingChoice.from_json(state.get("settings", {}))
            slide, model = state.get("slide"), state.get("model")
            if not all(v is None or isinstance(v, str) for v in (slide, model)):
                raise TypeError("slide and model must be paths")
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError, GigaPathError) as exc:
            raise GigaPathError(f"{folder}: not a readable session ({type(exc).__name__}: {exc})") from None
        return cls(slide, model, training, classes)

    def write(self, folder: Path) -> None:
        state = {"slide": self.slide, "model": self.model, "settings": asdict(self.training),
                 "classes": [{"name": c.name, "color": list(c.color)} for c in self.classes]}
        with atomic_path(folder / "session.json") as tmp:
            tmp.write_text(json.dumps(state, indent=1))


class SessionEvents:
    """slide(Slide), slide_mpp(Slide: its µm/px given anew), model(Path | None), classes(list), selection(tuple of ids), training(TrainingChoice),
    running(TrainingData | None: what a training started on, or None when it ended), folder(Path | None),
    project(Project | None: opened, closed or changed), problem(str: something the user must read),
    autosave_failed(str: from the autosave thread, once per failed write)."""

    def __init__(self) -> None:
        self.slide, self.model, self.classes, self.selection = Emitter(), Emitter(), Emitter(), Emitter()
        self.training, self.folder, self.problem, self.autosave_failed = Emitter(), Emitter(), Emitter(), Emitter()
        self.project, self.running, self.slide_mpp = Emitter(), Emitter(), Emitter()


class Session(ClassEdits):
    def __init__(self, training: TrainingChoice | None = None, autosave_delay: float = 0.3) -> None:
        self.events = SessionEvents()
        self.annotations = AnnotationSet()
        self.history = History(self.annotations)
        self.autosave = Autosave(self.annotations, autosave_delay, on_error=self.events.autosave_failed.emit)
        self.slide: Slide | None = None
        self.folder: Path | None = None
        self.model_path: Path | None = None
        self.project: Project | None = None
        self._slide_lock: FolderLock | None = None  # a project slide's folder, held while the slide is open
        self.classes: list[AnnotationClass] = list(DEFAULT_CLASSES)
        self.selection: tuple[str, ...] = ()
        self.training = training or TrainingChoice()
        self.running: TrainingData | None = None  # what the running training reads, whichever slide is open now
        self.annotations.subscribe(self._forget_removed)

    # --- slide ----------------------------------------------------------------------------------------------------
    def set_slide(self, slide: Slide, restore: bool = True, folder: Path | None = None) -> None:
        """Show `slide` with its saved annotations and model (restore=False: start empty); `folder`: as the slide of
        that session folder. A slide of the open project keeps its annotations in the project. Listeners of `slide`
        switch over before the previous slide is closed, so none of them reads a closed file."""
        previous, self.slide = self.slide, slide
        if self.project is not None and folder is None:
            entry = self.project.slide(slide.fingerprint)
            self.folder = self.project.slide_folder(entry.id) if entry else None
        elif folder is not None:
            self.folder = folder
        self._lock_project_slide()
        if self.on_project_slide():  # opened from the project or by its file: the project's word on its µm/px
            entry = self.project.slide(self.folder.name)
            if entry is not None:
                slide.given_mpp = entry.given_mpp
        self.history.clear()
        self.select([])
        problem = self.autosave.attach(self.autosave_path() if restore else None)
        if problem:
            self.events.problem.emit(f"the autosaved annotations could not be read: {problem}")
        self._adopt_colours()
        self.events.slide.emit(slide)
        if previous is not None:
            previous.close()
        candidates = [self._remembered_model(), self.project.latest_model() if self.on_project_slide() else None]
        models = [m for m in candidates if m is not None and m.exists()] if restore else []
        self.model_path = max(models, key=lambda m: m.stat().st_mtime) if models else None  # the newest wins
        self.events.model.emit(self.model_path)

    def autosave_path(self) -> Path:
        """Where this slide's annotations are kept: in the session, else under the slide's content fingerprint
        (which survives a touch, a re-sync or a move of the file)."""
        if self.folder is not None:
            return self.folder / "annotations.geojson"
        if self.slide is None:
            return data_dir() / "autosave" / "no-slide.geojson"
        path = data_dir() / "autosave" / f"{self.slide.fingerprint}.geojson"
        legacy = data_dir() / "autosave" / f"{self.slide.identity}.geojson"  # the key of earlier versions
        if not path.exists() and legacy.exists():
            legacy.replace(path)
        return path

    def close(self) -> None:
        self.autosave.close()
        self._release_slide_lock()

    # --- model and settings ---------------------------------------------------------------------------------------
    def set_model(self, path: Path | None) -> None:
        """Use `path` for prediction and remember it for this slide (a relaunch brings it back)."""
        self.model_path = None if path is None else Path(path)
        self.events.model.emit(self.model_path)
        if self.slide is not None:
            self._remember()

    def set_training(self, **changes: Any) -> None:
        """Change training settings (`TrainingChoice` fields); raises GigaPathError on a bad value."""
        choice = replace(self.training, **changes)
        if choice != self.training:
            self.training = choice
            self.events.training.emit(choice)

    def training_data(self, on_project: bool, train_id: str | None = None, val_id: str | None = None) -> TrainingData:
        """What a training started now reads: `on_project`, every project slide's Train and Validation regions (the
        open one's as they are now, ahead of its autosave), else the open slide's chosen regions. GigaPathError when
        a project slide's annotations cannot be read."""
        if not on_project:
            chosen = [a for a in map(self.annotations.find, (train_id, val_id)) if a is not None]
            shapes = chosen + self.annotations.labels()
            slide = self.slide
            mpp = slide.mpp[0] if slide and slide.mpp else None
            return TrainingData.of([(slide.path, slide.dimensions, mpp, shapes)] if slide else [])
        project = self.project
        if project is None:
            return TrainingData()

        def annotations(entry: ProjectSlide) -> list[Annotation]:
            is_open = self.folder == project.slide_folder(entry.id)
            return list(self.annotations) if is_open else project.annotations(entry.id)

        return TrainingData.of((entry.path, entry.dimensions, entry.resolution, annotations(entry))
                               for entry in project.slides)

    def set_slide_mpp(self, mpp: float | None) -> None:
        """Give the open project slide its µm per level-0 pixel (None: what its file records), kept in the project
        for its trainings, predictions and exports; GigaPathError for a slide outside a project or a bad value."""
        if self.slide is None or not self.on_project_slide():
            where = "the open project (File > Add slides to project…)" if self.project else "a project"
            raise GigaPathError(f"only a project slide keeps a µm/px of its own: add the slide to {where}, or give it "
                                "on the command line (--slide-mpp)")
        self.project.set_mpp(self.folder.name, mpp)
        self.slide.given_mpp = mpp
        self.events.slide_mpp.emit(self.slide)
        self.events.project.emit(self.project)

    def model_classes(self) -> tuple[AnnotationClass, ...] | None:
        """The classes a training of the open slide learns, in label order, as a training of the project would: the
        open project's for one of its slides, else Background then every class added to this session or used by its
        labels. None: the tissue model, while they are no more than Background and Tissue (strokes of Tumor and
        Stroma train a Tumor / Stroma model, never a tissue model that counts them as tissue)."""
        if self.on_project_slide():
            classes = list(self.project.classes)
        else:
            builtin, used = BUILT_IN, {a.cls.name for a in self.annotations.labels()}
            classes = [c for c in sorted(self.classes, key=lambda c: c.name != BACKGROUND.name)
                       if c.name == BACKGROUND.name or c.name in used or c.name not in builtin]
        return None if is_tissue_model(c.name for c in classes) else tuple(classes)

    def on_project_slide(self) -> bool:
        """Whether the open slide is one of the open project's (its annotations kept in the project)."""
        return self.project is not None and self.folder is not None and self.folder.is_relative_to(self.project.folder)

    def set_running(self, data: TrainingData | None) -> None:
        """A training started on `data`, or (None) ended."""
        self.running = data
        self.events.running.emit(data)

    # --- projects -------------------------------------------------------------------------------------------------
    def use_project(self, project: Project | None) -> None:
        """Open (or with None close) a project: its classes join the session's; its slides keep their annotations
        in it (the slide open now stays as it is until another is opened)."""
        self.project = project
        if project is not None:  # its classes join, in its colours (what its trainings' models paint)
            theirs = {c.name: c for c in project.classes}
            self.classes = [theirs.pop(c.name, c) for c in self.classes] + list(theirs.values())
            self.events.classes.emit(self.classes)
        self.events.project.emit(project)

    # --- edits (all undoable) ---------------------------------------------------------------------------------------
    def apply(self, text: str, before: list[Annotation], after: list[Annotation]) -> None:
        self.history.push(text, before, after)

    def import_annotations(self, title: str, annotations: list[Annotation]) -> list[str]:
        """Add imported annotations as one undoable edit. Their label classes join the session's, each with one
        colour: the one it has here, else the first it comes with (QuPath leaves some features' colour out).
        Returns what the user should be told: shapes that lie wholly outside the open slide."""
        known = {c.name: c for c in self.classes}
        for annotation in annotations:
            if annotation.role is Role.LABEL and annotation.cls.name not in known:
                known[annotation.cls.name] = self.add_class(annotation.cls.name, annotation.cls.color)
        unified = [a if known.get(a.cls.name, a.cls) == a.cls else replace(a, cls=known[a.cls.name])
                   for a in annotations]
        self.apply(title, [], unified)
        if self.slide is None:
            return []
        width, height = self.slide.dimensions
        slide_box = box(0, 0, width, height)
        outside = [a for a in unified if not a.geometry.intersects(slide_box)]
        if not outside:
            return []
        names = ", ".join(dict.fromkeys(a.name or a.cls.name for a in outside))
        return [f"{len(outside)} of the {len(unified)} imported annotations lie wholly outside this slide "
                f"({width} x {height} px): {names}. Was the file exported from another slide?"]

    def change(self, annotation: Annotation, **fields: Any) -> Annotation:
        """Rename, reclassify or give another role (name=, cls=, role=) as one undoable edit, named for what changes
        (an edit dialog sends every field); no edit when nothing does."""
        fields = {k: v for k, v in fields.items() if getattr(annotation, k) != v}
        if not fields:
            return annotation
        changed = replace(annotation, **fields)
        what = " and ".join({"name": "name", "cls": "class", "role": "role"}.get(k, k) for k in fields)
        self.apply(f"{what} of {annotation.name or annotation.role.title}", [annotation], [changed])  # "role of Train"
        return changed

    def move(self, annotation: Annotation, dx: float, dy: float) -> None:
        """Move by (dx, dy) level-0 pixels, no further than keeps the shape on the slide."""
        dx, dy = self._clamped_move(annotation.bounds, dx, dy)
        if dx or dy:
            self.apply("move", [annotation], [replace(annotation, geometry=translate(annotation.geometry, dx, dy))])

    def delete(self, annotations: list[Annotation]) -> None:
        if annotations:
            self.select([i for i in self.selection if i not in {a.id for a in annotations}])  # once, not per shape
            self.apply("delete", annotations, [])

    def erase(self, stroke: BaseGeometry) -> None:
        """Subtract a brush stroke from every label annotation it touches (one undo step)."""
        before, after = [], []
        for annotation in self.annotations.labels():
            if not annotation.geometry.intersects(stroke):
                continue
            rest = annotation.geometry.difference(stroke)
            before.append(annotation)
            if not rest.is_empty and rest.area > 0:
                try:
                    after.append(replace(annotation, geometry=as_area(rest)))
                except GigaPathError:
                    pass
        if before:
            # before[i] pairs with after[i]: trimmed ones first (replaced in place), erased-away ones last (removed)
            changed = {a.id for a in after}
            before.sort(key=lambda a: a.id not in changed)
            self.apply("erase", before, after)

    # --- selection and regions --------------------------------------------------------------------------------------
    def select(self, ids: list[str] | tuple[str, ...]) -> None:
        selection = tuple(dict.fromkeys(i for i in ids if self.annotations.find(i) is not None))
        if selection != self.selection:
            self.selection = selection
            self.events.selection.emit(selection)

    def selected(self) -> list[Annotation]:
        return [a for a in (self.annotations.find(i) for i in self.selection) if a is not None]

    def selected_region(self, fallback_id: str | None) -> Region | None:
        """The first selected Train or Validation region, else the annotation `fallback_id` (the chosen Train one)."""
        areas = [a for a in self.selected() if a.role.is_area]
        return self.region(areas[0] if areas else self.annotations.find(fallback_id))

    def region(self, annotation: Annotation | None) -> Region | None:
        """The level-0 pixel rectangle of an annotation's bounds, clipped to the slide (None if nothing is left)."""
        if annotation is None or self.slide is None:
            return None
        return Region.around(annotation.bounds, self.slide.dimensions)

    # --- session folders --------------------------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Keep everything in `folder` from now on (annotations too); raises GigaPathError or OSError."""
        folder.mkdir(parents=True, exist_ok=True)
        self._saved().write(folder)
        self.autosave.move_to(folder / "annotations.geojson")  # (only once the session file is there)
        self.folder = folder
        self.events.folder.emit(folder)

    def use_folder(self, folder: Path | None, saved: SavedSession | None = None) -> None:
        """Take the session folder and its saved classes and settings (its slide: `set_slide(..., folder=)`)."""
        self.folder = folder
        if saved is not None:
            self.classes = list(DEFAULT_CLASSES) + [c for c in saved.classes
                                                    if c.name not in {d.name for d in DEFAULT_CLASSES}]
            self.events.classes.emit(self.classes)
            self.training = saved.training
            self.events.training.emit(self.training)
        self.events.folder.emit(folder)

    # --- internals ----------------------------------------------------------------------------------------------------
    def _lock_project_slide(self) -> None:
        """Hold the open project slide's folder, so `project import` from the command line cannot be overwritten
        by this slide's autosave (it is refused, naming this app, until another slide is opened)."""
        self._release_slide_lock()
        if not self.on_project_slide():
            return
        try:
            self._slide_lock = FolderLock(self.folder).acquire()
        except GigaPathError as exc:
            self.events.problem.emit(f"{exc}: edits to this slide's annotations may be written over")

    def _release_slide_lock(self) -> None:
        if self._slide_lock is not None:
            self._slide_lock.release()
            self._slide_lock = None

    def _saved(self) -> SavedSession:
        return SavedSession(str(self.slide.path.resolve()) if self.slide else None,
                            str(self.model_path.resolve()) if self.model_path else None, self.training, self.classes)

    def _state_path(self) -> Path:
        return self.folder / "session.json" if self.folder is not None else self.autosave_path().with_suffix(".state.json")

    def _remembered_model(self) -> Path | None:
        try:
            model = json.loads(self._state_path().read_text()).get("model")
        except (OSError, ValueError, AttributeError):
            return None
        return Path(model) if isinstance(model, str) else None

    def _remember(self) -> None:
        try:
            if self.folder is not None:
                self._saved().write(self.folder)
            else:
                path = self._state_path()
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(path) as tmp:
                    tmp.write_text(json.dumps({"model": str(self.model_path.resolve()) if self.model_path else None}))
        except (OSError, GigaPathError) as exc:
            self.events.problem.emit(f"the model choice was not saved: {exc}")

    def _clamped_move(self, bounds: tuple[float, float, float, float], dx: float, dy: float) -> tuple[float, float]:
        if self.slide is None:
            return dx, dy
        w, h = self.slide.dimensions
        x0, y0, x1, y1 = bounds
        return (float(np.clip(dx, min(0.0, -x0), max(0.0, w - x1))), float(np.clip(dy, min(0.0, -y0), max(0.0, h - y1))))

    def _forget_removed(self, what: str, annotation: Annotation) -> None:
        if what == "removed" and annotation.id in self.selection:
            self.select([i for i in self.selection if i != annotation.id])
