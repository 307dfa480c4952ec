"""The Remote dock: train on a job server with the same regions, labels and settings, and watch the same plots.

The server's slide is picked from its list (the open slide itself when the server holds a file of the same
identity, so the regions' coordinates mean the same pixels); steps stream in as Server-Sent Events and feed the
training panel's plots; the finished model is downloaded into the session. Network calls run off the GUI thread.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
from PySide6.QtCore import QThread, Qt, Signal
from PySide6.QtWidgets import QComboBox, QFormLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget

from gigapath_desktop.annotations import to_geojson
from gigapath_desktop.errors import GigaPathError
from gigapath_desktop.project import Session
from gigapath_desktop.project.credentials import load_token, save_token
from gigapath_desktop.project.settings import Settings, data_dir
from gigapath_desktop.remote.client import Client, tile_entry
from gigapath_desktop.slides import Region, open_slide
from gigapath_desktop.training.events import StepEvent
from gigapath_desktop.ui.jobs import Report
from gigapath_desktop.ui.training_panel import TrainingPanel
from gigapath_desktop.ui.workers import Worker, idle

IDENTITY = Qt.ItemDataRole.UserRole + 1  # a server slide's identity, beside its path (UserRole)


class Follower(QThread):
    """Reads a job's event stream; each step and the end come back as signals on the GUI thread."""

    step = Signal(dict)
    ended = Signal(dict)
    failed = Signal(str)

    def __init__(self, client: Client, job_id: str) -> None:
        super().__init__()
        self.client, self.job_id = client, job_id
        self._stop = False

    def stop(self) -> None:
        """Stop following (the job goes on); takes effect within the server's keep-alive interval."""
        self._stop = True

    def run(self) -> None:
        try:
            for event, data in self.client.events(self.job_id, stop=lambda: self._stop):
                (self.step if event == "step" else self.ended).emit(data)
        except GigaPathError as exc:
            self.failed.emit(str(exc))


class RemotePanel(QWidget):
    def __init__(self, session: Session, settings: Settings, training: TrainingPanel, report: Report,
                 train_region: Callable[[], str | None], val_region: Callable[[], str | None],
                 show_mask: Callable[[float, float, float, np.ndarray], None]) -> None:
        super().__init__()
        self.show_mask = show_mask  # (x, y, downsample, probability) -> the overlay
        self.session, self.settings, self.training, self.report = session, settings, training, report
        self.train_region, self.val_region = train_region, val_region
        self.client: Client | None = None
        self.job_id: str | None = None
        self.model_job: str | None = None  # the last finished training job: its model predicts on the server
        self.worker: Worker | None = None
        self.busy_with = ""  # what the worker does, while it is busy
        self.follower: Follower | None = None
        self.url = QLineEdit(settings.remote_url, placeholderText="https://server:8765")
        saved = load_token(settings.remote_url) if settings.remote_url else None
        self.token = QLineEdit(saved or "", echoMode=QLineEdit.EchoMode.Password, placeholderText="bearer token")
        self.slides = QComboBox(toolTip="The server's slide to train on")
        self.connect_button = QPushButton("Connect")
        self.train_button = QPushButton("Train on server", enabled=False)
        self.stop_button = QPushButton("Stop", enabled=False)
        self.predict_button = QPushButton("Predict on server", enabled=False,
                                          toolTip="The selected region (else the Train region) with the server's model")
        self.status = QLabel("not connected")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Server", self.url)
        form.addRow("Token", self.token)
        form.addRow("Slide", self.slides)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        for widget in (self.connect_button, self.train_button, self.stop_button, self.predict_button, self.status):
            layout.addWidget(widget)
        layout.addStretch()
        self.connect_button.clicked.connect(self.connect_server)
        self.train_button.clicked.connect(self.train)
        self.stop_button.clicked.connect(self.stop)
        self.predict_button.clicked.connect(self.predict)
        session.events.slide.connect(lambda slide: self._pick_slide())

    def close_down(self) -> None:
        """Before the window closes: stop following (the server's job goes on) and let network calls end."""
        if self.follower is not None:
            self.follower.stop()
            self.follower.wait()
        if self.worker is not None:
            self.worker.wait()

    # --- actions ----------------------------------------------------------------------------------------------------
    def connect_server(self) -> None:
        url, token = self.url.text().strip(), self.token.text().strip()
        if not url or not token:
            self.report("the server URL and token are both needed", "Ask the server's administrator for them.")
            return
        client = Client(url, token)
        self._in_background("connecting", lambda: (client.health(), client.slides())[1],
                            lambda slides: self._connected(client, url, token, slides))

    def train(self) -> None:
        session, client = self.session, self.client
        area = session.region(session.annotations.find(self.train_region()))
        if client is None or session.slide is None or area is None or self.slides.currentData() is None:
            self.report("connect, open a slide and draw a Train region first",
                        "The server trains on its copy of the slide, with your regions and labels.")
            return
        validation = session.region(session.annotations.find(self.val_region()))
        labels = session.annotations.labels()
        choice = session.training
        request = {"slide": self.slides.currentData(), "region": list(area.as_tuple()),
                   "val_region": list(validation.as_tuple()) if validation else None,
                   "labels": to_geojson(labels) if labels else None, "steps": choice.steps,
                   "learning_rate": choice.learning_rate, "fold": choice.fold, **tile_entry(choice.config_tile)}
        self._in_background("submitting", lambda: client.submit_train(**request), self._follow)

    def stop(self) -> None:
        if self.client is not None and self.job_id is not None:
            client, job_id = self.client, self.job_id
            self._in_background("stopping", lambda: client.cancel(job_id), lambda job: None)

    def predict(self) -> None:
        """Predict a region on the server with the last trained model; the mask comes back as the overlay."""
        session, client, model_job = self.session, self.client, self.model_job
        area = session.selected_region(self.train_region())
        if client is None or model_job is None or area is None or self.slides.currentData() is None:
            self.report("train on the server first, and select a region", "The server predicts with its model.")
            return
        slide, server_slide, target = session.slide, self.slides.currentData(), data_dir() / "remote"

        def work() -> tuple[float, float, float, np.ndarray]:
            job = client.submit_predict(slide=server_slide, model_job=model_job, region=list(area.as_tuple()))
            (target / job["id"]).mkdir(parents=True, exist_ok=True)
            end = next((data for event, data in client.events(job["id"]) if event == "end"), {})
            if end.get("state") != "finished":
                raise GigaPathError(f"server job {job['id']} {end.get('state')}: {end.get('message')}")
            return read_mask(client.download(job["id"], "mask.tif", target / job["id"] / "mask.tif"), area)

        def show(result: tuple[float, float, float, np.ndarray]) -> None:
            self.status.setText("the server's mask is shown")
            if self.session.slide is slide:
                self.show_mask(*result)

        self._in_background("predicting on the server", work, show)

    # --- results ------------------------------------------------------------------------------------------------------
    def _connected(self, client: Client, url: str, token: str, slides: list[dict[str, Any]]) -> None:
        self.client = client
        self.settings.remote_url = url
        try:
            where = save_token(url, token)
        except GigaPathError as exc:
            where = f"nowhere ({exc})"
        self.slides.clear()
        for entry in slides:
            if "error" not in entry:
                self.slides.addItem(entry["path"], entry["path"])
                self.slides.setItemData(self.slides.count() - 1, entry.get("identity"), IDENTITY)
        self._pick_slide()
        self.train_button.setEnabled(True)
        self.status.setText(f"connected to {url}: {self.slides.count()} slide(s); token kept in {where}")

    def _pick_slide(self) -> None:
        """The server's file of the open slide, when it has one (same identity: the same pixels)."""
        if self.session.slide is None:
            return
        found = self.slides.findData(self.session.slide.fingerprint, IDENTITY)
        if found >= 0:
            self.slides.setCurrentIndex(found)

    def _follow(self, job: dict[str, Any]) -> None:
        assert self.client is not None
        self.job_id = job["id"]
        self.training.begin(job["params"]["training"]["steps"])
        self.follower = Follower(self.client, job["id"])
        self.follower.step.connect(self._on_step)
        self.follower.ended.connect(self._on_end)
        self.follower.failed.connect(lambda m: self.report(f"lost the job's progress: {m}", "Connect again."))
        self.follower.finished.connect(lambda: self._set_busy(False))
        self._set_busy(True)
        self.follower.start()
        self.status.setText(f"job {job['id']} queued on the server")

    def _on_step(self, row: dict[str, Any]) -> None:
        total = self.training.total_steps
        self.training.on_event(StepEvent(
            step=row["step"], total_steps=total, loss=row["loss"], dice=row["dice"], val_dice=row.get("val_dice"),
            seconds=row["seconds"], mpix_per_s=row["mpix_per_s"], rss_bytes=row["rss_bytes"] or 0,
            device_memory_bytes=None, device="server", learning_rate=row.get("learning_rate") or 0.0,
            recoveries=row.get("recoveries") or 0))
        self.status.setText(f"job {self.job_id}: step {row['step']}/{total} on the server")

    def _on_end(self, job: dict[str, Any]) -> None:
        self.status.setText(f"job {job.get('id')}: {job.get('state')} {job.get('message', '')}".strip())
        if job.get("state") != "finished" or self.client is None:
            return
        client, job_id, slide = self.client, job["id"], self.session.slide
        target = data_dir() / "remote" / job_id / "model.keras"
        target.parent.mkdir(parents=True, exist_ok=True)

        def use(path: Path) -> None:
            self.model_job = job_id
            self.predict_button.setEnabled(True)
            self.status.setText(f"job {job_id} finished; its model is in {path}")
            if self.session.slide is slide:  # (not offered for another slide opened meanwhile)
                self.session.set_model(path)

        self._in_background("downloading the model", lambda: client.download(job_id, "model.keras", target), use)

    # --- plumbing -----------------------------------------------------------------------------------------------------
    def _in_background(self, what: str, fn: Callable[[], Any], then: Callable[[Any], None]) -> None:
        if not idle(self.worker):
            self.report(f"still {self.busy_with}", "Wait for it to finish, then try again.")
            return
        self.busy_with = what
        self.status.setText(f"{what}…")
        self.worker = Worker(lambda progress, cancel: fn())
        self.worker.succeeded.connect(then)
        self.worker.failed.connect(lambda m: (self.status.setText(f"{what} failed"),
                                              self.report(m, "Check the server URL, the token and the network.")))
        self.worker.start()

    def _set_busy(self, busy: bool) -> None:
        self.train_button.setEnabled(not busy and self.client is not None)
        self.stop_button.setEnabled(busy)


def read_mask(path: Path, area: Region, longest: int = 4096) -> tuple[float, float, float, np.ndarray]:
    """The downloaded mask TIFF's values over `area` as an overlay: (x, y, downsample, probability 0-1)."""
    with open_slide(path) as mask:
        level = mask.best_level_for_downsample(max(area.width, area.height) / longest)
        ds = mask.level_downsamples[level]
        values = mask.read_region(Region(area.x, area.y, area.width, area.height, level))[..., 0]
    return float(area.x), float(area.y), float(ds), values.astype(np.float32) / 255.0
