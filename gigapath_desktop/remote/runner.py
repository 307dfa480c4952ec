"""Runs the server's jobs one at a time, each as the same `gigapath-desktop train` / `predict` command a user runs,
in a process of its own: the web server's threads never share the GIL or the cores' scheduling with TensorFlow (it
keeps answering while a job trains), a crash in a job cannot take the server down, and cancel is the command's own
SIGTERM (training keeps a checkpoint of its last whole step). One folder per job under the data dir.
"""
from __future__ import annotations

import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from gigapath_desktop.annotations.tissue import MIN_AREA_UM2
from gigapath_desktop.cli import EXIT_WITH_PARENT
from gigapath_desktop.errors import EXIT_RESUMABLE

from gigapath_desktop.remote.store import Job, JobStore

log = logging.getLogger(__name__)
PREDICT_FILES = ("mask.tif", "contours.geojson")
INTERRUPTED = (130, 143)  # the command's exit codes after Ctrl-C / SIGTERM


class Runner:
    def __init__(self, store: JobStore, data_dir: Path, slides_root: Path, workers: int = 1,
                 ray_address: str | None = None, nice: int = 10) -> None:
        """`nice`: added to the server's niceness for its jobs; at 10 the server answers first and the job takes
        what is left."""
        self.store, self.data_dir, self.slides_root = store, data_dir, slides_root
        self.workers, self.ray_address = workers, ray_address
        self._nice_prefix = ["nice", "-n", str(nice)] if nice and shutil.which("nice") else []
        self._queue: queue.Queue[tuple[str, bool] | None] = queue.Queue()
        self._cancelled: set[str] = set()
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="jobs", daemon=True)
        self._thread.start()

    def folder(self, job_id: str) -> Path:
        return self.data_dir / "jobs" / job_id

    def run_dir(self, job: Job) -> Path:
        """Where a job's downloadable files are: the run folder of a training job, the job folder otherwise."""
        return self.folder(job.id) / "run" if job.kind == "train" else self.folder(job.id)

    def submit(self, job: Job) -> None:
        self._queue.put((job.id, False))

    def resume(self, job: Job) -> None:
        """Queue an interrupted job again; a training job continues from its last checkpoint."""
        self.store.set_state(job.id, "queued", "resuming")
        self._queue.put((job.id, True))

    def cancel(self, job_id: str) -> None:
        """A queued job is cancelled at once (said so, not when its turn comes); a running one is stopped."""
        with self._lock:
            self._cancelled.add(job_id)
            proc = self._procs.get(job_id)
            job = self.store.get(job_id)
            if job is not None and job.state == "queued":  # (under the lock `_run` starts a job under)
                self.store.set_state(job_id, "cancelled", "cancelled before it started")
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    def close(self) -> None:
        """Stop the running job (its run keeps a checkpoint; the next server start marks it interrupted)."""
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        self._queue.put(None)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            job_id, resume = item
            with self._lock:
                job = self.store.get(job_id)
                if job is None or job.state != "queued":  # (a cancelled one among them)
                    continue
                self.store.set_state(job_id, "running")
            try:
                argv = self._train_command(job, resume) if job.kind == "train" else self._predict_command(job)
                state, message = self._execute(job_id, argv)
            except Exception as exc:  # noqa: BLE001  (the server must live on and say what happened)
                log.exception("job %s failed", job_id)
                state, message = "failed", f"unexpected error: {type(exc).__name__}: {exc}"
            self.store.set_state(job_id, state, message)

    def _execute(self, job_id: str, argv: list[str]) -> tuple[str, str]:
        """Run the command; its state and the message to keep (its last line, e.g. `error: ...`)."""
        log_path = self.folder(job_id) / "job.log"
        _wait_for_lock(self.folder(job_id) / "run")  # a job of a killed server may still be saving its checkpoint
        with log_path.open("ab") as out:
            proc = subprocess.Popen([*self._nice_prefix, sys.executable, "-m", "gigapath_desktop", *argv], stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True,  # the terminal's Ctrl-C reaches the server, not the job
                                    env={**os.environ, EXIT_WITH_PARENT: str(os.getpid())})
            with self._lock:
                self._procs[job_id] = proc
                cancelled = job_id in self._cancelled
            if cancelled:
                proc.send_signal(signal.SIGTERM)
            code = proc.wait()
            with self._lock:
                self._procs.pop(job_id, None)
        lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
        last = next((line for line in reversed(lines) if line.startswith(("error:", "step ", "wrote", "job "))),
                    lines[-1] if lines else "")
        if job_id in self._cancelled:
            return "cancelled", "cancelled"
        if code == 0:  # the command's warnings ride along, one a line, for the client to print
            warnings = [line for line in lines if line.startswith("warning:")]
            return "finished", self.public(job_id, "\n".join(dict.fromkeys([*warnings, last])))
        if code == EXIT_RESUMABLE:
            return "interrupted", self.public(job_id, last.removeprefix("error: "))
        if code in INTERRUPTED or code < 0:
            return "interrupted", f"stopped (exit {code}); resume continues from the last checkpoint"
        return "failed", self.public(job_id, last.removeprefix("error: "))

    def public(self, job_id: str, message: str) -> str:
        """A job's message as a client may read it: slides by their name under the root, the job's own files by
        their name (the server's folders are not the client's business)."""
        return message.replace(f"{self.folder(job_id)}{os.sep}run{os.sep}", "").replace(
            f"{self.folder(job_id)}{os.sep}", "").replace(f"{self.slides_root}{os.sep}", "")

    def _train_command(self, job: Job, resume: bool) -> list[str]:
        from gigapath_desktop.training.checkpoints import has_checkpoint

        p, t = job.params, job.params["training"]
        run, labels = self.run_dir(job), self.folder(job.id) / "labels.geojson"
        argv = ["train", str(self.slides_root / p["slide"]), "--region", _xywh(p["region"]), "--level",
                str(p.get("level", 0)), "--out", str(run), "--workers", str(self.workers)]
        argv += ["--labels", str(labels)] if labels.exists() else ["--auto-labels"]
        argv += ["--val-region", _xywh(p["val_region"])] if p.get("val_region") else []
        argv += ["--ray-address", self.ray_address] if self.ray_address else []
        if resume and has_checkpoint(run):
            return argv + ["--resume"]
        argv += ["--steps", str(t["steps"]), "--lr", repr(t["learning_rate"]), "--tile", str(t["tile"] or 0),
                 "--seed", str(t["seed"]), "--checkpoint-every", str(t["checkpoint_every"])]
        argv += ["--fold", str(t["fold"])] if "fold" in t else []  # (a job stored before the setting: the default)
        return argv + ([] if t["augment"] else ["--no-augment"])

    def _predict_command(self, job: Job) -> list[str]:
        p = job.params
        folder = self.folder(job.id)
        argv = ["predict", str(self.slides_root / p["slide"]), "--model",
                str(self.data_dir / "jobs" / p["model_job"] / "run" / "model.keras"), "--level", str(p.get("level", 0)),
                "--out", str(folder / "mask.tif"), "--geojson", str(folder / "contours.geojson"),
                "--threshold", repr(p.get("threshold", 0.5)), "--min-hole", repr(p.get("min_hole_um2", MIN_AREA_UM2)),
                "--min-object", repr(p.get("min_object_um2", 0.0))]
        argv += ["--region", _xywh(p["region"])] if p.get("region") else []
        return argv + (["--binary"] if p.get("binary") else [])


def _wait_for_lock(run: Path, seconds: float = 120.0) -> None:
    from gigapath_desktop.locks import FolderInUse, FolderLock

    deadline = time.monotonic() + seconds
    while run.is_dir() and time.monotonic() < deadline:
        try:
            FolderLock(run).acquire().release()
            return
        except FolderInUse:
            time.sleep(0.5)


def _xywh(values: list[int]) -> str:
    return ",".join(str(int(v)) for v in values)
