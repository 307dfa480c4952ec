"""A prediction job as users describe it (slide, model, region, outputs), shared by the CLI, GUI and server."""
from __future__ import annotations

import math
import os
import tempfile
import time
from contextlib import ExitStack, closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from gigapath_desktop import __version__
from gigapath_desktop.annotations.tissue import MIN_AREA_UM2
from gigapath_desktop.errors import Cancelled, GigaPathError
from gigapath_desktop.inference.cleanup import clean_mask
from gigapath_desktop.inference.predictor import CancelFn, ProgressFn, predict_bands
from gigapath_desktop.inference.writers import (
    TILE,
    MaskValues,
    check_preview,
    write_channels_tiff,
    write_contours,
    write_mask_tiff,
    write_preview_png,
)
from gigapath_desktop.model import load_model
from gigapath_desktop.model.info import SCALE_TOLERANCE, ModelInfo, model_info
from gigapath_desktop.outputs import atomic_path, check_output, remove_orphans, scratch_prefix
from gigapath_desktop.slides import Region, Slide, SlideSource, open_slide
from gigapath_desktop.slides.diskarray import DiskArray
from gigapath_desktop.slides.resample import Scale, read_at

DEFAULT_THRESHOLD = 0.5  # tissue at or above this probability
VALUES = {"labels": "class index", "binary": "0/255 at threshold", "probability": "probability x 255"}  # (recorded)
GIVE_MPP = "--slide-mpp gives it one, or project set-mpp for a project's slide"  # (predict-batch has no --slide-mpp)


@dataclass
class PredictJob:
    slide: Path
    model: Path
    out: Path  # pyramidal TIFF mask
    region: Region | None = None  # None: the whole slide at `level`
    level: int = 0
    png: Path | None = None
    downsample: float = 32.0  # of the PNG preview, in slide level-0 pixels per preview pixel
    geojson: Path | None = None
    threshold: float = DEFAULT_THRESHOLD
    binary: bool = False  # 0/255 at the threshold instead of probability x 255
    tile: int = 2048
    probabilities: Path | None = None  # also a pyramidal TIFF of each class's probability x 255, one channel each
    slide_mpp: float | None = None  # the slide's own µm/px, for a slide that records none
    # tissue masks, as tissue labels are drawn: gaps inside tissue under min_hole_um2 become tissue, specks under
    # min_object_um2 background (0: kept); needs the slide's µm/px
    min_hole_um2: float = MIN_AREA_UM2
    min_object_um2: float = 0.0


@dataclass
class PredictResult:
    out: Path
    png: Path | None
    geojson: Path | None
    contours: int
    pixels: int
    seconds: float
    notes: tuple[str, ...] = ()  # what the user should know, e.g. a slide without µm/px read at its level
    class_pixels: dict[str, int] = field(default_factory=dict)  # predicted pixels of each class in the region
    pixel_area: float | None = None  # µm² per predicted pixel; None when the slide records no µm/px
    downsample: float = 1.0  # slide level-0 pixels per mask pixel
    values: MaskValues | None = None  # what the mask's values mean
    probabilities: Path | None = None

    def areas(self) -> tuple[dict[str, float], str]:
        """Each class's area and its unit: mm² where the slide records its µm/px, else px² of the mask."""
        if self.pixel_area is None:
            return {name: float(n) for name, n in self.class_pixels.items()}, "px²"
        return {name: n * self.pixel_area / 1e6 for name, n in self.class_pixels.items()}, "mm²"


def run_predict_job(job: PredictJob, progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                    model: Any = None, say: Callable[[str], None] | None = None) -> PredictResult:
    """Predict and write every requested output; on any failure no partial output file is left behind. `model`:
    `job.model` already loaded (a batch loads it once); `say(phase)` is told each phase as it starts ("predicting",
    "writing the pyramid", "tracing contours" ...: the tiles' progress covers only the first)."""
    say = say or (lambda phase: None)
    start = time.perf_counter()
    outputs = [p for p in (job.out, job.png, job.geojson, job.probabilities) if p is not None]
    if len(set(map(os.path.abspath, outputs))) < len(outputs):
        raise GigaPathError("the mask, PNG, GeoJSON and probability outputs must be different files")
    for path in outputs:
        check_output(path, inputs=(job.slide, job.model))
    for folder in {path.parent for path in outputs}:
        remove_orphans(folder)  # what a prediction killed here before left (gigabytes of working folders)
    model = model if model is not None else load_model(job.model)
    info = model_info(model)
    classes = info.classes
    labels = len(classes.classes) > 2
    threshold = int(round(job.threshold * 255))
    values = MaskValues("labels" if labels else "binary" if job.binary else "probability", classes, threshold)
    with open_slide(job.slide, job.slide_mpp) as slide, ExitStack() as commit:
        region = job.region or Region(0, 0, *slide.dimensions, job.level)
        if job.png:
            check_preview(slide.dimensions, job.downsample)
        source, ds, notes = prediction_source(slide, region, info)
        notes += _unused_tissue_settings(job, values)
        if isinstance(source, SlideSource):  # the pyramid's own level grid
            canvas_w, canvas_h = slide.level_dimensions[region.level]
            col, row, _, _ = slide.level_rect(region)
        else:  # a grid of the model's µm/px over the whole slide, the region snapped onto it
            canvas_w, canvas_h = (max(1, round(d / ds)) for d in slide.dimensions)
            row, col = round(region.y / ds), round(region.x / ds)
        origin = (row, col)
        description = {
            "software": f"gigapath-desktop {__version__}", "source_slide": str(slide.path.resolve()),
            "model": str(job.model.resolve()), "region": asdict(region), "downsample": ds,
            "mpp": None if slide.mpp is None else slide.mpp[0] * ds,
            "slide_mpp": job.slide_mpp,  # the µm/px the user gave the slide (None: the file's own, if any)
            "values": VALUES[values.kind], "threshold": None if labels else job.threshold, "classes": classes.as_json(),
        }
        # every output is written under a temporary name; once the last one is done they are renamed one after
        # another, the mask last, so a mask says its set is whole (a stop between two renames leaves the others)
        pixel_area = None if slide.mpp is None else slide.mpp[0] * slide.mpp[1] * ds * ds
        limits, note = _cleanup_limits(job, values, pixel_area, slide, source.shape[0] * source.shape[1])
        notes += note
        description.update(min_hole_um2=limits[0] and job.min_hole_um2, min_object_um2=limits[1] and job.min_object_um2)
        tmp = {path: commit.enter_context(atomic_path(path)) for path in outputs}
        counts = np.zeros(len(classes.classes), np.int64)
        encode = _encoder(values, job.threshold)
        store = None
        if job.probabilities:  # kept on disk beside the output while the mask is written, then written itself
            scratch = Path(commit.enter_context(tempfile.TemporaryDirectory(prefix=scratch_prefix("prob"),
                                                                            dir=job.probabilities.parent)))
            channels = len(classes.names) if labels else 1  # the tissue model's one channel (a plain 2-D TIFF)
            shape = (*source.shape[:2], channels) if labels else source.shape[:2]
            store = commit.enter_context(closing(DiskArray.create(scratch / "p.npy", shape, np.uint8)))
            encode = _with_probabilities(encode)
        bands = commit.enter_context(closing(predict_bands(model, source, job.tile, progress, cancel, encode)))
        if store is not None:
            bands = _probabilities_kept(bands, store)
        if any(limits):
            folder = Path(commit.enter_context(tempfile.TemporaryDirectory(prefix=scratch_prefix("clean"),
                                                                           dir=job.out.parent)))
            bands = _cleaned(bands, source.shape[:2], values, limits, folder / "mask.npy", cancel)
        say("predicting")
        rows = _canvas_rows(_counted(bands, values, counts), (canvas_h, canvas_w), origin, say)
        with write_mask_tiff(tmp[job.out], rows, (canvas_h, canvas_w), ds, slide.mpp, description, values) as levels:
            window = (*origin, *source.shape[:2])
            if job.geojson:
                say("tracing contours")
            contours = write_contours(tmp[job.geojson], levels, values, cancel, window) if job.geojson else 0
            if job.png:
                say("drawing the preview")
                size = max(1, round(max(slide.dimensions) / job.downsample))
                write_preview_png(tmp[job.png], slide.thumbnail(size), levels, job.downsample, values)
        _check_stop(cancel)  # (a stop asked during the preview: nothing is renamed over the user's files)
        if store is not None:
            say("writing the probabilities")
            kept = ((y, np.asarray(store[y : y + TILE])) for y in range(0, store.shape[0], TILE))
            shape = (canvas_h, canvas_w, *store.shape[2:])
            about = {**description, "values": "probability x 255 of each class, one channel per class",
                     "threshold": None, "channels": classes.names[-channels:]}
            rows = _canvas_rows(kept, shape, origin)
            if labels:  # K named channels: an OME-TIFF, as QuPath reads them
                write_channels_tiff(tmp[job.probabilities], rows, shape, ds, slide.mpp, about, classes.names)
            else:
                write_mask_tiff(tmp[job.probabilities], rows, shape, ds, slide.mpp, about,
                                MaskValues("probability", classes)).close()
            _check_stop(cancel)
    return PredictResult(job.out, job.png, job.geojson, contours, source.shape[0] * source.shape[1],
                         time.perf_counter() - start, notes, dict(zip(classes.names, map(int, counts))), pixel_area,
                         ds, values, job.probabilities)


def _check_stop(cancel: CancelFn | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled("stopped before the outputs were renamed")


def prediction_source(slide: Slide, region: Region, info: ModelInfo) -> tuple[Any, float, tuple[str, ...]]:
    """(pixels to predict on, level-0 pixels per output pixel, notes): the region at the model's µm/px when it was
    trained at one and the slide records its own, else at the region's level (noted when that is off the scale the
    model learnt from, as far as the slide and the model say)."""
    mpp = info.mpp
    if mpp is not None and slide.mpp is not None:
        scale = Scale.for_mpp(slide, mpp)
        unused = (f"the model reads slides at {mpp:g} µm/px, so level {region.level} was not used",)
        return read_at(slide, region, scale), scale.downsample, unused if region.level else ()
    source = SlideSource(slide, region), slide.level_downsamples[region.level]  # SlideSource checks the level
    if mpp is None:
        return (*source, _off_scale(slide, region, info.source_mpp))
    return (*source, (f"{slide.path.name} records no µm/px; the model was trained at {mpp:g} µm/px, so it runs at "
                      f"level {region.level} and may be off scale ({GIVE_MPP})",))


def _off_scale(slide: Slide, region: Region, learnt: float | None) -> tuple[str, ...]:
    """A note when a model trained at a level (on pixels of `learnt` µm/px) reads this slide at another scale: a
    40x slide read at level 0 by a model of 20x pixels gave a mask of the wrong things without a word."""
    if learnt is None or slide.mpp is None:
        return ()
    read = slide.mpp[0] * slide.level_downsamples[region.level]
    if 1 / SCALE_TOLERANCE <= read / learnt <= SCALE_TOLERANCE:
        return ()
    return (f"the model learnt from pixels of {learnt:g} µm/px and {slide.path.name} is read at {read:g} µm/px "
            f"(level {region.level}), so its results may be off scale: choose the level nearest {learnt:g} µm/px, "
            f"or train with --mpp (such a model reads every slide at its own scale)",)


def _unused_tissue_settings(job: PredictJob, values: MaskValues) -> tuple[str, ...]:
    """A K-class mask holds class indices: say so when the job asked for a tissue mask's threshold or clean-up."""
    if values.kind != "labels":
        return ()
    given = [name for name, changed in [
        (f"threshold {job.threshold:g}", job.threshold != DEFAULT_THRESHOLD), ("binary", job.binary),
        (f"smallest hole {job.min_hole_um2:g} µm²", job.min_hole_um2 != MIN_AREA_UM2),
        (f"smallest speck {job.min_object_um2:g} µm²", job.min_object_um2 != 0)] if changed]
    if not given:
        return ()
    return (f"the model tells {len(values.classes.classes)} classes apart, so its mask holds class indices: the "
            f"tissue-mask settings ({', '.join(given)}) do not apply",)


def _cleanup_limits(job: PredictJob, values: MaskValues, pixel_area: float | None, slide: Slide,
                    pixels: int) -> tuple[tuple[int, int], tuple[str, ...]]:
    """(smallest hole, smallest object) kept in mask pixels (0: no clean-up), and a note where it cannot be done.
    An area past the region's `pixels` means every hole (speck): it is cut to `pixels` + 1, so an area like 1e308
    µm² (more pixels than a float holds) fills every hole as the region's own area would."""
    if not (0 <= job.min_hole_um2 < math.inf and 0 <= job.min_object_um2 < math.inf):
        raise GigaPathError(f"the smallest hole and speck kept must be areas of 0 µm² or more, got "
                            f"{job.min_hole_um2:g} and {job.min_object_um2:g}")
    if values.kind == "labels" or not (job.min_hole_um2 or job.min_object_um2):
        return (0, 0), ()
    if pixel_area is None:
        return (0, 0), (f"{slide.path.name} records no µm/px, so small holes and specks were left as predicted "
                        f"({GIVE_MPP})",)
    hole, speck = (math.ceil(min(area / pixel_area, pixels + 1)) for area in (job.min_hole_um2, job.min_object_um2))
    return (hole, speck), ()


def _cleaned(bands: Iterator[tuple[int, np.ndarray]], shape: tuple[int, int], values: MaskValues,
             limits: tuple[int, int], path: Path, cancel: CancelFn | None) -> Iterator[tuple[int, np.ndarray]]:
    """The bands, kept on disk until the last one, cleaned up (`inference.cleanup`), then passed on TILE rows at a
    time."""
    with closing(DiskArray.create(path, shape, np.uint8)) as store:
        for y, band in bands:
            store[y : y + band.shape[0]] = band
        clean_mask(store, values.is_tissue, values.set_tissue, *limits, cancel=cancel)
        for y in range(0, shape[0], TILE):
            yield y, store[y : y + TILE]


def _encoder(values: MaskValues, threshold: float) -> Callable[[np.ndarray], np.ndarray]:
    """Tile probabilities -> the mask's uint8 values."""
    if values.kind == "labels":
        return lambda p: p.argmax(axis=-1).astype(np.uint8)
    if values.kind == "binary":
        return lambda p: np.where(p >= threshold, 255, 0).astype(np.uint8)
    return lambda p: np.round(p * 255).astype(np.uint8)


def _with_probabilities(encode: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Tile probabilities -> the mask's values stacked with each channel's probability x 255 (split again below)."""
    def both(p: np.ndarray) -> np.ndarray:
        per_channel = p if p.ndim == 3 else p[..., None]
        return np.concatenate([encode(p)[..., None], np.round(per_channel * 255).astype(np.uint8)], axis=-1)
    return both


def _probabilities_kept(bands: Iterator[tuple[int, np.ndarray]],
                        store: DiskArray) -> Iterator[tuple[int, np.ndarray]]:
    """Save each band's probability channels to `store` and pass its mask values on."""
    for y, band in bands:
        store[y : y + band.shape[0]] = band[..., 1:].reshape(band.shape[0], *store.shape[1:])
        yield y, band[..., 0]


def _counted(bands: Iterator[tuple[int, np.ndarray]], values: MaskValues,
             counts: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Pass the bands on, adding each class's pixels to `counts`."""
    for y, band in bands:
        counts += values.counts(band)
        yield y, band


def _canvas_rows(
    bands: Iterator[tuple[int, np.ndarray]], shape: tuple[int, ...], origin: tuple[int, int],
    say: Callable[[str], None] = lambda phase: None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Place region bands into full-width canvas rows (zeros outside the region), TILE rows at a time, so memory
    holds a band whatever the slide's size; a region snapped onto a resampled grid may reach a pixel past the canvas,
    which is cut. `shape`: (height, width[, channels]); `say("writing the pyramid")` before the last rows go out
    (their reader may not ask for more)."""
    height, width = shape[:2]
    r0, c0 = origin
    pending = np.zeros((0, width, *shape[2:]), np.uint8)
    emitted = 0

    def add(rows: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        nonlocal pending, emitted
        pending = np.concatenate([pending, rows])
        while len(pending) >= TILE:
            if emitted + TILE >= height:
                say("writing the pyramid")
            yield emitted, pending[:TILE]
            emitted += TILE
            pending = pending[TILE:]

    def blank_until(row: int) -> Iterator[tuple[int, np.ndarray]]:
        while emitted + len(pending) < row:
            yield from add(np.zeros((min(TILE, row - emitted - len(pending)), width, *shape[2:]), np.uint8))

    for y, band in bands:
        band = band[: max(0, height - r0 - y), : width - c0]
        yield from blank_until(r0 + y)
        rows = np.zeros((band.shape[0], width, *shape[2:]), np.uint8)
        rows[:, c0 : c0 + band.shape[1]] = band
        yield from add(rows)
    yield from blank_until(height)
    if len(pending):
        say("writing the pyramid")
        yield emitted, pending
