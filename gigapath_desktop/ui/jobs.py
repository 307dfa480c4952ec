"""Background tasks of the window (detect tissue, predict, export): one at a time, with a progress bar in the status
bar, results applied only to the slide they were computed on, errors as a dialog."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from PySide6.QtWidgets import QProgressBar, QPushButton, QStatusBar

from gigapath_desktop.project import Session
from gigapath_desktop.ui.workers import Worker, idle

Report = Callable[[str, str], None]  # (what went wrong, what to do next)


class JobRunner:
    def __init__(self, session: Session, status: QStatusBar, report: Report) -> None:
        self.session = session
        self.status = status
        self.report = report
        self.worker: Worker | None = None
        self.title = ""  # of the task running (or last run)
        self.progress = QProgressBar(maximumWidth=200, visible=False)
        self.stop_button = QPushButton("Stop", visible=False, toolTip="Stop this task (nothing of it is kept)")
        self.stop_button.clicked.connect(self.stop)
        status.addPermanentWidget(self.progress)
        status.addPermanentWidget(self.stop_button)

    def run(self, title: str, fn: Callable, on_success: Callable[[Any], None]) -> bool:
        """fn(progress, cancel) on a worker thread; on_success(result) back on the GUI thread."""
        if not idle(self.worker):
            self.report("another task is still running", "Wait for it to finish.")
            return False
        self.worker, self.title = Worker(fn), title
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self.stop_button.setVisible(True)
        self.stop_button.setEnabled(True)
        self.worker.progressed.connect(lambda d, t: (self.progress.setRange(0, t), self.progress.setValue(d)))
        self.worker.said.connect(lambda phase: self._phase(title, phase))
        self.worker.succeeded.connect(lambda result: self._done(f"{title}: done"))
        self.worker.succeeded.connect(on_success)
        self.worker.failed.connect(lambda m: self._failed(title, m))
        self.status.showMessage(f"{title}…")
        self.worker.start()
        return True

    def say(self, phase: str) -> None:
        """Name the phase the running task has entered (callable from its thread), e.g. "tracing contours"."""
        if self.worker is not None:
            self.worker.said.emit(phase)

    def _phase(self, title: str, phase: str) -> None:
        if self.running() and not self.worker.cancelled:
            self.status.showMessage(f"{title}: {phase}…")
            self.progress.setRange(0, 0)  # busy until the phase counts (its first progress sets the range)

    def stop(self) -> None:
        """Ask the running task to stop (it does at its next check, within seconds); said at once."""
        if self.running():
            self.worker.cancel()
            self.stop_button.setEnabled(False)
            self.status.showMessage(f"{self.title}: stopping…")

    def _failed(self, title: str, message: str) -> None:
        stopped = self.worker is not None and self.worker.cancelled
        self._done(f"{title}: {'stopped' if stopped else 'failed'}")
        if not stopped:  # (a stop the user asked for needs no dialog)
            self.report(f"{title}: {message}", "Nothing was changed.")

    def _done(self, message: str) -> None:
        self.progress.setVisible(False)
        self.stop_button.setVisible(False)
        self.status.showMessage(message, 5000)

    def for_slide(self, path: Path, then: Callable[[Any], None]) -> Callable[[Any], None]:
        """A job's result applies to the slide it was computed on: dropped (and said) if another slide is open."""
        def apply(result: Any) -> None:
            if self.session.slide is not None and self.session.slide.path == path:
                then(result)
            else:
                self.status.showMessage(f"a result for {path.name} was dropped: another slide is open", 10000)
        return apply

    def running(self) -> bool:
        return not idle(self.worker)

    def cancel_and_wait(self) -> None:
        if self.worker is not None and self.worker.isRunning():
            self.worker.cancel()
            self.worker.wait()
