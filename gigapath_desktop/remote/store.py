"""Jobs and their state in SQLite, so a server restart loses nothing: finished jobs stay as they were, and jobs
that were queued or running when the server died are marked interrupted (a training job resumes from its last
checkpoint on request)."""
from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gigapath_desktop.errors import GigaPathError

STATES = ("queued", "running", "finished", "failed", "cancelled", "interrupted")
LIVE = ("queued", "running")


@dataclass
class Job:
    id: str
    kind: str  # "train" | "predict"
    state: str
    params: dict[str, Any]
    created: float
    updated: float
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class JobStore:
    """A small table of jobs; safe to use from the server's threads (one connection, one lock)."""

    def __init__(self, path: Path) -> None:
        """Raises GigaPathError when `path` is not a job database this server can use (kept as it is)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, kind TEXT, state TEXT, "
                             "params TEXT, created REAL, updated REAL, message TEXT)")
            self._db.execute("SELECT id, kind, state, params, created, updated, message FROM jobs LIMIT 1")
        except sqlite3.Error as exc:
            raise GigaPathError(f"{path}: not a job database this server can use ({exc}); move it away or choose "
                                f"another --data-dir") from None

    def add(self, kind: str, params: dict[str, Any]) -> Job:
        now = time.time()
        job = Job(uuid.uuid4().hex[:12], kind, "queued", params, now, now)
        with self._lock:
            self._db.execute("INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (job.id, kind, job.state, json.dumps(params), now, now, ""))
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def all(self) -> list[Job]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs ORDER BY created").fetchall()
        return [_job(row) for row in rows]

    def set_state(self, job_id: str, state: str, message: str = "") -> None:
        assert state in STATES
        with self._lock:
            self._db.execute("UPDATE jobs SET state = ?, message = ?, updated = ? WHERE id = ?",
                             (state, message, time.time(), job_id))

    def mark_interrupted(self) -> list[str]:
        """At start-up: jobs the previous server left queued or running did not finish."""
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE state IN (?, ?)", LIVE).fetchall()]
            self._db.execute("UPDATE jobs SET state = 'interrupted', message = 'the server stopped during this job', "
                             "updated = ? WHERE state IN (?, ?)", (time.time(), *LIVE))
        return ids

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _job(row: tuple) -> Job:
    job_id, kind, state, params, created, updated, message = row
    return Job(job_id, kind, state, json.loads(params), created, updated, message or "")
