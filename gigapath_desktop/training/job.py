"""A training job as users describe it (slide, regions, labels, run folder), shared by the CLI, GUI and server."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import keras
import numpy as np

from gigapath_desktop import __version__
from gigapath_desktop.annotations import (Annotation, AnnotationClass, ClassMap, Role, detect_tissue, other_classes,
                                          read_geojson)
from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.locks import LOCK_NAME, FolderLock, held
from gigapath_desktop.model import build_unet, model_geometry, save_model
from gigapath_desktop.model.info import SCALE_TOLERANCE, ModelInfo, attach_info, model_info
from gigapath_desktop.outputs import atomic_path, remove
from gigapath_desktop.slides import Region, Slide, identity, open_slide
from gigapath_desktop.slides.cache import CancelFn
from gigapath_desktop.slides.resample import Scale, read_at
from gigapath_desktop.training.checkpoints import checkpoint_info
from gigapath_desktop.training.data import RegionData, load_region
from gigapath_desktop.training.events import Event, Listener, LogEvent, WarningEvent
from gigapath_desktop.training.metrics import MetricsWriter
from gigapath_desktop.training.config import TrainConfig
from gigapath_desktop.training.plan import GIB, StepPlan, estimate, plan_step, step_tile
from gigapath_desktop.training.run_folder import check_out, check_resumable, check_same_run, resolved
from gigapath_desktop.training.spec import SpecItem, TrainSpec, unknown_classes, where_text
from gigapath_desktop.training.trainer import Trainer

if TYPE_CHECKING:
    from gigapath_desktop.training.ray_executor import RayExecutor


@dataclass
class TrainJob:
    spec: TrainSpec
    out: Path
    config: TrainConfig = field(default_factory=TrainConfig)
    resume: bool = False
    resume_changes: tuple[str, ...] = ("steps",)  # settings of `config` that override the checkpoint's on resume
    workers: int = 1  # > 1, or a ray_address: the tiles of each step run on Ray workers (the same result)
    ray_address: str | None = None

    @classmethod
    def one_slide(cls, slide: Path, region: Region, out: Path, config: TrainConfig = TrainConfig(),
                  labels: Path | None = None, val_region: Region | None = None, **options: Any) -> "TrainJob":
        """One region of one slide (labels None: automatic tissue detection), as the GUI and `train SLIDE` run."""
        return cls(TrainSpec.one_slide(slide, (region,), labels, val_region), out, config, **options)


def run_train_job(job: TrainJob, listeners: Sequence[Listener] = (),
                  started: Callable[[Trainer], None] | None = None, cancel: CancelFn | None = None) -> Trainer:
    """Lock the run folder, prepare, train to the end (or a stop), and write RUN_DIR/model.keras.

    `started(trainer)` is called once training is about to begin (the GUI keeps it for pause / resume / stop);
    `cancel()` stops the preparation, including the first decode of a region (minutes for a gigapixel one)."""
    if held(job.out):  # in use is said first: "pass --resume" would only meet the lock
        with FolderLock(job.out):  # (raises FolderInUse naming the holder; one that ended meanwhile is not held on)
            pass
    check_out(job)
    created = not job.out.exists()
    lock = FolderLock(job.out).acquire()  # a folder in use by another run is refused before anything else
    executor = None
    try:
        executor = _executor(job)
        trainer = prepare_trainer(job, listeners, cancel, executor)
        if started is not None:
            started(trainer)
        trainer.run()
        save_model(trainer.model, job.out / "model.keras")
    except BaseException:
        if created and {p.name for p in job.out.iterdir()} <= {LOCK_NAME}:  # bad input: leave no empty run behind
            remove(job.out)  # (still holding the lock, so no other run can be starting in it)
        raise
    finally:
        if executor is not None:
            executor.close()
        lock.release()
    return trainer


def _executor(job: TrainJob) -> "RayExecutor | None":
    if job.workers == 1 and job.ray_address is None:
        return None
    from gigapath_desktop.training.ray_executor import RayExecutor  # Ray loads only when asked for

    return RayExecutor(job.workers, job.ray_address)


def prepare_trainer(job: TrainJob, listeners: Sequence[Listener] = (), cancel: CancelFn | None = None,
                    executor: "RayExecutor | None" = None) -> Trainer:
    """Check every input, load (or decode once) the regions and labels, write config.json; return the Trainer.

    Every slide, labels file and region is checked before the first (possibly long) decode. The caller holds the
    run folder's lock (`run_train_job` does)."""
    check_out(job)
    for repeat in job.spec.repeats():
        for listener in listeners:
            listener(WarningEvent(f"the training spec: {repeat}"))
    items = _checked_items(job.spec, listeners)
    classes = _class_map(job.spec, [(item.slide, annotations) for item, _, annotations, _ in items])
    saved = checkpoint_info(job.out) if job.resume else None
    inputs = _inputs(job.spec)  # (read once: checked on resume, recorded in config.json)
    if saved is not None:  # refused before any region is decoded (minutes for a gigapixel one)
        check_resumable(job, saved, ModelInfo(classes, job.spec.mpp))
        check_same_run(job, inputs)
    if job.config.tile == "auto" and not job.resume:  # (a resumed run keeps the settings it started with)
        plans = _plans(job, items)  # likewise a memory budget too small for a region: said before any decoding
        for where, plan in plans if job.workers > 1 else ():
            if plan.tiles < job.workers:  # (a step hands out one tile a worker at most)
                for listener in listeners:
                    listener(WarningEvent(f"{where}: a step of {plan.tiles} tile(s) keeps {job.workers - plan.tiles} "
                                          f"of the {job.workers} workers idle; a smaller --tile gives them work"))
    train: list[RegionData] = []
    val: list[RegionData] = []
    sources: list[float | None] = []  # the µm/px of each training region's pixels (at a level: for `source_mpp`)
    for item, role, labels, regions in items:
        with open_slide(item.slide, item.slide_mpp) as slide:
            scale = _scale(slide, job.spec.mpp, listeners)
            for region in regions:
                if role == "training":
                    sources.append(slide.mpp[0] * slide.level_downsamples[region.level] if slide.mpp else None)
                data = load_region(slide, region, labels, cancel=cancel, classes=classes, sparse=item.sparse, scale=scale,
                                   progress=_decoding(f"{role} region {region.as_tuple()} of {slide.path.name}",
                                                      listeners))
                (train if role == "training" else val).append(data)
    job.out.mkdir(parents=True, exist_ok=True)
    if job.resume:
        changes = {name: getattr(job.config, name) for name in job.resume_changes}
        trainer = Trainer.from_checkpoint(job.out, train, val, listeners, changes, executor)
        check_resumable(job, model_info(trainer.model), ModelInfo(classes, job.spec.mpp))  # the one it resumed
        if trainer.step > trainer.config.steps:
            raise GigaPathError(f"{job.out}: the run is at step {trainer.step} already; --steps must be at least "
                                f"{trainer.step} (or left out: the run's own)")
    else:
        keras.utils.set_random_seed(job.config.seed)
        model = build_unet(classes=len(classes.classes), block=job.config.fold)
        attach_info(model, ModelInfo(classes, job.spec.mpp, None if job.spec.mpp else _agreed(sources)))
        trainer = Trainer(model, train, val, job.config, job.out, listeners, executor)
    trainer.listeners.insert(0, MetricsWriter(job.out / "metrics.csv", trainer.history, trainer.detail_columns))
    _write_config(job, trainer, train, val, inputs)
    return trainer


def _agreed(mpps: list[float | None]) -> float | None:
    """The µm/px the training regions share (their median, all within 1.5x of each other), else None."""
    if not mpps or None in mpps or max(mpps) > SCALE_TOLERANCE * min(mpps):
        return None
    return float(np.median(mpps))


def job_plans(job: TrainJob) -> list[tuple[str, StepPlan]]:
    """(region, the plan of its steps) for every region of the job, without decoding any (`train --plan`): the
    "auto" plan (a budget too small for a region is a GigaPathError), or the estimate of the configured tile."""
    return _plans(job, _checked_items(job.spec, []))


def _plans(job: TrainJob, items: list) -> list[tuple[str, StepPlan]]:
    budget, plans = job.config.memory_budget * GIB, []
    distributed = job.workers > 1 or job.ray_address is not None
    for item, role, _, regions in items:
        with open_slide(item.slide, item.slide_mpp) as slide:
            scale = _scale(slide, job.spec.mpp, [])
            for region in regions:
                width, height = slide.level_size(region) if scale is None else read_at(slide, region, scale).shape[1::-1]
                if job.config.tile == "auto" and not distributed:
                    plan = plan_step(height, width, budget, fold=job.config.fold)
                else:
                    tile = step_tile(job.config.tile, (height, width), job.config.memory_budget, distributed,
                                     job.config.fold)
                    plan = estimate(height, width, tile, fold=job.config.fold)
                plans.append((f"{role} {slide.path.name} {region.as_tuple()}", plan))
    return plans


def _checked_items(spec: TrainSpec, listeners: Sequence[Listener]) -> list[tuple[SpecItem, str, list[Annotation],
                                                                                 list[Region]]]:
    """(item, role, label annotations, regions) for every item, each slide opened and each region checked."""
    checked = []
    read: dict[tuple[Path, Path | None], list[Annotation]] = {}  # each labels file read (or tissue detected) once
    for role, items in (("training", spec.train), ("validation", spec.validation)):
        for item in items:
            with open_slide(item.slide, item.slide_mpp) as slide:
                key = (item.slide, item.labels)
                annotations = read[key] = read.get(key) or _labels(item, slide, spec.classes, listeners)
                regions = list(item.regions) or _drawn_regions(item, annotations, role, slide)
                for region in regions:
                    slide.check_region(region)
            checked.append((item, role, annotations, regions))
    return checked


def _scale(slide: Slide, mpp: float | None, listeners: Sequence[Listener]) -> Scale | None:
    """How to read the slide's regions at `mpp` µm/px (None: at each region's level, also for a slide that records
    no µm/px, with a warning)."""
    if mpp is None:
        return None
    if slide.mpp is None:
        for listener in listeners:
            listener(WarningEvent(f"{slide.path.name} records no µm/px; its regions are read at their pyramid level, "
                                  f"not at {mpp:g} µm/px"))
        return None
    return Scale.for_mpp(slide, mpp)


def _drawn_regions(item: SpecItem, annotations: list[Annotation], role: str, slide: Slide) -> list[Region]:
    """The labels file's own Train (or Validation) rectangles, for an item that names no regions."""
    wanted = Role.REGION if role == "training" else Role.VALIDATION
    regions = [Region.around(a.bounds, slide.dimensions) for a in annotations if a.role is wanted]
    regions = [r for r in regions if r is not None]
    if not regions:
        raise GigaPathError(f"{item.labels or item.slide}: names no {role} region; give the item 'regions' or draw "
                            f"a {wanted.title} region in its labels")
    return regions


def _labels(item: SpecItem, slide: Slide, classes: tuple[str, ...] | None,
            listeners: Sequence[Listener]) -> list[Annotation]:
    """The item's annotations (all roles: labels, and the regions drawn with them), or detected tissue."""
    def say(event: Event) -> None:
        for listener in listeners:
            listener(event)

    if item.labels is None:
        if classes is not None and list(classes) != ClassMap.tissue().names:
            raise GigaPathError(f"{item.slide}: a model of the classes {', '.join(classes)} needs labels for every "
                                f"item (tissue detection labels only Background and Tissue)")
        annotations = detect_tissue(slide)
        say(LogEvent(f"{slide.path.name}: detected {len(annotations)} tissue polygon(s) as labels"))
        return annotations
    annotations = read_geojson(item.labels, report=lambda note: say(WarningEvent(f"{item.labels}: {note}")))
    if not any(a.role is Role.LABEL for a in annotations):  # (shapes that miss a region are only warned about)
        raise GigaPathError(f"{item.labels}: holds no label areas (polygons of a class) to learn from; draw or "
                            f"export some, or train with --auto-labels")
    others = other_classes(annotations)
    if others and classes is None:
        say(WarningEvent(f"{item.labels}: label class(es) {', '.join(map(repr, others))} are neither Tissue nor "
                         f"Background; this tissue model counts them as tissue"))
    return annotations


def _class_map(spec: TrainSpec, labelled: list[tuple[Path, list[Annotation]]]) -> ClassMap:
    """The tissue model's classes, or the ones named (colours from the labels' own classes); a label of a class
    not named is refused here, before anything is decoded, naming the slides it lies on (a project's labels files
    are named by slide id, which tells no one where to look)."""
    if spec.classes is None:
        return ClassMap.tissue()
    given = (AnnotationClass(name, colour) for name, colour in spec.colours)  # a project's own, over the labels'
    classes = ClassMap.named(spec.classes, (*(a.cls for _, annotations in labelled for a in annotations), *given))
    unknown = unknown_classes(((slide, {a.cls.name for a in annotations if a.role is Role.LABEL})
                               for slide, annotations in labelled), spec.classes)
    if unknown:
        raise GigaPathError(f"label class(es) {', '.join(map(repr, unknown))} are not among the model's classes "
                            f"({', '.join(spec.classes)}): {where_text(unknown)}; add them to the classes, or remove "
                            "those labels")
    return classes


def _decoding(name: str, listeners: Sequence[Listener]) -> Callable[[int, int], None]:
    """Report first-time region decoding (minutes for a gigapixel region) as log lines every 10 %."""
    shown = [-1]

    def progress(done: int, total: int) -> None:
        tenth = 10 * done // total
        if tenth != shown[0]:
            shown[0] = tenth
            for listener in listeners:
                listener(LogEvent(f"decoding the {name} into the cache: {10 * tenth}%"))

    return progress


def _write_config(job: TrainJob, trainer: Trainer, train: list[RegionData], val: list[RegionData],
                  inputs: dict[str, str | None]) -> None:
    geometry = model_geometry(trainer.model)
    config = {
        "version": __version__,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "spec": resolved(job.spec).as_json(),
        "inputs": inputs,
        "classes": model_info(trainer.model).classes.as_json(),
        "train_regions": [r.name for r in train],
        "val_regions": [r.name for r in val],
        "train_pixels": sum(r.pixels for r in train),
        "val_pixels": sum(r.pixels for r in val) or None,
        "training": asdict(trainer.config),
        "model": {"parameters": int(trainer.model.count_params()), **asdict(geometry)},
        "device": trainer.device,
        "started_at_step": trainer.step,  # > 0: resumed from a checkpoint
        "workers": job.workers,
        "ray_address": job.ray_address,
    }
    with atomic_path(job.out / "config.json") as tmp:
        tmp.write_text(json.dumps(config, indent=1))


def _inputs(spec: TrainSpec) -> dict[str, str | None]:
    """Each slide's content fingerprint and each labels file's SHA-256, by path: what a resume must find again (the
    same paths can hold other files by then)."""
    found: dict[str, str | None] = {}
    for item in (*spec.train, *spec.validation):
        slide = str(item.slide.resolve())
        if slide not in found:
            found[slide] = identity(slide)
        if item.labels is not None and str(item.labels.resolve()) not in found:
            found[str(item.labels.resolve())] = hashlib.sha256(item.labels.read_bytes()).hexdigest()
    return found
