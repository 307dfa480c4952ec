"""Save and load models as `.keras` files, atomically, with clear errors for files that are not our models."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import keras
import numpy as np

from gigapath_desktop.errors import ModelError
import gigapath_desktop.model.unet  # noqa: F401  (registers the custom layers for deserialization)
from gigapath_desktop.model.geometry import model_geometry
from gigapath_desktop.model.info import attach_info, model_info, read_info, write_info
from gigapath_desktop.outputs import atomic_path


def save_model(model: keras.Model, path: str | os.PathLike[str]) -> Path:
    """Write `path` (.keras) via a temporary file and a rename, so a crash never leaves a half-written model."""
    path = Path(path)
    with atomic_path(path) as tmp:
        model.save(tmp)
        write_info(tmp, model_info(model))
    return path


def load_model(path: str | os.PathLike[str]) -> keras.Model:
    """Load a `.keras` model and check it tiles; raises `ModelError` naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path}: not a .keras model file")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for damaged archives
        raise ModelError(f"{path}: cannot load model ({exc})") from None
    try:
        check_contract(model)
        info = read_info(path)
        if info is not None:
            attach_info(model, info)
    except (ModelError, zipfile.BadZipFile) as exc:
        raise ModelError(f"{path}: {exc}") from None
    return model


def check_contract(model: keras.Model) -> None:
    """What every model here must be: uint8 RGB in, probabilities out (one sigmoid tissue channel, or a softmax
    over K >= 3 classes), tileable, finite weights. Anything else would predict garbage without a word."""
    if model.input_shape[-1] != 3:
        raise ModelError(f"takes {model.input_shape[-1]}-channel input; a model here takes RGB (3)")
    channels = model.output_shape[-1]
    expected = keras.activations.sigmoid if channels == 1 else keras.activations.softmax
    if channels == 2 or getattr(model.layers[-1], "activation", None) is not expected:
        raise ModelError(f"has {channels} output channels but does not end in a "
                         f"{'sigmoid' if channels == 1 else 'softmax over 3 or more classes'}, so its output is not "
                         f"a probability per class")
    if not all(np.isfinite(w).all() for w in model.get_weights()):
        raise ModelError("holds non-finite (NaN or infinite) weights")
    model_geometry(model)
