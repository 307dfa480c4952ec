"""Save and load models as `.keras` files, atomically, with clear errors for files that are not our models."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import keras

from gigapath_desktop.errors import ModelError
from gigapath_desktop.model import unet  # noqa: F401  (registers the custom layers for deserialization)
from gigapath_desktop.model.geometry import model_geometry


def save_model(model: keras.Model, path: str | os.PathLike[str]) -> Path:
    """Write `path` (.keras) via a temporary file and a rename, so a crash never leaves a half-written model."""
    path = Path(path)
    tmp = path.with_name(path.stem + ".partial.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
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
        model_geometry(model)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None
    return model
