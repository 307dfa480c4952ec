"""The Trainer: optimizer steps over whole regions, plain events, pause/resume/stop, atomic checkpoints.

Runs the same from the GUI (in a worker thread), the CLI and a server: it never imports Qt and reports only through
listener callbacks. Control methods (`pause`, `resume`, `stop`) are safe to call from any thread; they take effect
between tiles, and a stopped step is discarded, so the weights always belong to a whole number of steps.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
import psutil
import tensorflow as tf

from gigapath_desktop.errors import Cancelled, TrainingError
from gigapath_desktop.model.io import load_model, save_model
from gigapath_desktop.training.data import RegionData
from gigapath_desktop.training.events import Event, Listener, LogEvent, StepEvent, TileEvent
from gigapath_desktop.training.gradients import BCE_WEIGHT, region_gradients, region_sums

CHECKPOINTS = "checkpoints"
KEEP_CHECKPOINTS = 2


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 50
    learning_rate: float = 0.03
    tile: int | None = 2048  # output tile side in pixels; None trains on each region as one tensor
    bce_weight: float = BCE_WEIGHT
    checkpoint_every: int = 10
    validate_every: int = 1

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


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
        val: RegionData | None = None,
        config: TrainConfig = TrainConfig(),
        run_dir: str | os.PathLike[str] | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        if not train:
            raise TrainingError("no training region given")
        self.model = model
        self.train = list(train)
        self.val = val
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.listeners = list(listeners)
        self.step = 0
        self.history: list[StepEvent] = []
        self.device = device_name()
        self.optimizer = keras.optimizers.Adam(config.learning_rate)
        self.optimizer.build(model.trainable_variables)
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

    # --- running -----------------------------------------------------------------------------------------------
    def run(self) -> list[StepEvent]:
        """Train until `config.steps` or `stop()`; checkpoints every N steps, at the end and on stop."""
        pixels = sum(r.pixels for r in self.train)
        self._emit(LogEvent(f"training on {self.device}: {len(self.train)} region(s), {pixels / 1e6:.1f} MP, "
                            f"tile {self.config.tile or 'whole region'}, from step {self.step}"))
        try:
            while self.step < self.config.steps and not self._stop.is_set():
                self._emit(self._train_step())
                if self.run_dir is not None and self.step % self.config.checkpoint_every == 0:
                    self.save_checkpoint()
        except Cancelled:
            self._emit(LogEvent(f"stopped during step {self.step + 1}; keeping the weights of step {self.step}"))
        finally:
            if self.run_dir is not None:
                self.save_checkpoint()
        return self.history

    def _train_step(self) -> StepEvent:
        region = self.train[self.step % len(self.train)]
        start = time.perf_counter()
        loss, dice, grads = region_gradients(
            self.model, region.image, region.labels, tile=self.config.tile, bce_weight=self.config.bce_weight,
            cancel=self._between_tiles, progress=lambda done, total: self._emit(TileEvent(self.step + 1, done, total)),
        )
        if not (np.isfinite(loss) and all(np.isfinite(g).all() for g in grads)):
            raise TrainingError(f"loss became {loss} at step {self.step + 1}; the weights of step {self.step} are "
                                "kept; lower the learning rate")
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients([(tf.constant(g, v.dtype), v) for g, v in zip(grads, variables)])
        seconds = time.perf_counter() - start
        self.step += 1
        event = StepEvent(
            step=self.step, total_steps=self.config.steps, loss=loss, dice=dice, val_dice=self._validate(),
            seconds=seconds, mpix_per_s=region.pixels / 1e6 / seconds, rss_bytes=psutil.Process().memory_info().rss,
            device_memory_bytes=device_memory_bytes(), device=self.device,
        )
        self.history.append(event)
        return event

    def _validate(self) -> float | None:
        if self.val is None or self.step % self.config.validate_every:
            return None
        return region_sums(self.model, self.val.image, self.val.labels, tile=self.config.tile,
                           cancel=self._between_tiles).dice

    def _between_tiles(self) -> bool:
        self._running.wait()
        return self._stop.is_set()

    def _emit(self, event: Event) -> None:
        for listener in self.listeners:
            listener(event)

    # --- checkpoints -------------------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write run_dir/checkpoints/step-N/ (model, optimizer state, progress) and point `latest` at it."""
        assert self.run_dir is not None
        root = self.run_dir / CHECKPOINTS
        final = root / f"step-{self.step:06d}"
        tmp = root / f".{final.name}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_model(self.model, tmp / "model.keras")
        np.savez(tmp / "optimizer.npz", *[v.numpy() for v in self.optimizer.variables])
        state = {"step": self.step, "config": asdict(self.config), "history": [e.as_dict() for e in self.history]}
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _write_atomically(root / "latest", final.name)
        for old in sorted(root.glob("step-*"))[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    @classmethod
    def from_checkpoint(
        cls,
        run_dir: str | os.PathLike[str],
        train: Sequence[RegionData],
        val: RegionData | None = None,
        listeners: Sequence[Listener] = (),
        steps: int | None = None,
    ) -> "Trainer":
        """Continue a run: same weights, optimizer state, step and history as its latest checkpoint."""
        root = Path(run_dir) / CHECKPOINTS
        try:
            folder = root / (root / "latest").read_text().strip()
            state = json.loads((folder / "state.json").read_text())
        except (OSError, ValueError) as exc:
            raise TrainingError(f"{run_dir}: no checkpoint to resume from ({exc})") from None
        config = TrainConfig.from_dict(state["config"])
        if steps is not None:
            config = replace(config, steps=steps)
        trainer = cls(load_model(folder / "model.keras"), train, val, config, run_dir, listeners)
        with np.load(folder / "optimizer.npz") as saved:
            for i, variable in enumerate(trainer.optimizer.variables):
                variable.assign(saved[f"arr_{i}"])
        trainer.step = state["step"]
        trainer.history = [StepEvent(**e) for e in state["history"]]
        return trainer


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text)
    os.replace(tmp, path)
