"""Projects: a study's slides in one folder, as QuPath keeps them.

    DIR/project.json                      the manifest: classes, slides (path, identity, µm/px, size), runs
    DIR/slides/<id>/annotations.geojson   each slide's annotations (autosaved by the app)
    DIR/slides/<id>/thumbnail.png         its thumbnail

A slide's id is its content fingerprint (`Slide.fingerprint`): it survives a `touch`, a copy or a move, so a slide
found elsewhere can be relinked and the same slide is never added twice. Every change re-reads the manifest under
the folder's lock and writes it back under a temporary name, so the app and the command line can share a project.
"""
from __future__ import annotations

import json
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from gigapath_desktop.annotations import Annotation, AnnotationClass, Role, read_geojson, write_geojson
from gigapath_desktop.errors import Cancelled, GigaPathError
from gigapath_desktop.locks import FolderInUse, FolderLock, held
from gigapath_desktop.mpp import MPP_TEXT, is_mpp
from gigapath_desktop.project.project_classes import ProjectClasses
from gigapath_desktop.project.project_slides import ProjectSlide, ProjectSlides, describe
from gigapath_desktop.outputs import atomic_path
from gigapath_desktop.slides import SLIDE_SUFFIXES
from gigapath_desktop.training.spec import SpecItem, TrainSpec, is_tissue_model

MANIFEST = "project.json"
FORMAT = "gigapath-project"
VERSION = 1
CHANGED = "the file now holds another slide (its content differs); put the project's slide back or relink it"
SLIDE_ID = re.compile(r"[0-9a-f]{24}")  # `Slide.fingerprint`: also a folder name, so nothing else is taken
LOCK_WAIT_SECONDS = 5.0  # a manifest edit takes milliseconds: another one in progress is waited for, not refused
Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]


@dataclass
class AddReport:
    """What `Project.add` did with each path it was given."""

    added: list[ProjectSlide] = field(default_factory=list)
    known: list[ProjectSlide] = field(default_factory=list)  # already in the project (same content)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (path, why)


class Project(ProjectClasses, ProjectSlides):
    """A project folder. `Project.create(DIR)` or `Project.open(DIR)`; every method that changes it saves it."""

    def __init__(self, folder: Path, data: dict[str, Any]) -> None:
        self.folder = folder
        self.classes: list[AnnotationClass] = []
        self.slides: list[ProjectSlide] = []
        self.runs: list[dict[str, Any]] = []
        self._load(data)

    # --- opening --------------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, folder: str | os.PathLike[str], classes: Iterable[AnnotationClass] = ()) -> "Project":
        folder = Path(folder).absolute()
        if (folder / MANIFEST).exists():
            raise GigaPathError(f"{folder}: is a project already")
        if folder.exists() and not folder.is_dir():
            raise GigaPathError(f"{folder}: is a file, not a folder")
        if folder.is_dir() and any(not p.name.startswith(".") for p in folder.iterdir()):
            raise GigaPathError(f"{folder}: is not empty; a project takes a folder of its own (an empty or new one)")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GigaPathError(f"{folder}: cannot create the project folder ({exc.strerror})") from None
        project = cls(folder, {"format": FORMAT, "classes": [_class_json(c) for c in classes]})
        with project._changing():
            pass
        return project

    @classmethod
    def open(cls, folder: str | os.PathLike[str]) -> "Project":
        folder = Path(folder).absolute()
        return cls(folder, _read_manifest(folder))

    def reload(self) -> None:
        self._load(_read_manifest(self.folder))

    # --- slides ---------------------------------------------------------------------------------------------------
    def add(self, paths: Iterable[str | os.PathLike[str]], progress: Progress | None = None,
            cancel: Cancel | None = None) -> AddReport:
        """Add slides and the slides in folders (not recursing); what cannot be added is skipped, saying why. The
        slides are opened and thumbnailed first (seconds each on a network share; `cancel` stops between slides),
        then added under the lock."""
        report = AddReport()
        own = [self.folder / name for name in ("slides", "runs", "predictions")]
        files = expand(paths, report.skipped, exclude=own)
        described = []
        for done, path in enumerate(files):
            if cancel is not None and cancel():
                raise Cancelled("adding slides was stopped; none was added")
            try:
                described.append(describe(path))
            except GigaPathError as exc:
                report.skipped.append((path, str(exc).removeprefix(f"{path}: ")))  # (said beside its path)
            if progress is not None:
                progress(done + 1, len(files))
        with self._changing():
            for entry, thumbnail in described:
                known = self.slide(entry.id)
                if known is not None:
                    report.known.append(known)
                    continue
                self.slide_folder(entry.id).mkdir(parents=True, exist_ok=True)
                with atomic_path(self.thumbnail_path(entry.id)) as tmp:
                    thumbnail.save(tmp, format="PNG")
                self.slides.append(entry)
                report.added.append(entry)
        return report

    # --- annotations ----------------------------------------------------------------------------------------------
    def slide_folder(self, slide_id: str) -> Path:
        return self.folder / "slides" / slide_id

    def annotations_path(self, slide_id: str) -> Path:
        return self.slide_folder(slide_id) / "annotations.geojson"

    def thumbnail_path(self, slide_id: str) -> Path:
        return self.slide_folder(slide_id) / "thumbnail.png"

    def annotations(self, slide_id: str) -> list[Annotation]:
        path = self.annotations_path(slide_id)
        return read_geojson(path, report=lambda _: None) if path.exists() else []

    def import_geojson(self, path: str | os.PathLike[str], key: str | None = None) -> tuple[ProjectSlide, int]:
        """Add a GeoJSON file's annotations (QuPath's per-image export, named after its image unless `key` names the
        slide) to that slide's; returns the slide and how many were new. New label classes join the project's.
        Refused while the app has that slide open (its autosave would write over the import)."""
        path = Path(path)
        with self._changing():
            entry = self._need(key) if key else self._for_export(path)
            imported = read_geojson(path)
            with FolderLock(self.slide_folder(entry.id)):
                current = self.annotations(entry.id)
                ids = {a.id for a in current}
                new = [a for a in imported if a.id not in ids]
                write_geojson(current + new, self.annotations_path(entry.id))
            for annotation in new:
                if annotation.role is Role.LABEL:
                    self._add_class(annotation.cls)
        return entry, len(new)

    # --- training ---------------------------------------------------------------------------------------------------
    def classes_text(self) -> str:
        """What its trainings learn, as the app's Project panel and `project list` say it: with no classes beyond
        Background and Tissue, the tissue model (an empty list read as "none yet", though Tissue labels trained)."""
        names = [c.name for c in self.classes]
        return "the tissue model's (Background, Tissue)" if is_tissue_model(names) else ", ".join(names)

    def spec(self, classes: list[str] | None = None, sparse: bool = False, mpp: float | None = None) -> TrainSpec:
        """The training spec of the project's Train and Validation rectangles, each slide with its annotations.

        `classes`: the model's classes in label order (default: the project's; the tissue model when it has no
        classes but Tissue)."""
        names = classes if classes is not None else [c.name for c in self.classes]
        train, validation = [], []
        for entry in self.slides:
            roles = {a.role for a in self.annotations(entry.id)}
            item = SpecItem(entry.path, (), self.annotations_path(entry.id), sparse, entry.given_mpp)
            if Role.REGION in roles:
                train.append(item)
            if Role.VALIDATION in roles:
                validation.append(item)
        if not train:
            raise GigaPathError(f"{self.folder}: no slide has a Train region; draw one or import them")
        missing = [i.slide.name for i in (*train, *validation) if not i.slide.is_file()]
        if missing:
            raise GigaPathError(f"slides not found: {', '.join(missing)}; relink them (project relink)")
        changed = [s.name for s in self.changed(i.slide for i in (*train, *validation))]
        if changed:
            raise GigaPathError(f"{', '.join(changed)}: {CHANGED}")
        if is_tissue_model(names):
            return TrainSpec(tuple(train), tuple(validation), None, mpp)
        colours = tuple((c.name, c.color) for c in self.classes if c.name in names)  # the model paints as the project
        return TrainSpec(tuple(train), tuple(validation), tuple(names), mpp, colours)

    def add_run(self, out: Path, **facts: Any) -> None:
        """Record a training run, or add `facts` to the record of the run in `out`."""
        with self._changing():
            key = str(Path(out).absolute())
            old = next((r for r in self.runs if r.get("out") == key), {})
            self.runs = [r for r in self.runs if r.get("out") != key] + [{**old, "out": key, **facts}]

    def latest_model(self) -> Path | None:
        """The model of the project's most recently recorded run that wrote one (its slides predict with it)."""
        for run in reversed(self.runs):
            if run.get("out") and (model := Path(str(run["out"])) / "model.keras").is_file():
                return model
        return None

    # --- internals --------------------------------------------------------------------------------------------------
    @contextmanager
    def _changing(self) -> Iterator[None]:
        """Change under the folder's lock, from the manifest as it is on disk; saved when the block succeeds."""
        with _waiting_lock(self.folder):
            if (self.folder / MANIFEST).exists():
                self.reload()
            yield
            with atomic_path(self.folder / MANIFEST) as tmp:
                tmp.write_text(json.dumps(self._as_json(), indent=1), encoding="utf-8")

    def _as_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "classes": [_class_json(c) for c in self.classes],
                "slides": [s.as_json(self.folder) for s in self.slides], "runs": self.runs}

    def _load(self, data: dict[str, Any]) -> None:
        try:
            self.classes = [AnnotationClass(str(c["name"]), tuple(c["color"])) for c in data.get("classes", [])]
            self.slides = [self._entry(s) for s in data.get("slides", [])]
            self.runs = [_ended_if_dead(dict(r)) for r in data.get("runs", [])]
        except (KeyError, TypeError, ValueError, AttributeError, GigaPathError) as exc:
            raise GigaPathError(f"{self.folder / MANIFEST}: not a readable project ({type(exc).__name__}: {exc})") from None

    def _entry(self, data: dict[str, Any]) -> ProjectSlide:
        """A manifest entry; a slide moved together with the project is found by its relative path."""
        path = Path(data["path"])
        moved_along = self.folder / data.get("relative", "")
        if not path.is_file() and data.get("relative") and moved_along.is_file():
            path = moved_along.resolve()
        if not SLIDE_ID.fullmatch(str(data["id"])):  # (a path like ../../x would put annotations outside)
            raise GigaPathError(f"slide id {data['id']!r} is not a slide fingerprint (24 hex digits)")
        mpp, given = (data.get(key) for key in ("mpp", "given_mpp"))
        if not all(v is None or is_mpp(v) for v in (mpp, given)):
            raise GigaPathError(f"slide {data['name']!r}: its µm/px must be {MPP_TEXT}, got {mpp!r} / {given!r}")
        return ProjectSlide(str(data["id"]), path, str(data["name"]), tuple(int(d) for d in data["dimensions"]),
                            int(data["size"]), mpp, given)

    def _need(self, key: str) -> ProjectSlide:
        entry = self.slide(key)
        if entry is None:
            raise GigaPathError(f"{self.folder}: no slide {key!r} in the project")
        return entry

    def _for_export(self, path: Path) -> ProjectSlide:
        """The slide a QuPath export is named after: IMAGE.geojson with IMAGE the slide's file name or stem."""
        stem = path.name.removesuffix(".geojson").removesuffix(".json")
        entry = self.slide(stem) or self.slide(Path(stem).stem)
        if entry is None:
            raise GigaPathError(f"{path}: no slide of the project is named {stem!r}; name it with --slide")
        return entry

    def _replace(self, old: ProjectSlide, new: ProjectSlide) -> ProjectSlide:
        self.slides = [new if s.id == old.id else s for s in self.slides]
        return new


@contextmanager
def _waiting_lock(folder: Path) -> Iterator[None]:
    """The folder's lock, waited for a few seconds (another manifest edit ends in milliseconds)."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            lock = FolderLock(folder).acquire()
            break
        except FolderInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        yield
    finally:
        lock.release()


def expand(paths: Iterable[str | os.PathLike[str]], skipped: list[tuple[Path, str]],
           exclude: Iterable[Path] = ()) -> list[Path]:
    """Files as given, and a folder's files with a slide extension (its other files go to `skipped`, as do paths
    that do not exist and files under `exclude`: a project's or a batch's own folder). Paths come back resolved, each
    once."""
    files: list[Path] = []
    excluded = [folder.resolve() for folder in exclude]
    for path in map(Path, paths):
        children = sorted(c for c in path.iterdir() if not c.name.startswith(".")) if path.is_dir() else []
        for child in children if path.is_dir() else [path]:
            if not child.exists():
                skipped.append((child, "no such file or folder"))
            elif child.is_dir():
                continue
            elif any(child.resolve().is_relative_to(folder) for folder in excluded):
                skipped.append((child, "lies in this command's own output folder"))
            elif path.is_dir() and child.suffix.lower() not in SLIDE_SUFFIXES:
                skipped.append((child, "not a slide file"))
            else:
                files.append(child.resolve())
    return list(dict.fromkeys(files))


def _ended_if_dead(run: dict[str, Any]) -> dict[str, Any]:
    """A run recorded as running whose folder no live process holds ended without saying so (killed, or its last
    write failed on a full disk): it is interrupted, not running for ever."""
    if str(run.get("status", "")).startswith("running") and run.get("out") and not held(str(run["out"])):
        return {**run, "status": "interrupted (its process ended before the run did)"}
    return run


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GigaPathError(f"{folder}: not a project (no {MANIFEST}); create one with `project create`") from None
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise GigaPathError(f"{path}: not a readable project ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise GigaPathError(f"{path}: not a GigaPath project manifest")
    if data.get("version", VERSION) != VERSION:  # a newer app's manifest: rewriting it would drop what it added
        raise GigaPathError(f"{path}: a project of format version {data.get('version')!r}; this app reads version "
                            f"{VERSION} (a newer GigaPath Desktop made it?)")
    return data


def _class_json(cls: AnnotationClass) -> dict[str, Any]:
    return {"name": cls.name, "color": list(cls.color)}


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")
