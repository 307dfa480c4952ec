"""Prediction from the window: a region (selected, visible or whole slide) predicted in the background and shown
as an amber overlay, and the mask export (pyramidal TIFF, PNG preview, GeoJSON contours)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from PySide6.QtCore import QRectF
from PySide6.QtGui import QImage

from gigapath_desktop.annotations import ClassMap
from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.project import Session
from gigapath_desktop.slides import Region
from gigapath_desktop.ui.export_dialog import ExportChoice
from gigapath_desktop.ui.jobs import JobRunner, Report
from gigapath_desktop.ui.results_panel import ResultsPanel
from gigapath_desktop.ui.viewer import SlideViewer
from gigapath_desktop.ui.workers import load_engine

if TYPE_CHECKING:
    from gigapath_desktop.inference import PredictResult

OVERLAY_MAX_SIDE = 4096
AMBER = (255, 210)  # the tissue overlay's red and green: distinct from every default class colour
NO_MODEL = "Open a slide, then train (Training panel) or open a run."


class Prediction:
    def __init__(self, session: Session, viewer: SlideViewer, panel: ResultsPanel, jobs: JobRunner,
                 report: Report, train_region: Callable[[], str | None]) -> None:
        self.session, self.viewer, self.panel, self.jobs, self.report = session, viewer, panel, jobs, report
        self.train_region = train_region  # the id of the chosen training region
        self.predicted: Region | None = None  # what the overlay shows (None: no overlay, or a mask read back)
        self.shown_model: Path | None = None  # the model whose prediction the overlay shows
        panel.predict_clicked.connect(self.predict)
        panel.overlay_toggle.toggled.connect(lambda on: viewer.overlay and viewer.overlay.setVisible(on))
        panel.opacity.valueChanged.connect(lambda v: viewer.overlay and viewer.overlay.setOpacity(v / 100))
        session.events.model.connect(panel.show_model)
        session.events.model.connect(self._forget_other_models)

    def _forget_other_models(self, model: Path | None) -> None:
        """Another model (a run opened, a training finished): the overlay of the previous one's prediction goes,
        so the mask shown is always the model line's."""
        if model != self.shown_model:
            self.clear()

    def clear(self) -> None:
        """No overlay, no key to it (another model, another slide)."""
        self.viewer.set_overlay(None)
        self.panel.show_classes([])
        self.predicted = None

    def region(self, kind: str) -> Region | None:
        slide = self.session.slide
        assert slide is not None
        if kind == "slide":
            return Region(0, 0, *slide.dimensions)
        if kind == "visible":
            r = self.viewer.visible_rect().intersected(QRectF(0, 0, *slide.dimensions))
            return Region(int(r.x()), int(r.y()), max(1, int(r.width())), max(1, int(r.height())))
        return self.session.selected_region(self.train_region())

    def predict(self, kind: str = "selection") -> bool:
        """Predict `kind` ('selection', 'visible', 'slide') in the background and show it as an overlay."""
        slide, model_path = self.session.slide, self.session.model_path
        if slide is None or model_path is None:
            self.report("no slide or no model", NO_MODEL)
            return False
        region = self.region(kind)
        if region is None:
            self.report("no region selected", "Select a region rectangle (Select tool, or the Annotations list) "
                        "or draw one.")
            return False
        level = slide.best_level_for_downsample(max(region.width, region.height) / OVERLAY_MAX_SIDE)
        region = Region(region.x, region.y, region.width, region.height, level)
        path = slide.path

        def work(progress: Callable[[int, int], None], cancel: Callable[[], bool]) -> tuple:
            load_engine()
            from gigapath_desktop.inference import predict_array
            from gigapath_desktop.inference.job import prediction_source
            from gigapath_desktop.model import load_model
            from gigapath_desktop.model.info import model_info

            model = load_model(model_path)
            info = model_info(model)
            with slide.reopen() as own:  # a handle of its own: the window may open another slide meanwhile
                # at the model's µm/px when it has one (as the exported mask), else at the overlay's level
                source, downsample, _ = prediction_source(own, region, info)
                if max(source.shape[:2]) > 4 * OVERLAY_MAX_SIDE:
                    raise GigaPathError(f"at the model's {info.mpp:g} µm/px this area is {source.shape[1]} x "
                                        f"{source.shape[0]} px, too large to show; select a smaller region, or "
                                        f"export the mask (File > Export mask…)")
                probability = predict_array(model, source, 2048, progress, cancel)
            return region, downsample, probability, info.classes

        return self.jobs.run("Predicting", work, self.jobs.for_slide(path, self._show))

    def shows_whole_slide(self) -> bool:
        """Whether the overlay shows a prediction of the whole slide (an export then defaults to it too)."""
        slide, region = self.session.slide, self.predicted
        return slide is not None and region is not None and region.as_tuple() == (0, 0, *slide.dimensions)

    def export(self, choice: ExportChoice) -> bool:
        """Predict and write the pyramidal TIFF (and PNG / GeoJSON) in the background."""
        slide, model_path = self.session.slide, self.session.model_path
        if slide is None or model_path is None:
            self.report("no slide or no model", NO_MODEL)
            return False
        try:  # said now, not after the model loads
            choice.check((slide.path, model_path))
        except GigaPathError as exc:
            self.report(str(exc), "Choose an existing, writable folder (Browse…).")
            return False
        region = None if choice.whole else self.region("selection")
        downsample = max(1.0, max(slide.dimensions) / choice.preview_side)
        options = dict(region=region, png=choice.png, geojson=choice.geojson, downsample=downsample,
                       min_hole_um2=choice.min_hole_um2, min_object_um2=choice.min_object_um2)

        def work(progress: Callable[[int, int], None], cancel: Callable[[], bool]) -> PredictResult:
            load_engine()  # off the GUI thread
            from gigapath_desktop.inference import PredictJob, run_predict_job

            return run_predict_job(PredictJob(slide.path, model_path, choice.tiff, slide_mpp=slide.given_mpp,
                                              **options), progress, cancel, say=self.jobs.say)

        return self.jobs.run("Exporting mask", work, self._exported)

    def _exported(self, result: PredictResult) -> None:
        contours = f" ({result.contours} contours)" if result.geojson else ""
        written = [str(result.out), *(p.name for p in (result.png, result.geojson) if p)]
        self.jobs.status.showMessage(f"wrote {', '.join(written)}{contours}", 30000)
        self.panel.show_export(result.out)
        if result.notes:
            self.report(f"wrote {result.out.name}, but", "\n".join(result.notes))

    def _show(self, result: tuple[Region, float, np.ndarray, ClassMap]) -> None:
        region, downsample, probability, classes = result  # downsample: the pixel pitch, whatever was clipped
        self.show(region.x, region.y, downsample, probability, classes)
        self.predicted = region

    def show(self, x: float, y: float, downsample: float, probability: np.ndarray,
             classes: ClassMap | None = None) -> None:
        """Overlay `probability` (0-1; (h, w, K) for a K-class model) with its top-left at level-0 (x, y), one value
        per `downsample` pixels: tissue in amber by its probability, classes other than the first in their colours."""
        h, w = probability.shape[:2]
        rgba = np.zeros((h, w, 4), np.uint8)
        if probability.ndim == 3:
            assert classes is not None and len(classes.classes) == probability.shape[2]
            colours = np.array([(*c.color, 200) for c in classes.classes], np.uint8)
            colours[0, 3] = 0
            labels = probability.argmax(axis=2)
            rgba[:] = colours[labels]
            shares = np.bincount(labels.ravel(), minlength=len(colours)) / labels.size
            self.panel.show_classes([(c.name, c.color, s) for c, s in zip(classes.classes, shares)])
        else:
            rgba[..., 0], rgba[..., 1] = AMBER
            rgba[..., 3] = np.round(probability * 255).astype(np.uint8)
            self.panel.show_classes([("Tissue", (*AMBER, 0), float(np.mean(probability >= 0.5)))])
        image = QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
        self.viewer.set_overlay(image, x, y, downsample)
        self.shown_model = self.session.model_path
        self.viewer.overlay.setOpacity(self.panel.opacity.value() / 100)
        self.viewer.overlay.setVisible(self.panel.overlay_toggle.isChecked())
