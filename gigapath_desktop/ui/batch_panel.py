"""The Batch dock: the current model over every slide of the open project, in the background, with progress and a
results table (per slide: status, seconds, Dice where it has labels, each class's area). Double-click a row to open
that slide with its prediction overlaid. The work is `inference.batch.run_batch`, as `predict-batch` runs it."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from gigapath_desktop.project import Session
from gigapath_desktop.ui.jobs import Report
from gigapath_desktop.ui.workers import Worker, load_engine

if TYPE_CHECKING:  # (the engine, and TensorFlow with it, loads on the first batch, not with the window)
    from gigapath_desktop.inference.batch import BatchRow

COLUMNS = ["slide", "status", "seconds", "Dice", "area unit"]
SHARE = 100  # of the progress bar per slide: its tiles fill TILES_SHARE of it, its written outputs (contours of a
TILES_SHARE = 80  # large mask can take longer than its tiles) the rest, so a slide predicted is not shown as done


class BatchWorker(Worker):
    row = Signal(object)  # a BatchRow, as each slide ends


class BatchPanel(QWidget):
    row_activated = Signal(object)  # the BatchRow of a double-clicked result

    def __init__(self) -> None:
        super().__init__()
        self.run_button = QPushButton("Predict all project slides", toolTip="The current model over every slide "
                                      "of the project; masks go to the project's predictions folder")
        self.stop_button = QPushButton("Stop", enabled=False)
        self.geojson, self.png = QCheckBox("GeoJSON contours"), QCheckBox("PNG previews")
        self.overwrite = QCheckBox("Predict again where masks exist")
        self.progress = QProgressBar(maximum=1, value=0)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.cellDoubleClicked.connect(lambda row, _: self.row_activated.emit(self.rows[row]))
        self.rows: list[BatchRow] = []
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        for widget in (self.geojson, self.png, self.overwrite, self.progress, self.status, self.table):
            layout.addWidget(widget)

    def begin(self, slides: int) -> None:
        self.rows.clear()
        self.table.setRowCount(0)
        self.progress.setRange(0, SHARE * max(1, slides))
        self.progress.setValue(0)
        self.set_running(True)

    def set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.stop_button.setEnabled(running)

    def show_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(max(done, self.progress.value()))

    def add_row(self, row: BatchRow) -> None:
        """A slide's result: its status and figures, a column per class as classes appear."""
        self.rows.append(row)
        self.progress.setValue(SHARE * len(self.rows))
        for name in row.areas:
            if f"area: {name}" not in self._headers():
                self.table.insertColumn(self.table.columnCount())
                self.table.setHorizontalHeaderItem(self.table.columnCount() - 1, QTableWidgetItem(f"area: {name}"))
        cells = {"slide": row.slide.name, "status": row.status if not row.message else f"{row.status}: {row.message}",
                 "seconds": f"{row.seconds:.1f}" if row.seconds else "", "Dice": "" if row.dice is None else
                 f"{row.dice:.3f}", "area unit": row.unit, **{f"area: {k}": f"{v:.4g}" for k, v in row.areas.items()}}
        index = self.table.rowCount()
        self.table.insertRow(index)
        for column, header in enumerate(self._headers()):
            item = QTableWidgetItem(cells.get(header, ""))
            item.setToolTip(str(row.slide) if header == "slide" else cells.get(header, ""))
            self.table.setItem(index, column, item)

    def _headers(self) -> list[str]:
        return [self.table.horizontalHeaderItem(c).text() for c in range(self.table.columnCount())]


class BatchController:
    """Starts and stops the batch of the open project with the session's model, feeding the panel."""

    def __init__(self, session: Session, panel: BatchPanel, report: Report) -> None:
        self.session, self.panel, self.report = session, panel, report
        self.worker: BatchWorker | None = None
        panel.run_button.clicked.connect(lambda: self.start())
        panel.stop_button.clicked.connect(self.stop)

    def running(self) -> bool:
        return self.worker is not None and self.worker.isRunning()

    def start(self, out: Path | None = None) -> bool:
        """Predict every project slide into `out` (default: PROJECT/predictions/<the model's run folder name>)."""
        project, model = self.session.project, self.session.model_path
        if self.running():
            return False
        if project is None or not project.slides:
            self.report("no project, or no slides in it", "Open a project (File > Open project…) and add slides.")
            return False
        if model is None:
            self.report("no model", "Train a model or open a run (File > Open run…) first.")
            return False
        self.session.autosave.flush()  # the open slide's latest labels count in its Dice
        out = out or project.folder / "predictions" / model.parent.name
        slides = tuple(s.path for s in project.slides)
        labels = {s.path: project.annotations_path(s.id) for s in project.slides}
        identities = {s.path: s.id for s in project.slides}
        resolutions = project.resolutions()
        options = {"geojson": self.panel.geojson.isChecked(), "png": self.panel.png.isChecked(),
                   "overwrite": self.panel.overwrite.isChecked()}

        def work(progress: Callable[[int, int], None], cancel: Callable[[], bool]) -> list[BatchRow]:
            load_engine()  # TensorFlow loads here, off the GUI thread
            from gigapath_desktop.inference.batch import BatchJob, run_batch

            def each(index: int, count: int, done: int, total: int) -> None:
                progress(index * SHARE + TILES_SHARE * done // max(total, 1), count * SHARE)

            return run_batch(BatchJob(model, out, slides, labels=labels, identities=identities,
                                      resolutions=resolutions, **options),
                             self.worker.row.emit, each, cancel)

        self.worker = BatchWorker(work)
        self.worker.row.connect(self.panel.add_row)
        self.worker.progressed.connect(self.panel.show_progress)
        self.worker.succeeded.connect(lambda rows: self.panel.status.setText(_summary(rows, out)))
        self.worker.failed.connect(lambda message: self._failed(message, out))
        self.worker.finished.connect(lambda: self.panel.set_running(False))
        self.panel.begin(len(slides))
        self.panel.status.setText(f"predicting {len(slides)} slides into {out}")
        self.worker.start()
        return True

    def stop(self) -> None:
        """Stop at the slide's next check (a tile, a contour); said at once, as the last outputs may take a while."""
        if self.running():
            self.worker.cancel()
            self.panel.stop_button.setEnabled(False)
            self.panel.status.setText("stopping: the slide being predicted is left out…")

    def cancel_and_wait(self) -> None:
        """Stop after the current tile (that slide's outputs are not written) and wait: the window is closing."""
        if self.running():
            self.worker.cancel()
            self.worker.wait()

    def _failed(self, message: str, out: Path) -> None:
        self.panel.status.setText(f"{message}; the slides done are in {out}")
        if message != "stopped":
            self.report(f"batch prediction: {message}", "Check the model and the output folder, then run again.")


def _summary(rows: list[BatchRow], out: Path) -> str:
    counts = {status: sum(r.status == status for r in rows) for status in ("ok", "skipped", "error")}
    return (f"{counts['ok']} predicted, {counts['skipped']} skipped, {counts['error']} failed; "
            f"masks and summary.csv in {out}")
