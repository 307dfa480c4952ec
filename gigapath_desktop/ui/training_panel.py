"""The training panel: settings, Start / Pause / Stop, progress with ETA, live pyqtgraph plots and a log pane.

Curves are created once and fed with `setData` from the GUI thread only; memory is sampled on a timer. Each plot
names its curves in its title, in their colours (legends inside a plot overlap the curves it is there to show); the
memory plot shows the process and the device, with what the system has left in its title, so a 20 GiB line never
flattens a 1 GiB curve.
"""
from __future__ import annotations

import time

import psutil
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QPainter, QPaintEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from gigapath_desktop.project.settings import AUTO, TILES
from gigapath_desktop.project.training_data import TrainingData, describe
from gigapath_desktop.training.config import MIN_BUDGET, TrainConfig
from gigapath_desktop.training.events import Event, LogEvent, StepEvent, TileEvent, WarningEvent

GIB = 2**30
FOLD_NAMES = {4: "4 x 4 px (faster)", 2: "2 x 2 px (finer)"}  # training.config.FOLDS


class TrainingPanel(QWidget):
    start_clicked = Signal()
    pause_clicked = Signal()
    stop_clicked = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.scope = QComboBox(toolTip="Train on this slide's regions, or on the Train regions of every slide of "
                                       "the open project (validated on their Validation regions)")
        self.scope.addItem("this slide", "slide")
        self.scope.addItem("all project slides", "project")
        self.sparse = QCheckBox("Sparse labels", toolTip="Pixels no label covers are ignored (a few strokes per "
                                                         "class are enough), instead of being the first class")
        self.train_region = QComboBox()
        self.val_region = QComboBox()
        self.train_data, self.val_data = OneLine(), OneLine()  # in their place: a project's or a running training's
        self._rows = (_row(self.train_region, self.train_data), _row(self.val_region, self.val_data))
        self.tile = QSpinBox(minimum=AUTO, maximum=TILES[1], singleStep=64, value=AUTO, suffix=" px",
                             specialValueText="auto", toolTip="auto: the fastest exact plan within the memory budget")
        self.memory_budget = QDoubleSpinBox(decimals=1, minimum=MIN_BUDGET, maximum=4096, singleStep=0.5, suffix=" GiB",
                                            value=TrainConfig.memory_budget,
                                            toolTip="Process memory an auto plan may use")
        self.mpp = QDoubleSpinBox(decimals=3, minimum=0, maximum=64, singleStep=0.25, suffix=" µm/px",
                                  specialValueText="each slide's own pixels",
                                  toolTip="Train at this resolution on every slide, whatever its scanner (read from "
                                          "the best pyramid level and resampled); the model predicts at it too. "
                                          "A slide that records no µm/px is read at its own pixels, with a warning.")
        self.fold = QComboBox(toolTip="How many pixels a side the model's first layer folds into one cell: 2 x 2 "
                                      "sees finer detail (thin strands, small islands) at about twice the time per "
                                      "step (a new run only)")
        for fold, text in sorted(FOLD_NAMES.items(), reverse=True):
            self.fold.addItem(text, fold)
        self.plan = QLabel(wordWrap=True)
        self.learning_rate = QDoubleSpinBox(decimals=4, minimum=0.0001, maximum=0.9999, singleStep=0.005,
                                            value=TrainConfig.learning_rate)
        self.steps = QSpinBox(minimum=1, maximum=100000, value=TrainConfig.steps)
        self.device = QComboBox()
        form = QFormLayout()
        for label, widget in (("Train on", self.scope), ("Labels", self.sparse),
                              ("Training region", self._rows[0]), ("Validation region", self._rows[1]),
                              ("Resolution", self.mpp), ("Detail", self.fold), ("Tile size", self.tile),
                              ("Memory budget", self.memory_budget), ("Plan", self.plan),
                              ("Learning rate", self.learning_rate), ("Steps", self.steps),
                              ("Device", self.device)):
            form.addRow(label, widget)
        self.start = QPushButton("Start")
        self.pause = QPushButton("Pause")
        self.stop = QPushButton("Stop")
        self.start.clicked.connect(self.start_clicked)
        self.pause.clicked.connect(self.pause_clicked)
        self.stop.clicked.connect(self.stop_clicked)
        buttons = QHBoxLayout()
        for button in (self.start, self.pause, self.stop):
            buttons.addWidget(button)
        self.progress = QProgressBar()
        self.eta = QLabel("idle")
        self.log = QPlainTextEdit(readOnly=True)
        self.log.setMaximumBlockCount(5000)
        self.log.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.plots = pg.GraphicsLayoutWidget()
        self.plots.setMinimumHeight(460)  # (at 420 the last plot's axis title was cut off)
        self._build_plots()
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.eta)
        layout.addWidget(self.plots, stretch=3)
        layout.addWidget(self.log, stretch=1)
        self.memory_timer = QTimer(self, interval=1000, timeout=self.sample_memory)
        self.reset()
        self.set_running(False)
        self.show_data(None)

    def _build_plots(self) -> None:
        def plot(row: int, x_label: str, y_label: str) -> pg.PlotItem:
            item = self.plots.addPlot(row=row, col=0)
            item.showGrid(x=True, y=True, alpha=0.3)
            item.setDownsampling(mode="peak")
            item.setClipToView(True)
            item.setLabel("bottom", x_label)
            item.setLabel("left", y_label)
            item.setMouseEnabled(x=False, y=False)  # a wheel meant to scroll the panel zoomed the curves away
            item.hideButtons()
            for side in ("bottom", "left"):  # 0.9 GiB reads as 0.9, not as 900 with a "(x0.001)" in the label
                item.getAxis(side).enableAutoSIPrefix(False)
            return item

        self.quality, self.memory, self.speed = plot(0, "step", ""), plot(1, "seconds", "GiB"), plot(2, "step", "MP/s")
        self.curves = {}
        for item, name, label, color, symbol in (
                (self.quality, "loss", "loss", "#e06c75", None), (self.quality, "dice", "Dice", "#61afef", None),
                (self.quality, "val_dice", "val Dice", "#98c379", "o"), (self.memory, "rss", "process", "#c678dd", None),
                (self.memory, "device", "device", "#e5c07b", None), (self.speed, "mpix", "throughput", "#d19a66", "o")):
            self.curves[name] = item.plot(pen=pg.mkPen(color, width=2), symbol=symbol, symbolSize=4,
                                          symbolBrush=color, name=label)
        self._titles()

    def _titles(self, available_gib: float | None = None) -> None:
        def names(*keys: str) -> str:
            return " · ".join(f"<span style='color:{self.curves[k].opts['pen'].color().name()}'>{self.curves[k].name()}</span>"
                              for k in keys)

        self.quality.setTitle(names("loss", "dice", "val_dice"), size="9pt")
        free = "" if available_gib is None else f" · {available_gib:.0f} GiB free"
        self.memory.setTitle(f"{names('rss', 'device')}{free}", size="9pt")
        self.speed.setTitle(names("mpix"), size="9pt")

    # --- state ------------------------------------------------------------------------------------------------------
    def reset(self) -> None:
        self.data: dict[str, list[float]] = {k: [] for k in ("step", "loss", "dice", "val_step", "val_dice", "mpix",
                                                             "t", "rss", "device_t", "device")}
        self._t0 = time.monotonic()
        self._paused_since: float | None = None  # the ETA leaves paused time out
        self._paused_for = 0.0
        self._done_steps = 0.0
        self._device_memory: int | None = None
        self._step_started = time.monotonic()
        self._total_steps = self.steps.value()
        self._first_step = 0
        self.progress.setValue(0)
        self.eta.setText("idle")
        self._redraw()
        for item in (self.quality, self.memory, self.speed):  # empty plots forget the last run's (or zoom's) ranges
            item.enableAutoRange()

    @property
    def total_steps(self) -> int:
        return self._total_steps

    def clear(self) -> None:
        """Forget the plots and the log (another slide was opened)."""
        self.reset()
        self.log.clear()

    def finish(self, step: int, total: int) -> None:
        """Say where the run ended (no ETA once nothing runs)."""
        self.eta.setText(f"finished: {step} steps" if step >= total else f"stopped at step {step}/{total}")

    def set_running(self, running: bool, paused: bool = False) -> None:
        self.start.setEnabled(not running)
        self.pause.setEnabled(running)
        self.stop.setEnabled(running)
        self.pause.setText("Resume" if paused else "Pause")
        if paused and self._paused_since is None:
            self._paused_since = time.monotonic()
        elif not paused and self._paused_since is not None:
            self._paused_for += time.monotonic() - self._paused_since
            self._paused_since = None
        if running:
            self._set_progress(self._done_steps)
        for widget in (self.scope, self.sparse, self.train_region, self.val_region, self.mpp, self.fold, self.tile,
                       self.memory_budget, self.learning_rate, self.steps, self.device):
            widget.setEnabled(not running)
        if running:
            self.memory_timer.start()
        else:
            self.memory_timer.stop()

    def begin(self, total_steps: int, first_step: int = 0) -> None:
        self.reset()
        self._total_steps = total_steps
        self._first_step = first_step
        self.progress.setRange(0, 1000)
        self.sample_memory()

    def show_data(self, data: TrainingData | None) -> None:
        """Say what a training reads (a project's regions, or a running training's) in place of the open slide's
        region choices; None: the choices."""
        texts = (None, None) if data is None else (describe(data.train), describe(data.validation))
        for row, box, label, text in zip(self._rows, (self.train_region, self.val_region),
                                         (self.train_data, self.val_data), texts):
            row.setCurrentWidget(box if text is None else label)
            label.setText(text or "")
            label.setToolTip(text or "")

    # --- engine events ------------------------------------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        if isinstance(event, StepEvent):
            self._on_step(event)
        elif isinstance(event, TileEvent):
            done_steps = event.step - 1 - self._first_step + event.done / event.total
            self._set_progress(done_steps)
        elif isinstance(event, LogEvent):
            self.append_log(event.message)
        elif isinstance(event, WarningEvent):
            self.append_log(f"warning: {event.message}")

    def _on_step(self, e: StepEvent) -> None:
        self.data["step"].append(e.step)
        self.data["loss"].append(e.loss)
        self.data["dice"].append(e.dice)
        self.data["mpix"].append(e.mpix_per_s)
        if e.val_dice is not None:
            self.data["val_step"].append(e.step)
            self.data["val_dice"].append(e.val_dice)
        self._device_memory = e.device_memory_bytes
        self._set_progress(e.step - self._first_step)
        val = "" if e.val_dice is None else f", val Dice {e.val_dice:.4f}"
        self.append_log(f"step {e.step}/{e.total_steps}: loss {e.loss:.4f}, Dice {e.dice:.4f}{val}, "
                        f"{e.seconds:.1f} s, {e.mpix_per_s:.1f} MP/s, RSS {e.rss_bytes / GIB:.2f} GiB on {e.device}")
        self._redraw()

    def _set_progress(self, done_steps: float) -> None:
        self._done_steps = done_steps
        todo = max(1, self._total_steps - self._first_step)
        self.progress.setValue(int(1000 * min(1.0, done_steps / todo)))
        if self._paused_since is not None:
            self.eta.setText(f"paused at step {self._first_step + int(done_steps)}/{self._total_steps}")
        elif done_steps > 0:
            elapsed = time.monotonic() - self._t0 - self._paused_for
            remaining = elapsed / done_steps * (todo - done_steps)
            self.eta.setText(f"step {self._first_step + int(done_steps)}/{self._total_steps}, "
                             f"ETA {int(remaining // 60)} min {int(remaining % 60)} s")

    def sample_memory(self) -> None:
        t = time.monotonic() - self._t0
        self.data["t"].append(t)
        self.data["rss"].append(psutil.Process().memory_info().rss / GIB)
        self._titles(psutil.virtual_memory().available / GIB)
        if self._device_memory is not None:
            self.data["device_t"].append(t)
            self.data["device"].append(self._device_memory / GIB)
        self._redraw()

    def load_metrics(self, rows: list[dict[str, str]]) -> None:
        """Re-plot a previous run's metrics.csv (memory against the run's elapsed seconds)."""
        self.reset()
        elapsed = 0.0
        for row in rows:
            step = int(row["step"])
            elapsed += float(row.get("seconds") or 0)
            if row.get("rss_bytes"):
                self.data["t"].append(elapsed)
                self.data["rss"].append(float(row["rss_bytes"]) / GIB)
            self.data["step"].append(step)
            self.data["loss"].append(float(row["loss"]))
            self.data["dice"].append(float(row["dice"]))
            self.data["mpix"].append(float(row["mpix_per_s"]))
            if row.get("val_dice"):
                self.data["val_step"].append(step)
                self.data["val_dice"].append(float(row["val_dice"]))
        self._redraw()

    def append_log(self, message: str) -> None:
        self.log.appendPlainText(f"{time.strftime('%H:%M:%S')}  {message}")

    def point_counts(self) -> dict[str, int]:
        """How many points each curve holds (what the tests look at)."""
        return {name: len(curve.getData()[0] if curve.getData()[0] is not None else []) for name, curve in self.curves.items()}

    def _redraw(self) -> None:
        d = self.data
        self.curves["loss"].setData(d["step"], d["loss"])
        self.curves["dice"].setData(d["step"], d["dice"])
        self.curves["val_dice"].setData(d["val_step"], d["val_dice"])
        self.curves["mpix"].setData(d["step"], d["mpix"])
        self.curves["rss"].setData(d["t"], d["rss"])
        self.curves["device"].setData(d["device_t"], d["device"])


class OneLine(QLabel):
    """A one-line label as wide as its place, not its text: a long slide name ends in "…" rather than widening the
    panel (the full text goes in a tooltip)."""

    def __init__(self) -> None:
        super().__init__()
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

    def paintEvent(self, event: QPaintEvent) -> None:
        rect = self.contentsRect()
        painter = QPainter(self)
        painter.drawText(rect, self.alignment(),
                         self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideRight, rect.width()))
        painter.end()


def _row(*widgets: QWidget) -> QStackedWidget:
    """Widgets in one form row, one shown at a time; the row keeps the tallest one's height whichever shows, so a
    swap moves nothing below it (a click meant for Pause landed on the progress bar)."""
    row = QStackedWidget()
    for widget in widgets:
        row.addWidget(widget)
    return row
