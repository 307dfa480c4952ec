"""Tiled prediction over a region or a whole slide, with the training engine's tiling plan.

Input tiles come straight from the slide (or any array) through `slides.SlideSource`, mirrored at the region's edges exactly
as in training, so tiled output equals whole-region output. Results arrive as bands of tile rows, so writers can
stream them to disk without ever holding the whole mask.
"""
from __future__ import annotations

from contextlib import closing
from typing import Any, Callable, Iterator

import keras
import numpy as np
import tensorflow as tf

from gigapath_desktop.errors import Cancelled, ModelError
from gigapath_desktop.model.geometry import model_geometry
from gigapath_desktop.model.tiling import TilePlan
from gigapath_desktop.parallel import bounded_map

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]


def predict_bands(
    model: keras.Model,
    image: Any,
    tile: int | None = 2048,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    encode: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first row, probabilities) for each band of tile rows of `image` ((h, w, 3) uint8, any rectangle-
    readable source), top to bottom; each band is float32 (rows, w) tissue probabilities ((rows, w, K) for a K-class
    model), or whatever `encode` turns each tile's probabilities into (e.g. uint8 probabilities or class indices,
    to keep gigapixel-wide bands small). Reading runs ahead on worker threads."""
    height, width = image.shape[:2]
    plan = TilePlan.create(height, width, model_geometry(model), tile)
    forward = _forward(model)
    tiles = list(plan.tiles())
    band: np.ndarray | None = None
    band_y = -1
    # closed on the way out, an error's included: no read may outlive the caller's slide handle
    with closing(bounded_map(lambda t: plan.image(image, t), tiles, workers=2)) as reads:
        for done, (t, pixels) in enumerate(reads, start=1):
            if cancel is not None and cancel():
                raise Cancelled("prediction was stopped")
            if t.y != band_y:
                if band is not None:
                    yield band_y, band
                band_y, band = t.y, None
            output = forward(tf.constant(pixels[None])).numpy()[0]
            target, part = plan.crop(output[..., 0] if output.shape[-1] == 1 else output, t)
            if not np.isfinite(part).all():
                raise ModelError(f"the model gave non-finite output on the tile at x={t.x}, y={t.y}; it is damaged")
            part = part if encode is None else encode(part)
            if band is None:
                band = np.zeros((min(t.height, height - t.y), width, *part.shape[2:]), part.dtype)
            band[:, target[1]] = part
            if progress is not None:
                progress(done, len(tiles))
    if band is not None:
        yield band_y, band


def predict_array(
    model: keras.Model,
    image: Any,
    tile: int | None = 2048,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> np.ndarray:
    """The whole probability map of `image` as one float32 (h, w) array, (h, w, K) for a K-class model (for
    regions that fit in memory)."""
    channels = model.output_shape[-1]
    out = np.zeros((*image.shape[:2], *([channels] if channels > 1 else [])), np.float32)
    for y, band in predict_bands(model, image, tile, progress, cancel):
        out[y : y + band.shape[0]] = band
    return out


def _forward(model: keras.Model) -> Callable[[tf.Tensor], tf.Tensor]:
    """A compiled forward pass that traces once for every tile size."""
    cached = model.__dict__.get("_gigapath_forward")
    if cached is None:
        spec = tf.TensorSpec([1, None, None, 3], tf.uint8)
        cached = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        model.__dict__["_gigapath_forward"] = cached
    return cached

