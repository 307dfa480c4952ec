"""The compact large-kernel, high-stride U-Net (~4.6k parameters by default).

Its work happens at 1/4 resolution and below: the uint8 image is folded 4x4 into channels (space-to-depth), the
encoder pools by 4 twice with 3x3 and 5x5 kernels, the decoder merges skips with 1x1 convolutions, and the last layer
predicts the 16 pixels of each 4x4 block, unfolded by depth-to-space into a full-resolution probability.

Every convolution is 'valid' and every stride-s operation has a kernel of s, so the network is a translation-
equivariant function of its input with a fixed halo: a tile of output needs its input plus `halo` pixels on each side,
and tiles whose origins are multiples of the total stride give exactly the whole-image output (`model.geometry`).
"""
from __future__ import annotations

from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from gigapath_desktop.model.geometry import TensorGeometry, layer_geometry


class _BlockLayer(layers.Layer):
    """A parameter-free reshuffle between `block` x `block` pixel patches and channels."""

    def __init__(self, block: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.block = block

    def get_config(self) -> dict:
        return {**super().get_config(), "block": self.block}


@keras.saving.register_keras_serializable(package="gigapath")
class SpaceToDepth(_BlockLayer):
    """Fold each patch into channels (keeps the input dtype, so uint8 stays 1 byte/px)."""

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.space_to_depth(x, self.block)

    def compute_output_shape(self, shape: tuple) -> tuple:
        b = self.block
        return (shape[0], *(None if s is None else s // b for s in shape[1:3]), shape[3] * b * b)


@keras.saving.register_keras_serializable(package="gigapath")
class DepthToSpace(_BlockLayer):
    """Unfold channels back into patches (pixel shuffle)."""

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.depth_to_space(x, self.block)

    def compute_output_shape(self, shape: tuple) -> tuple:
        b = self.block
        return (shape[0], *(None if s is None else s * b for s in shape[1:3]), shape[3] // (b * b))


LOGITS = "logits_s2d"
SPACE_TO_DEPTH = "space_to_depth"


def build_unet(
    filters: Sequence[int] = (8, 8, 8),
    kernels: Sequence[int] = (3, 5, 5),
    block: int = 4,
    pool: int = 4,
    dtype: str = "float32",
    activation: str = "leaky_relu",
    classes: int = 2,
) -> keras.Model:
    """uint8 RGB (H, W, 3) in -> probabilities (H - 2 halo, W - 2 halo, C) out; one encoder level per filter.

    Two classes (background, tissue) give the tissue model: one sigmoid channel, the tissue probability. K > 2
    classes give K softmax channels, one per class. The layer named `logits_s2d` holds the logits folded
    block x block into channels (channel (i * block + j) * C + c is class c of pixel (i, j) of the block);
    training uses it directly.
    """
    if classes < 2:
        raise ValueError(f"a model needs at least 2 classes, got {classes}")
    channels = 1 if classes == 2 else classes
    geom: dict[int, TensorGeometry] = {}

    def apply(layer: layers.Layer, *inputs: keras.KerasTensor) -> keras.KerasTensor:
        out = layer(list(inputs) if len(inputs) > 1 else inputs[0])
        geom[id(out)] = layer_geometry(layer, [geom[id(t)] for t in inputs])
        return out

    image = keras.Input((None, None, 3), dtype="uint8", name="image")
    geom[id(image)] = TensorGeometry()
    x = apply(SpaceToDepth(block, name=SPACE_TO_DEPTH), image)
    x = apply(layers.Rescaling(1 / 127.5, offset=-1.0, dtype=dtype, name="rescale"), x)
    x = apply(layers.Conv2D(filters[0], 1, activation=activation, dtype=dtype, name="stem"), x)
    skips = []
    for level, (f, k) in enumerate(zip(filters, kernels)):
        if level:
            x = apply(layers.MaxPooling2D(pool, dtype=dtype, name=f"pool{level}"), x)
        x = apply(layers.Conv2D(f, k, activation=activation, dtype=dtype, name=f"enc{level}"), x)
        skips.append(x)
    for level in reversed(range(len(filters) - 1)):
        x = apply(layers.UpSampling2D(pool, dtype=dtype, name=f"up{level}"), x)
        skip = skips[level]
        crop = (geom[id(x)].offset - geom[id(skip)].offset) // geom[id(skip)].cell
        skip = apply(layers.Cropping2D(crop, dtype=dtype, name=f"crop{level}"), skip)
        x = apply(layers.Concatenate(dtype=dtype, name=f"merge{level}"), x, skip)
        x = apply(layers.Conv2D(filters[level], 1, activation=activation, dtype=dtype, name=f"dec{level}"), x)
    x = apply(layers.Conv2D(block * block * channels, 1, dtype=dtype, name=LOGITS), x)
    x = apply(DepthToSpace(block, dtype=dtype, name="depth_to_space"), x)
    activation = "sigmoid" if channels == 1 else "softmax"
    probability = apply(layers.Activation(activation, dtype=dtype, name="probability"), x)
    return keras.Model(image, probability, name="gigapath_unet")


def init_output_bias(model: keras.Model, priors: Sequence[float]) -> None:
    """Start the logits at the labels' class shares, so the first steps learn shapes instead of the class balance.
    `priors` holds one share per class (background first); a tissue model's single logit gets log-odds of tissue."""
    shares = np.clip(np.asarray(priors, np.float64), 0.01, 0.99)
    bias = model.get_layer(LOGITS).bias
    channels = output_channels(model)
    logits = np.log(shares[1:] / shares[0]) if channels == 1 else np.log(shares)
    bias.assign(np.tile(logits, bias.shape[0] // channels).astype(bias.dtype))


def output_channels(model: keras.Model) -> int:
    """1 for the tissue model (a sigmoid probability), K for a K-class softmax model."""
    return int(model.output_shape[-1])


def class_count(model: keras.Model) -> int:
    """How many classes the model tells apart (the tissue model: 2, background and tissue)."""
    return max(2, output_channels(model))


def logits_model(model: keras.Model) -> Callable:
    """The same network (shared weights) from the space-to-depth-folded image (1, H/b, W/b, b*b*3) to the folded
    logits: what training differentiates (the trainer folds tiles on the host, off the critical path). `net(x,
    training)` and `net.trainable_variables`, in the model's order."""
    if FoldedLogits.fits(model):
        return FoldedLogits(model)
    return keras.Model(model.get_layer(SPACE_TO_DEPTH).output, model.get_layer(LOGITS).output)


class FoldedLogits:
    """`model` from its folded uint8 input to its folded logits, with the input's rescaling moved into the stem
    convolution's weights: (s W) x + (b + o sum W) = W (s x + o) + b. The 48-channel float input is the step's
    largest tensor; this saves a pass over it (forward and backward). Gradients reach W and b through the tape."""

    def __init__(self, model: keras.Model) -> None:
        self.rescale = model.get_layer("rescale")
        self.stem = model.get_layer("stem")
        self.rest = keras.Model(self.stem.output, model.get_layer(LOGITS).output)
        self.trainable_variables = [*self.stem.trainable_variables, *self.rest.trainable_variables]
        if [id(v) for v in self.trainable_variables] != [id(v) for v in model.trainable_variables]:
            raise ValueError("the stem is not the model's first layer with weights")

    @staticmethod
    def fits(model: keras.Model) -> bool:
        """Whether the model has `build_unet`'s stem: a stride-1 'valid' convolution with a bias, fed by a scalar
        rescaling only (other tileable models train through the plain Keras graph)."""
        names = {layer.name for layer in model.layers}
        if not {"rescale", "stem"} <= names:
            return False
        rescale, stem = model.get_layer("rescale"), model.get_layer("stem")
        config = stem.get_config()
        return (config["strides"] == (1, 1) and config["dilation_rate"] == (1, 1) and config["padding"] == "valid"
                and config["use_bias"] and np.ndim(rescale.scale) == 0 and np.ndim(rescale.offset) == 0
                and [layer.name for layer in model.layers if layer.input is rescale.output] == ["stem"])

    def __call__(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        dtype = self.stem.compute_dtype
        kernel, bias = (tf.cast(v, dtype) for v in (self.stem.kernel, self.stem.bias))
        # cast as the Rescaling layer casts (via float32: a float64 twin must give the model's own output)
        scale, offset = (keras.ops.cast(v, dtype) for v in (self.rescale.scale, self.rescale.offset))
        scaled = kernel * scale
        shifted = bias + offset * tf.reduce_sum(kernel, axis=[0, 1, 2])
        stem = self.stem.activation(tf.nn.conv2d(tf.cast(x, dtype), scaled, 1, "VALID") + shifted)
        return self.rest(stem, training=training)


def with_dtype(model: keras.Model, dtype: str) -> keras.Model:
    """A twin of `model` computing in `dtype` (e.g. float64 for verification), with the weights copied over."""
    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] != "InputLayer":
            layer["config"]["dtype"] = dtype
    twin = keras.Model.from_config(config)
    twin.set_weights([w.astype(dtype) for w in model.get_weights()])
    return twin
