"""The Trainer on real synthetic-slide regions: learning, events, checkpoints, stop/resume, pause."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from gigapath_desktop import TrainingError
from gigapath_desktop.model import build_unet, load_model
from gigapath_desktop.slides import Region, open_slide
from gigapath_desktop.slides.synthetic import mask_path_for
from gigapath_desktop.training import (
    MetricsWriter,
    RegionData,
    StepEvent,
    TileEvent,
    TrainConfig,
    Trainer,
    WarningEvent,
    read_metrics,
    region_step,
    region_sums,
)


def _data(slide_path: Path, region: Region) -> RegionData:
    with open_slide(slide_path) as slide, open_slide(mask_path_for(slide_path)) as mask:
        return RegionData(slide.read_region(region), (mask.read_region(region)[..., 0] > 127).astype(np.uint8))


@pytest.fixture(scope="module")
def regions(synthetic_slide: Path) -> tuple[RegionData, RegionData]:
    return _data(synthetic_slide, Region(0, 0, 1400, 1100)), _data(synthetic_slide, Region(1500, 1100, 1400, 1000))


def _model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return build_unet()


def test_short_run_lowers_loss_and_raises_dice(regions: tuple, tmp_path: Path) -> None:
    train, val = regions
    events: list = []
    metrics = MetricsWriter(tmp_path / "metrics.csv")
    trainer = Trainer(_model(), [train], val, TrainConfig(steps=25, learning_rate=0.03, tile=1408),
                      listeners=[events.append, metrics])
    history = trainer.run()
    assert [e.step for e in history] == list(range(1, 26))
    assert history[-1].loss < history[0].loss - 0.1
    assert history[-1].dice > history[0].dice + 0.1
    assert history[-1].val_dice is not None and history[-1].val_dice > history[0].val_dice
    step = history[-1]
    assert step.seconds > 0 and step.mpix_per_s > 0 and step.rss_bytes > 50e6 and step.device
    tiles = [e for e in events if isinstance(e, TileEvent) and e.step == 1]
    assert tiles[-1].done == tiles[-1].total == 2  # 1400 x 1100 -> one tile of 1408, two passes
    rows = read_metrics(tmp_path / "metrics.csv")
    assert len(rows) == 25 and float(rows[-1]["loss"]) == pytest.approx(step.loss)


def test_stop_checkpoint_and_resume_continue_exactly(regions: tuple, tmp_path: Path) -> None:
    train, val = regions
    config = TrainConfig(steps=6, learning_rate=0.02, tile=768, checkpoint_every=2)
    reference = Trainer(_model(), [train], None, config)
    reference.run()

    run_dir = tmp_path / "run"
    trainer = Trainer(_model(), [train], None, config, run_dir)
    own: list = []  # the steps' own weights (the model ends with their average)
    trainer.listeners.append(lambda e: own.append(trainer.model.get_weights()) if isinstance(e, StepEvent) else None)
    trainer.listeners.append(lambda e: trainer.stop() if isinstance(e, TileEvent) and e.step == 4 and e.done == 2 else None)
    trainer.run()
    assert trainer.step == 3, "the step in progress when stopped is discarded"
    stopped_weights = own[-1]

    resumed = Trainer.from_checkpoint(run_dir, [train])
    assert resumed.step == 3 and [e.step for e in resumed.history] == [1, 2, 3]
    assert list(resumed.guard.losses) == pytest.approx([e.loss for e in resumed.history]), "the guard's memory too"
    assert len(resumed._good) == len(trainer._good) >= 1, "and the good states its guard would step back to"
    for a, b in zip(resumed.model.get_weights(), stopped_weights):
        assert np.array_equal(a, b)
    resumed.run()
    assert resumed.step == 6
    for a, b in zip(resumed.model.get_weights(), reference.model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert (run_dir / "checkpoints" / "latest").read_text() == "step-000006"
    assert len(list((run_dir / "checkpoints").glob("step-*"))) == 2


def test_a_checkpoint_keeps_the_good_states_the_guard_steps_back_to(regions: tuple, tmp_path: Path) -> None:
    """Each (weights, optimizer state) pair comes back as it was, in order; a checkpoint from before they were kept
    resumes with none (its run keeps the resume point), and one whose states do not fit the model is passed over."""
    train, _ = regions
    trainer = Trainer(_model(), [train], None, TrainConfig(steps=4), tmp_path / "run")
    start = trainer.model.get_weights()
    for k in range(3):
        trainer.model.set_weights([w + k for w in start])
        trainer.optimizer.iterations.assign(k)
        trainer._keep_good()
    folder = trainer.save_checkpoint()
    resumed = Trainer.from_checkpoint(tmp_path / "run", [train])
    assert len(resumed._good) == 3
    for (weights, state), (kept_weights, kept_state) in zip(resumed._good, trainer._good, strict=True):
        for a, b in zip([*weights, *state], [*kept_weights, *kept_state], strict=True):
            assert np.array_equal(a, b)
        assert len(weights) == len(start)

    (folder / "good.npz").unlink()
    assert not Trainer.from_checkpoint(tmp_path / "run", [train])._good
    np.savez(folder / "good.npz", *start)  # weights without their optimizer state
    with pytest.raises(TrainingError, match="good states do not match the model"):
        Trainer.from_checkpoint(tmp_path / "run", [train])


def test_one_tensor_steps_with_prefetched_augmented_inputs_resume_exactly(regions: tuple, tmp_path: Path) -> None:
    """One-tensor steps take the inputs the Trainer prepared during the last step (each augmented for its own
    step); a resumed run, whose first step is prepared without the thread, ends with the same weights."""
    train, _ = regions
    config = TrainConfig(steps=5, tile=None, checkpoint_every=1)
    reference = Trainer(_model(), [train], None, config)
    reference.run()
    run_dir = tmp_path / "run"
    trainer = Trainer(_model(), [train], None, config, run_dir)
    trainer.listeners.append(lambda e: trainer.stop() if isinstance(e, StepEvent) and e.step == 2 else None)
    trainer.run()
    resumed = Trainer.from_checkpoint(run_dir, [train])
    assert resumed.step == 2 and resumed.config.augment
    resumed.run()
    for a, b in zip(resumed.model.get_weights(), reference.model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_a_run_ends_with_the_average_of_its_steps_weights(regions: tuple, tmp_path: Path) -> None:
    """The model a run ends with, finished or stopped, is the moving average of the weights after each step, from
    the weights the first step starts from (output bias set), the momentum growing as (1 + t) / (10 + t) up to
    `average`; validation measures that average; checkpoints keep the steps' own weights; `average=0` ends with the
    last step's weights."""
    train, val = regions
    weights: dict[str, list] = {"start": [], "steps": []}

    def watch(event: object) -> None:
        if isinstance(event, TileEvent) and not weights["start"]:  # step 1 under way: the bias is set
            weights["start"] = trainer.model.get_weights()
        if isinstance(event, StepEvent):
            weights["steps"].append(trainer.model.get_weights())
            if event.step == 4:
                trainer.stop()

    trainer = Trainer(_model(), [train], val, TrainConfig(steps=6, tile=768, average=0.2), tmp_path / "run",
                      listeners=[watch])
    history = trainer.run()
    assert trainer.step == 4
    expected = weights["start"]
    for t, own in enumerate(weights["steps"]):
        rate = 1 - min(0.2, (1 + t) / (10 + t))
        expected = [e + rate * (w - e) for e, w in zip(expected, own)]
    for final, want in zip(trainer.model.get_weights(), expected):
        np.testing.assert_allclose(final, want, rtol=1e-5, atol=1e-7)
    assert max(np.abs(f - w).max() for f, w in zip(trainer.model.get_weights(), weights["steps"][-1])) > 1e-4
    saved = load_model(tmp_path / "run" / "checkpoints" / "step-000004" / "model.keras")
    for a, b in zip(saved.get_weights(), weights["steps"][-1]):
        assert np.array_equal(a, b)
    assert history[-1].val_dice == pytest.approx(region_sums(trainer.model, val.image, val.labels, tile=None).dice,
                                                 abs=1e-6)
    last: list = []
    plain = Trainer(_model(), [train], None, TrainConfig(steps=2, tile=None, average=0),
                    listeners=[lambda e: last.append(plain.model.get_weights()) if isinstance(e, StepEvent) else None])
    plain.run()
    for a, b in zip(plain.model.get_weights(), last[-1]):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("tile", [512, None], ids=["tiled", "one tensor"])
def test_pause_holds_and_resume_finishes(regions: tuple, tile: int | None) -> None:
    """Paused before the first step and again after the first: no step runs until resumed."""
    train, _ = regions
    steps: list[float] = []

    def on_step(event: object) -> None:
        if isinstance(event, StepEvent):
            steps.append(time.monotonic())
            if event.step == 1:
                trainer.pause()

    trainer = Trainer(_model(), [train], None, TrainConfig(steps=3, tile=tile), listeners=[on_step])
    trainer.pause()
    worker = threading.Thread(target=trainer.run)
    worker.start()
    time.sleep(1.0)
    assert trainer.paused and steps == [] and worker.is_alive()
    trainer.resume()
    deadline = time.monotonic() + 120
    while not steps and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(2.0)  # a step on this small region takes well under a second once compiled
    assert trainer.paused and len(steps) == 1 and worker.is_alive()
    resumed_at = time.monotonic()
    trainer.resume()
    worker.join(timeout=120)
    assert not worker.is_alive() and len(steps) == 3 and steps[1] > resumed_at


def test_a_run_that_fails_before_its_first_step_leaves_no_checkpoint(regions: tuple, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray workers that could not start failed the first step; the step-0 checkpoint then made the folder refuse a
    new run ('already holds a run; pass --resume'), for a run that had nothing to resume."""
    from gigapath_desktop.training.checkpoints import has_checkpoint

    trainer = Trainer(_model(), [regions[0]], None, TrainConfig(steps=3, tile=512), tmp_path / "run")

    def fail() -> None:
        raise TrainingError("the 3 Ray worker(s) did not start within 300 s")

    monkeypatch.setattr(trainer, "_train_step", fail)
    with pytest.raises(TrainingError, match="did not start"):
        trainer.run()
    assert not has_checkpoint(tmp_path / "run")
    stopped = Trainer(_model(), [regions[0]], None, TrainConfig(steps=3, tile=512), tmp_path / "stopped")
    stopped.stop()  # a stop before the first step is no failure: its (step 0) checkpoint stays resumable
    stopped.run()
    assert has_checkpoint(tmp_path / "stopped")


def test_resume_without_checkpoint_is_an_error(regions: tuple, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="no checkpoint"):
        Trainer.from_checkpoint(tmp_path, [regions[0]])


def test_resume_falls_back_to_the_older_checkpoint_when_the_latest_is_unreadable(regions: tuple, tmp_path: Path) -> None:
    train, _ = regions
    run_dir = tmp_path / "run"
    Trainer(_model(), [train], None, TrainConfig(steps=4, tile=512, checkpoint_every=2), run_dir).run()
    root = run_dir / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-000002", "step-000004"]
    (root / "step-000004" / "model.keras").write_bytes(b"damaged")
    events: list = []
    resumed = Trainer.from_checkpoint(run_dir, [train], listeners=[events.append])
    assert resumed.step == 2 and len(resumed.history) == 2
    (warning,) = [e.message for e in events if isinstance(e, WarningEvent)]
    assert "step-000004" in warning and "resuming from step-000002" in warning
    resumed.run()  # a second save of step 4 never overwrites the damaged folder; it goes beside it
    assert (root / "latest").read_text() == "step-000004.1" and resumed.step == 4
    assert Trainer.from_checkpoint(run_dir, [train]).step == 4
    (root / "latest").write_text("step-999999")
    assert Trainer.from_checkpoint(run_dir, [train]).step == 4  # a dangling pointer falls back as well
    (root / "step-000004.1" / "average.npz").unlink()  # the weight average lost: said, as the run cannot end exactly
    events.clear()
    assert Trainer.from_checkpoint(run_dir, [train], listeners=[events.append]).step == 4
    assert any("lacks its weight average" in e.message for e in events if isinstance(e, WarningEvent))
    for npz in (root / "step-000004.1").glob("*.npz"):  # an empty file of a full disk (np.load: EOFError)
        npz.write_bytes(b"")
    with pytest.raises(TrainingError, match="step-000004.1: No data left in file"):  # (was a traceback)
        Trainer.from_checkpoint(run_dir, [train])


def test_stop_during_validation_keeps_the_finished_step_on_record(regions: tuple, tmp_path: Path) -> None:
    train, val = regions
    run_dir = tmp_path / "run"
    trainer = Trainer(_model(), [train], val, TrainConfig(steps=5, tile=512), run_dir)
    passes = {"train": 2 * 3 * 3}  # tiles of a training step: validation tiles come after them

    def stop_in_validation(event: object) -> None:
        if isinstance(event, TileEvent) and event.step == 2 and event.done == event.total == passes["train"]:
            trainer.stop()  # after the step's last tile: the validation pass that follows is what stops
    trainer.listeners.append(stop_in_validation)
    trainer.run()
    assert trainer.step == 2 and [e.step for e in trainer.history] == [1, 2]
    assert trainer.history[-1].val_dice is None, "the interrupted validation is not invented"
    resumed = Trainer.from_checkpoint(run_dir, [train])
    assert resumed.step == 2 and [e.step for e in resumed.history] == [1, 2]


def test_resume_takes_a_new_learning_rate_and_rebuilds_metrics(regions: tuple, tmp_path: Path) -> None:
    train, _ = regions
    run_dir = tmp_path / "run"
    Trainer(_model(), [train], None, TrainConfig(steps=2, tile=512, learning_rate=0.02), run_dir).run()
    events: list = []
    resumed = Trainer.from_checkpoint(run_dir, [train], listeners=[events.append],
                                      changes={"steps": 3, "learning_rate": 0.005, "tile": 256, "memory_budget": 3.0})
    assert resumed.config.learning_rate == 0.005 and resumed.schedule.peak == 0.005
    said = [e.message for e in events if "resuming at step" in getattr(e, "message", "")]
    assert said == ["resuming at step 2 with steps 3 (was 2), peak learning rate 0.005 (was 0.02), tile 256 (was 512)"], \
        "every setting that differs from the run's, said (the same memory budget is not)"
    metrics = run_dir / "metrics.csv"
    metrics.write_text("step,loss\n1,garbage\n99,x\n")  # damaged (or deleted) history comes back from the checkpoint
    resumed.listeners.append(MetricsWriter(metrics, resumed.history))
    resumed.run()
    assert [r["step"] for r in read_metrics(metrics)] == ["1", "2", "3"]
    assert float(read_metrics(metrics)[-1]["learning_rate"]) <= 0.005
    with pytest.raises(Exception, match="finite"):
        Trainer.from_checkpoint(run_dir, [train], changes={"learning_rate": float("nan")})


def test_the_first_decode_of_a_region_can_be_stopped(synthetic_slide: Path, tmp_path: Path) -> None:
    from gigapath_desktop import Cancelled
    from gigapath_desktop.training.job import TrainJob, run_train_job

    asked: list[bool] = []

    def cancel() -> bool:
        asked.append(True)
        return True

    job = TrainJob.one_slide(synthetic_slide, Region(0, 0, 3000, 2200), tmp_path / "run", TrainConfig(steps=1))
    with pytest.raises(Cancelled):
        run_train_job(job, cancel=cancel)
    assert asked and not (tmp_path / "run").exists(), "stopped while decoding; no run folder is left behind"


def test_a_prefetched_step_equals_the_step_and_a_stale_prefetch_is_dropped(regions: tuple) -> None:
    """The Trainer prepares the next one-tensor step's inputs on a thread: the same step, bit for bit; inputs
    prepared for an earlier step are dropped, those of a later step kept (the guard retries a step)."""
    from gigapath_desktop.model.geometry import model_geometry
    from gigapath_desktop.training.augment import Augmentation
    from gigapath_desktop.training.prefetch import StepPrefetch

    model = _model()
    region = Augmentation.draw(seed=1, step=3).apply(regions[0])
    prefetch = StepPrefetch(model_geometry(model))
    try:
        prefetch.start(4, region)
        assert prefetch.take(5) is None and prefetch.take(4) is None, "a stale prefetch is dropped, not kept"
        prefetch.start(4, region)
        assert prefetch.take(3) is None, "the step after a retried one is still coming"
        inputs = prefetch.take(4)
    finally:
        prefetch.close()
    loss, _, grads = region_step(model, region.image, region.labels, tile=None, inputs=inputs)
    again = region_step(model, region.image, region.labels, tile=None)
    assert loss == again[0] and all(np.array_equal(a, b) for a, b in zip(grads, again[2]))


def _k_class_warnings(image: np.ndarray, labels: np.ndarray, name: str,
                      val: RegionData | None = None) -> list[str]:
    """The warnings one step of a Background / Tumor / Stroma model on (image, labels) gives."""
    from gigapath_desktop.annotations import ClassMap
    from gigapath_desktop.model.info import ModelInfo, attach_info

    keras.utils.set_random_seed(0)
    model = build_unet(classes=3)
    attach_info(model, ModelInfo(ClassMap.named(["Background", "Tumor", "Stroma"])))
    events: list = []
    Trainer(model, [RegionData(image, labels, name=name)], val, TrainConfig(steps=1, tile=None),
            listeners=[events.append]).run()
    return [e.message for e in events if isinstance(e, WarningEvent)]


def test_a_one_class_warning_names_the_class_of_a_k_class_model(regions: tuple) -> None:
    image = np.asarray(regions[0].image)[:256, :256]
    assert _k_class_warnings(image, np.full((256, 256), 2, np.uint8), "stroma") == [
        "the labels of stroma are 100.0 % Stroma: the model cannot learn the other classes (Background, Tumor) from "
        "it; label some of each class in it, or enlarge the region"]


def test_a_validation_region_of_one_class_is_warned_of(regions: tuple) -> None:
    """Its Dice says little: a model that finds nothing scores 1.0 on a region of glass."""
    image = np.asarray(regions[0].image)[:256, :256]
    labels = np.zeros((256, 256), np.uint8)  # every class labelled in training
    labels[:96], labels[160:] = 1, 2
    glass = RegionData(image, np.zeros((256, 256), np.uint8), name="glass")
    assert _k_class_warnings(image, labels, "mixed", glass) == [
        "the labels of glass are 100.0 % Background: its validation Dice says little about the other classes; "
        "validate on a region that holds them too"]


def test_a_class_no_region_labels_is_named_before_training(regions: tuple) -> None:
    """Sparse strokes of Tumor and Stroma only: Background is never learnt (the app's tester saw 0 % background)."""
    labels = np.full((256, 256), 255, np.uint8)
    labels[:64, :64], labels[128:192, 128:192] = 1, 2
    assert _k_class_warnings(np.asarray(regions[0].image)[:256, :256], labels, "strokes") == [
        "no training region has labels of Background: the model will never predict it; label some of it (a few "
        "strokes are enough), or train with dense labels (unlabelled pixels are Background)"]


def test_a_collapse_names_the_class_a_k_class_model_answers_everywhere() -> None:
    from gigapath_desktop.annotations import ClassMap
    from gigapath_desktop.model.info import ModelInfo, attach_info
    from gigapath_desktop.training.gradients import LossTerms

    model = build_unet(classes=3)
    attach_info(model, ModelInfo(ClassMap.named(["Background", "Tumor", "Stroma"])))
    guard = Trainer(model, [RegionData(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8))]).guard
    collapsed = LossTerms(np.array([900.0, 0, 0]), np.full(3, 1000.0), np.array([900.0, 600, 500]),
                          np.array([900.0, 0, 0]), np.array([2000.0, 0, 0]), 0.0, 2000.0)
    verdicts = [guard.check(1.0, collapsed) for _ in range(guard.patience)]
    assert "it predicts Background everywhere" in verdicts[-1].reason
