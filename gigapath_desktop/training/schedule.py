"""The learning-rate schedule of the recipe: warm-up, cosine decay, and the guard's lowered restarts."""
from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

REWARM_STEPS = 10  # after the guard steps back, the learning rate warms up again over this many steps


@keras.saving.register_keras_serializable(package="gigapath")
class LearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak`, then optional cosine decay to peak/10 at `steps`. The guard lowers `scale` and
    warms up again from `restart` (an optimizer iteration) after it stepped back."""

    def __init__(self, peak: float, warmup: int, steps: int, decay: bool, scale: float = 1.0, restart: int = 0) -> None:
        self.peak, self.warmup, self.steps, self.decay = peak, warmup, steps, decay
        self.scale, self.restart = scale, restart

    def __call__(self, step: Any) -> Any:
        step = tf.cast(step, tf.float32)
        warm = tf.minimum(1.0, (step + 1.0) / max(self.warmup, 1))
        if self.restart:
            warm *= tf.minimum(1.0, (step - self.restart + 1.0) / REWARM_STEPS)
        if self.decay:
            progress = tf.clip_by_value((step - self.warmup) / max(self.steps - self.warmup, 1), 0.0, 1.0)
            warm *= 0.1 + 0.9 * 0.5 * (1.0 + tf.cos(np.pi * progress))
        return self.peak * self.scale * warm

    def get_config(self) -> dict[str, Any]:
        return {"peak": self.peak, "warmup": self.warmup, "steps": self.steps, "decay": self.decay,
                "scale": self.scale, "restart": self.restart}
