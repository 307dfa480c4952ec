"""The training recipe on a small hard case: the old settings collapse, the defaults do not, the guard recovers a
collapse, gives up on a hopeless run with one message, and regions of nearly one class are warned about."""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from gigapath_desktop import TrainingError
from gigapath_desktop.model import build_unet
from gigapath_desktop.slides.realistic import Case, render
from gigapath_desktop.training import RegionData, StepEvent, TrainConfig, Trainer, WarningEvent
from gigapath_desktop.training.gradients import LossTerms
from gigapath_desktop.training.guard import CollapseGuard

# What `train` did before this recipe: ReLU, Adam at a constant 0.03, no warm-up, clipping, bias prior or augmentation.
OLD = dict(learning_rate=0.03, warmup_steps=0, decay=False, clip_norm=None, augment=False, init_bias=False, tile=None)


@pytest.fixture(scope="module")
def hard() -> RegionData:
    """1 MP of a realistic slide: real H&E texture, ~30 % tissue, pen, dust, fat, folds."""
    image, truth = render(Case("small", width=1536, height=1536, island_scale=400, tissue_fraction=0.3),
                          np.random.default_rng(0))
    return RegionData(image[:1024, :1024].copy(), truth[:1024, :1024].copy(), name="hard")


def _train(region: RegionData, seed: int, config: TrainConfig, activation: str = "leaky_relu",
           guard: bool = True) -> tuple[Trainer, list]:
    keras.utils.set_random_seed(seed)
    events: list = []
    trainer = Trainer(build_unet(activation=activation), [region], None, config, listeners=[events.append])
    if not guard:
        trainer.guard = CollapseGuard(patience=10**6)
    trainer.run()
    return trainer, events


def _dice(events: list) -> list[float]:
    return [e.dice for e in events if isinstance(e, StepEvent)]


def test_old_settings_collapse_and_the_defaults_do_not(hard: RegionData) -> None:
    _, events = _train(hard, 1, TrainConfig(steps=30, **OLD), activation="relu", guard=False)
    assert max(_dice(events)[-15:]) < 0.02, "the old recipe's seed-1 run is dead for good (as reported)"
    for seed in range(3):
        trainer, events = _train(hard, seed, TrainConfig(steps=30, tile=None, seed=seed))
        assert trainer.recoveries == 0 and not [e for e in events if isinstance(e, WarningEvent)]
        assert np.mean(_dice(events)[-5:]) > 0.85, (seed, _dice(events))


def test_guard_restores_the_last_good_weights_after_a_collapse(hard: RegionData) -> None:
    trainer, events = _train(hard, 1, TrainConfig(steps=45, **OLD), activation="relu")
    warnings = [e.message for e in events if isinstance(e, WarningEvent)]
    assert trainer.recoveries >= 1 and "collapsed" in warnings[0] and "restarted from the last good" in warnings[0]
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert steps[-1].recoveries == trainer.recoveries and steps[-1].learning_rate < 0.03
    assert np.mean(_dice(events)[-5:]) > 0.8, _dice(events)


def test_guard_gives_up_with_one_message_and_keeps_weights(hard: RegionData, tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    model = build_unet()
    weights = model.get_weights()
    weights[-2][:] = np.nan  # the logits kernel: every output is NaN, whatever the restarts
    model.set_weights(weights)
    events: list = []
    trainer = Trainer(model, [hard], None, TrainConfig(steps=5, tile=512, max_recoveries=2), tmp_path / "run",
                      listeners=[events.append])
    with pytest.raises(TrainingError, match=r"training failed at step 1: the loss became nan, again after 2 restart"):
        trainer.run()
    assert trainer.step == 0 and (tmp_path / "run" / "checkpoints" / "step-000000").is_dir()
    assert sum(isinstance(e, WarningEvent) for e in events) == 2


def test_regions_of_nearly_one_class_are_warned_about(hard: RegionData) -> None:
    labels = np.ones_like(hard.labels)
    labels[:50, :100] = 0  # 0.5 % background
    events: list = []
    trainer = Trainer(build_unet(), [RegionData(hard.image, labels, name="all tissue")], None,
                      TrainConfig(steps=1, tile=None), listeners=[events.append])
    trainer.run()
    (warning,) = [e.message for e in events if isinstance(e, WarningEvent)]
    assert "all tissue" in warning and "99.5 % tissue" in warning and "enlarge the region" in warning
    events.clear()
    Trainer(build_unet(), [hard], None, TrainConfig(steps=1, tile=None), listeners=[events.append]).run()
    assert not [e for e in events if isinstance(e, WarningEvent)]


def _terms(dice: float, classes: int = 3) -> LossTerms:
    """Global sums of a healthy K-class step with the given hard Dice on every class (1000 labelled pixels each)."""
    truth = np.full(classes, 1000.0)
    return LossTerms(truth * dice, truth, truth, truth * dice, truth, 0.0, truth.sum())


def test_the_guard_trips_on_a_rising_loss_but_not_on_a_small_loss_that_doubles() -> None:
    """Sparse labels train to tiny losses (~0.03) that double on a harder augmentation draw for a while: that is not
    divergence. A loss that climbs far above its best is."""
    guard = CollapseGuard(patience=5)
    verdicts = [guard.check(loss, _terms(0.9)) for loss in [0.05, 0.027] + [0.08, 0.1, 0.09, 0.07, 0.1, 0.09]]
    assert all(v.reason is None for v in verdicts)
    verdicts = [guard.check(loss, _terms(0.9)) for loss in [0.4, 0.5, 0.6, 0.7, 0.8]]
    assert verdicts[-1].reason is not None and "keeps rising" in verdicts[-1].reason


def test_the_guard_sees_a_k_class_model_that_answers_one_class_everywhere() -> None:
    guard = CollapseGuard(patience=3)
    collapsed = LossTerms(np.array([900.0, 0, 0]), np.full(3, 1000.0), np.array([900.0, 600, 500]),
                          np.array([900.0, 0, 0]), np.array([2000.0, 0, 0]), 0.0, 2000.0)
    verdicts = [guard.check(1.0, collapsed) for _ in range(3)]
    assert "class 0 everywhere" in verdicts[-1].reason
