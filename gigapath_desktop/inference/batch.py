"""Batch prediction: one model, loaded once, over many slides; a slide that fails is recorded and the rest go on.

For each slide OUT/<slide stem>.tif (and .geojson, .png when asked), and OUT/summary.csv with one row per slide:
status (ok / error / skipped), the error, the seconds it took, each class's area (mm², or px² of the mask where
the slide records no µm/px) and, for slides with label annotations (a project's), the Dice of the prediction
(`label_dice`). The summary is rewritten (under a temporary name) after every slide, so a stopped batch keeps the
rows of the slides it finished, and those of slides it had not reached whose outputs remain; a slide whose outputs
all exist is skipped unless `overwrite`.
"""
from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import shapely
import tifffile

from gigapath_desktop.annotations import UNLABELLED, Annotation, ClassMap, Role, rasterize, read_geojson
from gigapath_desktop.annotations.tissue import MIN_AREA_UM2
from gigapath_desktop.errors import Cancelled, GigaPathError, os_error_text
from gigapath_desktop.inference.job import VALUES, PredictJob, PredictResult, run_predict_job
from gigapath_desktop.inference.predictor import CancelFn
from gigapath_desktop.locks import FolderLock
from gigapath_desktop.model import load_model
from gigapath_desktop.model.info import model_info
from gigapath_desktop.outputs import atomic_path, remove, remove_orphans
from gigapath_desktop.slides import Region, identity, open_slide

SUMMARY = "summary.csv"
DICE_MAX_PIXELS = 64_000_000  # mask pixels of the labels' bounding box read back to compare
BatchProgress = Callable[[int, int, int, int], None]  # (slide index, slides, tiles done, tiles of this slide)

KEPT = "outputs exist, kept (--overwrite, or the app's Predict again where masks exist, replaces them)"


@dataclass(frozen=True)
class BatchJob:
    model: Path
    out: Path  # a folder, created if missing
    slides: tuple[Path, ...]
    skipped: tuple[tuple[Path, str], ...] = ()  # (path, why): files a folder held that are not slides
    geojson: bool = False
    png: bool = False
    overwrite: bool = False
    tile: int = 2048
    threshold: float = 0.5
    binary: bool = False
    downsample: float = 32.0  # of the PNG previews
    labels: dict[Path, Path] = field(default_factory=dict)  # slide -> its annotations (GeoJSON), to report Dice
    identities: dict[Path, str] = field(default_factory=dict)  # slide -> the content its labels were drawn on
    resolutions: dict[Path, float] = field(default_factory=dict)  # slide -> the µm/px the user gave it (a project's)
    min_hole_um2: float = MIN_AREA_UM2  # the clean-up of tissue masks, as `PredictJob`'s
    min_object_um2: float = 0.0

    def outputs(self, slide: Path) -> list[Path]:
        mask = self.out / f"{slide.stem}.tif"
        return [mask] + [mask.with_suffix(s) for s, wanted in ((".geojson", self.geojson), (".png", self.png)) if wanted]


@dataclass
class BatchRow:
    slide: Path
    status: str  # ok / error / skipped
    message: str = ""
    seconds: float = 0.0
    areas: dict[str, float] = field(default_factory=dict)
    unit: str = ""
    outputs: tuple[Path, ...] = ()
    dice: float | None = None  # mean over the labelled classes; None: no labels
    notes: tuple[str, ...] = ()  # what the user should know of an ok slide (`message` joins them for the summary)


def run_batch(job: BatchJob, on_row: Callable[[BatchRow], None] | None = None, progress: BatchProgress | None = None,
              cancel: CancelFn | None = None) -> list[BatchRow]:
    """Predict every slide of `job`, holding the output folder's lock; raises GigaPathError only for what stops the
    whole batch (model, out folder) and `Cancelled` when stopped (the summary then holds the slides done)."""
    try:
        job.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GigaPathError(f"{job.out}: cannot create the output folder ({exc.strerror})") from None
    with FolderLock(job.out):
        remove_orphans(job.out)  # of a batch killed here before
        return _run(job, on_row, progress, cancel)


def _run(job: BatchJob, on_row: Callable[[BatchRow], None] | None, progress: BatchProgress | None,
         cancel: CancelFn | None) -> list[BatchRow]:
    model = load_model(job.model)
    classes = model_info(model).classes.names
    kind = "labels" if len(classes) > 2 else "binary" if job.binary else "probability"
    earlier = _earlier_rows(job.out / SUMMARY, classes)
    kept = [row for row in earlier.values() if job.outputs(row.slide)[0].exists()]  # (a batch removes no mask)
    rows: list[BatchRow] = []

    def record(row: BatchRow) -> None:
        """Add `row` to the summary, keeping the earlier rows of slides this batch has not recorded (yet) whose masks
        are here: an interrupted --overwrite must not lose the rows of the old outputs it had not reached."""
        rows.append(row)
        recorded = {r.slide for r in rows}
        write_summary(job.out / SUMMARY, rows + [r for r in kept if r.slide not in recorded], classes)
        if on_row:
            on_row(row)

    for path, why in job.skipped:
        record(BatchRow(path, "skipped", why))
    stems: dict[str, Path] = {}
    for index, slide in enumerate(job.slides):
        outputs = job.outputs(slide)
        made = _made(outputs[0])
        other = made and Path(made["source_slide"]).resolve()
        if slide in job.identities and slide.is_file() and identity(slide) != job.identities[slide]:
            record(BatchRow(slide, "error", "the file now holds another slide than the one its labels were drawn on "
                                            "(its content differs); put that slide back or relink it"))
        elif stems.setdefault(slide.stem, slide) != slide:
            record(BatchRow(slide, "error", f"{stems[slide.stem]} has the same name; its outputs would be overwritten"))
        elif not job.overwrite and outputs[0].exists() and other != slide.resolve():
            record(BatchRow(slide, "error", f"{outputs[0]} is the mask of {other or 'another file'}, a slide of the "
                                            "same name; predict into another folder (or --overwrite it)"))
        elif not job.overwrite and outputs[0].exists() and (otherwise := _made_otherwise(made, job, kind, slide)):
            record(BatchRow(slide, "error", f"{outputs[0]} was made {otherwise}; --overwrite (the app: Predict again "
                                            "where masks exist) replaces it, or predict into another folder"))
        elif not job.overwrite and all(p.exists() for p in outputs):
            before = earlier.get(str(slide), BatchRow(slide, "skipped"))  # its figures from the run that made them
            record(replace(before, status="skipped", message=KEPT,
                           outputs=tuple(outputs)))
        else:
            record(_predict(job, slide, outputs, model, cancel,
                            lambda done, total: progress and progress(index, len(job.slides), done, total)))
    return rows


def _made(mask: Path) -> dict | None:
    """What a mask written here records of how it was made: its slide, model and values (None: no mask, or not one
    of ours)."""
    try:
        with tifffile.TiffFile(mask) as tif:
            made = json.loads(tif.pages[0].description)
        return made if isinstance(made, dict) and isinstance(made.get("source_slide"), str) else None
    except (OSError, ValueError, TypeError, IndexError, tifffile.TiffFileError):
        return None


def _made_otherwise(made: dict | None, job: BatchJob, kind: str, slide: Path) -> str | None:
    """How a mask was made otherwise than this batch would make it (None: the same way): by another model, with
    other values, threshold or clean-up, or reading the slide at another µm/px (a re-run with another model,
    --binary, other clean-up or a slide's new µm/px must not pass the old masks off as done). The mask records the
    clean-up applied: none for class indices or a slide without µm/px, whose masks any clean-up would leave as
    they are."""
    if made is None:
        return "by another program (not one of its masks)"
    tissue = kind != "labels"
    cleanup = (job.min_hole_um2, job.min_object_um2) if tissue and made.get("mpp") is not None else (0, 0)
    for differs, how in [
        (made.get("model") != str(job.model.resolve()), f"by another model ({made.get('model')})"),
        (made.get("values") != VALUES[kind] or made.get("threshold") != (job.threshold if tissue else None),
         f"with other values ({made.get('values')}, threshold {made.get('threshold')})"),
        ((made.get("min_hole_um2"), made.get("min_object_um2")) != cleanup,
         f"with another clean-up (holes {made.get('min_hole_um2')} µm², specks {made.get('min_object_um2')} µm²)"),
        (made.get("slide_mpp") != job.resolutions.get(slide),
         f"at another µm/px of the slide (given {made.get('slide_mpp') or 'none'}, now "
         f"{job.resolutions.get(slide) or 'none'})"),
    ]:
        if differs:
            return how
    return None


def _predict(job: BatchJob, slide: Path, outputs: list[Path], model: object, cancel: CancelFn | None,
             progress: Callable[[int, int], None]) -> BatchRow:
    start = time.perf_counter()
    predict = PredictJob(slide, job.model, outputs[0], png=outputs[-1] if job.png else None,
                         downsample=job.downsample, geojson=outputs[1] if job.geojson else None,
                         threshold=job.threshold, binary=job.binary, tile=job.tile, min_hole_um2=job.min_hole_um2,
                         min_object_um2=job.min_object_um2, slide_mpp=job.resolutions.get(slide))
    try:
        result = run_predict_job(predict, progress, cancel, model)
    except Cancelled:
        raise
    except (GigaPathError, OSError) as exc:  # the row names the slide: its errors' own "SLIDE: " is left out
        return BatchRow(slide, "error", _one_line(exc).removeprefix(f"{slide}: "), time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001  (a decoder failure deep in one slide must not stop the others)
        return BatchRow(slide, "error", f"{type(exc).__name__}: {_one_line(exc)}", time.perf_counter() - start)
    for stale in {outputs[0].with_suffix(s) for s in (".geojson", ".png")} - set(outputs) if job.overwrite else ():
        remove(stale)  # an earlier batch's contours or preview of this slide: they show the mask just replaced
    areas, unit = result.areas()
    notes = list(result.notes)
    dice = None
    if slide in job.labels and job.labels[slide].is_file():
        try:
            dice = label_dice(result, read_geojson(job.labels[slide], report=lambda _: None))
        except GigaPathError as exc:
            notes.append(f"no Dice: {exc}")
        except Exception as exc:  # noqa: BLE001  (the mask is written: a failed comparison must not lose it)
            notes.append(f"no Dice: {type(exc).__name__}: {_one_line(exc)}")
    return BatchRow(slide, "ok", "; ".join(notes), result.seconds, areas, unit, tuple(outputs), dice, tuple(notes))


def label_dice(result: PredictResult, annotations: list[Annotation]) -> float | None:
    """The mean Dice over the classes of the labels' bounding box, read back from the written mask; None without
    labels. Labels of several classes count on the labelled pixels only (strokes are sparse); labels of one class
    (e.g. Detect tissue's Tissue) are read as dense training reads them, the rest of the box being the first class
    (Background), so a mask calling everything that class scores low. Raises GigaPathError for labels spanning more
    than DICE_MAX_PIXELS of the mask or of classes the model does not know."""
    labels = [a for a in annotations if a.role is Role.LABEL]
    values = result.values
    if not labels or values is None:
        return None
    ds = result.downsample
    with open_slide(result.out) as mask:
        x0, y0, x1, y1 = shapely.unary_union([a.geometry for a in labels]).bounds
        box = Region.around((x0 / ds, y0 / ds, x1 / ds, y1 / ds), mask.dimensions)
        if box is None:
            return None
        if box.width * box.height > DICE_MAX_PIXELS:
            raise GigaPathError(f"the labels span {box.width} x {box.height} mask pixels, too many to compare")
        predicted = mask.read_region(box)[..., 0]
    dense = len({a.cls.name for a in labels}) == 1
    truth = rasterize(labels, (box.x * ds, box.y * ds), ds, predicted.shape, values.classes.values(labels),
                      fill=0 if dense else UNLABELLED)
    labelled = truth != UNLABELLED
    if values.kind != "labels":
        predicted = (predicted >= values.threshold).astype(np.uint8)
    scores = []
    for k in np.unique(truth[labelled]):
        p, t = predicted[labelled] == k, truth[labelled] == k
        scores.append(2 * np.count_nonzero(p & t) / (np.count_nonzero(p) + np.count_nonzero(t)))
    return float(np.mean(scores)) if scores else None


def write_summary(path: Path, rows: list[BatchRow], classes: list[str]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["slide", "status", "error", "seconds", "dice", "area_unit", *(f"area:{c}" for c in classes)])
        for row in rows:
            areas = [_number(row.areas[c]) if c in row.areas else "" for c in classes]
            writer.writerow([str(row.slide), row.status, row.message, f"{row.seconds:.1f}" if row.seconds else "",
                             "" if row.dice is None else f"{row.dice:.4f}", row.unit, *areas])


def _earlier_rows(path: Path, classes: list[str]) -> dict[str, BatchRow]:
    """The rows of an earlier summary in this folder, by slide path (skipped slides keep their figures); {} when
    there is none or it cannot be read (it is rewritten either way)."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return {row["slide"]: BatchRow(Path(row["slide"]), row["status"], row["error"], float(row["seconds"] or 0),
                                           {c: float(row[f"area:{c}"]) for c in classes if row.get(f"area:{c}")},
                                           row["area_unit"], dice=float(row["dice"]) if row["dice"] else None)
                    for row in csv.DictReader(f) if row.get("status") != "error"}
    except (OSError, KeyError, ValueError, TypeError, csv.Error):
        return {}


def _number(value: float) -> str:
    return f"{value:.6g}"


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return os_error_text(exc)
    return " ".join(str(exc).split())


def mask_overview(path: Path, max_side: int) -> tuple[float, np.ndarray, ClassMap]:
    """A written mask at most `max_side` px a side, to overlay on its slide: (slide level-0 px per value, values
    as probabilities (h, w) or one-hot classes (h, w, K), the classes); GigaPathError if it is not this app's mask."""
    try:
        with tifffile.TiffFile(path) as tif:
            description = json.loads(tif.pages[0].description)
        downsample, kind = float(description["downsample"]), description["values"]
        classes = ClassMap.from_json(description["classes"])
    except (OSError, ValueError, KeyError, TypeError, IndexError, tifffile.TiffFileError) as exc:
        raise GigaPathError(f"{path}: not a mask written by this app ({type(exc).__name__})") from None
    with open_slide(path) as mask:
        level = mask.best_level_for_downsample(max(mask.dimensions) / max_side)
        values = mask.read_region(Region(0, 0, *mask.dimensions, level))[..., 0]
        downsample *= mask.level_downsamples[level]
    if kind == "class index":
        return downsample, np.eye(len(classes.classes), dtype=np.uint8)[values], classes
    return downsample, values / 255.0, classes
