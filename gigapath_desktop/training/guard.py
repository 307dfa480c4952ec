"""The collapse guard: notice a run that has died or diverged, so the Trainer can go back and try gentler steps.

A tiny network without normalisation can be knocked into a state it never leaves: after a few large steps every
pixel gets the same answer (a hard Dice of 0, or of the all-tissue value), and the loss freezes there. A run can
also diverge (non-finite loss, or a loss that keeps climbing). The guard watches the steps; the Trainer keeps the
last good weights and optimizer state, restores them when the guard trips, lowers the learning rate, and gives up
with one clear message after a few tries.

"Climbing" is judged on the lower quartile of the last 2 x patience losses against the lowest such quartile before,
not on single steps: with several regions (or sparse labels) one step's loss depends on the region and the
augmentation drawn, up to 100x between an easy and a hard one. Against the best single step (an easy draw) every
later window looked like divergence, and an 8-slide run failed after 3 restarts; left alone, its climbs (the worst at
steps 35-50, the learning rate at its peak) came back down by themselves and the run ended well.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from gigapath_desktop.training.gradients import LossTerms

PATIENCE = 10  # steps of degenerate output (with the loss no longer falling) that mean "collapsed"
DEGENERATE = 0.01  # a hard Dice this close to 0 or to the all-tissue Dice, or one class on 99 %, is degenerate
FROZEN = 0.98  # the loss fell by less than 2 % over the patience window
RISING = 2.0  # a lower-quartile loss over 2 x patience steps this many times the lowest before is diverging ...
RISING_BY = 0.1  # ... and this much above it: a small loss (sparse labels, ~0.03) may double on harder draws


@dataclass(frozen=True)
class Verdict:
    """Why the guard tripped (`reason`), or healthy (`reason` is None); `good` = a state worth keeping."""

    good: bool
    reason: str | None = None


class CollapseGuard:
    """Feed it each step's loss and global sums; it says when to step back."""

    def __init__(self, patience: int = PATIENCE, classes: Sequence[str] = ()) -> None:
        """`classes`: a K-class model's class names, to say which one it answers everywhere."""
        self.patience = patience
        self.classes = list(classes)
        self.steps: deque[tuple[float, bool]] = deque(maxlen=2 * patience)  # (loss, degenerate output) per step
        self.typical = math.inf  # the lowest lower-quartile loss of 2 x patience steps so far: the level reached

    @property
    def losses(self) -> list[float]:
        """The losses of the steps it remembers, oldest first."""
        return [loss for loss, _ in self.steps]

    def reset(self) -> None:
        self.steps.clear()

    def state(self) -> dict:
        """What the guard has seen, for a checkpoint: a resumed run judges its next steps as the whole run would."""
        typical = self.typical if math.isfinite(self.typical) else None
        return {"steps": [list(step) for step in self.steps], "typical": typical}

    def load(self, state: dict) -> None:
        self.steps.extend((float(loss), bool(degenerate)) for loss, degenerate in state.get("steps", []))
        self.typical = math.inf if state.get("typical") is None else float(state["typical"])

    def check(self, loss: float, terms: LossTerms) -> Verdict:
        """Judge one step from its loss and global sums (hard Dice, class counts)."""
        if not math.isfinite(loss) or not math.isfinite(terms.dice):
            return Verdict(False, f"the loss became {loss}")
        answer = single_answer(terms, self.classes)
        self.steps.append((loss, answer is not None))
        window = list(self.steps)[-self.patience :]
        full = len(window) == self.patience
        first = window[0][0]
        mixed = np.count_nonzero(terms.truth) > 1 if len(terms.truth) > 1 else 0 < terms.truth[0] < terms.valid
        if full and all(d for _, d in window) and loss > FROZEN * first and mixed:
            return Verdict(False, f"the model collapsed (it predicts {answer}; hard Dice {terms.dice:.3f} for "
                                  f"{self.patience} steps and the loss stopped falling)")
        if len(self.steps) == self.steps.maxlen:
            low = float(np.percentile(self.losses, 25))
            if low > max(RISING * self.typical, self.typical + RISING_BY):
                return Verdict(False, f"the loss keeps rising (lower quartile {low:.3f} over the last "
                                      f"{len(self.steps)} steps, {self.typical:.3f} before)")
            self.typical = min(self.typical, low)
        level = self.typical if math.isfinite(self.typical) else min(self.losses)  # (the first steps: the best)
        return Verdict(answer is None and loss <= 1.1 * level)


def single_answer(terms: LossTerms, classes: Sequence[str] = ()) -> str | None:
    """What a collapsed model answers everywhere ("no tissue", "tissue everywhere", "Stroma everywhere" or without
    the class names "class 2 everywhere"), or None while its hard Dice is away from the values one answer everywhere
    gives."""
    if terms.dice < DEGENERATE:
        return "no tissue" if len(terms.truth) == 1 else "no class right"
    if len(terms.truth) == 1:
        fraction = terms.truth[0] / max(terms.valid, 1.0)
        return "tissue everywhere" if abs(terms.dice - 2 * fraction / (1 + fraction)) < DEGENERATE else None
    top = int(np.argmax(terms.hard_predicted))
    name = classes[top] if len(classes) == len(terms.truth) else f"class {top}"
    return f"{name} everywhere" if terms.hard_predicted[top] >= (1 - DEGENERATE) * terms.valid else None
