"""Training from the window: the panel's settings and region choices bound to the session model, the run on a
worker thread, pause / resume / stop, and re-opening a finished run."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QComboBox

from gigapath_desktop.annotations import Annotation, Role, write_geojson
from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.project import Session
from gigapath_desktop.project.manifest import now
from gigapath_desktop.project.settings import data_dir
from gigapath_desktop.project.training_data import TrainingData
from gigapath_desktop.training.config import TrainConfig
from gigapath_desktop.training.spec import TrainSpec, unknown_classes, where_text
from gigapath_desktop.training.events import WarningEvent
from gigapath_desktop.training.metrics import read_metrics
from gigapath_desktop.ui.jobs import Report
from gigapath_desktop.ui.training_panel import TrainingPanel
from gigapath_desktop.ui.workers import TrainingWorker

if TYPE_CHECKING:
    from gigapath_desktop.training.job import TrainJob

WARNING_BURST_MS = 300  # warnings this close together (a run's preparation says several) make one dialog


class TrainingController(QObject):
    def __init__(self, session: Session, panel: TrainingPanel, report: Report) -> None:
        super().__init__()
        self.session, self.panel, self.report = session, panel, report
        self.worker: TrainingWorker | None = None
        self._no_validation = False  # the user chose "none" as the validation region
        self._warnings: list[str] = []  # the running training's warnings not yet shown
        self.warning_timer = QTimer(self, singleShot=True, interval=WARNING_BURST_MS, timeout=self._show_warnings)
        panel.start_clicked.connect(self.start)
        panel.pause_clicked.connect(self.toggle_pause)
        panel.stop_clicked.connect(self.stop)
        self._show_choice()
        for box, key in ((panel.tile, "tile"), (panel.learning_rate, "learning_rate"), (panel.steps, "steps"),
                         (panel.memory_budget, "memory_budget"), (panel.mpp, "mpp")):
            box.setKeyboardTracking(False)  # a value is taken when typed in full, not digit by digit
            box.valueChanged.connect(lambda value, k=key: self._choose(**{k: value}))
        panel.val_region.activated.connect(lambda i: setattr(self, "_no_validation", panel.val_region.itemData(i) is None))
        panel.train_region.currentIndexChanged.connect(lambda _: self.show_plan())
        panel.scope.activated.connect(lambda i: self._choose(on_project=panel.scope.itemData(i) == "project"))
        panel.sparse.clicked.connect(lambda checked: self._choose(sparse=checked))
        panel.fold.activated.connect(lambda i: self._choose(fold=panel.fold.itemData(i)))
        session.events.training.connect(lambda choice: self._show_choice())
        session.events.slide.connect(self._on_slide)
        session.events.project.connect(lambda project: self.show_plan())
        session.events.running.connect(lambda data: self.show_plan())
        session.annotations.subscribe(self._on_annotation)

    def data(self) -> TrainingData:
        """What the running training reads, else what Start would train on (GigaPathError: a project slide's
        annotations cannot be read)."""
        if self.session.running is not None:
            return self.session.running
        return self.session.training_data(self._on_project(), self.panel.train_region.currentData(),
                                          self.panel.val_region.currentData())

    def show_plan(self) -> None:
        """Say what training reads (a project's or a running training's regions in place of this slide's choices)
        and its step plan, or why there is none."""
        try:
            data = self.data()
            plan = data.plan_text(self.session.training)
        except GigaPathError as exc:
            self.panel.plan.setText(f"<span style='color:#c0392b'>{exc}</span>")
            return
        self.panel.show_data(data if self._on_project() or self.session.running is not None else None)
        self.panel.plan.setText(plan)

    def runs_dir(self) -> Path:
        return (self.session.folder or data_dir()) / "runs"

    def running(self) -> bool:
        return self.worker is not None and self.worker.isRunning()

    def start(self) -> bool:
        """Train on the chosen region of this slide, or on the Train regions of every slide of the project."""
        if self.running():
            return False
        project = self._on_project()
        if project and self.session.project is None:
            self.report("no project is open", "Open a project (File > Open project…), or train on this slide.")
            return False
        if not project and self.session.slide is None:
            self.report("no slide is open", "Open a slide first (File > Open slide).")
            return False
        runs = self.session.project.folder / "runs" if project else self.runs_dir()
        run_dir = runs / time.strftime("%Y%m%d-%H%M%S")
        try:
            data = self.data()
            data.plan_text(self.session.training)  # a budget too small for a region: said now, before any decoding
            config = self.session.training.config(checkpoint_every=10)
            job, note = self._project_job(run_dir, config, data) if project else self._slide_job(run_dir, config, data)
        except (OSError, GigaPathError) as exc:
            self.report(f"cannot start training: {exc}", "Check the regions, labels and training settings, and that "
                        "the data folder is writable, then start again.")
            return False
        if job is None:
            return False
        self.worker = TrainingWorker(job)
        self.worker.event.connect(self.panel.on_event)
        self.worker.event.connect(self._on_event)
        self.worker.finished_training.connect(self._on_finished)
        self.worker.failed.connect(self._on_failed)
        self.worker.finished.connect(self._on_stopped)
        if project:
            self.worker.started_training.connect(lambda trainer: self._record(
                run_dir, started=now(), status="running (app)", classes=job.spec.classes))
            self.worker.failed.connect(lambda message: self._record(run_dir, status=f"failed: {message}"))
        self.panel.begin(config.steps)
        self.panel.append_log(f"run folder {run_dir}; {note}")
        self.panel.set_running(True)
        self.worker.start()
        self.session.set_running(data)
        return True

    def _slide_job(self, run_dir: Path, config: TrainConfig, data: TrainingData) -> tuple[TrainJob | None, str]:
        """The chosen regions of this slide, with the classes a project training would learn (`model_classes`);
        no labels: the tissue model on detected tissue."""
        from gigapath_desktop.training.job import TrainJob

        session = self.session
        region = session.region(session.annotations.find(self.panel.train_region.currentData()))
        if region is None:
            self.report("no training region", "Draw a rectangle (Rectangle tool, R) around the area to train on; "
                        "its role is Train (change it in the Annotations list).")
            return None, ""
        classes = session.model_classes()
        names = tuple(c.name for c in classes) if classes else None
        if names and not self._labels_fit(data, names):
            return None, ""
        labels = session.annotations.labels()
        run_dir.mkdir(parents=True, exist_ok=True)
        labels_path = write_geojson(labels, run_dir / "labels.geojson") if labels else None
        val = session.region(session.annotations.find(self.panel.val_region.currentData()))
        sparse = bool(labels) and session.training.sparse
        spec = TrainSpec.one_slide(session.slide.path, (region,), labels_path, val, names, sparse,
                                   session.training.mpp, session.slide.given_mpp,
                                   colours=tuple((c.name, c.color) for c in classes or ()))
        how = ("sparse" if sparse else "drawn") if labels else "automatic tissue detection"
        return TrainJob(spec, run_dir, config), f"labels: {how}; classes: {', '.join(names or ('tissue',))}"

    def _project_job(self, run_dir: Path, config: TrainConfig, data: TrainingData) -> tuple[TrainJob | None, str]:
        """Every project slide with a Train region trains, every one with a Validation region validates; the
        project's classes (the tissue model while it has none but Background and Tissue)."""
        from gigapath_desktop.training.job import TrainJob

        project = self.session.project
        self.session.autosave.flush()  # the open slide's latest edits are in its annotations file
        spec = project.spec(sparse=self.session.training.sparse, mpp=self.session.training.mpp)
        if not self._labels_fit(data, spec.classes):
            return None, ""
        classes = ", ".join(spec.classes) if spec.classes else "tissue"
        return TrainJob(spec, run_dir, config), (f"{len(spec.train)} training and {len(spec.validation)} validation "
                                                 f"slides of the project; classes: {classes}")

    def _labels_fit(self, data: TrainingData, classes: tuple[str, ...] | None) -> bool:
        """Whether every slide with a region has labels the model can learn from; else say which slides, and what
        to do in the app, before anything starts (the engine's own refusal speaks of files and options)."""
        unlabelled = ", ".join(slide.name for slide in data.unlabelled())
        if unlabelled:
            how = (f"labels of {', '.join(classes)}" if classes else "labels, or outline the tissue with Tools > "
                   "Detect tissue")
            self.report(f"{unlabelled}: a Train or Validation region but no labels to learn from",
                        f"Draw {how} (Brush or Polygon tool, the class chosen in the toolbar; a project slide opens "
                        f"from the Project panel), then start again.")
            return False
        unknown = unknown_classes(data.labels, classes) if classes else {}
        if unknown:
            self.report(f"labels of a class that is not the model's ({', '.join(classes)}): {where_text(unknown)}",
                        "Delete those labels (open the slide from the Project panel, select them, Edit > Delete "
                        "selected), or make their class one of the project's with Edit > New class… (the same "
                        "name); then start again.")
            return False
        return True

    def toggle_pause(self) -> None:
        trainer = self.worker.trainer if self.worker else None
        if trainer is None:
            return
        trainer.resume() if trainer.paused else trainer.pause()
        self.panel.set_running(True, paused=trainer.paused)
        self.panel.append_log("paused" if trainer.paused else "resumed")

    def stop(self) -> None:
        if self.running():
            self.worker.stop()
            self.panel.append_log("stopping after the current tile; a checkpoint is saved")

    def open_run(self, folder: Path) -> bool:
        try:
            rows = read_metrics(folder / "metrics.csv")
        except (OSError, KeyError, ValueError) as exc:
            self.report(f"{folder}: not a training run ({exc})", "Choose a folder with metrics.csv and model.keras.")
            return False
        self.panel.load_metrics(rows)
        if (folder / "model.keras").exists():
            self.session.set_model(folder / "model.keras")
        return True

    def refresh_regions(self) -> None:
        """The region choices follow the annotations' roles: Train regions train, Validation regions validate
        (the first of each unless another, or no validation, is chosen)."""
        annotations = self.session.annotations
        titles = annotations.region_titles()
        _fill(self.panel.train_region, annotations.regions(Role.REGION), titles, None)
        _fill(self.panel.val_region, annotations.regions(Role.VALIDATION), titles, "none", self._no_validation)
        self.show_plan()

    def _on_annotation(self, what: str, annotation: Annotation) -> None:
        """Region choices change with a region (added, moved, removed) or a listed one that became a label; a burst
        of imported labels leaves them alone."""
        listed = any(box.findData(annotation.id) >= 0 for box in (self.panel.train_region, self.panel.val_region))
        if annotation.role.is_area or listed:
            self.refresh_regions()

    def _choose(self, **change: object) -> None:
        if change.get("mpp") == 0:  # the box's "each slide's own pixels"
            change["mpp"] = None
        try:
            self.session.set_training(**change)
        except GigaPathError as exc:
            self._show_choice()  # the boxes show what the session holds
            self.report(str(exc), "Choose another value.")

    def _show_choice(self) -> None:
        choice = self.session.training
        for box, value in ((self.panel.tile, choice.tile), (self.panel.learning_rate, choice.learning_rate),
                           (self.panel.steps, choice.steps), (self.panel.memory_budget, choice.memory_budget),
                           (self.panel.mpp, choice.mpp or 0.0)):  # (0: each slide's own pixels)
            if box.value() == value:
                continue
            box.blockSignals(True)
            box.setValue(value)
            box.blockSignals(False)
        self.panel.scope.setCurrentIndex(self.panel.scope.findData("project" if choice.on_project else "slide"))
        self.panel.fold.setCurrentIndex(self.panel.fold.findData(choice.fold))
        self.panel.sparse.setChecked(choice.sparse)  # none emits the signals connected above (user actions only)
        self.show_plan()

    def _on_project(self) -> bool:
        return self.session.training.on_project

    def _on_slide(self, slide: object) -> None:
        if not self.running():  # a run of the previous slide keeps its plots until it ends
            self.panel.clear()
        self.refresh_regions()

    def _on_event(self, event: object) -> None:
        """A warning is shown a moment later, with those said just after it in one dialog, in the order said: one
        dialog each stacked the last on top, so the consequence was read before its cause."""
        if isinstance(event, WarningEvent):
            self._warnings.append(event.message)
            self.warning_timer.start()

    def _show_warnings(self) -> None:
        """The pending warnings, with what to do as it is when shown (a short run may have ended by then) and stays
        true once it ends."""
        self.warning_timer.stop()
        if not self._warnings:
            return
        what_next = ("The training uses the regions and labels as they were at Start: stop it (Stop) if it is still "
                     "running, change them, and start again." if self.running() else
                     "The training has ended: change the regions or labels, then start again.")
        self.report("\n\n".join(self._warnings), what_next)
        self._warnings = []

    def _on_finished(self, run_dir: Path) -> None:
        """The model is offered for the slides it was trained on (for every slide when trained on the project)."""
        model, slides = run_dir / "model.keras", {i.slide for i in self.worker.job.spec.train} if self.worker else set()
        project = self.session.project
        of_project = project is not None and run_dir.parent == project.folder / "runs"
        self.panel.append_log(f"model saved to {model}")
        if of_project:
            trainer = self.worker.trainer
            last = trainer.history[-1] if trainer and trainer.history else None
            stopped = trainer is not None and trainer.step < trainer.config.steps
            self._record(run_dir, **{"stopped" if stopped else "finished": now()},
                         status=f"stopped at step {trainer.step}" if stopped else "finished",
                         steps=trainer.step if trainer else None, val_dice=last and last.val_dice)
        if of_project or (self.session.slide is not None and self.session.slide.path in slides):
            self.session.set_model(model)
        else:  # another slide is open now: the model is not offered for it
            self.panel.append_log(f"(trained on {', '.join(sorted(p.name for p in slides))}; open that slide, then "
                                  f"File > Open run, to use it)")

    def _record(self, run_dir: Path, **facts: object) -> None:
        """Note the run in the open project; a project that cannot be written to is said, training goes on."""
        try:
            self.session.project.add_run(run_dir, **facts)
        except (OSError, GigaPathError) as exc:
            self.panel.append_log(f"the run was not recorded in the project: {exc}")

    def _on_failed(self, message: str) -> None:
        self._show_warnings()  # said before the failure, shown before it
        self.report(message, "Check the regions and labels, then start again.")

    def _on_stopped(self) -> None:
        self._show_warnings()  # (said as ended)
        self.panel.set_running(False)
        self.session.set_running(None)
        trainer = self.worker.trainer if self.worker else None
        if trainer is not None:
            self.panel.finish(trainer.step, trainer.config.steps)
        else:
            self.panel.eta.setText("not started")


def _fill(box: QComboBox, regions: list, titles: dict[str, str], none_label: str | None,
          keep_none: bool = False) -> None:
    """List `regions`, keeping the chosen one; else the first (or "none" when the user chose it)."""
    current = box.currentData()
    box.blockSignals(True)
    box.clear()
    if none_label:
        box.addItem(none_label, None)
    for r in regions:
        x0, y0, x1, y1 = (int(v) for v in r.bounds)
        box.addItem(f"{titles[r.id]}  ({x0}, {y0}, {x1 - x0} x {y1 - y0})", r.id)
    found = box.findData(current) if current is not None else -1
    first = 0 if keep_none or not none_label else min(box.count() - 1, 1)
    box.setCurrentIndex(found if found >= 0 else first)
    box.blockSignals(False)

