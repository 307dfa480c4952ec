"""The command-line side of projects: `project create|add|list|import|relink|train`, and `predict-batch`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from gigapath_desktop.cli_training import add_training_options, print_plans, run_settings, train_with_progress
from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.mpp import check_option


def add_project_commands(sub: Any) -> None:
    from gigapath_desktop.cli import add_predict_options

    project = sub.add_parser("project", help="a study's slides, annotations, classes and runs in one folder")
    psub = project.add_subparsers(title="project commands", required=True)
    p = psub.add_parser("create", help="make DIR a new project")
    p.add_argument("dir")
    p.add_argument("--classes", help="class names in label order, comma-separated (default: learnt from imported "
                                     "labels); the first is what unlabelled area is in dense mode")
    p.set_defaults(command=cmd_create)
    p = psub.add_parser("add", help="add slides, or the slides of folders (same content is never added twice)")
    p.add_argument("dir")
    p.add_argument("paths", nargs="+", metavar="SLIDE_OR_FOLDER")
    p.set_defaults(command=cmd_add)
    p = psub.add_parser("list", help="the project's slides, their annotations and whether the file is found")
    p.add_argument("dir")
    p.set_defaults(command=cmd_list)
    p = psub.add_parser("import", help="add GeoJSON annotations (QuPath's per-image export IMAGE.geojson)")
    p.add_argument("dir")
    p.add_argument("geojson", nargs="+")
    p.add_argument("--slide", help="the slide to import into (default: the one each file is named after)")
    p.set_defaults(command=cmd_import)
    p = psub.add_parser("relink", help="point a moved slide at its new file, or find moved slides in a folder")
    p.add_argument("dir")
    p.add_argument("slide", nargs="?", help="the slide (name or id) to relink")
    p.add_argument("path", nargs="?", help="its new file")
    p.add_argument("--search", metavar="FOLDER", help="relink every missing slide found in FOLDER (and below)")
    p.set_defaults(command=cmd_relink)
    p = psub.add_parser("set-mpp", help="give a slide its µm per pixel (one whose file records none, or a wrong one)")
    p.add_argument("dir")
    p.add_argument("slide", help="the slide (name or id)")
    p.add_argument("mpp", nargs="?", type=float, help="µm per level-0 pixel")
    p.add_argument("--clear", action="store_true", help="back to what the slide's file records")
    p.set_defaults(command=cmd_set_mpp)
    p = psub.add_parser("train", help="train on the project's Train regions, validate on its Validation regions")
    p.add_argument("dir")
    p.add_argument("--out", required=True, help="run folder (model.keras, config.json with the spec, metrics.csv)")
    p.add_argument("--classes", help="class names in label order, comma-separated (default: the project's)")
    p.add_argument("--sparse", action="store_true", help="pixels no label covers are ignored (default: dense)")
    p.add_argument("--mpp", type=float, help="train at this many µm per pixel")
    add_training_options(p)
    p.set_defaults(command=cmd_train)

    p = sub.add_parser("predict-batch", help="predict many slides with one model; OUT/summary.csv says how each went")
    p.add_argument("paths", nargs="*", metavar="SLIDE_OR_FOLDER")
    p.add_argument("--project", help="predict the slides of this project (as well)")
    p.add_argument("--model", required=True, help="a trained model, e.g. RUN_DIR/model.keras")
    p.add_argument("--out", required=True, help="output folder: <slide stem>.tif for each slide, and summary.csv")
    p.add_argument("--geojson", action="store_true", help="also write <slide stem>.geojson contours")
    p.add_argument("--png", action="store_true", help="also write <slide stem>.png previews")
    p.add_argument("--overwrite", action="store_true", help="predict slides whose outputs exist again")
    add_predict_options(p)
    p.set_defaults(command=cmd_predict_batch)


def cmd_create(args: argparse.Namespace) -> int:
    from gigapath_desktop.annotations import ClassMap
    from gigapath_desktop.project.manifest import Project

    classes = ClassMap.named(_names(args.classes)).classes if args.classes else ()
    project = Project.create(args.dir, classes)
    print(f"created the project {project.folder}")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    from gigapath_desktop.project.manifest import Project

    report = Project.open(args.dir).add(args.paths)
    for entry in report.added:
        print(f"added {entry.name} ({entry.dimensions[0]} x {entry.dimensions[1]})")
    for entry in report.known:
        print(f"already in the project: {entry.name}")
    if report.skipped and not (report.added or report.known):
        raise GigaPathError(f"no slides added ({skipped_text(report.skipped)})")
    for path, why in report.skipped:
        print(f"skipped {path}: {why}", file=sys.stderr)
    named = {Path(p).resolve() for p in args.paths}
    return 1 if any(path.resolve() in named for path, _ in report.skipped) else 0  # (a folder's other files: 0)


def cmd_list(args: argparse.Namespace) -> int:
    from gigapath_desktop.project.manifest import CHANGED, Project

    project = Project.open(args.dir)
    print(f"classes: {project.classes_text()}")
    changed = {s.id for s in project.changed()}
    for entry in project.slides:
        found = "" if entry.path.is_file() else "   MISSING: relink it"
        found = f"   CHANGED: {CHANGED}" if entry.id in changed else found
        try:
            count = f"{len(project.annotations(entry.id))} annotations"
        except GigaPathError as exc:
            count = f"annotations unreadable ({exc})"
        print(f"{entry.name}  {entry.dimensions[0]} x {entry.dimensions[1]}  {_mpp_text(entry)}  {count}  "
              f"{entry.path}{found}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from gigapath_desktop.project.manifest import Project

    project = Project.open(args.dir)
    for path in args.geojson:
        entry, new = project.import_geojson(path, args.slide)
        print(f"{path}: {new} annotations added to {entry.name}")
    return 0


def cmd_relink(args: argparse.Namespace) -> int:
    from gigapath_desktop.project.manifest import Project

    project = Project.open(args.dir)
    if args.search and not args.slide:
        relinked = project.relink_from(args.search)
        for entry in relinked:
            print(f"relinked {entry.name} to {entry.path}")
        still = project.missing()
        if still:
            print(f"still missing: {', '.join(s.name for s in still)}", file=sys.stderr)
        return 1 if still else 0
    if not (args.slide and args.path) or args.search:
        raise GigaPathError("relink takes SLIDE and its new PATH, or --search FOLDER")
    entry = project.relink(args.slide, args.path)
    print(f"relinked {entry.name} to {entry.path}")
    return 0


def cmd_set_mpp(args: argparse.Namespace) -> int:
    from gigapath_desktop.project.manifest import Project

    if (args.mpp is None) == (not args.clear):
        raise GigaPathError("set-mpp takes the slide's µm per pixel, or --clear (not both)")
    check_option("µm/px", args.mpp)
    entry = Project.open(args.dir).set_mpp(args.slide, args.mpp)
    print(f"{entry.name}: {_mpp_text(entry)}")
    return 0


def _mpp_text(entry: Any) -> str:
    """"0.5 µm/px", "0.25 µm/px (given; the file says 0.5)", "µm/px not recorded"."""
    if entry.given_mpp is None:
        return "µm/px not recorded" if entry.mpp is None else f"{entry.mpp:g} µm/px"
    recorded = "records none" if entry.mpp is None else f"says {entry.mpp:g}"
    return f"{entry.given_mpp:g} µm/px (given; the file {recorded})"


def cmd_train(args: argparse.Namespace) -> int:
    from gigapath_desktop.project.manifest import Project, now
    from gigapath_desktop.training.job import TrainJob

    project = Project.open(args.dir)
    check_option("--mpp", args.mpp)
    spec = project.spec(_names(args.classes) if args.classes else None, args.sparse, args.mpp)
    job = TrainJob(spec, *run_settings(args))
    if args.plan:
        return print_plans(job)
    started = []

    def record(trainer: object) -> None:  # once the run folder is checked and locked, and training begins
        started.append(trainer)
        project.add_run(job.out, started=now(), status="running", classes=spec.classes, sparse=args.sparse)

    try:
        trainer = train_with_progress(job, record)
    except BaseException as exc:
        if started:
            why = f"at step {started[0].step}" if isinstance(exc, KeyboardInterrupt) else exc or type(exc).__name__
            project.add_run(job.out, stopped=now(), status=f"stopped: {why}")
        raise
    last = trainer.history[-1] if trainer.history else None
    project.add_run(job.out, finished=now(), status="finished", steps=trainer.step,
                    val_dice=last and last.val_dice, val_detail=last and last.val_detail)
    print(f"step {trainer.step}: wrote {job.out / 'model.keras'}; the run is recorded in {project.folder}")
    return 0


def cmd_predict_batch(args: argparse.Namespace) -> int:
    from gigapath_desktop.cli import check_predict_options
    from gigapath_desktop.inference.batch import SUMMARY, BatchJob, run_batch
    from gigapath_desktop.project.manifest import Project, expand

    check_predict_options(args)
    if not args.paths and not args.project:
        raise GigaPathError("predict-batch needs slides or folders, or --project DIR")
    if not args.out.strip():
        raise GigaPathError("--out is empty; name the folder the masks go to")
    skipped: list[tuple[Path, str]] = []
    slides = expand(args.paths, skipped, exclude=[Path(args.out)])
    labels, identities, resolutions = {}, {}, {}
    if args.project:
        project = Project.open(args.project)
        slides += [s.path for s in project.slides]
        labels = {s.path: project.annotations_path(s.id) for s in project.slides}
        identities = {s.path: s.id for s in project.slides}
        resolutions = project.resolutions()
    if not slides:
        raise GigaPathError(f"no slides to predict ({skipped_text(skipped)})" if skipped else "no slides to predict")
    job = BatchJob(Path(args.model), Path(args.out), tuple(dict.fromkeys(slides)), tuple(skipped), args.geojson,
                   args.png, args.overwrite, args.tile, args.threshold, args.binary, args.downsample, labels,
                   identities, resolutions, args.min_hole, args.min_object)
    with tqdm(total=len(job.slides), unit="slide", desc="slides", disable=None) as slides_bar, \
            tqdm(total=None, unit="tile", desc="tiles", leave=False, disable=None) as tiles_bar:
        def progress(index: int, count: int, done: int, total: int) -> None:
            tiles_bar.total = total
            tiles_bar.set_description(job.slides[index].name)
            tiles_bar.n = done
            tiles_bar.refresh()

        def show(row: Any) -> None:
            if row.slide in job.slides:
                slides_bar.update(1)
            if row.status == "error":
                slides_bar.write(f"error: {row.slide}: {row.message}", file=sys.stderr)
            for note in row.notes:  # e.g. a slide without µm/px: said here, not only in the summary
                slides_bar.write(f"warning: {row.slide}: {note}", file=sys.stderr)

        rows = run_batch(job, show, progress)
    failed = sum(row.status == "error" for row in rows)
    done = sum(row.status == "ok" for row in rows)
    print(f"{done} predicted, {len(rows) - done - failed} skipped, {failed} failed; wrote {job.out / SUMMARY}")
    return 1 if failed else 0


def skipped_text(skipped: list[tuple[Path, str]], most: int = 3) -> str:
    """'N skipped: a: why; b: why; and K more': the count and the list always agree."""
    shown = [f"{path.name}: {why}" for path, why in skipped[:most]]
    more = [f"and {len(skipped) - most} more"] if len(skipped) > most else []
    return f"{len(skipped)} skipped: {'; '.join(shown + more)}"


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise GigaPathError(f"--classes must be comma-separated class names, got {text!r}")
    return names
