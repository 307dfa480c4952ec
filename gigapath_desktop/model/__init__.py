"""The Keras U-Net, its tiling geometry, and the tiling plan shared by training and prediction.

Names load on first use (PEP 562), so `model.info`'s file reading (a model's classes, without TensorFlow) imports in
milliseconds on the app's GUI thread.
"""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"Geometry": "geometry", "model_geometry": "geometry", "load_model": "io", "save_model": "io",
          "build_unet": "unet", "logits_model": "unet", "with_dtype": "unet"}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
