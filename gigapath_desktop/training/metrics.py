"""metrics.csv: one row per step, appended and flushed as steps finish (so a crash keeps every finished step)."""
from __future__ import annotations

import csv
import os
from pathlib import Path

from gigapath_desktop.training.events import Event, StepEvent

COLUMNS = ["step", "loss", "dice", "val_dice", "seconds", "mpix_per_s", "rss_bytes", "learning_rate", "recoveries"]


class MetricsWriter:
    """A listener that writes StepEvents to `path`; on resume it drops rows past the checkpoint's step."""

    def __init__(self, path: str | os.PathLike[str], resume_from: int = 0) -> None:
        self.path = Path(path)
        rows = read_metrics(self.path) if resume_from and self.path.exists() else []
        with self.path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            for row in rows:
                if int(row["step"]) <= resume_from:
                    writer.writerow([row.get(c, "") for c in COLUMNS])

    def __call__(self, event: Event) -> None:
        if not isinstance(event, StepEvent):
            return
        values = event.as_dict()
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow(["" if values[c] is None else values[c] for c in COLUMNS])


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))
