"""Plain events the engine reports; the GUI, the CLI progress bar, the server stream and metrics.csv listen to them."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Union


@dataclass(frozen=True)
class StepEvent:
    """One optimizer step (one whole region) finished."""

    step: int
    total_steps: int
    loss: float
    dice: float
    val_dice: float | None
    seconds: float
    mpix_per_s: float
    rss_bytes: int
    device_memory_bytes: int | None
    device: str
    learning_rate: float = 0.0
    recoveries: int = 0
    region: str = ""  # the training region of this step
    val_detail: dict[str, float | None] | None = None  # validation Dice per class and per slide (None: class absent)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TileEvent:
    """Progress inside a step: `done` of `total` tile passes (forward sums, then forward + backward)."""

    step: int
    done: int
    total: int


@dataclass(frozen=True)
class LogEvent:
    """A line for the log pane / terminal."""

    message: str


@dataclass(frozen=True)
class WarningEvent:
    """Something the user should act on (shown as a dialog in the app, a `warning:` line in the CLI)."""

    message: str


Event = Union[StepEvent, TileEvent, LogEvent, WarningEvent]
Listener = Callable[[Event], None]
