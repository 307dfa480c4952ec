"""Receptive field, halo and total stride of a fully convolutional model, computed from its layers.

Each tensor gets a `TensorGeometry`: the size in input pixels of one of its cells, how many input pixels lie between
the input's edge and its first cell (the same on the far edge: every op here is symmetric), and the receptive field
of one cell. Walking the layers gives the halo a tile needs (the output's offset) and the stride tile origins must be
multiples of (the coarsest cell), so tiled and whole-image results agree exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from keras import layers

from gigapath_desktop.errors import ModelError

ELEMENTWISE = (layers.Activation, layers.Rescaling, layers.ReLU, layers.LeakyReLU, layers.InputLayer)
MERGES = (layers.Concatenate, layers.Add, layers.Multiply, layers.Average)


@dataclass(frozen=True)
class TensorGeometry:
    cell: int = 1
    offset: int = 0
    rf: int = 1


@dataclass(frozen=True)
class Geometry:
    """What tiling needs to know about a model."""

    stride: int  # tile origins and sizes must be multiples of this
    halo: int  # input pixels needed beyond each side of an output tile
    receptive_field: int  # input pixels one output pixel depends on (per axis)
    block: int  # pixels folded into channels at the logits layer


def layer_geometry(layer: layers.Layer, inputs: Sequence[TensorGeometry]) -> TensorGeometry:
    """The geometry of `layer`'s output given its inputs' geometries; raises for layers that break tiling."""
    g = inputs[0]
    name = type(layer).__name__
    if name == "SpaceToDepth":
        b = layer.block
        return TensorGeometry(g.cell * b, g.offset, g.rf + (b - 1) * g.cell)
    if name == "DepthToSpace" or isinstance(layer, layers.UpSampling2D):
        b = layer.block if name == "DepthToSpace" else _square(layer, layer.size)
        if g.cell % b:
            raise ModelError(f"layer {layer.name}: upsampling by {b} below full resolution")
        return TensorGeometry(g.cell // b, g.offset, g.rf)
    if isinstance(layer, (layers.Conv2D, layers.MaxPooling2D, layers.AveragePooling2D)):
        return _window(layer, g)
    if isinstance(layer, layers.Cropping2D):
        (top, bottom), (left, right) = layer.cropping
        if not top == bottom == left == right:
            raise ModelError(f"layer {layer.name}: cropping must be the same on every side")
        return TensorGeometry(g.cell, g.offset + top * g.cell, g.rf)
    if isinstance(layer, MERGES):
        if len({(i.cell, i.offset) for i in inputs}) != 1:
            raise ModelError(f"layer {layer.name}: merged tensors are not aligned ({inputs})")
        return TensorGeometry(g.cell, g.offset, max(i.rf for i in inputs))
    if isinstance(layer, ELEMENTWISE):
        return g
    raise ModelError(f"layer {layer.name} ({name}) has no known tiling geometry")


def model_geometry(model: Any) -> Geometry:
    """Walk `model`'s layers (topological order) and return its tiling geometry; cached on the model."""
    cached = getattr(model, "_gigapath_geometry", None)
    if cached is not None:
        return cached
    geoms: dict[int, TensorGeometry] = {}
    logits_cell = 1
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            geoms[id(layer.output)] = TensorGeometry()
            continue
        inputs = layer.input if isinstance(layer.input, list) else [layer.input]
        out = layer_geometry(layer, [geoms[id(t)] for t in inputs])
        geoms[id(layer.output)] = out
        if layer.name == "logits_s2d":
            logits_cell = out.cell
    final = geoms[id(model.output)]
    if final.cell != 1:
        raise ModelError("model output is not at full resolution")
    geometry = Geometry(max(g.cell for g in geoms.values()), final.offset, final.rf, logits_cell)
    _check_shapes(model, geometry)
    model._gigapath_geometry = geometry
    return geometry


def _window(layer: layers.Layer, g: TensorGeometry) -> TensorGeometry:
    """Convolution or pooling: stride 1 with an odd kernel (centred), or kernel == stride (non-overlapping)."""
    k = _square(layer, layer.kernel_size if isinstance(layer, layers.Conv2D) else layer.pool_size)
    s = _square(layer, layer.strides)
    if layer.padding != "valid" or _square(layer, getattr(layer, "dilation_rate", (1, 1))) != 1:
        raise ModelError(f"layer {layer.name}: tiling needs padding='valid' and no dilation")
    if not ((s == 1 and k % 2 == 1) or k == s):
        raise ModelError(f"layer {layer.name}: kernel {k} with stride {s} is not centred; use odd kernels or kernel == stride")
    return TensorGeometry(g.cell * s, g.offset + (k - s) // 2 * g.cell, g.rf + (k - 1) * g.cell)


def _square(layer: layers.Layer, value: int | Sequence[int]) -> int:
    values = (value, value) if isinstance(value, int) else tuple(value)
    if values[0] != values[1]:
        raise ModelError(f"layer {layer.name}: only square kernels, strides and sizes tile simply, got {values}")
    return int(values[0])


def _check_shapes(model: Any, geometry: Geometry) -> None:
    """A tile of one and of two strides must come out exactly that size: catches any misalignment."""
    for n in (geometry.stride, 2 * geometry.stride):
        size = n + 2 * geometry.halo
        out = model(np.zeros((1, size, size, 3), np.uint8), training=False)
        if tuple(out.shape[1:3]) != (n, n):
            raise ModelError(f"model maps a {size} px tile to {tuple(out.shape[1:3])}, expected {n}: stride/halo mismatch")
