"""The training recipe on a small hard case: the old settings collapse, the defaults do not, the guard recovers a
collapse, gives up on a hopeless run with one message, and regions of nearly one class are warned about."""
from __future__ import annotations

import json
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
    assert trainer.step == 0 and not (tmp_path / "run" / "checkpoints").exists(), \
        "no step done, nothing to keep: the folder takes a new run (a step-0 checkpoint made it refuse one)"
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
    divergence. A loss that climbs far above its level and stays there is."""
    guard = CollapseGuard(patience=5)
    steady = [0.05, 0.027] + [0.08, 0.1, 0.09, 0.07, 0.1, 0.09] * 2
    assert all(guard.check(loss, _terms(0.9)).reason is None for loss in steady)
    verdicts = [guard.check(loss, _terms(0.9)) for loss in np.linspace(0.4, 0.8, 10)]
    trips = [i for i, v in enumerate(verdicts) if v.reason is not None]
    assert trips and 5 <= trips[0] <= 8, trips
    assert "keeps rising (lower quartile" in verdicts[trips[0]].reason and "over the last 10 steps" in \
        verdicts[trips[0]].reason


def test_the_guard_lets_a_many_region_run_through_its_hard_draws() -> None:
    """The step losses of a real run: 3-class sparse strokes on 8 slides (1024 x 768, seed 0, lr 0.02, 240 steps,
    benchmarks/bench_cross_slide.py's slides) with the rising rule off. Each step is one slide under one augmentation
    draw: from 0.0035 to 3.7. It ended well (per-class validation Dice 0.98 / 0.73 / 0.78); judged against the best
    single step it "kept rising" from step 45 on, and with the guard on it failed after 3 restarts."""
    guard = CollapseGuard()
    assert all(guard.check(loss, _terms(0.9)).reason is None for loss in EIGHT_SLIDES)
    best = [min(EIGHT_SLIDES[:i]) for i in range(1, len(EIGHT_SLIDES))]
    assert min(EIGHT_SLIDES[35:45]) > max(1.5 * best[35], best[35] + 0.1), "the single-best rule tripped here"


def test_a_resumed_guard_judges_as_the_whole_run_would() -> None:
    """The guard's memory goes into each checkpoint (state.json): after a resume it trips where the run would have."""
    climb = EIGHT_SLIDES[:120] + [4 * loss for loss in EIGHT_SLIDES[:40]]
    whole, first = CollapseGuard(), CollapseGuard()
    expected = [whole.check(loss, _terms(0.9)) for loss in climb]
    assert any(v.reason for v in expected[120:])
    for loss in climb[:100]:
        first.check(loss, _terms(0.9))
    resumed = CollapseGuard()
    resumed.load(json.loads(json.dumps(first.state())))
    assert [resumed.check(loss, _terms(0.9)) for loss in climb[100:]] == expected[100:]
    fresh = CollapseGuard()
    assert [fresh.check(loss, _terms(0.9)) for loss in climb[100:]] != expected[100:], "without it: another verdict"


EIGHT_SLIDES = [
    1.7676, 1.7489, 1.7465, 1.7583, 1.7422, 1.7158, 1.8282, 1.6311, 1.5373, 1.7881, 1.6393, 1.1107, 1.0711, 1.3799,
    1.3278, 1.2157, 1.2409, 0.832, 0.8978, 0.8371, 1.0166, 0.9009, 1.1353, 0.739, 0.7005, 0.6885, 0.5966, 0.5803,
    0.4039, 0.9802, 0.448, 0.9085, 1.9496, 0.9574, 0.222, 0.9454, 0.8982, 1.1883, 1.6825, 1.3651, 1.2005, 1.4087,
    2.0259, 3.0493, 0.8505, 1.6603, 1.1943, 0.6816, 0.6164, 1.2074, 1.6435, 0.4916, 0.7295, 0.582, 0.5464, 0.6854,
    0.5532, 0.663, 0.7235, 0.3116, 0.5039, 0.7158, 0.3696, 0.3889, 0.42, 0.2762, 0.2155, 0.5414, 0.6775, 0.108,
    0.6614, 0.6464, 0.3204, 0.9266, 0.0174, 1.6365, 0.8957, 2.3457, 2.0398, 2.1025, 0.2104, 0.2628, 1.4234, 1.4443,
    0.3942, 1.1142, 0.1712, 2.8211, 0.2469, 0.2684, 0.2935, 0.2245, 0.9579, 1.251, 0.3414, 0.3089, 1.7234, 0.2609,
    0.2579, 1.0308, 0.2023, 0.1826, 0.4862, 0.2194, 0.3438, 0.2637, 0.3109, 0.4462, 0.316, 0.2848, 0.3115, 0.1888,
    0.0465, 0.3943, 0.2054, 0.4482, 0.3242, 0.1207, 0.0699, 0.249, 0.4263, 0.4283, 0.1417, 0.0574, 0.4252, 0.0871,
    0.2849, 0.1439, 1.3596, 0.1247, 0.2398, 1.8668, 0.0639, 0.3898, 0.2636, 0.05, 0.2005, 0.0627, 0.424, 0.1185,
    0.0139, 0.1295, 0.094, 0.3005, 0.1288, 0.7146, 1.8107, 0.243, 0.0367, 0.0223, 0.4287, 0.0443, 3.6862, 1.7569,
    0.0035, 0.0629, 0.0911, 0.1403, 0.0798, 0.0545, 0.5456, 0.3511, 0.0456, 0.0851, 0.1498, 0.8185, 0.118, 0.1528,
    1.3475, 1.6724, 0.5333, 0.1202, 1.0561, 0.2043, 0.4113, 0.0723, 0.3848, 0.2354, 0.0365, 0.5468, 0.0986, 0.1012,
    0.1471, 0.0815, 0.079, 0.6231, 0.0436, 0.2023, 0.1545, 0.223, 0.5779, 0.2805, 0.2019, 0.03, 0.0822, 0.1733,
    0.1535, 0.3304, 0.0476, 0.0615, 0.0632, 0.0612, 0.2206, 0.054, 0.0791, 0.0765, 0.0661, 0.1801, 0.1036, 0.4722,
    0.6367, 0.0853, 1.4548, 0.4889, 0.0174, 0.0256, 0.3534, 0.1447, 0.2603, 0.2237, 0.0573, 0.012, 0.1055, 1.5746,
    0.6532, 0.535, 0.0799, 0.1458, 0.0075, 0.0876, 0.334, 0.0452, 0.0438, 0.0305, 0.125, 0.0588, 0.2732, 0.043,
    0.059, 0.0594
]


def test_the_guard_sees_a_k_class_model_that_answers_one_class_everywhere() -> None:
    guard = CollapseGuard(patience=3)
    collapsed = LossTerms(np.array([900.0, 0, 0]), np.full(3, 1000.0), np.array([900.0, 600, 500]),
                          np.array([900.0, 0, 0]), np.array([2000.0, 0, 0]), 0.0, 2000.0)
    verdicts = [guard.check(1.0, collapsed) for _ in range(3)]
    assert "class 0 everywhere" in verdicts[-1].reason
