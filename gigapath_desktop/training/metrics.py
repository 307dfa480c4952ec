"""metrics.csv: one row per step, appended and flushed as steps finish (so a crash keeps every finished step)."""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

from gigapath_desktop.outputs import atomic_path
from gigapath_desktop.training.events import Event, StepEvent

COLUMNS = ["step", "loss", "dice", "val_dice", "seconds", "mpix_per_s", "rss_bytes", "learning_rate", "recoveries",
           "region"]


class MetricsWriter:
    """A listener that writes StepEvents to `path`.

    It starts by rewriting the file, atomically, from `history` (a resumed run's checkpoint holds every step up to
    it), so rows of steps that are about to be redone go, and a damaged or deleted file comes back whole."""

    def __init__(self, path: str | os.PathLike[str], history: Sequence[StepEvent] = (),
                 details: Sequence[str] = ()) -> None:
        """`details`: the keys of `StepEvent.val_detail` to write, each as a column of its own."""
        self.path = Path(path)
        self.details = list(details)
        with atomic_path(self.path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS + self.details)
            writer.writerows(self._row(event) for event in history)

    def __call__(self, event: Event) -> None:
        if not isinstance(event, StepEvent):
            return
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow(self._row(event))

    def _row(self, event: StepEvent) -> list[object]:
        values = {**event.as_dict(), **(event.val_detail or {})}
        return ["" if values.get(c) is None else values[c] for c in COLUMNS + self.details]


INTEGER_COLUMNS = ("step", "rss_bytes", "recoveries")
TEXT_COLUMNS = ("region",)


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows written so far; a last row still being written (no line end yet) is left for the next read."""
    with Path(path).open(newline="") as f:
        lines = f.read().splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]
    return list(csv.DictReader(lines))


def typed(row: dict[str, str]) -> dict[str, int | float | str | None]:
    """A row's values as numbers (None where empty, e.g. val_dice on steps without validation), text columns as
    they are."""
    return {k: v if k in TEXT_COLUMNS else None if not v else int(v) if k in INTEGER_COLUMNS else float(v)
            for k, v in row.items()}
