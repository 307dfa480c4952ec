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
whole-region gradient; `tile=None` computes that directly in one tensor, for verification and for machines with
plenty of unified memory.

Per-tile reductions stay short (rows first, then a float64 sum of the row sums), which is why the tiled float32
result is closer to the float64 truth than one long float32 reduction over the whole region.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, Iterable, Iterator, Sequence

import keras
import numpy as np
import psutil
import tensorflow as tf

from gigapath_desktop.annotations.raster import UNLABELLED
from gigapath_desktop.errors import Cancelled, TrainingError
from gigapath_desktop.model.geometry import model_geometry
from gigapath_desktop.model.tiling import Tile, TilePlan
from gigapath_desktop.model.unet import logits_model, output_channels, with_dtype
from gigapath_desktop.parallel import bounded_map
from gigapath_desktop.training.plan import CALIBRATION
from gigapath_desktop.training.config import BCE_WEIGHT

SMOOTH = 1.0
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
        """Channels that count in the Dice: the tissue model's one channel always (today's loss), a K-class
        model's classes that occur in the labels (all of them when none does)."""
        if len(self.truth) == 1 or not (self.truth > 0).any():
            return np.ones(len(self.truth), bool)
        return self.truth > 0

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
        present = self.present
        denominator = self.predicted + self.truth + SMOOTH
        share = present / present.sum()
        return np.concatenate([-2.0 * share / denominator, share * (2 * self.intersection + SMOOTH) / denominator**2,
                               [bce_weight / max(self.valid, 1.0)]])


def fold(labels: np.ndarray, block: int) -> np.ndarray:
    """(h, w) -> (1, h/block, w/block, block^2), the channel order of depth_to_space, so the loss runs folded.
    Stays uint8 (a quarter of the bytes to shuffle); the compiled step casts it."""
    h, w = labels.shape
    folded = labels.reshape(h // block, block, w // block, block).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(folded.reshape(1, h // block, w // block, block * block))


class TileEngine:
    """Compiled per-tile functions for one model in one dtype.

    Tensors are folded: logits (1, h/b, w/b, b*b, C), labels (1, h/b, w/b, b*b) of class indices with UNLABELLED
    ignored, the mask m (1, h/b, w/b, b*b, 1) = inside the region and labelled. The tissue model (C = 1) has a
    sigmoid and binary cross-entropy; a K-class model a softmax and cross-entropy."""

    def __init__(self, model: keras.Model, dtype: str) -> None:
        self.source = model
        self.dtype = dtype
        self.net = logits_model(model if model.dtype == dtype else with_dtype(model, dtype))
        self.block = model_geometry(model).block
        self.channels = output_channels(model)
        image_spec = tf.TensorSpec([1, None, None, 3], tf.uint8)
        label_spec = tf.TensorSpec([1, None, None, None], tf.uint8)
        self.sums = tf.function(self._sums, input_signature=[image_spec, label_spec, label_spec])
        coefficients_spec = tf.TensorSpec([2 * self.channels + 1], tf.float64)
        self.grads = tf.function(self._grads, input_signature=[image_spec, label_spec, label_spec, coefficients_spec])
        self.whole = tf.function(self._whole, input_signature=[image_spec, label_spec, label_spec, tf.TensorSpec([], dtype)])

    def sync(self) -> None:
        """Copy the source model's current weights into a twin of another dtype."""
        if self.net.trainable_variables[0] is not self.source.trainable_variables[0]:
            for mine, theirs in zip(self.net.trainable_variables, self.source.trainable_variables):
                mine.assign(tf.cast(theirs, mine.dtype))

    def _forward(self, x: tf.Tensor, y: tf.Tensor, m: tf.Tensor, training: bool) -> tuple:
        """(folded logits z as the net gives them, z per channel, p, one-hot y, mask m, per-pixel cross-entropy)."""
        z_flat = self.net(x, training=training)
        z = tf.reshape(z_flat, tf.concat([tf.shape(z_flat)[:3], [self.block**2, self.channels]], 0))
        m = tf.cast(m, self.dtype)[..., None] * tf.cast(y != UNLABELLED, self.dtype)[..., None]
        if self.channels == 1:
            y = tf.cast(y == 1, self.dtype)[..., None]
            p = tf.sigmoid(z)
            ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=z)
        else:
            y = tf.one_hot(tf.cast(y, tf.int32), self.channels, dtype=self.dtype)  # 255 -> all zeros
            p = tf.nn.softmax(z)
            ce = tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=z)[..., None]
        return z_flat, z, p, y, m, ce

    def _hard(self, z: tf.Tensor) -> tf.Tensor:
        if self.channels == 1:
            return tf.cast(z > 0, z.dtype)
        return tf.one_hot(tf.argmax(z, axis=-1), self.channels, dtype=z.dtype)

    def _sums(self, x: tf.Tensor, y: tf.Tensor, m: tf.Tensor) -> tf.Tensor:
        _, z, p, y, m, ce = self._forward(x, y, m, training=False)
        hard = self._hard(z)
        sums = [_sum(m * p * y), _sum(m * p), _sum(m * y), _sum(m * hard * y), _sum(m * hard), _sum(m * ce), _sum(m)]
        return tf.concat(sums, 0)  # the layout of LossTerms.from_vector

    def _grads(self, x: tf.Tensor, y: tf.Tensor, m: tf.Tensor, coefficients: tf.Tensor) -> list[tf.Tensor]:
        """Backpropagate d(sum_c a_c I_c + b_c P_c + c B)/dz, written out, so no loss graph is differentiated.
        With g = m (a y + b):  sigmoid: g p (1 - p) + c m (p - y);  softmax: p (g - sum_k g_k p_k) + c m (p - y)."""
        coefficients = tf.cast(coefficients, self.dtype)
        a, b, c = coefficients[: self.channels], coefficients[self.channels : -1], coefficients[-1]
        with tf.GradientTape() as tape:
            z_flat, _, p, y, m, _ = self._forward(x, y, m, training=True)
        g = m * (a * y + b)
        if self.channels == 1:
            dz = g * p * (1 - p) + c * m * (p - y)
        else:
            dz = p * (g - tf.reduce_sum(g * p, axis=-1, keepdims=True)) + c * m * (p - y)
        grads = tape.gradient(z_flat, self.net.trainable_variables, output_gradients=tf.reshape(dz, tf.shape(z_flat)))
        return [tf.cast(g, tf.float64) for g in grads]

    def _whole(self, x: tf.Tensor, y: tf.Tensor, m: tf.Tensor, bce_weight: tf.Tensor) -> tuple:
        """The naive reference: one tensor, plain reductions in the model's dtype, autodiff of the loss."""
        with tf.GradientTape() as tape:
            _, z, p, y, m, ce = self._forward(x, y, m, training=True)
            axes = [0, 1, 2, 3]
            i, pp, yy = (tf.reduce_sum(t, axes) for t in (m * p * y, m * p, m * y))
            n = tf.reduce_sum(m)
            soft = (2 * i + SMOOTH) / (pp + yy + SMOOTH)
            present = yy > 0 if self.channels > 1 else tf.ones_like(yy, tf.bool)
            present = present | tf.logical_not(tf.reduce_any(present))
            dice_loss = 1 - tf.reduce_mean(tf.boolean_mask(soft, present))
            loss = dice_loss + bce_weight * tf.reduce_sum(m * ce) / tf.maximum(n, 1)
        hard = self._hard(z)
        sums = [i, pp, yy, tf.reduce_sum(m * hard * y, axes), tf.reduce_sum(m * hard, axes),
                tf.reduce_sum(m * ce)[None], n[None]]
        grads = [tf.cast(g, tf.float64) for g in tape.gradient(loss, self.net.trainable_variables)]
        return loss, tf.cast(tf.concat(sums, 0), tf.float64), grads


def engine_for(model: keras.Model, dtype: str = "float32") -> TileEngine:
    """The (cached) engine of `model` in `dtype`, with its weights up to date."""
    engines = model.__dict__.setdefault("_gigapath_engines", {})
    if dtype not in engines:
        engines[dtype] = TileEngine(model, dtype)
    engines[dtype].sync()
    return engines[dtype]


class LocalExecutor:
    """The tiles of a step in this process, in plan order, the next tile read on a thread while one runs.

    An executor yields per-tile results in plan order and calls `progress()` once per finished tile; the caller
    adds them up in that order, so every executor gives the same sums (see `training.ray_executor` for the other)."""

    def sums(self, model: keras.Model, dtype: str, plan: TilePlan, image: np.ndarray, labels: np.ndarray,
             cancel: CancelFn | None, progress: Callable[[], None]) -> Iterator[list[float]]:
        engine = engine_for(model, dtype)
        for x, y, m in _prefetched(plan, image, labels, engine):
            _check(cancel)
            yield engine.sums(x, y, m).numpy().tolist()
            progress()

    def grads(self, model: keras.Model, dtype: str, plan: TilePlan, image: np.ndarray, labels: np.ndarray,
              coefficients: np.ndarray, cancel: CancelFn | None,
              progress: Callable[[], None]) -> Iterator[list[np.ndarray]]:
        engine = engine_for(model, dtype)
        weights = tf.constant(coefficients, tf.float64)
        for x, y, m in _prefetched(plan, image, labels, engine):
            _check(cancel)
            yield [g.numpy() for g in engine.grads(x, y, m, weights)]
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
) -> tuple[float, LossTerms, list[np.ndarray]]:
    """(loss, global sums, gradients) of `model` on one whole region: `image` (H, W, 3) uint8, `labels` (H, W)
    uint8 class indices (0/1 for the tissue model) with UNLABELLED (255) pixels left out of the loss.

    `tile=None` computes on the whole region as one tensor; an int gives the same result tile by tile, in this
    process or spread over workers (`executor`). `grads` are float64 arrays aligned with
    `model.trainable_variables`. `progress(done, total)` counts tile passes.
    """
    if image.shape[:2] != labels.shape:
        raise ValueError(f"image {image.shape[:2]} and labels {labels.shape} differ in size")
    plan = TilePlan.create(*labels.shape, model_geometry(model), tile)
    if tile is None:
        engine = engine_for(model, dtype)
        _check_whole_fits(plan, dtype)
        (t,) = plan.tiles()
        x, y, m = _tile_tensors(plan, image, labels, t, engine)
        loss, sums, grads = engine.whole(x, y, m, tf.constant(bce_weight, dtype))
        return float(loss), LossTerms.from_vector(sums.numpy()), [g.numpy() for g in grads]
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
    return engine.sums(*_tile_tensors(plan, image, labels, t, engine)).numpy().tolist()


def tile_grads(model: keras.Model, dtype: str, plan: TilePlan, image: np.ndarray, labels: np.ndarray, t: Tile,
               coefficients: np.ndarray) -> list[np.ndarray]:
    """One tile's share of the gradient (what a remote worker computes)."""
    engine = engine_for(model, dtype)
    x, y, m = _tile_tensors(plan, image, labels, t, engine)
    return [g.numpy() for g in engine.grads(x, y, m, tf.constant(coefficients, tf.float64))]


def _tile_tensors(plan: TilePlan, image: np.ndarray, labels: np.ndarray, t: Tile, engine: TileEngine) -> tuple:
    y, valid = plan.labels(labels, t)
    return (
        tf.constant(plan.image(image, t)[None]),
        tf.constant(fold(y, engine.block)),
        tf.constant(fold(valid, engine.block)),
    )


def _prefetched(plan: TilePlan, image: np.ndarray, labels: np.ndarray, engine: TileEngine) -> Iterator[tuple]:
    """Each tile's tensors in plan order, the next ones read and mirrored on a thread while the current one runs."""
    for _, tensors in bounded_map(lambda t: _tile_tensors(plan, image, labels, t, engine), plan.tiles(), workers=1):
        yield tensors


def _check_whole_fits(plan: TilePlan, dtype: str) -> None:
    """Refuse a one-tensor step that would exhaust memory, instead of letting the machine swap or die."""
    need = plan.input_pixels() * CALIBRATION.bytes_per_pixel * np.dtype(dtype).itemsize / 4
    free = psutil.virtual_memory().available
    if need > 0.9 * free:
        raise TrainingError(
            f"training on the whole {plan.height} x {plan.width} region as one tensor needs ~{need / 2**30:.0f} GiB "
            f"but {free / 2**30:.0f} GiB are free; train tile by tile instead (e.g. --tile 2048)"
        )


def _sum(t: tf.Tensor) -> tf.Tensor:
    """Per-channel sums (C,) of a folded tensor: rows first (short runs in the model's dtype), then the row sums in
    float64."""
    return tf.reduce_sum(tf.cast(tf.reduce_sum(t, axis=1), tf.float64), axis=[0, 1, 2])


def _check(cancel: CancelFn | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled("stopped between tiles")
