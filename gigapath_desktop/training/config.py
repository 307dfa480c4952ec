"""Training settings, free of TensorFlow so the app can show their defaults before the engine loads."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, get_args, get_type_hints

from gigapath_desktop.errors import GigaPathError

BCE_WEIGHT = 1.0
RUN_FILES = ("model.keras", "config.json", "metrics.csv")  # what a run writes in its folder, beside checkpoints/
MAX_STEPS = 10_000_000  # the paper's run took 4940 steps
FOLDS = (2, 4)  # the model's pixel folds the step planner is calibrated for (training/plan.py)
MIN_BUDGET = 0.6  # GiB of process memory: TensorFlow and the model alone take ~0.55


@dataclass(frozen=True)
class TrainConfig:
    """How to train. The defaults are the recipe measured by benchmarks/bench_convergence.py (README: "Recipe")."""

    steps: int = 150
    learning_rate: float = 0.02  # peak Adam learning rate, reached after `warmup_steps`
    tile: int | str | None = "auto"  # "auto": planned from the memory budget (training/plan.py); an output tile side
    # in pixels; None trains on each region as one tensor
    memory_budget: float = 3.0  # GiB of process memory an "auto" plan may use
    bce_weight: float = BCE_WEIGHT
    checkpoint_every: int = 10
    validate_every: int = 1
    warmup_steps: int = 10  # linear warm-up from 0: the first Adam steps are the largest
    decay: bool = True  # cosine decay to a tenth of the peak at the last step
    clip_norm: float | None = 1.0  # global gradient-norm clipping
    augment: bool = True  # exact dihedral + colour augmentation of the whole region each step
    colour_jitter: float = 1.0  # strength of the colour augmentation (0 = geometry only)
    ink: float = 0.5  # chance per bright-field step of a marker stroke or two (black, blue, green, red) over the region
    init_bias: bool = True  # start the output bias at the labels' tissue prior
    average: float = 0.98  # cap of the momentum of the weight average a run ends with (0: the last step's weights)
    max_recoveries: int = 3  # collapse-guard restarts before giving up
    seed: int = 0  # drives the augmentation draws (and, in the job, the initial weights)
    fold: int = 4  # a new model's first layer folds fold x fold pixels into channels: 2 sees finer detail (thin
    # strands, small islands) at ~2x the time per step (README: "Recipe")

    def __post_init__(self) -> None:
        """Every entry point (CLI, GUI, server, a resumed run's file) gets the same check: finite, in range."""
        for name, hint in get_type_hints(TrainConfig).items():
            value = getattr(self, name)
            if not _is_a(value, hint):
                raise GigaPathError(f"training setting {name} must be {_describe(hint)}, got {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise GigaPathError(f"training setting {name} must be a finite number, got {value}")
        problems = [
            (self.steps < 1, "steps must be >= 1"),
            (not 0 < self.learning_rate < 1, "the learning rate must lie in (0, 1)"),
            (isinstance(self.tile, str) and self.tile != "auto", "the tile must be a number of pixels, 'auto' or none"),
            (isinstance(self.tile, int) and self.tile < 64, "the tile must be >= 64 pixels (or 'auto', or none)"),
            (not MIN_BUDGET <= self.memory_budget <= 4096, f"the memory budget must lie in [{MIN_BUDGET}, 4096] GiB"),
            (self.bce_weight < 0, "the BCE weight must be >= 0"),
            (self.checkpoint_every < 1 or self.validate_every < 1, "checkpoint and validation intervals must be >= 1"),
            (self.warmup_steps < 0 or self.max_recoveries < 0, "warm-up steps and restarts must be >= 0"),
            (not 0 <= self.seed < 2**32, "the seed must lie in [0, 2**32)"),  # (what the random generators take)
            (self.steps > MAX_STEPS, f"steps must be at most {MAX_STEPS:,} (a run that long would never end)"),
            (self.clip_norm is not None and self.clip_norm <= 0, "the gradient clip norm must be > 0 (or none)"),
            (not 0 <= self.colour_jitter <= 4, "the colour jitter must lie in [0, 4]"),
            (not 0 <= self.ink <= 1, "the ink chance must lie in [0, 1]"),
            (not 0 <= self.average < 1, "the weight average's momentum must lie in [0, 1)"),
            (self.fold not in FOLDS, f"the fold must be one of {', '.join(map(str, FOLDS))} pixels"),
        ]
        for bad, message in problems:
            if bad:
                raise GigaPathError(f"training settings: {message}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def _is_a(value: Any, hint: Any) -> bool:
    """Whether `value` fits a field's type; ints count as floats, bools count as nothing but bools."""
    allowed = get_args(hint) or (hint,)
    if isinstance(value, bool):
        return bool in allowed
    if value is None:
        return type(None) in allowed
    return any(isinstance(value, int if t is int else (int, float) if t is float else t)
               for t in allowed if t is not type(None) and t is not bool)


def _describe(hint: Any) -> str:
    names = {int: "a whole number", float: "a number", bool: "true or false", type(None): "none", str: "'auto'"}
    return " or ".join(names.get(t, t.__name__) for t in (get_args(hint) or (hint,)))
