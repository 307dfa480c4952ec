"""The compiled per-tile functions of the exact step (see `training.gradients` for the maths).

Inputs arrive folded on the host (space-to-depth done in numpy, on a prefetch thread where there is one), so the
compiled graphs start at the model's first convolution: on 2 CPU cores TensorFlow's uint8 SpaceToDepth and its
copies cost a fifth of a tile step. Labels arrive folded the same way (UNLABELLED past the region's edge), so the
loss runs on the logits without a depth-to-space.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import tensorflow.experimental.numpy as tnp

from gigapath_desktop.annotations.raster import UNLABELLED
from gigapath_desktop.model.geometry import model_geometry
from gigapath_desktop.model.unet import logits_model, output_channels, with_dtype

SMOOTH = 1.0
CPU_ONLY = not tf.config.list_physical_devices("GPU")
if CPU_ONLY:
    # Grappler's remapper fails on the backward graph with oneDNN (LeakyReluGrad fed by a BiasAdd it fused away)
    # and logs an error per trace; without it the CPU step and prediction are as fast (measured: 16 MP step, 19.6 MP
    # forward), so it is off for the whole process on CPU-only machines.
    tf.config.optimizer.set_experimental_options({"remapping": False})


def fold(array: np.ndarray, block: int) -> np.ndarray:
    """(h, w[, c]) -> (1, h/block, w/block, block^2 [* c]) in the channel order of space_to_depth. Stays in the
    input's dtype (uint8: a quarter of the bytes of float32 to move); the compiled step casts it. Each run of
    `block` pixels moves as one opaque record (2.4x faster on images, 6x on labels than element by element)."""
    h, w = array.shape[:2]
    run = np.dtype((np.void, array[0, :block].nbytes))
    runs = np.ascontiguousarray(array).reshape(h, -1).view(np.uint8).view(run).reshape(h // block, block, w // block)
    return np.ascontiguousarray(runs.swapaxes(1, 2)).view(array.dtype).reshape(1, h // block, w // block, -1)


def present_classes(xp: ModuleType, truth: Any) -> Any:
    """1.0 for each channel that counts in the Dice, else 0.0: the tissue model's one channel always, a K-class
    model's classes that occur in the labels (all of them when none does). `truth`: the per-channel label sums."""
    ones = xp.ones_like(truth)
    present = ones if truth.shape[0] == 1 else xp.where(truth > 0, ones, xp.zeros_like(truth))
    return xp.where(xp.any(present > 0), present, ones)


def dice_coefficients(xp: ModuleType, intersection: Any, predicted: Any, truth: Any, valid: Any,
                      bce_weight: Any) -> Any:
    """[d loss/dI (C), d loss/dP (C), d loss/dB] of  1 - mean over present c of (2 I_c + s)/(P_c + Y_c + s) + w B/N,
    in numpy (`xp=np`, between the passes) or in TensorFlow (`xp=tnp`, inside the one-tensor step): one formula."""
    present = present_classes(xp, truth)
    denominator = predicted + truth + SMOOTH
    share = present / xp.sum(present)
    return xp.concatenate([-2.0 * share / denominator, share * (2 * intersection + SMOOTH) / denominator**2,
                           xp.reshape(bce_weight / xp.maximum(valid, 1.0), [1])])


class TileEngine:
    """Compiled per-tile functions for one model in one dtype.

    Tensors are folded: x (1, h/b, w/b, b*b*3) uint8, logits (1, h/b, w/b, b*b, C), labels (1, h/b, w/b, b*b) of
    class indices, UNLABELLED (also past the region's edge) left out of the loss. The tissue model (C = 1) has a
    sigmoid and binary cross-entropy; a K-class model a softmax and cross-entropy."""

    def __init__(self, model: keras.Model, dtype: str) -> None:
        self.source = model
        self.dtype = dtype
        self.net = logits_model(model if model.dtype == dtype else with_dtype(model, dtype))
        self.block = model_geometry(model).block
        self.channels = output_channels(model)
        image_spec = tf.TensorSpec([1, None, None, self.block**2 * 3], tf.uint8)
        label_spec = tf.TensorSpec([1, None, None, None], tf.uint8)
        coefficients_spec = tf.TensorSpec([2 * self.channels + 1], tf.float64)
        weight_spec = tf.TensorSpec([], tf.float64)
        # The loss's ~35 elementwise passes over full-resolution tensors were 40 % of a one-tensor step on CPU: XLA
        # fuses them (0.39 -> 0.23 s at 16 MP). The convolutions stay outside XLA (slower there); Metal has no XLA.
        self.loss_sums = tf.function(self._loss_sums, jit_compile=CPU_ONLY)
        self.loss_dz = tf.function(self._loss_dz, jit_compile=CPU_ONLY)
        self.sums = tf.function(self._sums, input_signature=[image_spec, label_spec])
        self.grads = tf.function(self._grads, input_signature=[image_spec, label_spec, coefficients_spec])
        self.single = tf.function(self._single, input_signature=[image_spec, label_spec, weight_spec])
        self.reference = tf.function(self._reference, input_signature=[image_spec, label_spec, weight_spec])

    def sync(self) -> None:
        """Copy the source model's current weights into a twin of another dtype."""
        if self.net.trainable_variables[0] is not self.source.trainable_variables[0]:
            for mine, theirs in zip(self.net.trainable_variables, self.source.trainable_variables):
                mine.assign(tf.cast(theirs, mine.dtype))

    def _loss_inputs(self, z_flat: tf.Tensor, y: tf.Tensor, fast: bool = True) -> tuple:
        """(z per channel, p, one-hot y, mask m of the labelled pixels, per-pixel cross-entropy) from the net's
        folded logits. `fast`: the sigmoid's cross-entropy from p, max(z, 0) - z y - log(max(p, 1 - p)), one log
        instead of TensorFlow's exp and log1p (the same value; a fifth of the sums' time on CPU)."""
        z = tf.reshape(z_flat, tf.concat([tf.shape(z_flat)[:3], [self.block**2, self.channels]], 0))
        m = tf.cast(y != UNLABELLED, self.dtype)[..., None]
        if self.channels == 1:
            y = tf.cast(y == 1, self.dtype)[..., None]
            p = tf.sigmoid(z)
            if fast:
                ce = tf.maximum(z, 0) - z * y - tf.math.log(tf.maximum(p, 1 - p))
            else:
                ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=z)
        else:
            y = tf.one_hot(tf.cast(y, tf.int32), self.channels, dtype=self.dtype)  # 255 -> all zeros
            p = tf.nn.softmax(z)
            ce = tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=z)[..., None]
        return z, p, y, m, ce

    def _hard(self, z: tf.Tensor) -> tf.Tensor:
        if self.channels == 1:
            return tf.cast(z > 0, z.dtype)
        return tf.one_hot(tf.argmax(z, axis=-1), self.channels, dtype=z.dtype)

    def _loss_sums(self, z_flat: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """A tile's loss sums from its folded logits, in the layout of LossTerms.from_vector."""
        z, p, y, m, ce = self._loss_inputs(z_flat, y)
        hard = self._hard(z)
        sums = [_sum(m * p * y), _sum(m * p), _sum(m * y), _sum(m * hard * y), _sum(m * hard), _sum(m * ce), _sum(m)]
        return tf.concat(sums, 0)

    def _loss_dz(self, z_flat: tf.Tensor, y: tf.Tensor, coefficients: tf.Tensor) -> tf.Tensor:
        """d(sum_c a_c I_c + b_c P_c + c B)/dz, written out, so no loss graph is differentiated.
        With g = m (a y + b):  sigmoid: g p (1 - p) + c m (p - y);  softmax: p (g - sum_k g_k p_k) + c m (p - y)."""
        _, p, y, m, _ = self._loss_inputs(z_flat, y)
        coefficients = tf.cast(coefficients, self.dtype)
        a, b, c = coefficients[: self.channels], coefficients[self.channels : -1], coefficients[-1]
        g = m * (a * y + b)
        if self.channels == 1:
            dz = g * p * (1 - p) + c * m * (p - y)
        else:
            dz = p * (g - tf.reduce_sum(g * p, axis=-1, keepdims=True)) + c * m * (p - y)
        return tf.reshape(dz, tf.shape(z_flat))

    def _backward(self, tape: tf.GradientTape, z_flat: tf.Tensor, y: tf.Tensor,
                  coefficients: tf.Tensor) -> list[tf.Tensor]:
        dz = self.loss_dz(z_flat, y, coefficients)
        return [tf.cast(g, tf.float64) for g in tape.gradient(z_flat, self.net.trainable_variables, output_gradients=dz)]

    def _sums(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return self.loss_sums(self.net(x, training=False), y)

    def _grads(self, x: tf.Tensor, y: tf.Tensor, coefficients: tf.Tensor) -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            z_flat = self.net(x, training=True)
        return self._backward(tape, z_flat, y, coefficients)

    def _single(self, x: tf.Tensor, y: tf.Tensor, bce_weight: tf.Tensor) -> tuple:
        """The whole region as one tile, forward once: pass 1's sums and pass 2's backward share one forward pass.
        Returns (sums, gradients) with the sums and coefficients of the tiled step, so the result is the same."""
        with tf.GradientTape() as tape:
            z_flat = self.net(x, training=True)
        sums = self.loss_sums(z_flat, y)
        c = self.channels
        coefficients = dice_coefficients(tnp, sums[:c], sums[c : 2 * c], sums[2 * c : 3 * c], sums[-1], bce_weight)
        return sums, self._backward(tape, z_flat, y, coefficients)

    def _reference(self, x: tf.Tensor, y: tf.Tensor, bce_weight: tf.Tensor) -> tuple:
        """The naive reference for tests: one tensor, plain reductions in the model's dtype, TensorFlow's own
        cross-entropy, autodiff of the loss."""
        with tf.GradientTape() as tape:
            z, p, y, m, ce = self._loss_inputs(self.net(x, training=True), y, fast=False)
            axes = [0, 1, 2, 3]
            i, pp, yy = (tf.reduce_sum(t, axes) for t in (m * p * y, m * p, m * y))
            n = tf.reduce_sum(m)
            soft = (2 * i + SMOOTH) / (pp + yy + SMOOTH)
            present = yy > 0 if self.channels > 1 else tf.ones_like(yy, tf.bool)
            present = present | tf.logical_not(tf.reduce_any(present))
            dice_loss = 1 - tf.reduce_mean(tf.boolean_mask(soft, present))
            loss = dice_loss + tf.cast(bce_weight, self.dtype) * tf.reduce_sum(m * ce) / tf.maximum(n, 1)
        grads = [tf.cast(g, tf.float64) for g in tape.gradient(loss, self.net.trainable_variables)]
        return tf.cast(loss, tf.float64), grads


def step_tensors(block: int, image: np.ndarray, labels: np.ndarray) -> tuple:
    """One tile's (x, y) tensors from its input pixels and labels (thread-safe: no engine state)."""
    return tuple(tf.constant(fold(a, block)) for a in (image, labels))


def engine_for(model: keras.Model, dtype: str = "float32") -> TileEngine:
    """The (cached) engine of `model` in `dtype`, with its weights up to date."""
    engines = model.__dict__.setdefault("_gigapath_engines", {})
    if dtype not in engines:
        engines[dtype] = TileEngine(model, dtype)
    engines[dtype].sync()
    return engines[dtype]


def _sum(t: tf.Tensor) -> tf.Tensor:
    """Per-channel sums (C,) of a folded (1, rows, columns, b*b, C) tensor: each row in the model's dtype (runs
    contiguous in memory: 1.4x faster under XLA than down the columns), then the row sums in float64."""
    return tf.reduce_sum(tf.cast(tf.reduce_sum(t, axis=[2, 3]), tf.float64), axis=[0, 1])
