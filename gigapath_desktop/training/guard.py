"""The collapse guard: notice a run that has died or diverged, so the Trainer can go back and try gentler steps.

A tiny network without normalisation can be knocked into a state it never leaves: after a few large steps every
pixel gets the same answer (a hard Dice of 0, or of the all-tissue value), and the loss freezes there. A run can
also diverge (non-finite loss, or a loss that keeps climbing). The guard watches the steps; the Trainer keeps the
last good weights and optimizer state, restores them when the guard trips, lowers the learning rate, and gives up
with one clear message after a few tries.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

PATIENCE = 10  # steps of degenerate output (with the loss no longer falling) that mean "collapsed"
DEGENERATE = 0.01  # a hard Dice this close to 0, or to the all-tissue Dice, is degenerate
FROZEN = 0.98  # the loss fell by less than 2 % over the patience window
RISING = 1.5  # a loss this many times the best so far, for a whole patience window, is diverging


@dataclass(frozen=True)
class Verdict:
    """Why the guard tripped (`reason`), or healthy (`reason` is None); `good` = a state worth keeping."""

    good: bool
    reason: str | None = None


class CollapseGuard:
    """Feed it each step's (loss, hard Dice) and the training labels' tissue fraction; it says when to step back."""

    def __init__(self, patience: int = PATIENCE) -> None:
        self.patience = patience
        self.window: deque[tuple[float, bool]] = deque(maxlen=patience)
        self.best = math.inf

    def reset(self) -> None:
        self.window.clear()

    def check(self, loss: float, dice: float, tissue_fraction: float) -> Verdict:
        if not math.isfinite(loss) or not math.isfinite(dice):
            return Verdict(False, f"the loss became {loss}")
        all_tissue = 2 * tissue_fraction / (1 + tissue_fraction)
        degenerate = dice < DEGENERATE or abs(dice - all_tissue) < DEGENERATE
        self.window.append((loss, degenerate))
        full = len(self.window) == self.window.maxlen
        first = self.window[0][0]
        if full and all(d for _, d in self.window) and loss > FROZEN * first and 0 < tissue_fraction < 1:
            what = "no tissue" if dice < DEGENERATE else "tissue everywhere"
            return Verdict(False, f"the model collapsed (it predicts {what}; hard Dice {dice:.3f} for "
                                  f"{self.patience} steps and the loss stopped falling)")
        if full and min(l for l, _ in self.window) > RISING * self.best:
            return Verdict(False, f"the loss keeps rising ({loss:.3f}, best {self.best:.3f})")
        good = not degenerate and loss <= 1.1 * self.best
        self.best = min(self.best, loss)
        return Verdict(good)
