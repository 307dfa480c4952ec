"""The Trainer: optimizer steps over whole regions, plain events, pause/resume/stop, atomic checkpoints.

Runs the same from the GUI (in a worker thread), the CLI and a server: it never imports Qt and reports only through
listener callbacks. Control methods (`pause`, `resume`, `stop`) are safe to call from any thread; they take effect
between tiles, and a stopped step is discarded, so the weights always belong to a whole number of steps.
"""
from __future__ import annotations

import os
import sys
import threading
import time
import zipfile
from collections import deque
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

import keras
import numpy as np
import psutil
import tensorflow as tf

from gigapath_desktop.errors import Cancelled, GigaPathError, TrainingError
from gigapath_desktop.model.io import load_model
from gigapath_desktop.model.geometry import model_geometry
from gigapath_desktop.model.info import model_info
from gigapath_desktop.model.unet import class_count, init_output_bias, output_channels
from gigapath_desktop.outputs import pause_point
from gigapath_desktop.training.augment import Augmentation
from gigapath_desktop.training.averaging import WeightAverage
from gigapath_desktop.training.checkpoints import read_arrays, read_state, resume_order, write_checkpoint
from gigapath_desktop.training.config import TrainConfig
from gigapath_desktop.training.data import RegionData
from gigapath_desktop.training.events import Event, Listener, LogEvent, StepEvent, TileEvent, WarningEvent
from gigapath_desktop.training.gradients import LocalExecutor, region_step, region_sums
from gigapath_desktop.training.guard import CollapseGuard, Verdict
from gigapath_desktop.training.label_warnings import label_warnings, validation_warnings
from gigapath_desktop.training.plan import estimate, prefetch_fits, step_tile
from gigapath_desktop.training.prefetch import StepPrefetch
from gigapath_desktop.training.schedule import LearningRate

KEEP_GOOD = 3  # the guard steps back to the oldest of the last few good states: the last one may already be sliding
DARK_FIELD = 80  # mean grey level of the labelled background below which a region is dark-field (fluorescence)


def device_name() -> str:
    """'GPU:0 (...)' when TensorFlow sees a GPU or Apple Metal device, else 'CPU'."""
    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU:0 ({gpus[0].name})" if gpus else "CPU"


def device_memory_bytes() -> int | None:
    """Memory TensorFlow holds on the GPU / Metal device, when it reports it."""
    if not tf.config.list_physical_devices("GPU"):
        return None
    try:
        return int(tf.config.experimental.get_memory_info("GPU:0")["current"])
    except (ValueError, RuntimeError, KeyError):
        return None


class Trainer:
    def __init__(
        self,
        model: keras.Model,
        train: Sequence[RegionData],
        val: RegionData | Sequence[RegionData] | None = None,
        config: TrainConfig = TrainConfig(),
        run_dir: str | os.PathLike[str] | None = None,
        listeners: Sequence[Listener] = (),
        executor: LocalExecutor | None = None,
    ) -> None:
        """Each step trains on one whole region of `train`, in a shuffled order drawn from the seed (the same again
        on resume); validation runs over every region of `val`. `executor` runs the tile passes (default: this
        process; `RayExecutor`: N workers, the same result)."""
        if not train:
            raise TrainingError("no training region given")
        self.model = model
        self.train = list(train)
        self.val = [val] if isinstance(val, RegionData) else list(val or ())
        self.config = replace(config, fold=model_geometry(model).block)  # the setting builds a new run's model; a
        # given or resumed one keeps its own fold, and the config (planner, checkpoints, config.json) says which
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.listeners = list(listeners)
        self.step = 0
        self.history: list[StepEvent] = []
        self.executor = executor
        self.device = getattr(executor, "device", None) or device_name()
        self.schedule = LearningRate(config.learning_rate, config.warmup_steps, config.steps, config.decay)
        self.optimizer = keras.optimizers.Adam(self.schedule, global_clipnorm=config.clip_norm)
        self.optimizer.build(model.trainable_variables)
        self.average = WeightAverage(model.trainable_variables, config.average)
        self.recoveries = 0
        self.classes = model_info(model).classes.names  # the model's class names, background first
        self.guard = CollapseGuard(classes=self.classes)
        self._dark_field = False  # fluorescence-like regions (dark background) get light-gain colour augmentation
        self._drawn: tuple[int, RegionData] | None = None  # the last step whose view `_view` drew, and that view
        self._saved: int | None = None  # the step of the weights last checkpointed; None once they changed
        self._good: deque[tuple[list[np.ndarray], list[np.ndarray]]] = deque(maxlen=KEEP_GOOD)
        self._running = threading.Event()
        self._running.set()
        self._stop = threading.Event()

    # --- control, from any thread ------------------------------------------------------------------------------
    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def learning_rate(self) -> float:
        return float(self.schedule(self.optimizer.iterations))

    # --- running -----------------------------------------------------------------------------------------------
    def run(self) -> list[StepEvent]:
        """Train until `config.steps` or `stop()`; checkpoints every N steps, at the end and on stop. The run ends
        with the weight average in `model` (`averaging`: what validation measured, what the job saves), finished or
        stopped; the steps' own weights and the average stay in the checkpoint, the place to go on from."""
        pixels = sum(r.pixels for r in self.train)
        self._emit(LogEvent(f"training on {self.device}: {len(self.train)} region(s), {pixels / 1e6:.1f} MP, "
                            f"tile {self.config.tile or 'whole region'}, from step {self.step}"))
        if self.config.tile == "auto":
            for region in {id(r): r for r in self.train + self.val}.values():
                plan = estimate(*region.labels.shape, self._tile(region), fold=self.config.fold)
                self._emit(LogEvent(f"plan for {region.name or 'the region'}: {plan.describe()}"))
        self._prepare()
        self._prefetch = StepPrefetch(model_geometry(self.model))
        try:
            while self.step < self.config.steps and not self._stop.is_set():
                event = self._train_step()
                if event is None:
                    continue
                self._emit(event)
                if self.run_dir is not None and self.step % self.config.checkpoint_every == 0:
                    self.save_checkpoint()
        except Cancelled:
            self._emit(LogEvent(f"stopped during step {self.step + 1}; keeping the weights of step {self.step}"))
        finally:
            self._prefetch.close()
            # a run that failed before its first step has nothing to keep: a checkpoint would only make its folder
            # refuse a new run ("already holds a run") after, e.g., Ray workers that could not start
            failed_before_a_step = sys.exc_info()[0] is not None and self.step == 0
            if self.run_dir is not None and self._saved != self.step and not failed_before_a_step:
                self.save_checkpoint()
        self.average.apply()
        self._saved = None  # `model` no longer holds the steps' own weights
        return self.history

    def _prepare(self) -> None:
        """Check the labels (warn when nearly one class), start the output bias at the class shares, and keep the
        starting state as a good one (unless a resumed run brought its own)."""
        shares = [region.class_shares(class_count(self.model)) for region in self.train]
        self._dark_field = all(region.background_level() < DARK_FIELD for region in self.train)
        for text in label_warnings(self.train, shares, self.classes) + validation_warnings(self.val, self.classes):
            self._emit(WarningEvent(text))
        if self.step == 0 and self.config.init_bias:
            init_output_bias(self.model, np.mean(shares, axis=0))
        if self.step == 0:
            self.average.reset()  # from the weights the first step starts from, output bias included
        if not self._good:  # a resumed run keeps the good states its checkpoint holds, as the whole run would
            self._keep_good()

    @property
    def detail_columns(self) -> list[str]:
        """The keys of `StepEvent.val_detail`: validation Dice per class (K-class models), per slide (several)."""
        return list(self._details())

    def _details(self) -> dict[str, tuple[str, int | str]]:
        """column -> ("class", index) or ("slide", slide path); a slide's column is its file name, or its whole
        path where two validation slides share a name."""
        classes = self.classes if output_channels(self.model) > 1 else []
        details: dict[str, tuple[str, int | str]] = {f"val_dice:{name}": ("class", k) for k, name in enumerate(classes)}
        slides = list(dict.fromkeys(region.slide for region in self.val))
        names = [Path(slide).name for slide in slides]
        for slide, name in zip(slides if len(slides) > 1 else [], names):
            details[f"val_dice:{name if names.count(name) == 1 and name not in classes else slide}"] = ("slide", slide)
        return details

    def region_of_step(self, step: int) -> RegionData:
        """The training region of a step: each pass over the regions in its own seeded random order."""
        count = len(self.train)
        order = np.random.default_rng([self.config.seed, step // count]).permutation(count)
        return self.train[order[step % count]]

    def _train_step(self) -> StepEvent | None:
        """One optimizer step, or None when the guard stepped back to the last good weights instead."""
        region = self._view(self.step)
        start = time.perf_counter()
        tile = self._tile(region)
        inputs = self._prefetch.take(self.step) if tile is None else None
        if self.step + 1 < self.config.steps:
            upcoming = self._view(self.step + 1)
            if self._tile(upcoming) is None and prefetch_fits(*upcoming.labels.shape, self.config.memory_budget,
                                                              self.config.fold):
                self._prefetch.start(self.step + 1, upcoming)
        loss, terms, grads = region_step(
            self.model, region.image, region.labels, tile=tile, bce_weight=self.config.bce_weight,
            cancel=self._between_tiles, progress=lambda done, total: self._emit(TileEvent(self.step + 1, done, total)),
            executor=self.executor, inputs=inputs,
        )
        verdict = self.guard.check(loss, terms)
        if verdict.reason is None and not all(np.isfinite(g).all() for g in grads):
            verdict = Verdict(False, "the gradient became non-finite")
        if verdict.reason is not None:
            self._recover(verdict.reason)
            return None
        if verdict.good:
            self._keep_good()
        learning_rate = self.learning_rate
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients([(tf.constant(g, v.dtype), v) for g, v in zip(grads, variables)])
        self.step += 1
        self.average.update()
        seconds = time.perf_counter() - start
        pause_point("step applied")
        val_dice, val_detail = self._validate()
        event = StepEvent(
            step=self.step, total_steps=self.config.steps, loss=loss, dice=terms.dice, val_dice=val_dice,
            seconds=seconds, mpix_per_s=region.pixels / 1e6 / seconds, rss_bytes=psutil.Process().memory_info().rss,
            device_memory_bytes=device_memory_bytes(), device=self.device, learning_rate=learning_rate,
            recoveries=self.recoveries, region=region.name, val_detail=val_detail,
        )
        self.history.append(event)
        return event

    def _view(self, step: int) -> RegionData:
        """The training region of `step` as that step sees it: its own draw of flips, turns, colour, blur and ink
        (when augmenting). Drawn once: the step before looks at it to prefetch."""
        if self._drawn is None or self._drawn[0] != step:
            region = self.region_of_step(step)
            if self.config.augment:
                region = Augmentation.draw(self.config.seed, step, self.config.colour_jitter, self._dark_field,
                                           self.config.ink).apply(region)
            self._drawn = (step, region)
        return self._drawn[1]

    def _keep_good(self) -> None:
        self._good.append(([w.copy() for w in self.model.get_weights()], [v.numpy() for v in self.optimizer.variables]))

    def _recover(self, reason: str) -> None:
        """Back to a good state a few steps before the trip, with half the learning rate warming up again, or give up.

        Adam's step count is restored, its moment estimates are cleared: they hold the momentum that led into the
        collapse, and restoring them was measured to slide into the same collapse again (tests/test_recipe.py)."""
        if self.recoveries >= self.config.max_recoveries:
            raise TrainingError(
                f"training failed at step {self.step + 1}: {reason}, again after {self.recoveries} restart(s) "
                f"with lower learning rates; check the labels (both classes present, matching the image) or "
                f"start with a lower --lr than {self.config.learning_rate:g}")
        weights, state = self._good[0]
        self._good.clear()
        self.model.set_weights(weights)
        for variable, value in zip(self.optimizer.variables, state):
            variable.assign(value if variable is self.optimizer.iterations else np.zeros_like(value))
        self.average.reset()
        self._keep_good()
        self.recoveries += 1
        self._saved = None
        self.schedule.scale *= 0.5
        self.schedule.restart = int(self.optimizer.iterations.numpy())
        self.guard.reset()
        self._emit(WarningEvent(f"step {self.step + 1}: {reason}; restarted from the last good weights with the "
                                f"learning rate lowered to {self.schedule.scale:g}x (restart {self.recoveries} of "
                                f"{self.config.max_recoveries})"))

    def _validate(self) -> tuple[float | None, dict[str, float] | None]:
        """Validation Dice of the weight average (what the run would end with now) over all validation pixels
        together, and per class and per slide (`detail_columns`); (None, None) when not due or stopped midway (the
        step itself is done and is recorded)."""
        if not self.val or self.step % self.config.validate_every:
            return None, None
        try:
            with self.average.applied():
                sums = [region_sums(self.model, region.image, region.labels, tile=self._tile(region),
                                    cancel=self._between_tiles, executor=self.executor) for region in self.val]
        except Cancelled:
            return None, None
        total = sum(sums[1:], sums[0])
        detail: dict[str, float | None] = {}
        for column, (kind, key) in self._details().items():
            if kind == "class":  # a class absent from the validation labels has no Dice
                detail[column] = float(total.class_dice[key]) if total.truth[key] > 0 else None
            else:
                per_slide = [t for t, region in zip(sums, self.val) if region.slide == key]
                detail[column] = sum(per_slide[1:], per_slide[0]).dice
        return total.dice, detail or None

    def _tile(self, region: RegionData) -> int | None:
        """The tile side of a step on `region` (as augmented: a quarter turn swaps its sides)."""
        return step_tile(self.config.tile, region.labels.shape, self.config.memory_budget,
                         distributed=self.executor is not None, fold=self.config.fold)

    def _between_tiles(self) -> bool:
        self._running.wait()
        return self._stop.is_set()

    def _emit(self, event: Event) -> None:
        for listener in self.listeners:
            listener(event)

    # --- checkpoints -------------------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write run_dir/checkpoints/step-N/ (model, optimizer state, weight average, the guard's memory and the
        good states it steps back to, progress) and point `latest` at it (never overwriting: see
        `checkpoints.write_checkpoint`)."""
        assert self.run_dir is not None
        state = {"step": self.step, "config": asdict(self.config), "history": [e.as_dict() for e in self.history],
                 "recoveries": self.recoveries, "lr_scale": self.schedule.scale, "lr_restart": self.schedule.restart,
                 "guard": self.guard.state(), "average_updates": self.average.updates}
        arrays = {"optimizer": [v.numpy() for v in self.optimizer.variables], "average": self.average.values,
                  "good": [array for weights, optimizer in self._good for array in (*weights, *optimizer)]}
        final = write_checkpoint(self.run_dir, self.model, arrays, state)
        self._saved = self.step
        return final

    @classmethod
    def from_checkpoint(
        cls,
        run_dir: str | os.PathLike[str],
        train: Sequence[RegionData],
        val: RegionData | Sequence[RegionData] | None = None,
        listeners: Sequence[Listener] = (),
        changes: dict[str, object] | None = None,
        executor: LocalExecutor | None = None,
    ) -> "Trainer":
        """Continue a run: same weights, optimizer state, weight average, guard, step and history as its latest
        readable checkpoint (an unreadable latest one is reported and the older kept one used). `changes` are
        settings to change from there on, e.g. {"steps": 300, "learning_rate": 0.01}; a changed learning rate is
        said in the log."""
        problems = []
        for folder in resume_order(Path(run_dir)):
            try:
                trainer = cls._load(folder, train, val, listeners, changes or {}, executor)
            except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, GigaPathError) as exc:
                problems.append(f"{folder.name}: {exc}")
                continue
            for problem in problems:
                trainer._emit(WarningEvent(f"checkpoint {problem}; resuming from {folder.name} instead"))
            return trainer
        raise TrainingError(f"{run_dir}: no checkpoint to resume from ({'; '.join(problems) or 'none saved'})")

    @classmethod
    def _load(cls, folder: Path, train: Sequence[RegionData], val: RegionData | Sequence[RegionData] | None,
              listeners: Sequence[Listener], changes: dict[str, object], executor: LocalExecutor | None) -> "Trainer":
        state = read_state(folder)
        previous = TrainConfig.from_dict(state["config"])
        model = load_model(folder / "model.keras")
        config = replace(previous, **changes)
        arrays = read_arrays(folder, "optimizer")
        trainer = cls(model, train, val, config, folder.parent.parent, listeners, executor)
        if arrays is None or len(arrays) != len(trainer.optimizer.variables):
            raise ValueError("optimizer state missing or not matching the model")
        for variable, value in zip(trainer.optimizer.variables, arrays):
            variable.assign(value)
        average = read_arrays(folder, "average")
        if average is not None:  # (a run from before the average: it starts from the loaded weights)
            trainer.average.load(average, state.get("average_updates", 0))
        elif state.get("average_updates"):
            trainer._emit(WarningEvent(f"checkpoint {folder.name} lacks its weight average (average.npz): it starts "
                                       f"again from the loaded weights, so the run does not end as it would have"))
        trainer._good.extend(_good_states(read_arrays(folder, "good") or [], model.get_weights(), arrays))
        trainer.step = state["step"]
        trainer.recoveries = state.get("recoveries", 0)
        trainer.guard.load(state.get("guard", {}))
        trainer.schedule.scale = state.get("lr_scale", 1.0)
        trainer.schedule.restart = state.get("lr_restart", 0)
        trainer.history = [StepEvent(**e) for e in state["history"]]
        trainer._saved = trainer.step
        changed = [f"{RESUME_NAMES.get(name, name)} {getattr(config, name)} (was {getattr(previous, name)})"
                   for name in changes if getattr(config, name) != getattr(previous, name)]
        if changed:  # said, as what the run is now is not what it started with
            trainer._emit(LogEvent(f"resuming at step {trainer.step} with {', '.join(changed)}"))
        return trainer


RESUME_NAMES = {"learning_rate": "peak learning rate", "memory_budget": "memory budget (GiB)",
                "checkpoint_every": "a checkpoint every (steps)"}


def _good_states(saved: list[np.ndarray], weights: list[np.ndarray],
                 optimizer: list[np.ndarray]) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    """The (weights, optimizer state) pairs a checkpoint's good.npz holds, one after another; a list that does not
    match the model and its optimizer array for array is refused here, not at a later restart."""
    size = len(weights) + len(optimizer)
    if len(saved) % size or any(a.shape != b.shape for k in range(0, len(saved), size)
                                for a, b in zip(saved[k : k + size], (*weights, *optimizer))):
        raise ValueError("the guard's good states do not match the model")
    return [(saved[k : k + len(weights)], saved[k + len(weights) : k + size]) for k in range(0, len(saved), size)]
