"""Engine work in background threads: the engine's plain callbacks become Qt signals here, at the UI edge."""
from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import QThread, Signal

from gigapath_desktop.errors import Cancelled, GigaPathError
from gigapath_desktop.training.events import Event

if TYPE_CHECKING:
    from gigapath_desktop.training.job import TrainJob
    from gigapath_desktop.training.trainer import Trainer

_ENGINE = threading.Lock()


def load_engine() -> None:
    """Import TensorFlow and the engine, one thread at a time (at once the first time, then instantly). The window
    loads the engine on a thread at start-up while a prediction, export or training may start on another; two first
    imports of the engine's packages at once met Python's import deadlock detection, which handed each thread a
    half-initialised module ("cannot import name 'load_model' from partially initialized module")."""
    with _ENGINE:
        for name in ("gigapath_desktop.inference.batch", "gigapath_desktop.training.job"):
            importlib.import_module(name)


class Worker(QThread):
    """Runs `fn(progress, cancel)` off the GUI thread; reports progress, the result or a user-facing error.

    It is `busy()` until its result or error has reached the GUI thread, not until its thread has wound down: a
    click on a button that the result enabled must not find the work "still running" (it did: the click was lost)."""

    progressed = Signal(int, int)
    said = Signal(str)  # the phase a task has entered (from its thread; shown on the GUI thread)
    succeeded = Signal(object)
    failed = Signal(str)

    def __init__(self, fn: Callable[[Callable[[int, int], None], Callable[[], bool]], Any]) -> None:
        super().__init__()
        self._fn = fn
        self._cancelled = False
        self._delivered = False
        self.succeeded.connect(self._deliver)  # connected first: marked before any caller's slot sees the outcome
        self.failed.connect(self._deliver)

    def cancel(self) -> None:
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def busy(self) -> bool:
        """Started and its outcome not yet on the GUI thread. Once delivered, only the thread's end is left:
        `wait()` for it (a moment) before replacing the worker, as a running QThread must not be destroyed."""
        return self.isRunning() and not self._delivered

    def _deliver(self, _outcome: object) -> None:
        self._delivered = True

    def run(self) -> None:
        try:
            result = self._fn(self.progressed.emit, lambda: self._cancelled)
        except Cancelled:
            self.failed.emit("stopped")
        except GigaPathError as exc:
            self.failed.emit(str(exc))
        except Exception as exc:  # the app must not die on an unexpected engine error
            self.failed.emit(f"unexpected error: {type(exc).__name__}: {exc}")
        else:
            self.succeeded.emit(result)


def idle(worker: Worker | None) -> bool:
    """Whether a new worker may take this one's place; a worker that has delivered is waited for (a moment)."""
    if worker is None:
        return True
    if worker.busy():
        return False
    worker.wait()
    return True


class TrainingWorker(QThread):
    """Prepares and runs a TrainJob; every engine event is re-emitted as `event(object)` on the GUI thread."""

    event = Signal(object)
    started_training = Signal(object)  # the Trainer, for pause / resume / stop
    finished_training = Signal(object)  # the run folder
    failed = Signal(str)

    def __init__(self, job: "TrainJob") -> None:
        super().__init__()
        self.job = job
        self.trainer: Trainer | None = None
        self._stop_requested = False

    def stop(self) -> None:
        self._stop_requested = True
        if self.trainer is not None:
            self.trainer.stop()

    def run(self) -> None:
        load_engine()  # TensorFlow loads here, off the GUI thread
        from gigapath_desktop.training.job import run_train_job

        try:
            run_train_job(self.job, [self._on_event], started=self._started, cancel=lambda: self._stop_requested)
        except Cancelled:
            self.failed.emit("stopped before training began")
        except GigaPathError as exc:
            self.failed.emit(str(exc))
        except Exception as exc:
            self.failed.emit(f"unexpected error: {type(exc).__name__}: {exc}")
        else:
            self.finished_training.emit(self.job.out)

    def _started(self, trainer: Trainer) -> None:
        self.trainer = trainer
        if self._stop_requested:
            trainer.stop()
        self.started_training.emit(trainer)

    def _on_event(self, event: Event) -> None:
        self.event.emit(event)
