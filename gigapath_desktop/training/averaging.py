"""The weights a run ends with: a moving average of the weights after each step.

Each step trains on one whole region under one augmentation draw (batch 1, as the reference paper), and pulls the
weights towards that draw. A K-class model's choice between two similar textures swung with those pulls: on another
slide the weaker class's validation Dice went from 0.74 at step 100 to 0.30 at step 120 with the learning rate
already decayed. The average of the last steps' weights sits between the pulls (benchmarks/bench_cross_slide.py;
README "Classes" and "Recipe"). The momentum grows with the steps taken, min(momentum, (1 + t) / (10 + t)) as
TensorFlow's ExponentialMovingAverage does with num_updates, so a short run is not dragged back towards its first
weights: 0.94 after 150 steps; the default cap of 0.98 binds from ~440 steps on.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import keras
import numpy as np


class WeightAverage:
    """An exponential moving average of `variables` (the model's trainable variables), updated after each step;
    momentum 0 keeps the last step's weights."""

    def __init__(self, variables: Sequence[keras.Variable], momentum: float) -> None:
        self.variables = list(variables)
        self.momentum = momentum
        self.reset()

    def reset(self) -> None:
        """Start again from the current weights (after the guard stepped back to good ones)."""
        self.values = [np.array(v.numpy()) for v in self.variables]
        self.updates = 0

    def update(self) -> None:
        """Take in the weights of the step just applied."""
        momentum = min(self.momentum, (1.0 + self.updates) / (10.0 + self.updates))
        for value, variable in zip(self.values, self.variables):
            value *= momentum  # (momentum 0: exactly the step's weights)
            value += (1.0 - momentum) * variable.numpy()
        self.updates += 1

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the model for the block (e.g. a validation), the step's own ones after it."""
        own = [np.array(v.numpy()) for v in self.variables]
        self.apply()
        try:
            yield
        finally:
            for variable, value in zip(self.variables, own):
                variable.assign(value)

    def apply(self) -> None:
        """Put the averaged weights into the model for good (the end of a run)."""
        for variable, value in zip(self.variables, self.values):
            variable.assign(value)

    def load(self, values: Sequence[np.ndarray], updates: int) -> None:
        """Continue a checkpointed average."""
        if [np.shape(v) for v in values] != [tuple(v.shape) for v in self.variables]:
            raise ValueError("the weight average does not match the model")
        self.values = [np.array(v, dtype=variable.dtype) for v, variable in zip(values, self.variables)]
        self.updates = updates
