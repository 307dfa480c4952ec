"""Exact whole-region loss and gradients, computed tile by tile in memory bounded by one tile.

The loss over a region is a function of a few global sums over its labelled pixels (per class c; p: probability,
y: one-hot label; the tissue model has the one class "tissue"):
    I_c = sum p_c y_c,  P_c = sum p_c,  Y_c = sum y_c,  B = sum cross-entropy(p, y),  N = sum 1
    loss = 1 - mean over the classes present of (2 I_c + s) / (P_c + Y_c + s) + w B / N   (soft Dice + w CE)
so by the chain rule  d loss / d theta = sum_c (a_c dI_c/dtheta + b_c dP_c/dtheta) + c dB/dtheta  with scalars
that depend only on the global sums. Pass 1 runs the model forward over every tile and adds up the sums (float64
across tiles); pass 2 runs forward + backward per tile on  sum_c (a_c I_c,t + b_c P_c,t) + c B_t  and adds up the
tile gradients in float64. Unlabelled pixels (255) are left out of every sum.
Both passes see the same pixels as a whole-region forward would (see `model.tiling`), so the result is the
whole-region gradient. `tile=None` takes the whole region as one tile and runs forward once: the sums, the
coefficients and the backward pass in one graph (the fastest plan where it fits the memory budget);
`reference_step` differentiates the loss itself, the independent truth the tests hold every plan to.

Per-tile reductions stay short (each row of a tile in float32, then a float64 sum of the row sums), which is why the
float32 result is closer to the float64 truth than one long float32 reduction over the whole region.
"""
from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass, fields
from typing import Any, Callable, Iterable, Iterator, Sequence

import keras
import numpy as np
import psutil
import tensorflow as tf

from gigapath_desktop.annotations.raster import UNLABELLED
from gigapath_desktop.errors import Cancelled, TrainingError
from gigapath_desktop.model.geometry import Geometry, model_geometry
from gigapath_desktop.model.tiling import Tile, TilePlan
from gigapath_desktop.parallel import bounded_map
from gigapath_desktop.training.config import BCE_WEIGHT
from gigapath_desktop.training.engine import SMOOTH, dice_coefficients, engine_for, present_classes, step_tensors
from gigapath_desktop.training.plan import CALIBRATIONS

CancelFn = Callable[[], bool]
TileProgressFn = Callable[[int, int], None]


@dataclass
class LossTerms:
    """Global sums over the labelled pixels, one entry per output channel (the tissue model has one channel, a
    K-class model K); tiles add up."""

    intersection: np.ndarray
    predicted: np.ndarray
    truth: np.ndarray
    hard_intersection: np.ndarray
    hard_predicted: np.ndarray
    bce: float
    valid: float

    def __add__(self, other: "LossTerms") -> "LossTerms":
        return LossTerms(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @classmethod
    def from_vector(cls, values: Sequence[float]) -> "LossTerms":
        """From the engine's flat layout [I, P, Y, hard I, hard P (C each), bce, valid]."""
        values = np.asarray(values, np.float64)
        c = (len(values) - 2) // 5
        return cls(*(values[k * c : (k + 1) * c] for k in range(5)), float(values[-2]), float(values[-1]))

    @classmethod
    def total(cls, vectors: Iterable[Sequence[float]]) -> "LossTerms":
        """The sums of a region from its tiles' vectors, added in the order given (plan order: every executor
        gives the same float64 result)."""
        total: np.ndarray | None = None
        for vector in vectors:
            total = np.array(vector, np.float64) if total is None else total + vector
        if total is None:
            raise TrainingError("the region has no tiles")
        return cls.from_vector(total)

    @property
    def present(self) -> np.ndarray:
        """Channels that count in the Dice (`engine.present_classes`, the rule the one-tensor step applies too)."""
        return present_classes(np, self.truth) > 0

    def loss(self, bce_weight: float = BCE_WEIGHT) -> float:
        soft = (2 * self.intersection + SMOOTH) / (self.predicted + self.truth + SMOOTH)
        return 1.0 - float(soft[self.present].mean()) + bce_weight * self.bce / max(self.valid, 1.0)

    @property
    def class_dice(self) -> np.ndarray:
        """Dice of the hard prediction (p > 0.5, or the most probable class) per channel: the figures users compare."""
        return (2 * self.hard_intersection + SMOOTH) / (self.hard_predicted + self.truth + SMOOTH)

    @property
    def dice(self) -> float:
        """The tissue Dice, or the mean Dice over the classes present."""
        return float(self.class_dice[self.present].mean())

    def coefficients(self, bce_weight: float = BCE_WEIGHT) -> np.ndarray:
        """[d loss/dI (C), d loss/dP (C), d loss/dB]: the weights of the per-tile surrogate in pass 2."""
        return dice_coefficients(np, self.intersection, self.predicted, self.truth, self.valid, bce_weight)


class LocalExecutor:
    """The tiles of a step in this process, in plan order, the next tile read on a thread while one runs.

    An executor yields per-tile results in plan order and calls `progress()` once per finished tile; the caller
    adds them up in that order, so every executor gives the same sums (see `training.ray_executor` for the other)."""

    def sums(self, model: keras.Model, dtype: str, plan: TilePlan, image: np.ndarray, labels: np.ndarray,
             cancel: CancelFn | None, progress: Callable[[], None]) -> Iterator[list[float]]:
        engine = engine_for(model, dtype)
        for x, y in _prefetched(plan, image, labels):
            _check(cancel)
            yield engine.sums(x, y).numpy().tolist()
            progress()

    def grads(self, model: keras.Model, dtype: str, plan: TilePlan, image: np.ndarray, labels: np.ndarray,
              coefficients: np.ndarray, cancel: CancelFn | None,
              progress: Callable[[], None]) -> Iterator[list[np.ndarray]]:
        engine = engine_for(model, dtype)
        weights = tf.constant(coefficients, tf.float64)
        for x, y in _prefetched(plan, image, labels):
            _check(cancel)
            yield [g.numpy() for g in engine.grads(x, y, weights)]
            progress()


LOCAL = LocalExecutor()


def region_sums(
    model: keras.Model,
    image: np.ndarray,
    labels: np.ndarray,
    *,
    tile: int | None = 2048,
    dtype: str = "float32",
    cancel: CancelFn | None = None,
    progress: TileProgressFn | None = None,
    executor: LocalExecutor | None = None,
) -> LossTerms:
    """Pass 1 alone: the global loss terms of `model` on a region (also how validation Dice is computed)."""
    plan = TilePlan.create(*labels.shape, model_geometry(model), tile)
    return LossTerms.total((executor or LOCAL).sums(model, dtype, plan, image, labels, cancel,
                                                    _counter(progress, len(plan))))


def region_gradients(model: keras.Model, image: np.ndarray, labels: np.ndarray,
                     **options: Any) -> tuple[float, float, list[np.ndarray]]:
    """(loss, Dice, gradients) of `model` on one whole region; `options` as for `region_step`."""
    loss, terms, grads = region_step(model, image, labels, **options)
    return loss, terms.dice, grads


def region_step(
    model: keras.Model,
    image: np.ndarray,
    labels: np.ndarray,
    *,
    tile: int | None = None,
    dtype: str = "float32",
    bce_weight: float = BCE_WEIGHT,
    cancel: CancelFn | None = None,
    progress: TileProgressFn | None = None,
    executor: LocalExecutor | None = None,
    inputs: tuple | None = None,
) -> tuple[float, LossTerms, list[np.ndarray]]:
    """(loss, global sums, gradients) of `model` on one whole region: `image` (H, W, 3) uint8, `labels` (H, W)
    uint8 class indices (0/1 for the tissue model) with UNLABELLED (255) pixels left out of the loss. `inputs`: a
    one-tensor step's tensors prepared beforehand (`one_tensor_inputs`), e.g. on a thread during the last step.

    `tile=None` computes on the whole region as one tensor; an int gives the same result tile by tile, in this
    process or spread over workers (`executor`). `grads` are float64 arrays aligned with
    `model.trainable_variables`. `progress(done, total)` counts tile passes.
    """
    if image.shape[:2] != labels.shape:
        raise ValueError(f"image {image.shape[:2]} and labels {labels.shape} differ in size")
    plan = TilePlan.create(*labels.shape, model_geometry(model), tile)
    if tile is None:
        _check(cancel)  # no tiles to pause or stop between (the executors check before each): it does so first
        engine, tensors = _one_tensor(model, dtype, plan, image, labels, inputs)
        sums, grads = engine.single(*tensors, tf.constant(bce_weight, tf.float64))
        terms = LossTerms.from_vector(sums.numpy())
        return terms.loss(bce_weight), terms, [g.numpy() for g in grads]
    executor = executor or LOCAL
    count = _counter(progress, 2 * len(plan))
    terms = LossTerms.total(executor.sums(model, dtype, plan, image, labels, cancel, count))
    grads = [np.zeros(v.shape, np.float64) for v in model.trainable_variables]
    for tile_grads in executor.grads(model, dtype, plan, image, labels, terms.coefficients(bce_weight), cancel, count):
        for total_grad, tile_grad in zip(grads, tile_grads):
            total_grad += tile_grad
    return terms.loss(bce_weight), terms, grads


def _counter(progress: TileProgressFn | None, total: int) -> Callable[[], None]:
    done = [0]

    def count() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total)
    return count


def tile_sums(model: keras.Model, dtype: str, plan: TilePlan, image: np.ndarray, labels: np.ndarray,
              t: Tile) -> list[float]:
    """One tile's loss terms (what a remote worker computes)."""
    engine = engine_for(model, dtype)
    return engine.sums(*_tile_tensors(plan, image, labels, t)).numpy().tolist()


def tile_grads(model: keras.Model, dtype: str, plan: TilePlan, image: np.ndarray, labels: np.ndarray, t: Tile,
               coefficients: np.ndarray) -> list[np.ndarray]:
    """One tile's share of the gradient (what a remote worker computes)."""
    engine = engine_for(model, dtype)
    x, y = _tile_tensors(plan, image, labels, t)
    return [g.numpy() for g in engine.grads(x, y, tf.constant(coefficients, tf.float64))]


def reference_step(model: keras.Model, image: np.ndarray, labels: np.ndarray, *, dtype: str = "float64",
                   bce_weight: float = BCE_WEIGHT) -> tuple[float, list[np.ndarray]]:
    """(loss, gradients) by autodiff of the loss on the whole region as one tensor: the independent truth that the
    tests hold every plan to."""
    plan = TilePlan.create(*labels.shape, model_geometry(model), None)
    engine, tensors = _one_tensor(model, dtype, plan, image, labels)
    loss, grads = engine.reference(*tensors, tf.constant(bce_weight, tf.float64))
    return float(loss), [g.numpy() for g in grads]


def one_tensor_inputs(geometry: Geometry, image: np.ndarray, labels: np.ndarray) -> tuple:
    """The tensors of a one-tensor step on a region: its pixels mirrored to the padded size and folded, its labels
    (unlabelled past the region) folded, handed to TensorFlow (a sixth of a 16 MP step's time, so the Trainer
    prepares the next step's on a thread)."""
    plan = TilePlan.create(*labels.shape, geometry, None)
    (t,) = plan.tiles()
    return _tile_tensors(plan, image, labels, t)


def _one_tensor(model: keras.Model, dtype: str, plan: TilePlan, image: np.ndarray, labels: np.ndarray,
                inputs: tuple | None = None) -> tuple:
    """(engine, tensors) of a one-tile plan, refused when it would not fit in memory."""
    engine = engine_for(model, dtype)
    _check_whole_fits(plan, dtype)
    if inputs is None:
        return engine, one_tensor_inputs(plan.geometry, image, labels)
    blocks = tuple(side // plan.geometry.block for side in plan.padded_shape)
    if tuple(inputs[1].shape[1:3]) != blocks:
        raise TrainingError(f"inputs prepared for another region: {tuple(inputs[1].shape[1:3])} blocks, not {blocks}")
    return engine, inputs


def _tile_tensors(plan: TilePlan, image: np.ndarray, labels: np.ndarray, t: Tile) -> tuple:
    return step_tensors(plan.geometry.block, plan.image(image, t), plan.labels(labels, t, UNLABELLED))


def _prefetched(plan: TilePlan, image: np.ndarray, labels: np.ndarray) -> Iterator[tuple]:
    """Each tile's tensors in plan order, the next ones read and mirrored on a thread while the current one runs."""
    with closing(bounded_map(lambda t: _tile_tensors(plan, image, labels, t), plan.tiles(), workers=1)) as reads:
        for _, tensors in reads:
            yield tensors


def _check_whole_fits(plan: TilePlan, dtype: str) -> None:
    """Refuse a one-tensor step that would exhaust memory, instead of letting the machine swap or die."""
    calibration = CALIBRATIONS.get(plan.geometry.block, CALIBRATIONS[min(CALIBRATIONS)])  # else the finest fold's
    need = plan.input_pixels() * calibration.bytes_per_pixel * np.dtype(dtype).itemsize / 4
    free = psutil.virtual_memory().available
    if need > 0.9 * free:
        raise TrainingError(
            f"training on the whole {plan.height} x {plan.width} region as one tensor needs ~{need / 2**30:.0f} GiB "
            f"but {free / 2**30:.0f} GiB are free; train tile by tile instead (e.g. --tile 2048)"
        )


def _check(cancel: CancelFn | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled("stopped between tiles")
