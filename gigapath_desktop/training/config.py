"""Training settings, free of TensorFlow so the app can show their defaults before the engine loads."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BCE_WEIGHT = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """How to train. The defaults are the recipe measured by benchmarks/bench_convergence.py (README: "Recipe")."""

    steps: int = 150
    learning_rate: float = 0.02  # peak Adam learning rate, reached after `warmup_steps`
    tile: int | None = 2048  # output tile side in pixels; None trains on each region as one tensor
    bce_weight: float = BCE_WEIGHT
    checkpoint_every: int = 10
    validate_every: int = 1
    warmup_steps: int = 10  # linear warm-up from 0: the first Adam steps are the largest
    decay: bool = True  # cosine decay to a tenth of the peak at the last step
    clip_norm: float | None = 1.0  # global gradient-norm clipping
    augment: bool = True  # exact dihedral + colour augmentation of the whole region each step
    colour_jitter: float = 1.0  # strength of the colour augmentation (0 = geometry only)
    init_bias: bool = True  # start the output bias at the labels' tissue prior
    max_recoveries: int = 3  # collapse-guard restarts before giving up
    seed: int = 0  # drives the augmentation draws (and, in the job, the initial weights)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
