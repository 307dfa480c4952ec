"""What a model knows besides its weights: its classes (names, colours) and the resolution it was trained at.

Kept inside the `.keras` file (a `gigapath.json` entry beside Keras's own), so a model file alone tells prediction
which classes to write and at which µm/px to read a slide. Models written before classes existed are tissue models.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gigapath_desktop.annotations.classes import ClassMap
from gigapath_desktop.errors import AnnotationError, ModelError
from gigapath_desktop.mpp import MPP_TEXT, is_mpp

if TYPE_CHECKING:  # the file's info reads without TensorFlow (the app's export dialog, on the GUI thread)
    import keras

ENTRY = "gigapath.json"
SCALE_TOLERANCE = 1.5  # slides read within this factor of the scale a model learnt from count as the same scale


@dataclass(frozen=True)
class ModelInfo:
    classes: ClassMap
    mpp: float | None = None  # µm per pixel of the training data; None: trained at a pyramid level of unknown scale
    # trained at a level (mpp None): the µm/px of the pixels it learnt from, where the slides record it and agree
    # (None: unknown); prediction warns when a slide is read at another scale
    source_mpp: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {"classes": self.classes.as_json(), "mpp": self.mpp, "source_mpp": self.source_mpp}

    @classmethod
    def from_json(cls, data: Any) -> "ModelInfo":
        mpp, source = (data.get(key) if isinstance(data, dict) else None for key in ("mpp", "source_mpp"))
        if not all(v is None or is_mpp(v) for v in (mpp, source)):
            raise ModelError(f"its resolution must be {MPP_TEXT}, got {mpp!r} / {source!r}")
        try:
            return cls(ClassMap.from_json(data["classes"]), None if mpp is None else float(mpp),
                       None if source is None else float(source))
        except (TypeError, KeyError, AnnotationError) as exc:
            raise ModelError(f"its class list is damaged ({exc})") from None


def model_info(model: keras.Model) -> ModelInfo:
    """The info attached to `model` (by training or `load_model`), else what its outputs imply."""
    info = model.__dict__.get("_gigapath_info")
    if info is not None:
        return info
    from gigapath_desktop.model.unet import class_count

    count = class_count(model)
    if count == 2:
        return ModelInfo(ClassMap.tissue())
    return ModelInfo(ClassMap.named([f"Class {i}" for i in range(count)]))


def attach_info(model: keras.Model, info: ModelInfo) -> None:
    from gigapath_desktop.model.unet import class_count

    if len(info.classes.classes) != class_count(model):
        raise ModelError(f"the model tells {class_count(model)} classes apart, not {len(info.classes.classes)}")
    model.__dict__["_gigapath_info"] = info


def write_info(path: Path, info: ModelInfo) -> None:
    """Add the info entry to a freshly written `.keras` archive."""
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(ENTRY, json.dumps(info.as_json(), indent=1))


def read_info(path: Path) -> ModelInfo | None:
    with zipfile.ZipFile(path) as archive:
        if ENTRY not in archive.namelist():
            return None
        try:
            return ModelInfo.from_json(json.loads(archive.read(ENTRY)))
        except ValueError as exc:
            raise ModelError(f"its {ENTRY} is not JSON ({exc})") from None
        except RecursionError:
            raise ModelError(f"its {ENTRY} is nested too deeply to be model info") from None

