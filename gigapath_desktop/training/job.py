"""A training job as users describe it (slide, regions, labels, run folder), shared by the CLI, GUI and server."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import keras

from gigapath_desktop import __version__
from gigapath_desktop.annotations import Annotation, ClassMap, detect_tissue, other_classes, read_geojson
from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.locks import LOCK_NAME, FolderLock
from gigapath_desktop.model import build_unet, model_geometry, save_model
from gigapath_desktop.model.info import ModelInfo, attach_info, model_info
from gigapath_desktop.outputs import atomic_path, remove
from gigapath_desktop.slides import Region, Slide, open_slide
from gigapath_desktop.slides.cache import CancelFn
from gigapath_desktop.training.data import RegionData, load_region
from gigapath_desktop.training.events import Event, Listener, LogEvent, WarningEvent
from gigapath_desktop.training.metrics import MetricsWriter
from gigapath_desktop.training.config import TrainConfig
from gigapath_desktop.training.trainer import Trainer, has_checkpoint

if TYPE_CHECKING:
    from gigapath_desktop.training.ray_executor import RayExecutor


@dataclass
class TrainJob:
    slide: Path
    region: Region
    out: Path
    config: TrainConfig = field(default_factory=TrainConfig)
    labels: Path | None = None  # GeoJSON; None means automatic tissue detection
    val_region: Region | None = None
    resume: bool = False
    resume_changes: tuple[str, ...] = ("steps",)  # settings of `config` that override the checkpoint's on resume
    workers: int = 1  # > 1, or a ray_address: the tiles of each step run on Ray workers (the same result)
    ray_address: str | None = None
    classes: tuple[str, ...] | None = None  # a K-class model's class names in label order; None: the tissue model
    sparse: bool = False  # pixels no label covers are unlabelled (ignored), not the first class


def run_train_job(job: TrainJob, listeners: Sequence[Listener] = (),
                  started: Callable[[Trainer], None] | None = None, cancel: CancelFn | None = None) -> Trainer:
    """Lock the run folder, prepare, train to the end (or a stop), and write RUN_DIR/model.keras.

    `started(trainer)` is called once training is about to begin (the GUI keeps it for pause / resume / stop);
    `cancel()` stops the preparation, including the first decode of a region (minutes for a gigapixel one)."""
    _check_out(job)
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

    The caller holds the run folder's lock (`run_train_job` does)."""
    _check_out(job)
    with open_slide(job.slide) as slide:
        slide.check_region(job.region)
        if job.val_region is not None:
            slide.check_region(job.val_region)
        annotations = _labels(job, slide, listeners)
        classes = _class_map(job, annotations)
        options = dict(cancel=cancel, classes=classes, sparse=job.sparse)
        train = load_region(slide, job.region, annotations, progress=_decoding("training region", listeners),
                            **options)
        val = None
        if job.val_region is not None:
            val = load_region(slide, job.val_region, annotations, progress=_decoding("validation region", listeners),
                              **options)
    job.out.mkdir(parents=True, exist_ok=True)
    if job.resume:
        changes = {name: getattr(job.config, name) for name in job.resume_changes}
        trainer = Trainer.from_checkpoint(job.out, [train], val, listeners, changes, executor)
    else:
        keras.utils.set_random_seed(job.config.seed)
        model = build_unet(classes=len(classes.classes))
        attach_info(model, ModelInfo(classes))
        trainer = Trainer(model, [train], val, job.config, job.out, listeners, executor)
    if model_info(trainer.model).classes != classes:
        raise GigaPathError(f"{job.out}: its model has the classes {', '.join(model_info(trainer.model).classes.names)}, "
                            f"not {', '.join(classes.names)}")
    trainer.listeners.insert(0, MetricsWriter(job.out / "metrics.csv", trainer.history))
    _write_config(job, trainer, train, val)
    return trainer


def _check_out(job: TrainJob) -> None:
    if job.out.exists() and not job.out.is_dir():
        raise GigaPathError(f"{job.out}: is a file; --out names a run folder")
    has_run = has_checkpoint(job.out)
    if job.resume and not has_run:
        raise GigaPathError(f"{job.out}: nothing to resume (no checkpoint there)")
    if not job.resume and has_run:
        raise GigaPathError(f"{job.out} already holds a run; pass --resume to continue it, or choose another --out")


def _labels(job: TrainJob, slide: Slide, listeners: Sequence[Listener]) -> list[Annotation]:
    def say(event: Event) -> None:
        for listener in listeners:
            listener(event)

    if job.labels is None:
        annotations = detect_tissue(slide)
        say(LogEvent(f"detected {len(annotations)} tissue polygon(s) as labels"))
        return annotations
    annotations = read_geojson(job.labels, report=lambda note: say(WarningEvent(f"{job.labels}: {note}")))
    others = other_classes(annotations)
    if others and job.classes is None:
        say(WarningEvent(f"{job.labels}: label class(es) {', '.join(map(repr, others))} are neither Tissue nor "
                         f"Background; this tissue model counts them as tissue"))
    return annotations


def _class_map(job: TrainJob, annotations: list[Annotation]) -> ClassMap:
    """The tissue model's classes, or the ones named (colours from the labels' own classes)."""
    if job.classes is None:
        return ClassMap.tissue()
    classes = ClassMap.named(job.classes, (a.cls for a in annotations))
    classes.values(annotations)  # an unknown label class is refused before anything is decoded
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


def _write_config(job: TrainJob, trainer: Trainer, train: RegionData, val: RegionData | None) -> None:
    geometry = model_geometry(trainer.model)
    config = {
        "version": __version__,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "slide": str(job.slide.resolve()),
        "region": asdict(job.region),
        "val_region": asdict(job.val_region) if job.val_region else None,
        "labels": str(job.labels.resolve()) if job.labels else "auto (tissue detection)",
        "classes": model_info(trainer.model).classes.as_json(),
        "sparse": job.sparse,
        "train_pixels": train.pixels,
        "val_pixels": val.pixels if val else None,
        "training": asdict(trainer.config),
        "model": {"parameters": int(trainer.model.count_params()), **asdict(geometry)},
        "device": trainer.device,
        "started_at_step": trainer.step,  # > 0: resumed from a checkpoint
        "workers": job.workers,
        "ray_address": job.ray_address,
    }
    with atomic_path(job.out / "config.json") as tmp:
        tmp.write_text(json.dumps(config, indent=1))
